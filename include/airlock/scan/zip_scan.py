"""Zip containers read the way their loaders read them, and refused wherever two loaders can disagree.

Two loaders open model zips. ``torch.load`` uses miniz (``PyTorchStreamReader``); ``np.load``
and Keras use Python's ``zipfile``. On a well-formed archive they agree; on a crafted one they
part ways, and a scanner that follows either one alone can be shown one member list while the
other loader reads another:

* **End records.** Both take the *last* end-of-central-directory signature (miniz: the last
  one with 22 bytes after it) and follow a zip64 locator whenever one sits right before it,
  saturated classic fields or not - miniz to the offset the locator names, zipfile to the fixed
  spot 76 bytes before the end record. The zip64 record then wins over the classic one.
* **The central directory.** miniz reads it at the recorded offset, as many entries as the end
  record counts. zipfile places it right before the end records and shifts every member
  offset by the difference ("concat": bytes prepended to an archive), reading entries until
  the recorded size is used up.
* **Members.** Both take offset, sizes and method from the central header and skip the local
  header by its own name/extra lengths; zipfile then checks the local name and the CRC, miniz
  (as torch builds it) neither, and miniz finds a name case-insensitively. Streaming readers
  go the other way, local header to local header, trusting local sizes and data descriptors.

So this module reads the archive as miniz does (that reading is scanned), computes zipfile's
reading beside it, and reports every place where readings can differ - classic vs zip64
records, a second end record, bytes outside every member and the directory, local vs central
headers, data descriptors, overlapping members, names two lookups resolve differently. Those
rules are in the "malformed" category: they block at every tier, whatever the policy says about
container anomalies. Every member is then sniffed and scanned by content whatever its name.

A torch checkpoint is recognised by ``<prefix>/data.pkl`` (``prefix`` = the first member's top
directory, as torch derives it); its storages ``<prefix>/data/<key>`` are raw tensor bytes
that torch never unpickles, so they are only checked for size and for looking like a pickle.
"""

from __future__ import annotations

import bisect
import bz2
import contextlib
import io
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from airlock.scan import keras_scan, pickle_scan, pickle_vm
from airlock.scan.allowlist import STORAGE_ELEMENT_SIZE
from airlock.scan.context import Blob, ScanContext, inflate, read_chunks, spool
from airlock.scan.pickle_vm import GlobalRef

_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
_DESCRIPTOR = b"PK\x07\x08"
_EOCD_SIZE, _LOCATOR_SIZE, _ZIP64_EOCD_SIZE = 22, 20, 56
_MAX_COMMENT = 0xFFFF
# miniz scans back in 4 KiB chunks until it has covered the longest comment; zipfile covers
# exactly 22 + 64 KiB. Signatures in this tail are all either loader could pick.
_EOCD_SEARCH = _EOCD_SIZE + _MAX_COMMENT + 4096
_U16_MAX, _U32_MAX = 0xFFFF, 0xFFFFFFFF
# Flag bits real writers set: 0x0008 data descriptor (streaming writers), 0x0800 UTF-8 names.
# 0x0002/0x0004 are deflate level hints. Anything else (encryption 0x0001, strong encryption 0x0040,
# masked headers 0x2000 ...) is either unreadable or a trick.
_BENIGN_FLAGS = 0x0008 | 0x0800 | 0x0002 | 0x0004
_HAS_DESCRIPTOR, _UTF8_NAME = 0x0008, 0x0800
_STORED, _DEFLATED, _BZIP2 = 0, 8, 12
_ZIP64_EXTRA, _UNICODE_PATH_EXTRA = 0x0001, 0x7075
# Central header from offset 8: flags, method, time, date, crc, csize, usize, name/extra/comment
# lengths, disk, internal attrs, external attrs, local header offset.
_CENTRAL_FIELDS = struct.Struct("<4H3I3H2HII")
# Local header from offset 6: flags, method, time, date, crc, csize, usize, name/extra lengths.
_LOCAL_FIELDS = struct.Struct("<6x4H3I2H")
# CRC-32 is checked on a torch zip's data.pkl, on deflated members (read in full anyway) and on
# stored members up to this size. Not on raw torch storages: torch ignores CRCs and never
# deserialises storages, so a bad CRC there is no bypass, and checking it would make a
# multi-GiB checkpoint cost a full read.
_CRC_UP_TO = 64 << 20
# A crafted archive can have thousands of overlaps or gaps; a few name the problem.
_MAX_REPORTED = 8


class ZipError(Exception):
    pass


@dataclass
class ZipEntry:
    index: int
    raw_name: bytes
    name: str  # as zipfile decodes it (cp437 unless flagged UTF-8): what np.load and Keras look up
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    header_offset: int
    data_offset: int = -1
    end: int = -1  # end of the data and of its data descriptor
    local_raw_name: bytes = b""
    local_flags: int = 0
    local_method: int = 0


@dataclass(frozen=True)
class Problem:
    """A place where loaders can read the archive differently: ``rule`` names the class."""

    rule: str
    detail: str
    offset: int | None = None


@dataclass
class ZipDirectory:
    entries: list[ZipEntry]
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class _EndRecord:
    """What an end record (classic or zip64) says about the central directory."""

    count: int
    count_on_disk: int
    cd_size: int
    cd_offset: int
    disk: int
    cd_disk: int


