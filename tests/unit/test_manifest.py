"""The manifest: root digest equal to model_signing's, one-pass sha256 + git sha1, refusals, the saved pass."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from airlock.cli import main
from airlock.errors import IntegrityError, ManifestError
from airlock.manifest import (
    MODEL_SIGNING_IGNORE,
    DigestSet,
    Manifest,
    ModelRef,
    PublishedCheck,
    build_manifest,
    check_unchanged,
    hash_file,
    hash_tree,
    manifest_for_directory,
    manifest_from_pass,
    walk_files,
)


def model_signing_root_digest(path: Path) -> str:
    """What upstream model_signing puts in the signed statement's subject for ``path``."""
    from model_signing import hashing
    from model_signing._signing.signing import Payload

    manifest = hashing.Config().use_file_serialization().hash(path)
    return Payload(manifest).statement.pb.subject[0].digest["sha256"]


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    files = {
        "config.json": b'{"model_type": "gpt2"}',
        "model.safetensors": os.urandom(3 * 1024 * 1024 + 17),  # more than one read chunk
        "empty.txt": b"",
        # Path-segment order is not string order: "a/b" < "a.b" < "a0" for model_signing.
        "a/b": b"inner",
        "a.b": b"dotted",
        "a0": b"zero",
        "sub/.gitattributes": b"nested: not ignored",
        "unicodé.md": b"u",
        # model_signing's default ignore set (top level only).
        ".gitattributes": b"*.bin filter=lfs",
        ".gitignore": b"*.tmp",
        ".git/HEAD": b"ref: refs/heads/main",
        ".github/workflows/ci.yml": b"on: push",
    }
    for relative, data in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def test_root_digest_equals_model_signing(model_dir: Path) -> None:
    manifest = manifest_for_directory(model_dir)
    assert manifest.root_digest == model_signing_root_digest(model_dir)
    assert [f.path for f in manifest.files] == [
        "a/b", "a.b", "a0", "config.json", "empty.txt", "model.safetensors", "sub/.gitattributes", "unicodé.md"
    ]
    assert manifest.serialization.ignore_paths == MODEL_SIGNING_IGNORE


def test_manifest_json_has_the_architecture_shape(model_dir: Path) -> None:
    data = manifest_for_directory(model_dir).to_json_dict()
    assert data["schema"] == "airlock.manifest/v1"
    assert set(data["model"]) == {"name", "source", "revision"}
    assert set(data["files"][0]) == {"path", "size", "sha256", "published"}
    assert Manifest.model_validate(data).root_digest == data["root_digest"]


