"""Zip directories read as torch (miniz) and numpy (zipfile) read them; two readings block at every tier.

Each class of issue 10 ("Zip central directories") gets a mutant built here: one reading of the
archive holds a pickle that imports ``os.system`` (never run: the loaders' unpickler records and
refuses the global), the other reading looks harmless. The real loaders are the oracle - zipfile
in-process, ``np.load`` and ``torch.load`` with a recording unpickler - showing which reading a
loader takes; the scan must block at every tier with a finding that names both readings. Real
writers' output (torch.save, np.savez, zipfile with and without zip64, streaming writers) stays
free of findings.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
import types
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from airlock.scan import scan_model
from airlock.scan.context import Blob
from airlock.scan.zip_scan import read_directory
from scan_corpus import bu, npy_object, reduce_call, write

TIERS = ("low", "medium", "high", "critical")
EVIL = reduce_call("os", "system", bu("true"))  # os.system("true"): recorded, never called
BENIGN = pickle.dumps({"weights": [1.0, 2.0]}, protocol=2)


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


BENIGN_NPY = _npy(np.arange(4, dtype=np.float32))
EVIL_NPY = npy_object(EVIL)

# --------------------------------------------------------------------------- the loaders as oracle


class Recorded(Exception):
    pass


def _recorder() -> tuple[list[tuple[str, str]], types.SimpleNamespace]:
    """A pickle module whose unpickler records every global it is asked for, then refuses it."""
    seen: list[tuple[str, str]] = []

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            seen.append((module, name))
            raise Recorded(f"{module}.{name}")

    def load(file: object, **kwargs: object) -> object:
        return Unpickler(file, **kwargs).load()  # type: ignore[arg-type]

    return seen, types.SimpleNamespace(Unpickler=Unpickler, load=load, __name__="recording_pickle")


def torch_reads(data: bytes) -> list[tuple[str, str]]:
    import torch

    seen, module = _recorder()
    try:
        torch.load(io.BytesIO(data), weights_only=False, pickle_module=module)
    except Recorded:
        pass
    return seen


def numpy_reads(data: bytes, key: str, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """np.load(allow_pickle=True)[key], with numpy's own pickle module swapped for the recorder."""
    from numpy.lib import _format_impl

    seen, module = _recorder()
    with monkeypatch.context() as patch:
        patch.setattr(_format_impl, "pickle", module)
        try:
            np.load(io.BytesIO(data), allow_pickle=True)[key]
        except Recorded:
            pass
    return seen


def zipfile_reads(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def streaming_reads(data: bytes) -> dict[str, bytes]:
    """What a streaming reader sees: local header to local header, trusting local sizes."""
    out: dict[str, bytes] = {}
    pos = 0
    while data[pos : pos + 4] == b"PK\x03\x04":
        csize, _usize, n, e = struct.unpack_from("<IIHH", data, pos + 18)
        start = pos + 30 + n + e
        out[data[pos + 30 : pos + 30 + n].decode()] = data[start : start + csize]
        pos = start + csize
    return out


EVIL_GLOBAL = [("os", "system")]

# --------------------------------------------------------------------------- zip assembly


def local(name: str, data: bytes, *, flags: int = 0, method: int = 0, csize: int | None = None) -> bytes:
    raw = name.encode()
    size = len(data) if csize is None else csize
    fields = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, flags, method, 0, 0x21, zlib.crc32(data), size, len(data),
                         len(raw), 0)  # fmt: skip
    return fields + raw


def central(name: str, data: bytes, offset: int, *, flags: int = 0, method: int = 0) -> bytes:
    raw = name.encode()
    crc = zlib.crc32(data)
    return struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, flags, method, 0, 0x21, crc, len(data), len(data),
                       len(raw), 0, 0, 0, 0, 0, offset) + raw  # fmt: skip


def end_record(count: int, cd_size: int, cd_offset: int, comment: bytes = b"") -> bytes:
    return struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, len(comment)) + comment


def zip64_end(count: int, cd_size: int, cd_offset: int, at: int) -> bytes:
    record = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
    return record + struct.pack("<4sIQI", b"PK\x06\x07", 0, at, 1)


