"""A file that changes while it is hashed is refused, naming it: the digest would describe no file that existed.

The rewrite is done from ``posix_fadvise``, which the hashing helper calls on
the open file after its first ``fstat`` and before the first read: exactly the
window an attacker racing the hash has.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airlock.cli import EXIT_ERROR, main
from airlock.errors import IntegrityError, ManifestError
from airlock.manifest import DigestSet, check_unchanged, hash_file, hash_tree

SIZE = 3 * (1 << 20) + 17  # several read chunks


def _model(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "weights.bin").write_bytes(b"\x01" * SIZE)
    return model


def _rewrite_in_place_keeping_mtime(path: Path) -> None:
    before = os.stat(path)
    with open(path, "r+b") as out:  # same inode, same size, other bytes
        out.write(b"\x02" * SIZE)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # an attacker can set the mtime back, not ctime


def _on_first_read(monkeypatch: pytest.MonkeyPatch, target: Path, action) -> None:
    real = os.posix_fadvise
    fired = []

    def hook(fd: int, offset: int, length: int, advice: int) -> None:
        if not fired and os.fstat(fd).st_ino == os.stat(target).st_ino:
            fired.append(True)
            action(target)
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", hook)


def test_a_same_size_in_place_rewrite_during_hashing_is_refused(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(tmp_path)
    _on_first_read(monkeypatch, model / "weights.bin", _rewrite_in_place_keeping_mtime)
    with pytest.raises(ManifestError, match=r"weights\.bin: changed while hashing"):
        hash_tree(model)


def test_a_rename_swap_during_hashing_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(tmp_path)

    def swap(path: Path) -> None:
        other = path.with_name("other")
        other.write_bytes(b"\x03" * SIZE)
        os.replace(other, path)  # the open fd still reads the old inode; the path names another file

    _on_first_read(monkeypatch, model / "weights.bin", swap)
    with pytest.raises(ManifestError, match=r"weights\.bin: changed while hashing"):
        hash_file(model / "weights.bin", "weights.bin")


def test_airlock_hash_exits_2_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    model = _model(tmp_path)
    _on_first_read(monkeypatch, model / "weights.bin", _rewrite_in_place_keeping_mtime)
    assert main(["hash", str(model), "--workers", "1"]) == EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("airlock hash: weights.bin: changed while hashing")
    assert captured.err.count("\n") == 1


def test_an_unchanged_file_hashes_and_records_its_identity(tmp_path: Path) -> None:
    model = _model(tmp_path)
    digest = hash_file(model / "weights.bin", "weights.bin")
    info = os.stat(model / "weights.bin")
    assert (digest.size, digest.inode, digest.device, digest.ctime_ns) == (
        SIZE, info.st_ino, info.st_dev, info.st_ctime_ns)


def test_a_rewrite_with_the_mtime_set_back_after_the_pass_is_caught(tmp_path: Path) -> None:
    # Between tasks (verification's pass, then the manifest): ctime is what gives the rewrite away.
    model = _model(tmp_path)
    recorded = DigestSet(files=tuple(hash_tree(model)))
    check_unchanged(model, recorded)
    _rewrite_in_place_keeping_mtime(model / "weights.bin")
    with pytest.raises(IntegrityError, match=r"changed: weights\.bin"):
        check_unchanged(model, recorded)