# --------------------------------------------------------------------------- end records


def _u16(b: bytes, o: int) -> int:
    return struct.unpack_from("<H", b, o)[0]


def _u32(b: bytes, o: int) -> int:
    return struct.unpack_from("<I", b, o)[0]


def _u64(b: bytes, o: int) -> int:
    return struct.unpack_from("<Q", b, o)[0]


def _find_end_record(blob: Blob) -> tuple[int, list[int]]:
    """miniz's end record (the last signature with a whole record after it) and any signature after it.

    zipfile takes the last signature outright (and fails if it is cut short); so any signature
    after the one miniz takes is a second reading, or a failure of one loader.
    """
    tail_start = max(0, blob.size - _EOCD_SEARCH)
    tail = blob.read(tail_start, blob.size - tail_start)
    found: list[int] = []
    i = tail.find(_EOCD)
    while i >= 0:
        found.append(tail_start + i)
        i = tail.find(_EOCD, i + 1)
    found.reverse()
    chosen = next((p for p in found if blob.size - p >= _EOCD_SIZE), -1)
    if chosen < 0:
        raise ZipError("no end-of-central-directory record")
    comment_len = _u16(blob.read(chosen, _EOCD_SIZE), 20)
    later = [
        p
        for p in found
        if p > chosen
        # zipfile's fast path takes a comment-less record in the last 22 bytes as it is, so a
        # signature inside that record's own fields is no second record for either loader
        and not (comment_len == 0 and chosen + _EOCD_SIZE == blob.size and p < blob.size)
    ]
    return chosen, later


def _classic(rec: bytes) -> _EndRecord:
    disk, cd_disk, on_disk, count, cd_size, cd_offset = struct.unpack_from("<4xHHHHII", rec)
    return _EndRecord(count, on_disk, cd_size, cd_offset, disk, cd_disk)


def _zip64(blob: Blob, at: int) -> tuple[_EndRecord, int]:
    rec = blob.read(at, _ZIP64_EOCD_SIZE)
    size_of_record, disk, cd_disk, on_disk, count, cd_size, cd_offset = struct.unpack_from("<4xQ4xIIQQQQ", rec)
    return _EndRecord(count, on_disk, cd_size, cd_offset, disk, cd_disk), size_of_record


def _zip64_at(blob: Blob, eocd: int) -> tuple[bool, int | None, int | None]:
    """``(locator present, zip64 record miniz reads, zip64 record zipfile reads)``."""
    if eocd < _LOCATOR_SIZE or blob.read(eocd - _LOCATOR_SIZE, 4) != _ZIP64_LOCATOR:
        return False, None, None
    loc = blob.read(eocd - _LOCATOR_SIZE, _LOCATOR_SIZE)
    loc_disk, named, disks = struct.unpack_from("<4xIQI", loc)
    if loc_disk != 0 or disks != 1:  # zipfile refuses other disk numbers, miniz needs exactly 1 disk
        raise ZipError(f"zip64 locator describes a multi-disk archive (disk {loc_disk} of {disks})")
    fixed = eocd - _LOCATOR_SIZE - _ZIP64_EOCD_SIZE
    if fixed < 0:  # zipfile's seek fails; miniz does not even look
        raise ZipError("zip64 locator with no room for a zip64 record before it")
    miniz = named if named <= blob.size - _ZIP64_EOCD_SIZE and blob.read(named, 4) == _ZIP64_EOCD else None
    python = fixed if blob.read(fixed, 4) == _ZIP64_EOCD else None
    return True, miniz, python


def _names_at(blob: Blob, cd_offset: int, cd_size: int, shift: int = 0) -> str:
    """A short, lenient listing of a directory reading, for findings that must name both readings."""
    if cd_offset < 0 or cd_offset + cd_size > blob.size:
        return "no readable directory"
    cd = blob.read(cd_offset, min(cd_size, 1 << 20))
    names: list[str] = []
    pos = count = 0
    while pos + 46 <= len(cd) and cd[pos : pos + 4] == _CENTRAL:
        n, e, c = struct.unpack_from("<HHH", cd, pos + 28)
        if count < 4:
            names.append(cd[pos + 46 : pos + 46 + n].decode("utf-8", "replace"))
        count += 1
        pos += 46 + n + e + c
    if not count:
        return "no readable directory"
    more = ", ..." if count > len(names) else ""
    where = f"offset {cd_offset}" + (f", members shifted by {shift}" if shift else "")
    return f"{count} member(s) at {where}: {', '.join(map(repr, names))}{more}"