def members(pairs: list[tuple[str, bytes]], start: int = 0) -> tuple[bytes, list[tuple[str, bytes, int]]]:
    """Local headers + data from offset ``start``; returns the bytes and (name, data, offset) rows."""
    out, rows = b"", []
    for name, data in pairs:
        rows.append((name, data, start + len(out)))
        out += local(name, data) + data
    return out, rows


def directory(rows: list[tuple[str, bytes, int]], shift: int = 0) -> bytes:
    return b"".join(central(name, data, offset - shift) for name, data, offset in rows)


def plain_zip(pairs: list[tuple[str, bytes]]) -> bytes:
    body, rows = members(pairs)
    cd = directory(rows)
    return body + cd + end_record(len(rows), len(cd), len(body))


TORCH_BENIGN = [("archive/data.pkl", BENIGN), ("archive/version", b"3\n")]
TORCH_EVIL = [("archive/data.pkl", EVIL), ("archive/version", b"3\n")]
NPZ_BENIGN = [("x.npy", BENIGN_NPY)]
NPZ_EVIL = [("x.npy", EVIL_NPY)]

# --------------------------------------------------------------------------- scanning


def rules(report, *actions: str) -> set[str]:
    return {f.rule for _, f in report.findings(*actions)}


def details(report, rule: str) -> str:
    return "\n".join(f.detail for _, f in report.findings() if f.rule == rule)


def assert_blocked_everywhere(tmp_path: Path, name: str, data: bytes, rule: str) -> str:
    """Blocked at every tier with ``rule`` among the blocking findings; returns that rule's details."""
    for tier in TIERS:
        report = scan_model(write(tmp_path / tier, name, data), tier)
        assert report.verdict == "block" and rule in rules(report, "block"), (tier, report.summary_lines())
    return details(report, rule)


def structure_rules(data: bytes) -> set[str]:
    return {p.rule for p in read_directory(Blob(data, 0, len(data), "x.zip"), 100_000).problems}


# --------------------------------------------------------------------------- benign writers


def _streamed(write_into) -> bytes:  # type: ignore[no-untyped-def]
    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:  # type: ignore[no-untyped-def, override]
            self.data += b
            return len(b)

    sink = Unseekable()
    write_into(sink)
    return bytes(sink.data)


def _zipfile_bytes(*, zip64: bool = False, comment: bytes = b"", stream: bool = False, method: int = 0) -> bytes:
    def fill(target) -> None:  # type: ignore[no-untyped-def]
        with zipfile.ZipFile(target, "w", compression=method) as archive:
            archive.writestr("a.txt", "hello " * 50)
            with archive.open("b.txt", "w", force_zip64=zip64) as f:
                f.write(b"one line of text\n" * 40)
            archive.comment = comment

    if stream:
        return _streamed(fill)
    out = io.BytesIO()
    fill(out)
    return out.getvalue()


def _torch_save() -> bytes:
    import torch

    out = io.BytesIO()
    torch.save({"w": torch.arange(64, dtype=torch.float32), "b": torch.zeros(2, 2)}, out)
    return out.getvalue()


def _savez(compressed: bool = False, stream: bool = False) -> bytes:
    save = np.savez_compressed if compressed else np.savez
    if stream:
        return _streamed(lambda sink: save(sink, a=np.arange(5), b=np.ones(3)))
    out = io.BytesIO()
    save(out, a=np.arange(5), b=np.ones(3))
    return out.getvalue()


BENIGN_WRITERS = {
    "torch.save (zip64 end records, data descriptors, aligned extras)": _torch_save,
    "np.savez (local zip64 extras)": _savez,
    "np.savez_compressed": lambda: _savez(compressed=True),
    "np.savez to a stream (data descriptors)": lambda: _savez(stream=True),
    "zipfile stored": _zipfile_bytes,
    "zipfile deflated, forced zip64, comment": lambda: _zipfile_bytes(zip64=True, comment=b"hi", method=8),
    "zipfile streamed, deflated": lambda: _zipfile_bytes(stream=True, method=8),
    "zip in a zip": lambda: plain_zip([("inner.zip", _zipfile_bytes()), ("readme.txt", b"hello\n")]),
    "empty zip": lambda: plain_zip([]),
}


