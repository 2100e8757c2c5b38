"""Zip containers read the way torch reads them, so nothing torch would load goes unscanned.

torch's ``PyTorchStreamReader`` (miniz) trusts the central directory: a member's data starts at
its local header offset + 30 + the *local* name and extra lengths, whatever that local name
says; CRCs and general-purpose flags are ignored. Python's ``zipfile`` instead refuses such
members (name mismatch, "encrypted" flag, bad CRC) - which is how scanners built on it were
bypassed. This reader follows miniz, reads every member, sniffs each by content whatever its
name, and reports each oddity as a finding.

A torch checkpoint is recognised by ``<prefix>/data.pkl`` (``prefix`` = the first member's top
directory, as torch derives it); its storages ``<prefix>/data/<key>`` are raw tensor bytes
that torch never unpickles, so they are only checked for size and for looking like a pickle.
"""

from __future__ import annotations

import bz2
import contextlib
import io
import itertools
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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
_MAX_COMMENT = 0xFFFF
# Flag bits real writers set: 0x0008 data descriptor (streaming writers), 0x0800 UTF-8 names.
# 0x0002/0x0004 are deflate level hints. Anything else (encryption 0x0001, strong encryption 0x0040,
# masked headers 0x2000 ...) is either unreadable or a trick.
_BENIGN_FLAGS = 0x0008 | 0x0800 | 0x0002 | 0x0004
_STORED, _DEFLATED, _BZIP2 = 0, 8, 12
# Central header from offset 8: flags, method, time, date, crc, csize, usize, name/extra/comment
# lengths, disk, internal attrs, external attrs, local header offset.
_CENTRAL_FIELDS = struct.Struct("<4H3I3H2HII")
# Local header: flags (6), method (8), and name/extra lengths (26, 28); the rest is unused.
_LOCAL_FIELDS = struct.Struct("<6xHH16xHH")
# CRC-32 is checked on a torch zip's data.pkl, on deflated members (read in full anyway) and on
# stored members up to this size. Not on raw torch storages: torch ignores CRCs and never
# deserialises storages, so a bad CRC there is no bypass, and checking it would make a
# multi-GiB checkpoint cost a full read.
_CRC_UP_TO = 64 << 20


class ZipError(Exception):
    pass


@dataclass
class ZipEntry:
    index: int
    raw_name: bytes
    name: str
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    header_offset: int
    data_offset: int = -1
    local_raw_name: bytes = b""
    local_flags: int = 0
    local_method: int = 0


# --------------------------------------------------------------------------- central directory


def _u16(b: bytes, o: int) -> int:
    return struct.unpack_from("<H", b, o)[0]


def _u32(b: bytes, o: int) -> int:
    return struct.unpack_from("<I", b, o)[0]


def _u64(b: bytes, o: int) -> int:
    return struct.unpack_from("<Q", b, o)[0]


def _find_eocd(blob: Blob) -> int:
    tail_start = max(0, blob.size - (22 + _MAX_COMMENT))
    tail = blob.read(tail_start, blob.size - tail_start)
    i = tail.rfind(_EOCD)
    if i < 0 or len(tail) - i < 22:
        raise ZipError("no end-of-central-directory record")
    return tail_start + i


def _directory_bounds(blob: Blob) -> tuple[int, int, int]:
    """``(entry count, central directory offset, size)``, following zip64 records when present."""
    eocd = _find_eocd(blob)
    rec = blob.read(eocd, 22)
    count, cd_size, cd_offset = _u16(rec, 10), _u32(rec, 12), _u32(rec, 16)
    if count == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        loc = blob.read(eocd - 20, 20) if eocd >= 20 else b""
        if len(loc) == 20 and loc[:4] == _ZIP64_LOCATOR:
            z64 = _u64(loc, 8)
            rec64 = blob.read(z64, 56)
            if len(rec64) < 56 or rec64[:4] != _ZIP64_EOCD:
                raise ZipError("zip64 end-of-central-directory record is missing")
            count, cd_size, cd_offset = _u64(rec64, 32), _u64(rec64, 40), _u64(rec64, 48)
    if cd_offset + cd_size > blob.size:
        raise ZipError(f"central directory ({cd_offset}+{cd_size}) lies outside the file")
    return count, cd_offset, cd_size