def _end_records(blob: Blob, problems: list[Problem]) -> tuple[_EndRecord, list[tuple[int, int, str]]]:
    """Locate the directory as miniz does and compare zipfile's reading with it.

    Returns miniz's end record (classic or zip64) and the byte ranges the end records occupy.
    """
    eocd, later = _find_end_record(blob)
    rec = blob.read(eocd, _EOCD_SIZE)
    classic = _classic(rec)
    comment_len = _u16(rec, 20)
    for p in later[:_MAX_REPORTED]:
        problems.append(
            Problem(
                "zip.multiple_eocd",
                f"a second end-of-central-directory signature at offset {p} follows the end record at {eocd}: "
                "zipfile takes the last signature, miniz the last complete record, other readers the one "
                "whose comment reaches the end of the file",
                p,
            )
        )
    comment = blob.read(eocd + _EOCD_SIZE, comment_len)
    for sig, what in (
        (_ZIP64_EOCD, "zip64 end record"),
        (_ZIP64_LOCATOR, "zip64 locator"),
        (_CENTRAL, "central header"),
    ):
        if sig in comment:
            problems.append(
                Problem("zip.multiple_eocd", f"the archive comment holds a {what} signature", eocd + _EOCD_SIZE)
            )
    regions = [(eocd, eocd + _EOCD_SIZE + comment_len, "the end record")]
    has_locator, miniz_at, python_at = _zip64_at(blob, eocd)
    record, python_record = classic, classic
    if has_locator:
        regions.append((eocd - _LOCATOR_SIZE, eocd, "the zip64 locator"))
        if miniz_at != python_at:
            mz = f"the zip64 record at {miniz_at}" if miniz_at is not None else "the classic record"
            py = f"the zip64 record at {python_at}" if python_at is not None else "the classic record"
            mz_rec = _zip64(blob, miniz_at)[0] if miniz_at is not None else classic
            py_rec = _zip64(blob, python_at)[0] if python_at is not None else classic
            problems.append(
                Problem(
                    "zip.eocd_mismatch",
                    f"the zip64 locator leads the loaders to different end records: torch (miniz) reads {mz} "
                    f"({_names_at(blob, mz_rec.cd_offset, mz_rec.cd_size)}), numpy (zipfile) reads {py} "
                    f"({_names_at(blob, py_rec.cd_offset, py_rec.cd_size)})",
                    eocd - _LOCATOR_SIZE,
                )
            )
        if miniz_at is None and python_at is None:
            problems.append(
                Problem(
                    "zip.eocd_mismatch",
                    f"the zip64 locator at {eocd - _LOCATOR_SIZE} points to no zip64 record: loaders that "
                    "require one fail, torch and numpy fall back to the classic record",
                    eocd - _LOCATOR_SIZE,
                )
            )
        if python_at is not None:
            python_record = _zip64(blob, python_at)[0]
        if miniz_at is not None:
            record, size_of_record = _zip64(blob, miniz_at)
            regions.append((miniz_at, miniz_at + _ZIP64_EOCD_SIZE, "the zip64 end record"))
            if size_of_record != _ZIP64_EOCD_SIZE - 12:
                problems.append(
                    Problem(
                        "zip.eocd_mismatch",
                        f"the zip64 end record declares {size_of_record - 44} bytes of extensible data: zipfile "
                        "assumes none and looks for the record elsewhere",
                        miniz_at,
                    )
                )
            _compare_classic(blob, classic, record, miniz_at, problems)
    if record.disk or record.cd_disk or record.count != record.count_on_disk:
        raise ZipError(
            f"end record describes a multi-disk archive (disk {record.disk}, directory on disk {record.cd_disk}, "
            f"{record.count_on_disk} of {record.count} entries here)"
        )
    _compare_python(blob, eocd, record, python_record, python_at, miniz_at, problems)
    return record, regions


def _compare_classic(blob: Blob, classic: _EndRecord, z64: _EndRecord, at: int, problems: list[Problem]) -> None:
    """Classic fields must equal the zip64 ones or be saturated: else readers without zip64 see another archive."""
    differ = [
        f"{label} {c} vs {z}"
        for label, c, z, saturated in (
            ("member count", classic.count, z64.count, _U16_MAX),
            ("members on this disk", classic.count_on_disk, z64.count_on_disk, _U16_MAX),
            ("directory size", classic.cd_size, z64.cd_size, _U32_MAX),
            ("directory offset", classic.cd_offset, z64.cd_offset, _U32_MAX),
        )
        if c not in (z, saturated)
    ]
    if differ:
        problems.append(
            Problem(
                "zip.eocd_mismatch",
                f"the classic and zip64 end records disagree ({'; '.join(differ)}): torch (miniz) and numpy "
                f"(zipfile) follow the zip64 record ({_names_at(blob, z64.cd_offset, z64.cd_size)}), readers "
                f"without zip64 the classic one ({_names_at(blob, classic.cd_offset, classic.cd_size)})",
                at,
            )
        )


def _compare_python(
    blob: Blob,
    eocd: int,
    record: _EndRecord,
    python_record: _EndRecord,
    python_at: int | None,
    miniz_at: int | None,
    problems: list[Problem],
) -> None:
    """zipfile places the directory right before the end records and shifts member offsets to match."""
    ends_at = python_at if python_at is not None else eocd
    concat = ends_at - python_record.cd_size - python_record.cd_offset
    if miniz_at != python_at:
        return  # already reported as zip.eocd_mismatch, naming both readings
    if concat == 0 and python_record == record:
        return
    start = python_record.cd_offset + concat
    python = (
        _names_at(blob, start, python_record.cd_size, concat) if start >= 0 else "no directory (zipfile refuses it)"
    )
    problems.append(
        Problem(
            "zip.unaccounted_bytes",
            f"the directory does not end where the end records begin ({abs(concat)} bytes "
            f"{'before' if concat > 0 else 'past'} them): numpy (zipfile) reads {python}; torch (miniz) reads "
            f"{_names_at(blob, record.cd_offset, record.cd_size)}",
            record.cd_offset,
        )
    )


# --------------------------------------------------------------------------- central directory