@pytest.mark.parametrize("name", sorted(BENIGN_WRITERS))
def test_real_writers_have_one_reading(tmp_path: Path, name: str) -> None:
    data = BENIGN_WRITERS[name]()
    assert structure_rules(data) == set(), name
    report = scan_model(write(tmp_path, "model.zip" if "torch" not in name else "model.pt", data), "low")
    assert report.verdict == "allow" and not report.findings(), report.summary_lines()


# --------------------------------------------------------------------------- classic vs zip64 records


def _zip64_disagrees(benign: list[tuple[str, bytes]], evil: list[tuple[str, bytes]]) -> bytes:
    """The classic record points at a harmless directory, the zip64 record at another."""
    body_b, rows_b = members(benign)
    body_e, rows_e = members(evil, start=len(body_b))
    cd_b, cd_e = directory(rows_b), directory(rows_e)
    at_b = len(body_b) + len(body_e)
    at_e = at_b + len(cd_b)
    z64_at = at_e + len(cd_e)
    return (
        body_b + body_e + cd_b + cd_e
        + zip64_end(len(rows_e), len(cd_e), at_e, z64_at)
        + end_record(len(rows_b), len(cd_b), at_b)
    )  # fmt: skip


def test_zip64_record_wins_over_a_disagreeing_classic_record_torch(tmp_path: Path) -> None:
    data = _zip64_disagrees(TORCH_BENIGN, TORCH_EVIL)
    assert torch_reads(data) == EVIL_GLOBAL  # torch (miniz) follows the zip64 record ...
    assert zipfile_reads(data)["archive/data.pkl"] == EVIL  # ... so does zipfile
    detail = assert_blocked_everywhere(tmp_path, "model.pt", data, "zip.eocd_mismatch")
    assert "classic" in detail and "zip64" in detail and "torch" in detail and "numpy" in detail


