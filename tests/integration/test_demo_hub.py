"""Integration tests for the demo hub: olah serving the repos from ``scripts/demo_hub.py``.

Needs the running stack (``make stack-up``; ``. .airlock/env`` sets
``AIRLOCK_HUB_ENDPOINT``). Everything goes through ``huggingface_hub`` exactly as
Airlock's source stage would: resolve ``main`` to a commit sha, pin it, list the
tree, download, and check the published checksums (LFS sha256, git blob sha1)
against the downloaded bytes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import require_env

REPO = "demo/tiny-gpt2"
DEMO_REPOS = ("demo/tiny-gpt2", "demo/tiny-gpt2-bin", "demo/evil-pickle", "demo/remote-code")
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def endpoint() -> str:
    return require_env("AIRLOCK_HUB_ENDPOINT").rstrip("/")


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


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _git_blob_sha1(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture(scope="module")
def api(endpoint: str):
    from huggingface_hub import HfApi

    # token=False: never send a developer's real HF token to the local hub.
    return HfApi(endpoint=endpoint, token=False)


@pytest.fixture(scope="module")
def pinned_sha(api) -> str:
    sha = api.repo_info(REPO, revision="main").sha
    assert sha and re.fullmatch(r"[0-9a-f]{40}", sha), sha
    return sha


@pytest.fixture(scope="module")
def tree(api, pinned_sha: str) -> dict:
    from huggingface_hub.hf_api import RepoFile

    entries = api.list_repo_tree(REPO, revision=pinned_sha, recursive=True)
    return {entry.path: entry for entry in entries if isinstance(entry, RepoFile)}


@pytest.fixture(scope="module")
def snapshot(endpoint: str, pinned_sha: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from huggingface_hub import snapshot_download

    target = tmp_path_factory.mktemp("hub-snapshot")
    path = snapshot_download(REPO, revision=pinned_sha, endpoint=endpoint, local_dir=target, token=False)
    return Path(path)


def test_main_resolves_to_a_stable_commit(api, pinned_sha: str) -> None:
    assert api.repo_info(REPO, revision=pinned_sha).sha == pinned_sha


@pytest.mark.parametrize("repo_id", DEMO_REPOS)
def test_every_demo_repo_is_served_with_lfs_weights(api, repo_id: str) -> None:
    from huggingface_hub.hf_api import RepoFile

    sha = api.repo_info(repo_id, revision="main").sha
    files = [f for f in api.list_repo_tree(repo_id, revision=sha, recursive=True) if isinstance(f, RepoFile)]
    weights = [f for f in files if f.path.endswith((".safetensors", ".bin"))]
    assert weights, f"{repo_id} lists no weights"
    assert all(f.lfs is not None and re.fullmatch(r"[0-9a-f]{64}", f.lfs.sha256) for f in weights)
    assert ".gitattributes" in {f.path for f in files}


def test_tree_lists_safetensors_as_lfs_with_sha256(tree: dict, snapshot: Path) -> None:
    weights = tree["model.safetensors"]
    assert weights.lfs is not None
    assert weights.lfs.sha256 == _sha256(snapshot / "model.safetensors")
    assert weights.lfs.size == weights.size == (snapshot / "model.safetensors").stat().st_size


def test_non_lfs_blob_ids_are_git_blob_sha1(tree: dict, snapshot: Path) -> None:
    plain = {path: entry for path, entry in tree.items() if entry.lfs is None}
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "README.md"} <= set(plain)
    for path, entry in plain.items():
        assert entry.blob_id == _git_blob_sha1(snapshot / path), path


def test_snapshot_at_pinned_sha_matches_published_checksums(tree: dict, snapshot: Path) -> None:
    downloaded = {
        p.relative_to(snapshot).as_posix()
        for p in snapshot.rglob("*")
        if p.is_file() and ".cache" not in p.relative_to(snapshot).parts
    }
    assert downloaded == set(tree)
    for path, entry in tree.items():
        if entry.lfs is not None:
            assert _sha256(snapshot / path) == entry.lfs.sha256, path
        else:
            assert _git_blob_sha1(snapshot / path) == entry.blob_id, path


def test_downloaded_tiny_gpt2_generates_on_cpu(snapshot: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(snapshot))
    model = AutoModelForCausalLM.from_pretrained(str(snapshot))
    inputs = tokenizer("The keeper of the light", return_tensors="pt")
    output = model.generate(
        **inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=tokenizer.eos_token_id
    )
    assert output.shape[1] == inputs["input_ids"].shape[1] + 5
    assert isinstance(tokenizer.decode(output[0]), str)


def test_hub_serves_the_current_deterministic_build(api, tmp_path: Path) -> None:
    """Rebuilding from this checkout gives the commit shas the hub serves (else the hub is stale)."""
    expected = _load_script("demo_hub").build_hub(tmp_path)
    served = {repo_id: api.repo_info(repo_id, revision="main").sha for repo_id in expected}
    assert served == expected
