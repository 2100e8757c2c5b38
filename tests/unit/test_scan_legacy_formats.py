"""Legacy and alternate formats the loaders still open are detected by the loaders' own dispatch.

joblib.load checks for ``ZF`` (its pre-0.10 format) and compressor prefixes before anything
else; torch.load opens whatever ``tarfile`` accepts (no ``ustar`` magic needed) before trying
pickles; pickle.load, joblib.load and np.load read opcodes from the first byte. "Looks like
text" is never a reason to skip such a file. Each malicious case is checked against the real
loader (a child process whose find_class refuses everything off the allowlist) and must block
at every tier with the named rule; benign legacy files keep their verdicts.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import struct
import sys
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scan_corpus
from airlock.scan import EXIT_ALLOWED, scan_model
from airlock.scan.detect import is_text, sniff
from airlock.scan.context import Blob
from scan_corpus import (
    CMD,
    glob,
    joblib_zfile,
    loader_reaches,
    posix_system_call,
    printable_tar,
    printable_zlib,
    sbu,
    tar_bytes,
)

TIERS = ("low", "medium", "high", "critical")
PROTOCOL0_PAYLOAD = b"cposix\nsystem\n(V" + CMD.encode() + b"\ntR."  # printable: a text file
BINARY_PAYLOAD = b"\x80\x04" + posix_system_call() + b"."


@pytest.fixture(autouse=True)
def no_marker() -> object:
    if os.path.exists(scan_corpus.MARKER):
        os.remove(scan_corpus.MARKER)
    yield
    assert not os.path.exists(scan_corpus.MARKER), "a payload ran"


def report_rules(path: Path, tier: str, action: str = "block") -> set[str]:
    return {f.rule for _, f in scan_model(path, tier).findings(action)}


# --------------------------------------------------------------------------- the cases


def case_zfile_printable() -> bytes:
    stream = printable_zlib(PROTOCOL0_PAYLOAD)
    data = joblib_zfile(stream, len(zlib.decompress(stream)))
    assert is_text(data), "the whole file is printable UTF-8"
    return data


def case_zfile_binary() -> bytes:
    return joblib_zfile(zlib.compress(BINARY_PAYLOAD), len(BINARY_PAYLOAD))


def case_tar_without_ustar() -> bytes:
    # torch.load's legacy tar, entirely printable: v7 headers, names from PAX records.
    data = printable_tar([("storages", PROTOCOL0_PAYLOAD), ("tensors", b"I0\n."), ("pickle", b"N.")])
    assert is_text(data) and b"ustar" not in data
    assert [m.name for m in tarfile.open(fileobj=io.BytesIO(data))] == ["storages", "tensors", "pickle"]
    return data


def case_tar_storages_only() -> bytes:
    # torch unpickles "storages" first; the payload sits after a raw storage record, where a
    # pickle-after-pickle scan stops ("trailing data").
    storages = (
        pickle.dumps(1, protocol=2)
        + b"\x80\x02" + sbu("k") + sbu("cpu") + glob("torch", "FloatStorage") + b"\x87."
        + struct.pack("<q", 1) + b"\0" * 4
        + BINARY_PAYLOAD
    )  # fmt: skip
    return tar_bytes([("storages", storages)])


def case_lzma_small_dictionary() -> bytes:
    # joblib recognises lzma by "]\0"; a 4 KiB dictionary makes the next bytes "\0\x10".
    return lzma.compress(BINARY_PAYLOAD, format=lzma.FORMAT_ALONE, filters=[{"id": lzma.FILTER_LZMA1, "dict_size": 4096}])


def case_tar_header_is_a_pickle() -> bytes:
    # A valid tar (torch reads a tar) whose name field is a pickle (pickle/joblib/np.load run it).
    raw = bytearray(tar_bytes([("x", b"hello")]))
    raw[0:100] = PROTOCOL0_PAYLOAD.ljust(100, b"\0")
    raw[148:156] = b" " * 8
    raw[148:156] = oct(sum(raw[:512]))[2:].rjust(6, "0").encode() + b"\0 "
    return bytes(raw)


def case_zlib_stream_that_is_a_tar() -> bytes:
    # One file, two loaders: joblib inflates it (prefix "x"), torch reads its first 512 bytes as a
    # tar header. The header's fields lie inside a stored deflate block (a bytes literal to the
    # pickle); the rest is deflated and inflates past joblib's 1 MiB read buffer, so joblib
    # never reaches the tar's bytes after the stream (it would spin on them).
    head = b"\x80\x04C\xc8" + b"\0" * 200 + b"0"  # PROTO, SHORT_BINBYTES of 200 (the header fields), POP
    rest = posix_system_call() + b"0" + b"B" + struct.pack("<I", 2 << 20) + b"\0" * (2 << 20) + b"0N."
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = bytearray(b"x\x01" + b"\x00" + struct.pack("<HH", len(head), len(head) ^ 0xFFFF) + head)
    raw += deflate.compress(rest) + deflate.flush()
    raw[100:108] = b"0000644\0"
    raw[124:136] = b"00000000000\0"  # a member of size 0: tarfile stops at the next (invalid) header
    raw[156:157] = b"0"
    raw[148:156] = b" " * 8
    raw[148:156] = oct(sum(raw[:512]))[2:].rjust(6, "0").encode() + b"\0 "
    inflated = zlib.decompressobj(-15)
    body = inflated.decompress(bytes(raw[2:]))
    raw += struct.pack(">I", zlib.adler32(body))
    assert zlib.decompress(bytes(raw))[: len(head)][:4] == head[:4] and len(body) > 1 << 20
    assert tarfile.open(fileobj=io.BytesIO(bytes(raw))).firstmember is not None
    return bytes(raw)


CASES: dict[str, tuple[Callable[[], bytes], str, tuple[str, ...], str, str]] = {
    # name: (builder, file name, loaders that reach the payload, rule that must block, detected format)
    "zfile_printable": (case_zfile_printable, "model.pkl", ("joblib",), "pickle.global.disallowed", "joblib_zfile"),
    "zfile_binary": (case_zfile_binary, "model.joblib", ("joblib",), "pickle.global.disallowed", "joblib_zfile"),
    "tar_without_ustar": (case_tar_without_ustar, "model.pt", ("torch",), "torch.legacy_tar", "tar"),
    "tar_storages_only": (case_tar_storages_only, "model.pt", ("torch",), "torch.legacy_tar", "tar"),
    "lzma_small_dictionary": (
        case_lzma_small_dictionary, "model.joblib", ("joblib",), "pickle.global.disallowed", "lzma",
    ),
    "tar_header_is_a_pickle": (
        case_tar_header_is_a_pickle, "model.bin", ("pickle", "joblib", "numpy"), "format.ambiguous", "tar",
    ),
    "zlib_stream_that_is_a_tar": (
        case_zlib_stream_that_is_a_tar, "model.bin", ("joblib",), "format.ambiguous", "tar",
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("legacy")
    return {name: scan_corpus.write(root, f"{name}/{case[1]}", case[0]()) for name, case in CASES.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_loader_formats_block_at_every_tier(built: dict[str, Path], name: str) -> None:
    rule, fmt = CASES[name][3], CASES[name][4]
    for tier in TIERS:
        report = scan_model(built[name], tier)
        assert report.verdict == "block" and rule in report_rules(built[name], tier), (name, tier)
        assert report.files[0].detected_format == fmt, (name, report.files[0].detected_format)
    if "pickle.global.disallowed" not in report_rules(built[name], "low"):
        return
    details = [f.detail for _, f in scan_model(built[name], "low").findings("block")]
    assert any("posix.system" in d for d in details), details


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_real_loaders_open_them(built: dict[str, Path], name: str) -> None:
    for loader in CASES[name][2]:
        assert "posix.system" in loader_reaches(built[name], loader), (name, loader)


def test_ambiguous_files_name_both_readings(built: dict[str, Path]) -> None:
    details = {f.rule: f.detail for _, f in scan_model(built["tar_header_is_a_pickle"], "low").findings()}
    assert "torch.load reads a tar" in details["format.ambiguous"] and "pickle.load" in details["format.ambiguous"]
    details = {f.rule: f.detail for _, f in scan_model(built["zlib_stream_that_is_a_tar"], "low").findings()}
    assert "joblib.load decompresses it (zlib)" in details["format.ambiguous"]


def test_lz4_joblib_files_cannot_be_read_and_block(tmp_path: Path) -> None:
    path = scan_corpus.write(tmp_path, "model.joblib", b"\x04\x22\x4d\x18\x40\x40\xc0" + bytes(32))
    for tier in TIERS:
        assert "archive.undecodable" in report_rules(path, tier), tier


def test_zfile_bomb_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from airlock import policy as policy_module

    low = policy_module.POLICIES[policy_module.RiskTier.LOW]
    monkeypatch.setitem(
        policy_module.POLICIES, policy_module.RiskTier.LOW, replace(low, max_archive_expanded_bytes=1 << 20)
    )
    payload = b"\x80\x04N" + b"0N" * (4 << 20) + b"."  # 8 MiB of NONE, POP: a valid, harmless pickle
    path = scan_corpus.write(tmp_path, "model.joblib", joblib_zfile(zlib.compress(payload, 9), 16))
    assert path.stat().st_size < 64 << 10
    assert "archive.too_large" in report_rules(path, "low")


def test_zfile_length_must_match(tmp_path: Path) -> None:
    inner = pickle.dumps({"w": [1, 2]}, protocol=2)
    path = scan_corpus.write(tmp_path, "model.joblib", joblib_zfile(zlib.compress(inner), len(inner) + 1))
    assert "joblib.zfile_malformed" in report_rules(path, "low")


# --------------------------------------------------------------------------- benign: same verdicts as before


@pytest.mark.filterwarnings("ignore:The file .* has been generated with a joblib version:DeprecationWarning")
def test_benign_zfile_is_a_pickle_format(tmp_path: Path) -> None:
    import joblib
    from joblib.numpy_pickle_compat import write_zfile

    value = {"w": [1.0, 2.0], "n": 3}
    path = tmp_path / "old.joblib"
    with path.open("wb") as handle:
        write_zfile(handle, pickle.dumps(value, protocol=2))
    assert joblib.load(path) == value  # joblib still reads it
    report = scan_model(path, "low")
    assert report.exit_code == EXIT_ALLOWED and not report.requires_approval
    assert report.files[0].detected_format == "joblib_zfile"
    assert report_rules(path, "high") == {"policy.pickle_weights"}


@pytest.mark.parametrize("compress", ["zlib", "gzip", "bz2", "lzma", "xz"])
def test_joblib_compressed_dumps_keep_their_verdicts(tmp_path: Path, compress: str) -> None:
    import joblib
    import numpy as np

    path = tmp_path / "model.joblib"
    joblib.dump({"coef": np.ones((64, 8)), "bias": np.zeros(8), "n": 3}, path, compress=(compress, 3))
    for tier in ("low", "medium"):
        report = scan_model(path, tier)
        assert report.exit_code == EXIT_ALLOWED and not report.requires_approval, [
            (f.rule, f.detail) for _, f in report.findings()
        ]
    assert report_rules(path, "high") == {"policy.pickle_weights"}


def test_torch_legacy_checkpoints_keep_their_verdicts(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(3), "b": torch.arange(4)}, path, _use_new_zipfile_serialization=False)
    report = scan_model(path, "low")
    assert report.exit_code == EXIT_ALLOWED and report.files[0].detected_format == "pytorch_legacy"
    assert report_rules(path, "high") == {"policy.pickle_weights"}
    assert loader_reaches(path, "torch") == []


def test_npy_object_arrays_keep_their_verdict(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "objects.npy"
    np.save(path, np.array([1, "a", None], dtype=object))
    for tier in TIERS:
        assert "numpy.object_dtype" in report_rules(path, tier)


@pytest.mark.parametrize(
    "text",
    [b"xylophone notes\n", b"BZ is a country code\n", b"ZFS pool layout\n", b"ZF 0x12 not a stream\n",
     b"# README\n" * 100, b"x^2 + y^2 = z^2 holds for the sides of a right triangle.\n" * 40],
)  # fmt: skip
def test_text_that_only_looks_like_a_prefix_stays_text(tmp_path: Path, text: bytes) -> None:
    path = scan_corpus.write(tmp_path, "notes.txt", text)
    report = scan_model(path, "critical")
    assert report.verdict == "allow", [(f.rule, f.detail) for _, f in report.findings()]


def test_compressed_streams_are_recognised_as_joblib_does() -> None:
    payload = pickle.dumps({"a": 1})
    for data, fmt in (
        (zlib.compress(payload), "zlib"),
        (gzip.compress(payload), "gzip"),
        (bz2.compress(payload), "bz2"),
        (lzma.compress(payload), "xz"),
        (lzma.compress(payload, format=lzma.FORMAT_ALONE), "lzma"),
        (case_lzma_small_dictionary(), "lzma"),
        (case_zfile_printable(), "joblib_zfile"),
        (case_tar_without_ustar(), "tar"),
    ):
        assert sniff(Blob(data, 0, len(data), "x")) == fmt, fmt
