"""Partial files a killed promotion leaves are found, listed by ``registry check`` and cleaned by the next promotion.

The "killed" writer is a real child process that starts a put-if-absent and
SIGKILLs itself halfway through writing the partial, so the lock it held dies
with it exactly as it would in a crash. A live writer is a child that holds
its partial and waits.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import airlock.registry.leftovers as leftovers_policy
from airlock.cli import EXIT_NEGATIVE, EXIT_OK, main
from airlock.registry import FilesystemStore, Registry, RegistryError
from airlock.registry.base import PARTIAL_PREFIX, Layout, ModelName
from tests.registry_contract import MODEL, SIGNER, TRUST, request

NAME = ModelName.parse(MODEL)

_WRITER = r"""
import os, signal, sys
from pathlib import Path
from airlock.registry.filesystem import FilesystemStore

root, key, mode = sys.argv[1:4]

def write_half(fd, source):
    os.write(fd, b"half of a file")
    if mode == "die":
        os.kill(os.getpid(), signal.SIGKILL)  # killed mid-write: no cleanup code runs
    print("writing", flush=True)
    sys.stdin.read()  # a live, slow writer: holds its partial until the test lets go
    raise SystemExit(0)

FilesystemStore._write_partial = staticmethod(write_half)
FilesystemStore(Path(root)).put_if_absent(key, b"x" * 100, 100, "0" * 64)
"""


def _killed_writer(root: Path, key: str) -> Path:
    """Run a writer of ``key`` that dies mid-write; the partial it leaves behind."""
    before = set(_partials(root))
    done = subprocess.run([sys.executable, "-c", _WRITER, str(root), key, "die"], capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr
    [partial] = set(_partials(root)) - before
    return partial


@pytest.fixture()
def live_writer(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(registry root, key) with a running writer holding the key's partial."""
    root = tmp_path / "registry"
    key = Layout.key(NAME, "1", "files/model.safetensors")
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(root), key, "live"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "writing\n"
        yield root, key
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=60)


def _registry(root: Path) -> Registry:
    return Registry(FilesystemStore(root), signer=SIGNER, trust=TRUST)


def _partials(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(f"{PARTIAL_PREFIX}*")) if root.exists() else []


@pytest.fixture()
def no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    # The grace period covers the instant between creating a partial and locking it; these tests' dead
    # partials are only milliseconds old, so judge them by the lock alone.
    monkeypatch.setattr(leftovers_policy, "PARTIAL_GRACE_S", 0.0)


# --------------------------------------------------------------------------- the store