def _extra_fields(extra: bytes) -> list[tuple[int, bytes]] | None:
    """``[(tag, body)]``, or None when a field runs past the extra area (zipfile: "Corrupt extra field")."""
    fields: list[tuple[int, bytes]] = []
    i = 0
    while i + 4 <= len(extra):
        tag, size = _u16(extra, i), _u16(extra, i + 2)
        if i + 4 + size > len(extra):
            return None
        fields.append((tag, extra[i + 4 : i + 4 + size]))
        i += 4 + size
    return fields


def _zip64_values(body: bytes, values: list[int]) -> list[int] | None:
    """Replace the saturated ``values`` in order from a zip64 extra ``body`` (None if one is missing)."""
    out, j = list(values), 0
    for k, value in enumerate(values):
        if value == _U32_MAX:
            if j + 8 > len(body):
                return None
            out[k], j = _u64(body, j), j + 8
    return out


def _zipfile_name(raw: bytes, flags: int) -> str | None:
    try:
        return raw.decode("utf-8") if flags & _UTF8_NAME else raw.decode("cp437")
    except UnicodeDecodeError:
        return None


def _parse_entries(blob: Blob, record: _EndRecord, max_entries: int, problems: list[Problem]) -> list[ZipEntry]:
    cd_offset, cd_size = record.cd_offset, record.cd_size
    if cd_offset + cd_size > blob.size:
        raise ZipError(f"central directory ({cd_offset}+{cd_size}) lies outside the file")
    if record.count > max_entries:
        raise ZipError(f"{record.count} members, more than the policy's {max_entries}")
    if cd_size < record.count * 46:
        raise ZipError(f"a {cd_size}-byte central directory cannot hold {record.count} members")
    if cd_size > _U32_MAX:  # miniz refuses it (and it would be read into memory)
        raise ZipError(f"central directory of {cd_size} bytes is larger than torch can read")
    blob.prefetch(cd_offset, min(cd_size, 64 << 20))
    entries: list[ZipEntry] = []
    pos = 0
    while pos < cd_size:  # zipfile reads until the size is used up, miniz ``count`` entries: compared below
        head = blob.read(cd_offset + pos, 46)
        if pos + 46 > cd_size or head[:4] != _CENTRAL:
            raise ZipError(f"central directory entry {len(entries)} at offset {cd_offset + pos} is not one")
        (flags, method, _time, _date, crc, csize, usize, n, e, c, disk, _iattr, _eattr, offset) = (
            _CENTRAL_FIELDS.unpack_from(head, 8)
        )
        if pos + 46 + n + e + c > cd_size:
            raise ZipError(f"central directory entry {len(entries)} runs past the directory")
        names_and_extra = blob.read(cd_offset + pos + 46, n + e)  # the entry comment is never read
        raw_name, extra = names_and_extra[:n], names_and_extra[n:]
        shown = raw_name.decode("utf-8", "replace")
        fields = _extra_fields(extra)
        if fields is None:
            raise ZipError(f"member {shown!r}: corrupt extra field in the central directory")
        zip64 = [body for tag, body in fields if tag == _ZIP64_EXTRA]
        if zip64:
            values = _zip64_values(zip64[0], [usize, csize, offset])
            if values is None:
                raise ZipError(f"member {shown!r}: zip64 extra field lacks a size or offset its header defers to it")
            usize, csize, offset = values
        elif _U32_MAX in (usize, csize, offset):
            raise ZipError(f"member {shown!r}: saturated size or offset without a zip64 extra field")
        if len(zip64) > 1:
            problems.append(
                Problem("zip.header_mismatch", f"member {shown!r} has {len(zip64)} zip64 extra fields", cd_offset + pos)
            )
        if any(tag == _UNICODE_PATH_EXTRA for tag, _ in fields):
            problems.append(
                Problem(
                    "zip.name_mismatch",
                    f"member {shown!r} carries a Unicode Path extra field: zipfile on Python 3.12+ renames it "
                    "to the name in that field, miniz (torch) and older zipfile use the header name",
                    cd_offset + pos,
                )
            )
        if disk != 0:
            raise ZipError(f"member {shown!r} is on disk {disk}")
        name = _zipfile_name(raw_name, flags)
        if name is None:
            problems.append(
                Problem(
                    "zip.name_mismatch",
                    f"member name {shown!r} is flagged UTF-8 but is not: zipfile (numpy) refuses the archive, "
                    "miniz (torch) reads the raw bytes",
                    cd_offset + pos,
                )
            )
            name = shown
        entries.append(ZipEntry(len(entries), raw_name, name, flags, method, crc, csize, usize, offset))
        pos += 46 + n + e + c
        if len(entries) > max_entries:
            raise ZipError(f"more than the policy's {max_entries} members")
    if len(entries) != record.count:
        miniz = f"the first {record.count}" if record.count < len(entries) else "none (it fails)"
        problems.append(
            Problem(
                "zip.eocd_mismatch",
                f"the end record counts {record.count} members but the directory holds {len(entries)}: "
                f"torch (miniz) reads {miniz}, numpy (zipfile) all {len(entries)}",
                cd_offset,
            )
        )
    return entries