def test_zip64_record_wins_over_a_disagreeing_classic_record_npz(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _zip64_disagrees([("a.npy", BENIGN_NPY)], NPZ_EVIL)
    assert numpy_reads(data, "x", monkeypatch) == EVIL_GLOBAL
    detail = assert_blocked_everywhere(tmp_path, "weights.npz", data, "zip.eocd_mismatch")
    assert "'a.npy'" in detail and "'x.npy'" in detail  # both readings, by their members


def test_zip64_record_found_at_different_places_by_the_two_loaders(tmp_path: Path) -> None:
    """miniz follows the locator's offset, zipfile reads 76 bytes before the end record."""
    body_b, rows_b = members(TORCH_BENIGN)
    body_e, rows_e = members(TORCH_EVIL, start=len(body_b))
    cd_b, cd_e = directory(rows_b), directory(rows_e)
    at_b = len(body_b) + len(body_e)
    at_e = at_b + len(cd_b)
    decoy = at_e + len(cd_e)  # a zip64 record for the evil directory, where the locator points
    record_e = zip64_end(len(rows_e), len(cd_e), at_e, 0)[:56]
    fixed = decoy + 56  # the record zipfile reads: the harmless directory
    data = (
        body_b + body_e + cd_b + cd_e + record_e
        + zip64_end(len(rows_b), len(cd_b), at_b, decoy)
        + end_record(len(rows_b), len(cd_b), at_b)
    )  # fmt: skip
    assert fixed + 56 + 20 + 22 == len(data)
    assert torch_reads(data) == EVIL_GLOBAL  # miniz: the locator's record
    with pytest.raises(zipfile.BadZipFile):  # zipfile: the fixed spot, whose offsets do not line up
        zipfile_reads(data)
    detail = assert_blocked_everywhere(tmp_path, "model.pt", data, "zip.eocd_mismatch")
    assert f"zip64 record at {decoy}" in detail and f"zip64 record at {fixed}" in detail


def test_entry_count_disagrees_with_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """miniz reads as many entries as the end record counts, zipfile the whole directory."""
    body, rows = members([("a.npy", BENIGN_NPY), ("x.npy", EVIL_NPY)])
    cd = directory(rows)
    data = body + cd + end_record(1, len(cd), len(body))
    assert numpy_reads(data, "x", monkeypatch) == EVIL_GLOBAL
    detail = assert_blocked_everywhere(tmp_path, "weights.npz", data, "zip.eocd_mismatch")
    assert "counts 1" in detail and "holds 2" in detail


# --------------------------------------------------------------------------- several end records


def test_end_record_hidden_in_the_comment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The comment of a harmless end record holds a directory and an end record of its own:
    zipfile and miniz take the last end record, readers that check the comment length the first."""
    body, rows = members([("a.npy", BENIGN_NPY), ("x.npy", EVIL_NPY)])
    cd_b = directory(rows[:1])
    cd_e = directory(rows[1:])
    evil_cd_at = len(body) + len(cd_b) + 22
    comment = cd_e + end_record(1, len(cd_e), evil_cd_at)
    data = body + cd_b + end_record(1, len(cd_b), len(body), comment)
    assert set(zipfile_reads(data)) == {"x.npy"}
    assert numpy_reads(data, "x", monkeypatch) == EVIL_GLOBAL
    detail = assert_blocked_everywhere(tmp_path, "weights.npz", data, "zip.multiple_eocd")
    assert "end-of-central-directory record" in detail


def test_end_record_signature_in_the_last_bytes(tmp_path: Path) -> None:
    """A signature too close to the end: zipfile fails on it, miniz skips it and reads the record before."""
    data = plain_zip(TORCH_EVIL)
    data = data[:-2] + struct.pack("<H", 6) + b"PK\x05\x06\x00\x00"  # a 6-byte comment ending in a signature
    assert torch_reads(data) == EVIL_GLOBAL
    with pytest.raises(zipfile.BadZipFile):
        zipfile_reads(data)
    assert_blocked_everywhere(tmp_path, "model.pt", data, "zip.multiple_eocd")


# --------------------------------------------------------------------------- bytes outside every member


def test_prepended_bytes_shift_zipfile_to_another_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """zipfile places the directory right before the end record and shifts every offset to match
    ("concat"); miniz trusts the recorded offset. Two directories of equal size, one after the other:
    miniz reads the first (harmless), zipfile the second (whose offsets are written shifted)."""
    body, rows = members([("x.npy", BENIGN_NPY), ("x.npy", EVIL_NPY)])
    cd_b = directory(rows[:1])
    cd_e = directory(rows[1:], shift=len(cd_b))
    assert len(cd_b) == len(cd_e)
    data = body + cd_b + cd_e + end_record(1, len(cd_b), len(body))
    assert zipfile_reads(data)["x.npy"] == EVIL_NPY
    assert numpy_reads(data, "x", monkeypatch) == EVIL_GLOBAL
    detail = assert_blocked_everywhere(tmp_path, "weights.npz", data, "zip.unaccounted_bytes")
    assert "zipfile" in detail and "miniz" in detail and f"shifted by {len(cd_b)}" in detail


def test_prepended_bytes_torch_reads_the_harmless_directory(tmp_path: Path) -> None:
    body, rows = members(TORCH_BENIGN + TORCH_EVIL)
    cd_b = directory(rows[:2])
    cd_e = directory(rows[2:], shift=len(cd_b))
    data = body + cd_b + cd_e + end_record(2, len(cd_b), len(body))
    assert torch_reads(data) == []  # miniz: the harmless reading
    assert zipfile_reads(data)["archive/data.pkl"] == EVIL  # zipfile: the other one
    assert_blocked_everywhere(tmp_path, "model.pt", data, "zip.unaccounted_bytes")


def test_member_hidden_between_listed_members(tmp_path: Path) -> None:
    """A local header no directory lists: streaming readers read it, torch and numpy do not."""
    first, rows1 = members([("a.npy", BENIGN_NPY)])
    hidden, _ = members([("x.npy", EVIL_NPY)], start=len(first))
    last, rows2 = members([("b.npy", BENIGN_NPY)], start=len(first) + len(hidden))
    body = first + hidden + last
    cd = directory(rows1 + rows2)
    data = body + cd + end_record(2, len(cd), len(body))
    assert set(zipfile_reads(data)) == {"a.npy", "b.npy"}
    assert streaming_reads(data)["x.npy"] == EVIL_NPY
    detail = assert_blocked_everywhere(tmp_path, "weights.npz", data, "zip.unaccounted_bytes")
    assert "local header no directory lists" in detail


def test_trailing_bytes_after_the_end_record(tmp_path: Path) -> None:
    data = plain_zip(NPZ_BENIGN) + EVIL
    assert set(zipfile_reads(data)) == {"x.npy"}  # zipfile tolerates them (it searches back for the record)
    assert_blocked_everywhere(tmp_path, "weights.npz", data, "zip.unaccounted_bytes")


# --------------------------------------------------------------------------- local vs central headers


def test_local_sizes_hide_a_member_from_the_central_directory(tmp_path: Path) -> None:
    """The central header spans harmless text plus a whole local member; the local header ends
    after the text, so a streaming reader goes on to read the hidden member."""
    text = b"release notes\n"
    hidden = local("x.npy", EVIL_NPY) + EVIL_NPY
    span = text + hidden
    head = local("notes.txt", text)  # local sizes: the text only
    cd = central("notes.txt", span, 0)  # central sizes: everything
    body = head + span
    data = body + cd + end_record(1, len(cd), len(body))
    assert set(zipfile_reads(data)) == {"notes.txt"}
    assert streaming_reads(data)["x.npy"] == EVIL_NPY
    detail = assert_blocked_everywhere(tmp_path, "bundle.zip", data, "zip.header_mismatch")
    assert "central directory" in detail and "local header" in detail


@pytest.mark.parametrize("field", ["method", "flags", "crc", "name"])
def test_local_and_central_headers_must_agree(tmp_path: Path, field: str) -> None:
    data = bytearray(plain_zip(TORCH_EVIL))
    if field == "method":
        struct.pack_into("<H", data, 8, 8)  # local says deflated; central (what loaders use) says stored
    elif field == "flags":
        struct.pack_into("<H", data, 6, 0x0800)
    elif field == "crc":
        struct.pack_into("<I", data, 14, 0x12345678)
    else:
        data[30:46] = b"archive/data.txt"
    assert torch_reads(bytes(data)) == EVIL_GLOBAL  # torch reads the central header and ignores the local one
    rule = "zip.name_mismatch" if field == "name" else "zip.header_mismatch"
    assert_blocked_everywhere(tmp_path, "model.pt", bytes(data), rule)


# --------------------------------------------------------------------------- overlap, names


def test_members_overlap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One member's data holds another member's local header: two readings of the same bytes."""
    inner = local("x.npy", EVIL_NPY) + EVIL_NPY
    outer_data = BENIGN_NPY + inner
    head = local("a.npy", outer_data)
    body = head + outer_data
    rows = [("a.npy", outer_data, 0), ("x.npy", EVIL_NPY, len(head) + len(BENIGN_NPY))]
    cd = directory(rows)
    data = body + cd + end_record(2, len(cd), len(body))
    assert numpy_reads(data, "x", monkeypatch) == EVIL_GLOBAL
    detail = assert_blocked_everywhere(tmp_path, "weights.npz", data, "zip.overlap")
    assert "'a.npy'" in detail and "'x.npy'" in detail


def test_duplicate_names_zipfile_loads_the_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = plain_zip([("x.npy", BENIGN_NPY), ("x.npy", EVIL_NPY)])
    assert numpy_reads(data, "x", monkeypatch) == EVIL_GLOBAL
    detail = assert_blocked_everywhere(tmp_path, "weights.npz", data, "zip.duplicate_name")
    assert "entry 0" in detail and "entry 1" in detail


def test_names_differing_in_case_torch_looks_up_either(tmp_path: Path) -> None:
    """miniz compares names case-insensitively: torch loads ``archive/DATA.PKL`` as data.pkl."""
    data = plain_zip([("archive/DATA.PKL", EVIL), ("archive/data.pkl", BENIGN), ("archive/version", b"3\n")])
    assert torch_reads(data) == EVIL_GLOBAL
    detail = assert_blocked_everywhere(tmp_path, "model.pt", data, "zip.duplicate_name")
    assert "case-insensitively" in detail


def test_name_cut_at_nul_by_zipfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = plain_zip([("x.npy\x00", BENIGN_NPY), ("x.npy", EVIL_NPY)])
    assert numpy_reads(data, "x", monkeypatch) == EVIL_GLOBAL
    assert_blocked_everywhere(tmp_path, "weights.npz", data, "zip.duplicate_name")


def test_unicode_path_extra_renames_for_newer_zipfile(tmp_path: Path) -> None:
    """Python 3.12+ zipfile takes a member's name from an Info-ZIP Unicode Path field; 3.11 and miniz do not."""
    name = b"a.npy"
    field = b"\x01" + struct.pack("<I", zlib.crc32(name)) + b"x.npy"
    extra = struct.pack("<HH", 0x7075, len(field)) + field
    body, rows = members([("a.npy", EVIL_NPY)])
    cd = bytearray(directory(rows))
    struct.pack_into("<H", cd, 30, len(extra))
    cd += extra
    data = body + bytes(cd) + end_record(1, len(cd), len(body))
    assert_blocked_everywhere(tmp_path, "weights.npz", data, "zip.name_mismatch")


# --------------------------------------------------------------------------- data descriptors


def _torch_with_descriptor(patch) -> bytes:  # type: ignore[no-untyped-def]
    """torch.save output with ``patch(data, offset)`` applied to data.pkl's data descriptor."""
    data = bytearray(_torch_save())
    name_len, extra_len = struct.unpack_from("<HH", data, 26)
    assert struct.unpack_from("<H", data, 6)[0] & 0x0008  # torch streams: sizes follow the data
    first = zipfile.ZipFile(io.BytesIO(bytes(data))).infolist()[0]
    descriptor = 30 + name_len + extra_len + first.compress_size
    assert data[descriptor : descriptor + 4] == b"PK\x07\x08"
    patch(data, descriptor)
    return bytes(data)


def test_data_descriptor_disagreeing_with_the_central_header(tmp_path: Path) -> None:
    def wrong_crc(data: bytearray, at: int) -> None:
        struct.pack_into("<I", data, at + 4, 0xDEADBEEF)

    data = _torch_with_descriptor(wrong_crc)
    detail = assert_blocked_everywhere(tmp_path, "model.pt", data, "zip.descriptor_mismatch")
    assert "deadbeef" in detail and "central directory" in detail


def test_data_descriptor_missing(tmp_path: Path) -> None:
    """Flag bit 3 promises a descriptor; without one a streaming reader takes the next bytes for it."""
    body, rows = members(NPZ_BENIGN)
    body = bytearray(body)
    struct.pack_into("<H", body, 6, 0x0008)
    cd = bytearray(directory(rows))
    struct.pack_into("<H", cd, 8, 0x0008)
    data = bytes(body) + bytes(cd) + end_record(1, len(cd), len(body))
    assert_blocked_everywhere(tmp_path, "weights.npz", data, "zip.descriptor_mismatch")


# --------------------------------------------------------------------------- nesting


def test_mutants_nested_in_an_archive_block_too(tmp_path: Path) -> None:
    inner = _zip64_disagrees([("a.npy", BENIGN_NPY)], NPZ_EVIL)
    data = plain_zip([("readme.txt", b"hello\n"), ("weights.npz", inner)])
    for tier in TIERS:
        report = scan_model(write(tmp_path / tier, "bundle.zip", data), tier)
        found = [f for _, f in report.findings("block") if f.rule == "zip.eocd_mismatch"]
        assert found and found[0].member == "weights.npz", report.summary_lines()
