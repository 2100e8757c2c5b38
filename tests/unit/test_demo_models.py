"""Unit tests for the demo model builder and the demo hub's git+LFS publishing.

No services needed. The malicious demo pickle is only ever inspected as bytes
and opcodes (``pickletools.genops`` parses, it does not execute); nothing here
unpickles it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import pickletools
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
import yaml

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"

# The LFS pointer regex olah 0.5.4 applies (olah/mirror/repos.py); a pointer that
# does not match is served as a plain file, silently breaking lfs.sha256.
OLAH_LFS_POINTER = re.compile(
    rb"version https://git-lfs\.github\.com/spec/v[0-9]\noid sha256:([0-9a-z]{64})\nsize ([0-9]+?)\n"
)


def _load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` by path (scripts/ is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


demo_models = _load_script("demo_models")
demo_hub = _load_script("demo_hub")


def _digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` keyed by POSIX relative path."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _front_matter(readme: Path) -> dict:
    text = readme.read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, flags=re.S)
    assert match, f"{readme} has no YAML front matter"
    return yaml.safe_load(match.group(1))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return demo_models.build_all(tmp_path_factory.mktemp("demo-models"))


def test_builds_every_demo_repo(built: dict[str, Path]) -> None:
    assert set(built) == {"demo/tiny-gpt2", "demo/tiny-gpt2-bin", "demo/evil-pickle", "demo/remote-code"}
    for repo_id, path in built.items():
        assert path.is_dir() and path.as_posix().endswith(repo_id)
    assert {p.name for p in built["demo/tiny-gpt2"].iterdir()} == {
        "README.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }


def test_build_is_byte_identical(built: dict[str, Path], tmp_path: Path) -> None:
    first_root = built["demo/tiny-gpt2"].parents[1]
    again = demo_models.build_all(tmp_path)
    assert set(again) == set(built)
    first, second = _digests(first_root), _digests(tmp_path)
    assert first and first == second


def test_model_cards_have_hub_front_matter(built: dict[str, Path]) -> None:
    for path in built.values():
        card = _front_matter(path / "README.md")
        assert card["license"] == "apache-2.0"
        assert "base_model" not in card
        assert "airlock-demo" in card["tags"]
    assert _front_matter(built["demo/tiny-gpt2"] / "README.md")["pipeline_tag"] == "text-generation"


def test_evil_pickle_payload_is_marker_only(built: dict[str, Path]) -> None:
    data = (built["demo/evil-pickle"] / "pytorch_model.bin").read_bytes()
    assert demo_models.EVIL_MARKER.encode() in data
    assert data.startswith(b"PK\x03\x04"), "expected torch's zip checkpoint layout"

    with zipfile.ZipFile(built["demo/evil-pickle"] / "pytorch_model.bin") as archive:
        assert archive.namelist() == ["pytorch_model/data.pkl", "pytorch_model/byteorder", "pytorch_model/version"]
        pickle_bytes = archive.read("pytorch_model/data.pkl")
    assert pickle_bytes == demo_models.evil_pickle_bytes()

    # Static opcode walk: the only global is os.system and its only argument is the marker command.
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(pickle_bytes)]
    assert [arg for name, arg in ops if name in {"GLOBAL", "STACK_GLOBAL", "INST"}] == ["os system"]
    strings = [arg for name, arg in ops if name == "BINUNICODE"]
    assert f"touch {demo_models.EVIL_MARKER}" in strings
    assert demo_models.EVIL_MARKER.startswith("/tmp/")


def test_tiny_gpt2_bin_matches_safetensors(built: dict[str, Path]) -> None:
    import torch
    from safetensors.torch import load_file

    reference = load_file(str(built["demo/tiny-gpt2"] / "model.safetensors"))
    pickled = torch.load(built["demo/tiny-gpt2-bin"] / "pytorch_model.bin", weights_only=True)
    assert list(pickled) == list(reference)
    for name, tensor in reference.items():
        assert torch.equal(pickled[name], tensor), name
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (built["demo/tiny-gpt2-bin"] / name).read_bytes() == (built["demo/tiny-gpt2"] / name).read_bytes()


def test_tiny_gpt2_loads_and_generates_on_cpu(built: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(built["demo/tiny-gpt2"]))
    model = AutoModelForCausalLM.from_pretrained(str(built["demo/tiny-gpt2"]))
    inputs = tokenizer("The keeper of the light", return_tensors="pt")
    output = model.generate(
        **inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=tokenizer.eos_token_id
    )
    assert output.shape[1] == inputs["input_ids"].shape[1] + 5
    assert len(tokenizer) == model.config.vocab_size == demo_models.VOCAB_SIZE


def test_remote_code_repo_wires_auto_map_to_shipped_harmless_code(built: dict[str, Path]) -> None:
    import json

    repo = built["demo/remote-code"]
    config = json.loads((repo / "config.json").read_text())
    for target in config["auto_map"].values():
        module, _, cls = target.rpartition(".")
        source = (repo / f"{module}.py").read_text()
        tree = ast.parse(source)  # parse only; never import remote code in a test
        assert cls in {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert imported <= {"torch", "transformers", "configuration_tiny", ""}, imported
    assert (repo / "model.safetensors").read_bytes()[8:9] == b"{"  # safetensors header, not a pickle


# --------------------------------------------------------------------------- demo hub helpers


def test_lfs_rules_follow_hub_gitattributes() -> None:
    patterns = demo_hub.lfs_patterns()
    for path in ("model.safetensors", "pytorch_model.bin", "sub/dir/x.pt", "saved_model/variables/v.data"):
        assert demo_hub.is_lfs_path(path, patterns), path
    for path in ("config.json", "tokenizer.json", "README.md", "modeling_tiny.py", ".gitattributes"):
        assert not demo_hub.is_lfs_path(path, patterns), path


def test_lfs_pointer_matches_olah_regex() -> None:
    data = b"x" * 566856
    oid, pointer = demo_hub.lfs_pointer(data)
    match = OLAH_LFS_POINTER.match(pointer)
    assert match and match.group(1).decode() == oid == hashlib.sha256(data).hexdigest()
    assert int(match.group(2)) == len(data)
    assert 120 < len(pointer) < 150, "olah only inspects blobs of 121..149 bytes for LFS pointers"


def test_olah_config_is_offline_and_points_at_mirrors(tmp_path: Path) -> None:
    config = tomllib.loads(demo_hub.olah_config_text(tmp_path, "127.0.0.1", 18090))
    assert config["accessibility"]["offline"] is True
    assert config["basic"]["host"] == "127.0.0.1" and config["basic"]["port"] == 18090
    assert config["basic"]["mirrors-path"] == [str(tmp_path.resolve() / "mirrors")]
    assert [rule["repo"] for rule in config["accessibility"]["proxy"]] == ["demo/*"]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_publish_repo_is_deterministic_git_lfs(built: dict[str, Path], tmp_path: Path) -> None:
    model_dir = built["demo/tiny-gpt2"]
    first = demo_hub.publish_repo(model_dir, tmp_path / "a" / "tiny-gpt2", "demo/tiny-gpt2")
    second = demo_hub.publish_repo(model_dir, tmp_path / "b" / "tiny-gpt2", "demo/tiny-gpt2")
    again = demo_hub.publish_repo(model_dir, tmp_path / "a" / "tiny-gpt2", "demo/tiny-gpt2")
    assert re.fullmatch(r"[0-9a-f]{40}", first) and first == second == again

    repo = tmp_path / "a" / "tiny-gpt2"

    def git(*args: str) -> bytes:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True).stdout

    assert git("rev-parse", "main").decode().strip() == first
    assert git("symbolic-ref", "HEAD").decode().strip() == "refs/heads/main"
    weights = (model_dir / "model.safetensors").read_bytes()
    pointer = git("cat-file", "blob", "main:model.safetensors")
    oid, expected_pointer = demo_hub.lfs_pointer(weights)
    assert pointer == expected_pointer
    assert demo_hub.lfs_object_path(repo, oid).read_bytes() == weights
    config_bytes = (model_dir / "config.json").read_bytes()
    assert git("rev-parse", "main:config.json").decode().strip() == demo_hub.git_blob_sha1(config_bytes)