def _read_local_header(blob: Blob, entry: ZipEntry, problems: list[Problem]) -> None:
    head = blob.read(entry.header_offset, 30)
    if len(head) < 30 or head[:4] != _LOCAL:
        raise ZipError(f"member {entry.name!r}: no local header at offset {entry.header_offset}")
    (flags, method, _time, _date, crc, csize, usize, n, e) = _LOCAL_FIELDS.unpack_from(head)
    entry.local_flags, entry.local_method = flags, method
    entry.local_raw_name = blob.read(entry.header_offset + 30, n)
    extra = blob.read(entry.header_offset + 30 + n, e)
    entry.data_offset = entry.header_offset + 30 + n + e  # what both loaders do: local lengths, central sizes
    if entry.data_offset + entry.csize > blob.size:
        raise ZipError(f"member {entry.name!r}: data runs past the end of the file")
    entry.end = entry.data_offset + entry.csize
    at = entry.header_offset

    def differs(what: str, central: object, local: object) -> None:
        problems.append(
            Problem(
                "zip.header_mismatch",
                f"member {entry.name!r}: the central directory (read by torch and numpy) says {what} {central}, "
                f"its local header (read by streaming readers) says {local}",
                at,
            )
        )

    fields = _extra_fields(extra)
    if fields is None:
        problems.append(Problem("zip.header_mismatch", f"member {entry.name!r}: corrupt local extra field", at))
        fields = []
    if entry.local_raw_name != entry.raw_name:
        local = entry.local_raw_name.decode("utf-8", "replace")
        problems.append(
            Problem(
                "zip.name_mismatch",
                f"member {entry.name!r} has local header name {local!r}: torch (miniz) reads it as "
                f"{entry.name!r}, streaming readers as {local!r}",
                at,
            )
        )
    if any(tag == _UNICODE_PATH_EXTRA for tag, _ in fields):
        problems.append(
            Problem("zip.name_mismatch", f"member {entry.name!r}: local header carries a Unicode Path extra field", at)
        )
    if flags != entry.flags:
        differs("flags", f"0x{entry.flags:04x}", f"0x{flags:04x}")
    if method != entry.method:
        differs("compression method", entry.method, method)
    zip64 = [body for tag, body in fields if tag == _ZIP64_EXTRA]
    if zip64 and _U32_MAX in (usize, csize):  # a local zip64 field holds both sizes, uncompressed first
        values = _zip64_values(zip64[0], [usize, csize])
        usize, csize = values if values is not None else (-1, -1)
    # With a data descriptor the local header may leave CRC and sizes zero (torch, streaming writers).
    deferred = bool(flags & _HAS_DESCRIPTOR)
    for what, central, local in (("CRC-32", entry.crc, crc), ("compressed size", entry.csize, csize),
                                 ("size", entry.usize, usize)):  # fmt: skip
        if local != central and not (deferred and local == 0):
            differs(what, central, local)


def _descriptor_length(blob: Blob, entry: ZipEntry, next_start: int, problems: list[Problem]) -> int:
    """Length of the data descriptor after ``entry``'s data (problems if it is missing or disagrees).

    Writers use four layouts: with or without the ``PK\\x07\\x08`` signature, 32- or 64-bit sizes
    (torch/miniz write 64-bit ones for zip64 members). The one that matches the central header
    and ends where the next structure begins is the descriptor.
    """
    data_end = entry.data_offset + entry.csize
    raw = blob.read(data_end, 24)
    expected = (entry.crc, entry.csize, entry.usize)
    options: list[tuple[int, tuple[int, int, int]]] = []
    for base in (4, 0) if raw[:4] == _DESCRIPTOR else (0,):
        for wide in (False, True):
            length = base + (20 if wide else 12)
            if len(raw) >= length:
                crc = _u32(raw, base)
                sizes = (
                    (_u64(raw, base + 4), _u64(raw, base + 12)) if wide else (_u32(raw, base + 4), _u32(raw, base + 8))
                )
                options.append((length, (crc, *sizes)))
    matching = [length for length, values in options if values == expected]
    if matching:
        return next((n for n in matching if data_end + n == next_start), matching[0])
    said = next((values for length, values in options if length in (16, 24)), None)
    detail = (
        f"its data descriptor says CRC-32 {said[0]:08x}, sizes {said[1]}/{said[2]}"
        if said
        else "no data descriptor follows"
    )
    problems.append(
        Problem(
            "zip.descriptor_mismatch",
            f"member {entry.name!r}: the central directory (read by torch and numpy) says CRC-32 {entry.crc:08x}, "
            f"sizes {entry.csize}/{entry.usize}; {detail} (what streaming readers trust)",
            data_end,
        )
    )
    gap = next_start - data_end
    return gap if 0 < gap <= 24 else 0


def _torch_prefix(entries: list[ZipEntry]) -> bytes | None:
    """``<prefix>/`` lowercased when torch would load the archive as a checkpoint, else None.

    torch takes the prefix from the first entry's top directory and finds ``<prefix>/data.pkl``
    with miniz's case-insensitive lookup.
    """
    if not entries or b"/" not in entries[0].raw_name:
        return None
    base = entries[0].raw_name.split(b"/", 1)[0].lower() + b"/"
    return base if any(e.raw_name.lower() == base + b"data.pkl" for e in entries) else None