def _zip64_extra(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    i = 0
    while i + 4 <= len(extra):
        tag, size = _u16(extra, i), _u16(extra, i + 2)
        body = extra[i + 4 : i + 4 + size]
        if tag == 0x0001:
            j = 0
            if usize == 0xFFFFFFFF and j + 8 <= len(body):
                usize, j = _u64(body, j), j + 8
            if csize == 0xFFFFFFFF and j + 8 <= len(body):
                csize, j = _u64(body, j), j + 8
            if offset == 0xFFFFFFFF and j + 8 <= len(body):
                offset = _u64(body, j)
        i += 4 + size
    return usize, csize, offset


def read_central_directory(blob: Blob, max_entries: int) -> list[ZipEntry]:
    count, cd_offset, cd_size = _directory_bounds(blob)
    if count > max_entries:
        raise ZipError(f"{count} members, more than the policy's {max_entries}")
    blob.prefetch(cd_offset, cd_size)
    cd = blob.read(cd_offset, cd_size)
    entries: list[ZipEntry] = []
    pos = 0
    while pos + 46 <= len(cd) and cd[pos : pos + 4] == _CENTRAL:
        (flags, method, _time, _date, crc, csize, usize, n, e, c, _disk, _iattr, _eattr, offset) = (
            _CENTRAL_FIELDS.unpack_from(cd, pos + 8)
        )
        raw_name = cd[pos + 46 : pos + 46 + n]
        extra = cd[pos + 46 + n : pos + 46 + n + e]
        usize, csize, offset = _zip64_extra(extra, usize, csize, offset)
        name = raw_name.decode("utf-8", "replace")
        entries.append(ZipEntry(len(entries), raw_name, name, flags, method, crc, csize, usize, offset))
        pos += 46 + n + e + c
        if len(entries) > max_entries:
            raise ZipError(f"more than the policy's {max_entries} members")
    if len(entries) != count:
        raise ZipError(f"central directory lists {len(entries)} members, the end record says {count}")
    for entry in entries:
        _read_local_header(blob, entry)
    return entries


def _read_local_header(blob: Blob, entry: ZipEntry) -> None:
    head = blob.read(entry.header_offset, 30)
    if len(head) < 30 or head[:4] != _LOCAL:
        raise ZipError(f"member {entry.name!r}: no local header at offset {entry.header_offset}")
    entry.local_flags, entry.local_method, n, e = _LOCAL_FIELDS.unpack_from(head)
    entry.local_raw_name = blob.read(entry.header_offset + 30, n)
    entry.data_offset = entry.header_offset + 30 + n + e  # what miniz does: local lengths, central sizes
    if entry.data_offset + entry.csize > blob.size:
        raise ZipError(f"member {entry.name!r}: data runs past the end of the file")


# --------------------------------------------------------------------------- anomalies


def safe_member_path(name: str) -> bool:
    if not name or name.startswith(("/", "\\")) or "\x00" in name or "\\" in name:
        return False
    if len(name) > 1 and name[1] == ":":  # C:foo
        return False
    return ".." not in PurePosixPath(name).parts


def _report_anomalies(ctx: ScanContext, blob: Blob, entries: list[ZipEntry]) -> None:
    where = ctx.where(blob)
    seen: set[bytes] = set()
    for entry in entries:
        if entry.raw_name in seen:
            ctx.hit("zip.duplicate_name", f"{where}: member name {entry.name!r} appears more than once", blob)
        seen.add(entry.raw_name)
        if not safe_member_path(entry.name):
            ctx.hit("archive.path_traversal", f"{where}: member path {entry.name!r} is absolute or escapes", blob)
        if entry.local_raw_name != entry.raw_name:
            local = entry.local_raw_name.decode("utf-8", "replace")
            ctx.hit(
                "zip.name_mismatch",
                f"{where}: member {entry.name!r} has local header name {local!r} (torch reads it as {entry.name!r})",
                blob,
                entry.header_offset,
            )
        for label, flags in (("central", entry.flags), ("local", entry.local_flags)):
            if flags & ~_BENIGN_FLAGS:
                ctx.hit(
                    "zip.flag_bits",
                    f"{where}: member {entry.name!r} {label} header sets flag bits 0x{flags & ~_BENIGN_FLAGS:04x}"
                    + (" (encrypted)" if flags & 0x0001 else ""),
                    blob,
                    entry.header_offset,
                )
        if entry.local_method != entry.method:
            ctx.hit(
                "zip.header_mismatch",
                f"{where}: member {entry.name!r} compression is {entry.method} centrally, {entry.local_method} locally",
                blob,
                entry.header_offset,
            )
    spans = sorted((e.header_offset, e.data_offset + e.csize, e.name) for e in entries)
    for (_a0, a1, a_name), (b0, _b1, b_name) in itertools.pairwise(spans):
        if b0 < a1:
            ctx.hit("zip.overlap", f"{where}: members {a_name!r} and {b_name!r} overlap at offset {b0}", blob, b0)


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
        entries = read_central_directory(blob, ctx.policy.max_archive_members)
    except ZipError as exc:
        rule = "archive.too_many_members" if "policy" in str(exc) else "zip.malformed"
        ctx.hit(rule, f"{where}: {exc}", blob)
        return "zip"
    except struct.error as exc:
        ctx.hit("zip.malformed", f"{where}: truncated zip structure ({exc})", blob)
        return "zip"
    if not ctx.count_member(blob, len(entries)):
        return "zip"
    _report_anomalies(ctx, blob, entries)
    names = {e.name for e in entries}
    prefix = entries[0].name.split("/", 1)[0] if entries and "/" in entries[0].name else None
    if prefix is not None and f"{prefix}/data.pkl" in names:
        return _scan_torch_zip(ctx, blob, entries, prefix)
    if {"config.json", "metadata.json"} <= names:  # Keras 3 `.keras`: config.json says what gets built
        _scan_members(ctx, blob, entries, skip=set(), internal=True)
        config = next(e for e in entries if e.name == "config.json")
        with _open_member(ctx, blob, config) as member:
            if member is not None:
                keras_scan.check_keras_config(ctx, member)
        return "keras"
    if entries and all(e.name.endswith(".npy") for e in entries):  # what np.load(...npz) reads
        formats = _scan_members(ctx, blob, entries, skip=set(), internal=True)
        return "numpy_npz" if all(f == "numpy" for f in formats.values()) else "zip"
    _scan_members(ctx, blob, entries, skip=set(), internal=False)
    return "zip"


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


def _scan_torch_zip(ctx: ScanContext, blob: Blob, entries: list[ZipEntry], prefix: str) -> str:
    where = ctx.where(blob)
    by_name: dict[str, ZipEntry] = {}
    for e in entries:  # a duplicate name was reported; every entry is scanned below whichever torch picks
        by_name.setdefault(e.name, e)
    data_pkl = by_name[f"{prefix}/data.pkl"]
    fmt = "pytorch_zip"
    if f"{prefix}/constants.pkl" in by_name or any(e.name.startswith(f"{prefix}/code/") for e in entries):
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
    storage_entries = _check_storages(ctx, blob, by_name, prefix, declared)
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
    ctx: ScanContext, blob: Blob, by_name: dict[str, ZipEntry], prefix: str, declared: dict[str, tuple[int, int]]
) -> list[ZipEntry]:
    """Each declared storage must exist with the declared size (torch fails otherwise)."""
    where = ctx.where(blob)
    found: list[ZipEntry] = []
    for key, (expected, _size) in declared.items():
        entry = by_name.get(f"{prefix}/data/{key}")
        if entry is None:
            ctx.hit(
                "torch.storage_mismatch",
                f"{where}: storage {key!r} is declared but {prefix}/data/{key} is missing",
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