def test_a_killed_writers_partial_is_stale_and_removable(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    store = FilesystemStore(root)
    partial = _killed_writer(root, Layout.key(NAME, "1", "files/model.safetensors"))
    [item] = store.leftovers("")
    assert item.key == partial.relative_to(root).as_posix() and item.kind == "partial file"
    assert item.size == len(b"half of a file")
    # Within the grace period it is still given the benefit of the doubt...
    assert item.live and "grace" in item.why
    assert not store.remove_leftover(item) and partial.exists()
    # ...after it, nobody holding the lock means nobody is writing it.
    later = time.time() + leftovers_policy.PARTIAL_GRACE_S + 1
    [item] = store.leftovers("", now=later)
    assert not item.live and "no writer" in item.why
    assert store.remove_leftover(item, now=later)
    assert _partials(root) == []


def test_a_live_writers_partial_is_never_removed(live_writer: tuple[Path, str]) -> None:
    root, _key = live_writer
    store = FilesystemStore(root)
    much_later = time.time() + 10 * leftovers_policy.PARTIAL_UNLOCKED_STALE_S
    [item] = store.leftovers("", now=much_later)
    assert item.live and "locked by a running writer" in item.why
    assert not store.remove_leftover(item, now=much_later)
    assert len(_partials(root)) == 1


def test_remove_leftover_refuses_anything_but_a_partial(tmp_path: Path) -> None:
    from airlock.registry.leftovers import Leftover

    store = FilesystemStore(tmp_path)
    (tmp_path / "RELEASED").write_text("x")
    with pytest.raises(RegistryError, match="not a partial file"):
        store.remove_leftover(Leftover(key="RELEASED", kind="partial file", size=1, age_s=1e9, live=False, why=""))
    assert (tmp_path / "RELEASED").exists()


# --------------------------------------------------------------------------- promotion cleans its version


def test_the_next_promotion_of_the_version_cleans_only_its_own_dead_partials(tmp_path: Path, no_grace: None) -> None:
    root = tmp_path / "registry"
    mine = _killed_writer(root, Layout.key(NAME, "1", "files/model.safetensors"))
    report = _killed_writer(root, Layout.key(NAME, "1", "reports/scan.json"))
    other_version = _killed_writer(root, Layout.key(NAME, "2", "files/model.safetensors"))
    other_model = _killed_writer(root, Layout.key(ModelName.parse("demo/other"), "1", "files/x.bin"))

    _registry(root).promote(request(tmp_path, version="1"))

    assert not mine.exists() and not report.exists()
    assert other_version.exists() and other_model.exists()  # only partials of the version promoted


def test_promotion_keeps_a_partial_a_live_writer_owns(live_writer: tuple[Path, str], tmp_path: Path,
                                                      no_grace: None) -> None:
    root, _key = live_writer
    [partial] = _partials(root)
    _registry(root).promote(request(tmp_path, version="1"))
    assert partial.exists()


# --------------------------------------------------------------------------- airlock registry check


def test_registry_check_lists_leftovers_exit_1_and_clean_removes_them(
        tmp_path: Path, no_grace: None, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "registry"
    _registry(root).promote(request(tmp_path, version="1"))
    assert main(["registry", "check", "--registry", str(root)]) == EXIT_OK
    assert "1 released version(s) checked" in capsys.readouterr().out

    partial = _killed_writer(root, Layout.key(NAME, "2", "files/model.safetensors"))
    assert main(["registry", "check", "--registry", str(root)]) == EXIT_NEGATIVE
    out = capsys.readouterr().out
    assert f"PROBLEM  {partial.relative_to(root).as_posix()}: leftover partial file" in out

    assert main(["registry", "check", "--registry", str(root), "--format", "json"]) == EXIT_NEGATIVE
    data = json.loads(capsys.readouterr().out)
    assert [item["key"] for item in data["leftovers"]] == [partial.relative_to(root).as_posix()]

    assert main(["registry", "check", "--registry", str(root), "--clean"]) == EXIT_OK
    assert "removed  " in capsys.readouterr().out
    assert _partials(root) == []
    assert main(["registry", "check", "--registry", str(root)]) == EXIT_OK


def test_registry_check_reports_a_live_partial_as_a_note_not_a_problem(
        live_writer: tuple[Path, str], no_grace: None, capsys: pytest.CaptureFixture[str]) -> None:
    root, _key = live_writer
    assert main(["registry", "check", "--registry", str(root)]) == EXIT_OK
    assert "in progress (locked by a running writer)" in capsys.readouterr().out


def test_registry_check_finds_a_damaged_release(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "registry"
    TRUST.write(tmp_path / "trust.pem")  # --deep verifies versions against the host's trust store
    monkeypatch.setenv("AIRLOCK_TRUST_STORE", str(tmp_path / "trust.pem"))
    _registry(root).promote(request(tmp_path, version="1"))
    weights = root / Layout.key(NAME, "1", "files/model.safetensors")
    weights.chmod(0o644)
    weights.write_bytes(b"\0" * weights.stat().st_size)
    assert main(["registry", "check", "--registry", str(root)]) == EXIT_OK  # records intact: the cheap check passes
    capsys.readouterr()
    assert main(["registry", "check", "--registry", str(root), "--deep"]) == EXIT_NEGATIVE
    assert "files/model.safetensors" in capsys.readouterr().out
    (root / Layout.key(NAME, "1", Layout.PLAN)).chmod(0o644)
    (root / Layout.key(NAME, "1", Layout.PLAN)).write_text("{}")
    assert main(["registry", "check", "--registry", str(root)]) == EXIT_NEGATIVE
    assert f"PROBLEM  {MODEL}@1" in capsys.readouterr().out