def _check_names(entries: list[ZipEntry], problems: list[Problem]) -> None:
    """Names two lookups can resolve to different members: exact bytes, zipfile's name (cut at a
    NUL byte; the last duplicate wins) and, in a torch checkpoint, miniz's case-insensitive lookup."""
    lookups = [
        (lambda e: e.raw_name, "zipfile (numpy) loads the last, miniz (torch) whichever its sorted lookup finds"),
        (lambda e: e.name.split("\0", 1)[0], "zipfile (numpy) names both alike and loads the last"),
    ]
    if _torch_prefix(entries) is not None:
        lookups.append(
            (lambda e: e.raw_name.lower(), "miniz (torch) looks names up case-insensitively, loading either")
        )
    reported: set[tuple[int, int]] = set()
    for key, consequence in lookups:
        first: dict[object, ZipEntry] = {}
        for entry in entries:
            other = first.setdefault(key(entry), entry)
            if other is entry or (other.index, entry.index) in reported:
                continue
            reported.add((other.index, entry.index))
            if len(reported) > _MAX_REPORTED:
                continue
            problems.append(
                Problem(
                    "zip.duplicate_name",
                    f"members {other.name!r} (entry {other.index}) and {entry.name!r} (entry {entry.index}) "
                    f"share a name: {consequence}",
                    entry.header_offset,
                )
            )
    if len(reported) > _MAX_REPORTED:
        problems.append(Problem("zip.duplicate_name", f"... and {len(reported) - _MAX_REPORTED} more pairs like it"))


def _check_layout(
    blob: Blob, entries: list[ZipEntry], record: _EndRecord, end_regions: list[tuple[int, int, str]],
    problems: list[Problem],
) -> None:  # fmt: skip
    """Every byte belongs to exactly one member, the directory or the end records; nothing is shared."""
    regions = [(e.header_offset, e.end, f"member {e.name!r}") for e in entries]
    regions.append((record.cd_offset, record.cd_offset + record.cd_size, "the central directory"))
    regions.extend(end_regions)
    starts = sorted({r[0] for r in regions})
    for entry in entries:  # data descriptors, now that it is known where the next structure begins
        if entry.local_flags & _HAS_DESCRIPTOR:
            k = bisect.bisect_right(starts, entry.header_offset)
            next_start = starts[k] if k < len(starts) else blob.size
            entry.end += _descriptor_length(blob, entry, next_start, problems)
    regions[: len(entries)] = [(e.header_offset, e.end, f"member {e.name!r}") for e in entries]
    regions.sort()
    gaps: list[Problem] = []
    overlaps: list[Problem] = []
    pos, previous = 0, "the start of the file"
    for start, end, label in regions:
        if start == end:
            continue  # an empty directory shares no bytes (its offset is checked with zipfile's reading)
        if start > pos:
            gaps.extend(_gap(blob, pos, start, previous, label))
        elif start < pos:
            overlaps.append(
                Problem(
                    "zip.overlap",
                    f"{previous} and {label} overlap at offset {start}: one loader's bytes are another's",
                    start,
                )
            )
        if end >= pos:
            pos, previous = end, label
    if pos < blob.size:
        gaps.extend(_gap(blob, pos, blob.size, previous, "the end of the file"))
    elif pos > blob.size:
        gaps.append(
            Problem("zip.unaccounted_bytes", f"{previous} runs {pos - blob.size} bytes past the end of the file")
        )
    for found in (gaps, overlaps):
        problems.extend(found[:_MAX_REPORTED])
        if len(found) > _MAX_REPORTED:
            problems.append(Problem(found[0].rule, f"... and {len(found) - _MAX_REPORTED} more like it"))


def _gap(blob: Blob, start: int, end: int, before: str, after: str) -> list[Problem]:
    data = blob.read(start, min(end - start, 1 << 20))
    hint = ""
    if _LOCAL in data:
        hint = " and hold a local header no directory lists (a member streaming readers would read)"
    elif _CENTRAL in data:
        hint = " and hold central directory entries no end record points to"
    found = [
        Problem(
            "zip.unaccounted_bytes",
            f"{end - start} bytes at offset {start}, between {before} and {after}, lie outside every member "
            f"and the directory{hint}",
            start,
        )
    ]
    i = data.find(_EOCD)
    while i >= 0 and len(found) <= _MAX_REPORTED:
        found.append(
            Problem(
                "zip.multiple_eocd",
                f"another end-of-central-directory record at offset {start + i}, outside the archive's structure: "
                "a reader that picks it reads another member list",
                start + i,
            )
        )
        i = data.find(_EOCD, i + 1)
    return found


def read_directory(blob: Blob, max_entries: int) -> ZipDirectory:
    """The archive as torch (miniz) reads it, with every place another loader would read it differently.

    Raises :class:`ZipError` when miniz's reading itself fails.
    """
    problems: list[Problem] = []
    record, end_regions = _end_records(blob, problems)
    entries = _parse_entries(blob, record, max_entries, problems)
    for entry in entries:
        _read_local_header(blob, entry, problems)
    _check_names(entries, problems)
    _check_layout(blob, entries, record, end_regions, problems)
    return ZipDirectory(entries, problems)


def read_central_directory(blob: Blob, max_entries: int) -> list[ZipEntry]:
    """The members torch would read (see :func:`read_directory` for the disagreements)."""
    return read_directory(blob, max_entries).entries


# --------------------------------------------------------------------------- anomalies