def test_one_pass_gives_sha256_and_git_blob_sha1(model_dir: Path) -> None:
    digest = hash_file(model_dir / "model.safetensors", "model.safetensors", git_sha1=True)
    git = subprocess.run(
        ["git", "hash-object", "--no-filters", str(model_dir / "model.safetensors")],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    import hashlib

    assert digest.git_sha1 == git
    assert digest.sha256 == hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert hash_file(model_dir / "config.json", "config.json").git_sha1 is None


def test_git_sha1_only_where_asked(model_dir: Path) -> None:
    digests = hash_tree(model_dir, include_ignored=True, git_sha1_for={"config.json", ".gitattributes"}.__contains__)
    with_sha1 = {d.path for d in digests if d.git_sha1}
    assert with_sha1 == {"config.json", ".gitattributes"}
    assert {".git/HEAD", ".gitattributes"} <= {d.path for d in digests}


def test_hashing_memory_stays_flat(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as handle:
        for _ in range(32):
            handle.write(os.urandom(1024 * 1024))
    tracemalloc.start()
    hash_file(big, "big.bin", git_sha1=True)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4 * 1024 * 1024  # one 1 MiB buffer, never the 32 MiB file


def test_symlinks_are_refused_like_model_signing(model_dir: Path) -> None:
    (model_dir / "link.json").symlink_to(model_dir / "config.json")
    with pytest.raises(ManifestError, match="link.json: is a symlink"):
        manifest_for_directory(model_dir)
    with pytest.raises(ValueError, match="symlink"):
        model_signing_root_digest(model_dir)


def test_special_files_are_refused(model_dir: Path) -> None:
    os.mkfifo(model_dir / "pipe")
    with pytest.raises(ManifestError, match="pipe: is a special file"):
        walk_files(model_dir)


def test_a_symlinked_root_is_refused(model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "alias").symlink_to(model_dir)
    with pytest.raises(ManifestError, match="is a symlink"):
        manifest_for_directory(tmp_path / "alias")


def test_a_manifest_that_does_not_add_up_is_rejected(model_dir: Path) -> None:
    data = manifest_for_directory(model_dir).to_json_dict()
    with pytest.raises(ValueError, match="root_digest does not match"):
        Manifest.model_validate({**data, "root_digest": "0" * 64})
    with pytest.raises(ValueError, match="path-segment order"):
        Manifest.model_validate({**data, "files": list(reversed(data["files"]))})


def test_published_checks_name_exactly_one_checksum() -> None:
    PublishedCheck(sha256="a" * 64, by="hub-lfs", ok=True)
    with pytest.raises(ValueError, match="exactly one"):
        PublishedCheck(sha256="a" * 64, git_sha1="b" * 40, by="x", ok=True)


def test_manifest_from_the_saved_pass_needs_no_second_read(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    digests_file = model_dir.parent / "digests.json"
    digests = hash_tree(model_dir, include_ignored=True)
    checks = {"config.json": PublishedCheck(git_sha1="c" * 40, by="hub-git-blob", ok=True)}
    DigestSet(files=tuple(digests), published=checks).save(digests_file)

    import airlock.manifest as manifest_module

    monkeypatch.setattr(manifest_module, "hash_file", lambda *a, **k: pytest.fail("read a file again"))
    model = ModelRef(name="demo/x", source="hf://demo/x", revision="f" * 40)
    manifest = manifest_from_pass(model_dir, digests_file, model)
    assert manifest.root_digest == model_signing_root_digest(model_dir)
    assert manifest.model == model
    assert {f.path: f.published for f in manifest.files}["config.json"] == checks["config.json"]


def test_without_a_saved_pass_there_is_no_manifest(model_dir: Path) -> None:
    with pytest.raises(ManifestError, match="no verified hashing pass"):
        manifest_from_pass(model_dir, model_dir.parent / "missing.json", ModelRef(name="x", source="file:///x"))


@pytest.mark.parametrize("change", ["modify", "append", "add", "remove"])
def test_a_file_changed_after_the_pass_is_an_integrity_error(model_dir: Path, change: str) -> None:
    recorded = DigestSet(files=tuple(hash_tree(model_dir, include_ignored=True)))
    target = model_dir / "config.json"
    if change == "modify":
        stat = target.stat()
        target.write_bytes(b'{"model_type": "evil"}')
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    elif change == "append":
        with target.open("ab") as handle:
            handle.write(b" ")
    elif change == "add":
        (model_dir / "extra.bin").write_bytes(b"x")
    else:
        target.unlink()
    with pytest.raises(IntegrityError, match=r"config\.json|extra\.bin"):
        check_unchanged(model_dir, recorded)


def test_build_manifest_leaves_ignored_paths_out(model_dir: Path) -> None:
    digests = hash_tree(model_dir, include_ignored=True)
    manifest = build_manifest(ModelRef(name="m", source="file:///m"), digests)
    assert not any(f.path.startswith((".git", ".github")) for f in manifest.files)
    assert manifest.root_digest == model_signing_root_digest(model_dir)


def test_cli_hash_prints_the_manifest_as_json(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hash", str(model_dir), "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["root_digest"] == model_signing_root_digest(model_dir)
    assert printed["model"]["name"] == "model"


def test_cli_hash_refuses_a_symlink_with_exit_2(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (model_dir / "link").symlink_to("/etc/hostname")
    assert main(["hash", str(model_dir)]) == 2
    assert "link: is a symlink" in capsys.readouterr().err


def test_the_copied_tree_hashes_the_same(model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    assert manifest_for_directory(copy).root_digest == manifest_for_directory(model_dir).root_digest
