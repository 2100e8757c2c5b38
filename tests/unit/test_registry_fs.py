"""The filesystem registry backend: the shared contract plus what is particular to a local directory."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airlock.cli import EXIT_ERROR, EXIT_OK, main
from airlock.registry import FilesystemStore, Registry, RegistryError, VersionNotFoundError, open_registry
from airlock.registry.base import PARTIAL_PREFIX, Layout, ModelName
from tests.registry_contract import MODEL, SIGNER, TRUST, RegistryContract, request


@pytest.fixture()
def registry_root(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture()
def registry_spec(registry_root: Path) -> str:
    return str(registry_root)


@pytest.fixture()
def registry_factory(registry_root: Path) -> Callable[..., Registry]:
    def factory(store_wrapper: Callable[[Any], Any] | None = None, workers: int = 8) -> Registry:
        store = FilesystemStore(registry_root)
        return Registry(store_wrapper(store) if store_wrapper else store, workers=workers, signer=SIGNER,
                        trust=TRUST)

    return factory


class TestFilesystemRegistry(RegistryContract):
    pass


# --------------------------------------------------------------------------- filesystem specifics


def test_layout_on_disk_and_objects_are_read_only(registry_factory: Callable[..., Registry], registry_root: Path,
                                                  tmp_path: Path) -> None:
    registry_factory().promote(request(tmp_path))
    version_dir = registry_root / "models" / "demo" / "tiny" / "1"
    assert sorted(p.relative_to(version_dir).as_posix() for p in version_dir.rglob("*") if p.is_file()) == [
        "RELEASED", "aibom.cdx.json", "files/config.json", "files/model.safetensors", "files/tokenizer/vocab.json",
        "model.sig", "promotion.json", "reports/scan.json",
    ]
    assert (registry_root / "index" / "demo" / "tiny" / "events" / "0000000000.json").is_file()
    for path in version_dir.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o444, path


def test_a_partial_write_is_invisible_and_a_rerun_completes(registry_factory: Callable[..., Registry],
                                                            registry_root: Path, tmp_path: Path) -> None:
    # What a process killed in the middle of copying a file leaves behind: a hidden partial file, no key.
    req = request(tmp_path)
    files_dir = registry_root / "models" / "demo" / "tiny" / "1" / "files"
    files_dir.mkdir(parents=True)
    (files_dir / f"{PARTIAL_PREFIX}dead.model.safetensors").write_bytes(b"half a file")
    registry = registry_factory()
    assert registry.list() == []
    with pytest.raises(VersionNotFoundError):
        registry.released(MODEL, "1")
    assert registry.promote(req).created
    assert registry.verify_version(MODEL, "1").status == "approved"


def test_put_if_absent_never_replaces(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path)
    import hashlib

    first, second = b"first", b"second"
    assert store.put_if_absent("a/b", first, len(first), hashlib.sha256(first).hexdigest())
    assert not store.put_if_absent("a/b", second, len(second), hashlib.sha256(second).hexdigest())
    assert (tmp_path / "a" / "b").read_bytes() == first
    assert [n for n in os.listdir(tmp_path / "a")] == ["b"]  # no partial file left behind


def test_tampered_stored_file_is_reported_by_verify(registry_factory: Callable[..., Registry], registry_root: Path,
                                                    tmp_path: Path) -> None:
    registry = registry_factory()
    registry.promote(request(tmp_path))
    target = registry_root / "models" / "demo" / "tiny" / "1" / "files" / "config.json"
    target.chmod(0o644)
    target.write_text("{}")
    with pytest.raises(RegistryError, match="files/config.json"):
        registry.verify_version(MODEL, "1")


def test_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "reg")
    with pytest.raises(RegistryError, match="not a relative POSIX path"):
        store.put_if_absent("../escape", b"x", 1, "0" * 64)
    with pytest.raises(RegistryError):
        ModelName.parse("../etc")
    with pytest.raises(RegistryError):
        Layout.version_prefix(ModelName.parse("a/b"), "../1")


def test_unsafe_manifest_paths_are_refused(registry_factory: Callable[..., Registry], tmp_path: Path) -> None:
    from tests.registry_contract import Row

    req = request(tmp_path)
    bad = (*req.files, Row("../outside", 1, "0" * 64))
    with pytest.raises(RegistryError, match="not a safe relative POSIX path"):
        registry_factory().promote(type(req)(**{**req.__dict__, "files": bad}))


def test_open_registry_reads_airlock_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIRLOCK_REGISTRY", str(tmp_path / "r"))
    assert open_registry().url == (tmp_path / "r").as_uri()
    assert open_registry(f"file://{tmp_path}/r2").url == (tmp_path / "r2").as_uri()
    with pytest.raises(RegistryError, match="AIRLOCK_REGISTRY"):
        open_registry("gs://bucket/x")


# --------------------------------------------------------------------------- CLI


def test_cli_list_show_revoke_deprecate(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                        registry_factory: Callable[..., Registry], registry_root: Path,
                                        tmp_path: Path) -> None:
    registry = registry_factory()
    registry.promote(request(tmp_path, version="1", flavour="a"))
    registry.promote(request(tmp_path, version="2", flavour="b"))
    monkeypatch.setenv("AIRLOCK_REGISTRY", str(registry_root))
    monkeypatch.setenv("AIRLOCK_ACTOR", "carol")
    # The CLI signs the index checkpoint with the Vault key (here: the test key) and verifies with the host's store.
    import airlock.commands.registry as registry_command

    monkeypatch.setattr(registry_command, "_signer", lambda: SIGNER)
    TRUST.write(tmp_path / "trust.pem")
    monkeypatch.setenv("AIRLOCK_TRUST_STORE", str(tmp_path / "trust.pem"))

    assert main(["registry", "revoke", f"{MODEL}@1", "--reason", "leaked eval set"]) == EXIT_OK
    assert "demo/tiny@1 revoked by carol" in capsys.readouterr().out
    assert main(["registry", "deprecate", f"{MODEL}@2", "--reason", "old", "--format", "json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["kind"] == "deprecated"

    assert main(["registry", "list"]) == EXIT_OK
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["MODEL", "VERSION", "STATUS", "TIER"]
    assert table[1].split()[:3] == [MODEL, "1", "revoked"] and table[1].endswith("leaked eval set")
    assert table[2].split()[:3] == [MODEL, "2", "deprecated"]

    assert main(["registry", "list", "--format", "json", "--status", "revoked"]) == EXIT_OK
    listed = json.loads(capsys.readouterr().out)
    assert [(v["version"], v["status"], v["reason"]) for v in listed["versions"]] == [
        ("1", "revoked", "leaked eval set")]

    assert main(["registry", "show", MODEL]) == EXIT_OK
    shown = capsys.readouterr().out
    assert "history:" in shown and "revoked 1 by carol: leaked eval set" in shown

    assert main(["registry", "show", f"{MODEL}@2", "--format", "json"]) == EXIT_OK
    version = json.loads(capsys.readouterr().out)
    assert version["status"] == "deprecated"
    assert {o["key"] for o in version["objects"]} >= {"model.sig", "aibom.cdx.json", "files/config.json"}

    assert main(["registry", "show", f"{MODEL}@9"]) == EXIT_ERROR
    assert "demo/tiny@9 is not a released version" in capsys.readouterr().err
    assert main(["registry", "revoke", f"{MODEL}@1", "--reason", "again"]) == EXIT_ERROR
    assert "is revoked" in capsys.readouterr().err