def safe_member_path(name: str) -> bool:
    if not name or name.startswith(("/", "\\")) or "\x00" in name or "\\" in name:
        return False
    if len(name) > 1 and name[1] == ":":  # C:foo
        return False
    return ".." not in PurePosixPath(name).parts


def _report_anomalies(ctx: ScanContext, blob: Blob, directory: ZipDirectory) -> None:
    where = ctx.where(blob)
    for problem in directory.problems:
        ctx.hit(problem.rule, f"{where}: {problem.detail}", blob, problem.offset)
    for entry in directory.entries:
        if not safe_member_path(entry.name):
            ctx.hit("archive.path_traversal", f"{where}: member path {entry.name!r} is absolute or escapes", blob)
        for label, flags in (("central", entry.flags), ("local", entry.local_flags)):
            if flags & ~_BENIGN_FLAGS:
                ctx.hit(
                    "zip.flag_bits",
                    f"{where}: member {entry.name!r} {label} header sets flag bits 0x{flags & ~_BENIGN_FLAGS:04x}"
                    + (" (encrypted)" if flags & 0x0001 else ""),
                    blob,
                    entry.header_offset,
                )


# --------------------------------------------------------------------------- member bytes


@contextlib.contextmanager
def _open_member(ctx: ScanContext, blob: Blob, entry: ZipEntry) -> Iterator[Blob | None]:
    """The member's bytes as torch would read them (None, with a finding, if unreadable)."""
    where = ctx.where(blob)
    if entry.method == _STORED:
        if entry.usize != entry.csize:
            ctx.hit(
                "zip.header_mismatch",
                f"{where}: stored member {entry.name!r} says {entry.usize} bytes but holds {entry.csize}",
                blob,
                entry.header_offset,
            )
        yield blob.window(entry.data_offset, entry.csize, entry.name)
        return
    if entry.method not in (_DEFLATED, _BZIP2):
        ctx.hit(
            "zip.unsupported_method",
            f"{where}: member {entry.name!r} uses compression method {entry.method}",
            blob,
            entry.header_offset,
        )
        yield None
        return
    limit = ctx.policy.max_archive_expanded_bytes - ctx.expanded_bytes
    blob.prefetch(entry.data_offset, entry.csize)
    start, end = blob.start + entry.data_offset, blob.start + entry.data_offset + entry.csize
    if entry.method == _DEFLATED:
        chunks: Iterable[bytes] = inflate(blob.buf, start, end, -15)
    else:
        chunks = read_chunks(bz2.BZ2File(io.BytesIO(blob.buf[start:end])))
    with contextlib.ExitStack() as stack:
        try:  # only decompression errors are caught here, not errors of the scan of the member
            member: Blob | None = stack.enter_context(spool(blob, entry.name, chunks, limit))
        except (zlib.error, OSError, EOFError, ValueError) as exc:
            ctx.hit(
                "zip.malformed", f"{where}: member {entry.name!r} does not decompress: {exc}", blob, entry.header_offset
            )
            member = None
        if member is not None and not ctx.expand(blob, member.size):
            member = None
        if member is not None and member.size != entry.usize:
            ctx.hit(
                "zip.header_mismatch",
                f"{where}: member {entry.name!r} expands to {member.size} bytes, header says {entry.usize}",
                blob,
                entry.header_offset,
            )
        yield member


def _check_crc(ctx: ScanContext, blob: Blob, entry: ZipEntry, member: Blob, *, always: bool = False) -> None:
    if not always and member.size > _CRC_UP_TO and entry.method == _STORED:
        return
    member.prefetch()
    actual = zlib.crc32(member.buf[member.start : member.end]) if member.size else 0
    if actual != entry.crc:
        ctx.hit(
            "zip.bad_crc",
            f"{ctx.where(blob)}: member {entry.name!r} CRC-32 is {actual:08x}, header says {entry.crc:08x}",
            blob,
            entry.header_offset,
        )


# --------------------------------------------------------------------------- the scanner


def scan_zip(ctx: ScanContext, blob: Blob) -> str:
    where = ctx.where(blob)
    try:
        directory = read_directory(blob, ctx.policy.max_archive_members)
    except ZipError as exc:
        rule = "archive.too_many_members" if "policy" in str(exc) else "zip.malformed"
        ctx.hit(rule, f"{where}: {exc}", blob)
        return "zip"
    except struct.error as exc:
        ctx.hit("zip.malformed", f"{where}: truncated zip structure ({exc})", blob)
        return "zip"
    entries = directory.entries
    if not ctx.count_member(blob, len(entries)):
        return "zip"
    _report_anomalies(ctx, blob, directory)
    names = {e.name for e in entries}
    base = _torch_prefix(entries)
    if base is not None:
        return _scan_torch_zip(ctx, blob, entries, base)
    if {"config.json", "metadata.json"} <= names:  # Keras 3 `.keras`: config.json says what gets built
        _scan_members(ctx, blob, entries, skip=set(), internal=True)
        config = [e for e in entries if e.name == "config.json"][-1]  # zipfile's pick: the last
        with _open_member(ctx, blob, config) as member:
            if member is not None:
                keras_scan.check_keras_config(ctx, member)
        return "keras"
    if entries and all(e.name.endswith(".npy") for e in entries):  # what np.load(...npz) reads
        formats = _scan_members(ctx, blob, entries, skip=set(), internal=True)
        return "numpy_npz" if all(f == "numpy" for f in formats.values()) else "zip"
    _scan_members(ctx, blob, entries, skip=set(), internal=False)
    return "zip"


def _miniz_lookup(entries: list[ZipEntry]) -> dict[bytes, ZipEntry]:
    """Names as torch finds them: miniz compares names ASCII case-insensitively (duplicates were reported)."""
    found: dict[bytes, ZipEntry] = {}
    for entry in entries:
        found.setdefault(entry.raw_name.lower(), entry)
    return found


def _scan_members(
    ctx: ScanContext, blob: Blob, entries: list[ZipEntry], *, skip: set[int], internal: bool
) -> dict[int, str]:
    """Sniff and scan every member not in ``skip``; ``internal`` members are parts of one model file."""
    formats: dict[int, str] = {}
    for entry in entries:
        if entry.index in skip or (entry.name.endswith("/") and entry.usize == 0):
            continue
        ctx.check_time()
        with _open_member(ctx, blob, entry) as member:
            if member is None:
                continue
            _check_crc(ctx, blob, entry, member)
            formats[entry.index] = ctx.scan_member(member, apply_policy=not internal)
    return formats


def _scan_torch_zip(ctx: ScanContext, blob: Blob, entries: list[ZipEntry], base: bytes) -> str:
    """``base``: the lowercased ``<prefix>/`` torch looks every record up under."""
    where = ctx.where(blob)
    by_name = _miniz_lookup(entries)  # every entry is scanned below, whichever torch picks
    data_pkl = by_name[base + b"data.pkl"]
    fmt = "pytorch_zip"
    if base + b"constants.pkl" in by_name or any(e.raw_name.lower().startswith(base + b"code/") for e in entries):
        fmt = "torchscript"
        ctx.hit("torch.torchscript", f"{where}: TorchScript archive (torch.load hands it to torch.jit.load)", blob)
    declared: dict[str, tuple[int, int]] = {}
    with _open_member(ctx, blob, data_pkl) as member:
        if member is not None:
            _check_crc(ctx, blob, data_pkl, member, always=True)
            if pickle_scan.is_pickle_at(member.buf, member.start, member.end):
                scan = pickle_scan.scan_pickle(ctx, member)
                ctx.record_member(member, scan.format)
                declared = _declared_storages(scan.persistent_ids)
            else:
                inner = ctx.scan_member(member, apply_policy=False)
                ctx.hit("torch.no_data_pkl", f"{where}: {data_pkl.name} is {inner}, not a pickle", blob)
    storage_entries = _check_storages(ctx, blob, by_name, base, declared)
    for entry in storage_entries:
        _scan_storage(ctx, blob, entry)
    _scan_members(ctx, blob, entries, skip={data_pkl.index} | {e.index for e in storage_entries}, internal=True)
    return fmt


def _declared_storages(pids: list[object]) -> dict[str, tuple[int, int]]:
    """``key -> (expected bytes, element size)`` from ``('storage', type, key, location, count)`` ids."""
    out: dict[str, tuple[int, int]] = {}
    for pid in pids:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            continue
        storage_type, key, count = pid[1], pid[2], pid[4]
        if not (isinstance(storage_type, GlobalRef) and isinstance(key, str) and isinstance(count, int)):
            continue
        size = (
            STORAGE_ELEMENT_SIZE.get(storage_type.name, 0) if storage_type.module in ("torch", "torch.storage") else 0
        )
        out.setdefault(key, (count * size if size else -1, size))
    return out


def _check_storages(
    ctx: ScanContext, blob: Blob, by_name: dict[bytes, ZipEntry], base: bytes, declared: dict[str, tuple[int, int]]
) -> list[ZipEntry]:
    """Each declared storage must exist with the declared size (torch fails otherwise)."""
    where = ctx.where(blob)
    found: list[ZipEntry] = []
    for key, (expected, _size) in declared.items():
        entry = by_name.get(base + b"data/" + key.lower().encode("utf-8", "replace"))
        if entry is None:
            ctx.hit(
                "torch.storage_mismatch",
                f"{where}: storage {key!r} is declared but {base.decode('utf-8', 'replace')}data/{key} is missing",
                blob,
            )
            continue
        if expected >= 0 and entry.usize != expected:
            ctx.hit(
                "torch.storage_mismatch",
                f"{where}: storage {entry.name!r} holds {entry.usize} bytes, data.pkl declares {expected}",
                blob,
                entry.header_offset,
            )
        found.append(entry)
    return found


def _scan_storage(ctx: ScanContext, blob: Blob, entry: ZipEntry) -> None:
    """Raw tensor bytes: torch copies them, never unpickles them. Still, a real pickle here is reported."""
    ctx.check_time()
    with _open_member(ctx, blob, entry) as member:
        if member is not None:
            _scan_storage_bytes(ctx, blob, entry, member)


def _scan_storage_bytes(ctx: ScanContext, blob: Blob, entry: ZipEntry, member: Blob) -> None:
    # Random tensor bytes can start like a pickle, and even be a tiny data-only one ("N.").
    # Only a stream that imports a global can run code, so only that is scanned as a pickle.
    if pickle_vm.resolves_a_global(member.buf, member.start, member.end):
        ctx.record_member(member, pickle_scan.scan_pickle(ctx, member).format)
    else:
        ctx.record_member(member, "tensor_data")
