"""Pickle streams in a file: plain, several in a row, legacy torch checkpoints and joblib dumps.

Every stream is walked by :mod:`airlock.scan.pickle_vm` (the allowlist) and, independently, by
picklescan (a denylist with its own parser). Either one objecting blocks.

Layouts handled here, by content:

* plain pickle, possibly followed by more pickles (``pickle.dump`` called repeatedly): each is
  walked; bytes after the last one that are not a pickle are reported.
* legacy torch (``_use_new_zipfile_serialization=False``): five pickles (magic number,
  protocol version, sys info, the object, storage keys) and then raw storage records
  ``[int64 count][count * element size bytes]`` in key order. The records are checked against
  the storages the pickles declare, so nothing hides in the tail.
* joblib: one pickle with raw array bytes after each NumpyArrayWrapper (see pickle_vm). Those
  bytes are opcodes to every other loader (pickle.load, torch.load, np.load(allow_pickle=True)),
  so a stream with joblib arrays is walked a second time the way those loaders read it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from airlock.scan.allowlist import STORAGE_ELEMENT_SIZE
from airlock.scan.context import Blob, ScanContext
from airlock.scan.pickle_vm import GlobalRef, ListV, PickleWalk, probe_pickle, walk_pickle

TORCH_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
TORCH_LEGACY_PROTOCOL_VERSION = 1001
_LEGACY_PICKLES = ("magic number", "protocol version", "sys info", "object", "storage keys")


@dataclass
class PickleScan:
    format: str
    walks: list[PickleWalk] = field(default_factory=list)

    @property
    def persistent_ids(self) -> list[Any]:
        return [pid for walk in self.walks for pid in walk.persistent_ids]


def starts_like_pickle(head: bytes) -> bool:
    """A PROTO opcode with a protocol the unpickler accepts (0-5)."""
    return len(head) >= 2 and head[0] == 0x80 and head[1] <= 5


def is_pickle_at(buf: Any, start: int, end: int) -> bool:
    """Would an unpickler started at ``start`` treat these bytes as a pickle (see probe_pickle)?"""
    return starts_like_pickle(bytes(buf[start : start + 2])) or probe_pickle(buf, start, end)


def scan_pickle(ctx: ScanContext, blob: Blob, *, reading: str = "joblib") -> PickleScan:
    """Walk every pickle in ``blob`` and report findings; returns the refined format.

    ``reading`` is who reads ``blob``: ``"joblib"`` for a file any loader may open (joblib.load's
    pure-Python reading with its raw arrays, then the C reading of pickle.load/torch.load/np.load
    where they differ); ``"python"`` for the pickle inside joblib's legacy ZF file (its
    pure-Python unpickler, no array handling); ``"c"`` for an npy object array (pickle.load).
    """
    first = _walk(ctx, blob, blob.start, reading=reading)
    result = PickleScan("pickle", [first])
    _check_plain_reading(ctx, blob, first)
    if not first.complete:
        return result
    if type(first.result) is int and first.result == TORCH_MAGIC_NUMBER:
        result.format = "pytorch_legacy"
        _scan_torch_legacy(ctx, blob, result)
        return result
    if first.uses_joblib:
        result.format = "joblib"
    _scan_following_pickles(ctx, blob, result, reading)
    return result


def scan_pickle_format(ctx: ScanContext, blob: Blob) -> str:
    return scan_pickle(ctx, blob).format


_PREFETCH = 64 << 20


def _walk(ctx: ScanContext, blob: Blob, start: int, *, reading: str = "joblib") -> PickleWalk:
    ctx.check_time()
    blob.prefetch(start - blob.start, _PREFETCH)
    joblib, python = reading == "joblib", reading in ("joblib", "python")
    walk = walk_pickle(blob.buf, start, blob.end, check_time=ctx.check_time, joblib=joblib, python=python)
    report_walk(ctx, blob, walk)
    return walk


def _check_plain_reading(ctx: ScanContext, blob: Blob, walk: PickleWalk) -> None:
    """joblib.load skips array data after NumpyArrayWrappers; every other loader reads those bytes as opcodes.

    Walk the stream as pickle.load / torch.load / np.load(allow_pickle=True) do and report what
    that reading would reach beyond the first array: two readings of one stream, the other one
    reaching code, is a block at every tier. (A plain reading that breaks on the array bytes, as
    with every real joblib file, reaches nothing: the loader raises there.)
    """
    if not walk.joblib_reads:
        return
    first_read = walk.joblib_reads[0]
    ctx.check_time()
    plain = walk_pickle(blob.buf, walk.start, blob.end, check_time=ctx.check_time, joblib=False, python=False)
    where = ctx.where(blob)
    for hit in plain.hits:
        if hit.offset < first_read or hit.fatal:
            continue  # the same opcodes as the joblib reading (reported there), or the loader raises here
        offset = hit.offset - blob.start
        ctx.hit(
            "pickle.reading_differs",
            f"{where} @{offset}: joblib.load reads the bytes from @{first_read - blob.start} as array data, "
            f"pickle.load/torch.load/np.load read them as opcodes: {hit.detail}",
            blob,
            offset,
        )


def _scan_following_pickles(ctx: ScanContext, blob: Blob, result: PickleScan, reading: str) -> None:
    pos = result.walks[-1].end
    while pos < blob.end:
        if not is_pickle_at(blob.buf, pos, blob.end):
            ctx.hit(
                "pickle.trailing_data",
                f"{ctx.where(blob)}: {blob.end - pos} bytes after pickle #{len(result.walks)} are not a pickle",
                blob,
                pos - blob.start,
            )
            return
        walk = _walk(ctx, blob, pos, reading=reading)
        result.walks.append(walk)
        _check_plain_reading(ctx, blob, walk)
        if not walk.complete:
            return
        pos = walk.end


# --------------------------------------------------------------------------- reporting


def report_walk(ctx: ScanContext, blob: Blob, walk: PickleWalk) -> None:
    """Turn a walk's hits (and a parse error) into findings, then ask picklescan for a second opinion."""
    where = ctx.where(blob)
    for hit in walk.hits:
        ctx.hit(hit.rule, f"{where} @{hit.offset - blob.start}: {hit.detail}", blob, hit.offset - blob.start)
    if walk.suppressed_hits:
        ctx.hit("pickle.too_many_findings", f"{where}: {walk.suppressed_hits} more findings not listed", blob)
    if walk.error is not None and not any(h.offset == walk.error.offset for h in walk.hits):
        offset = walk.error.offset - blob.start
        ctx.hit("pickle.malformed", f"{where} @{offset}: {walk.error}", blob, offset)
    for nested in walk.nested:
        report_walk(ctx, blob, nested)
    _picklescan_opinion(ctx, blob, walk)


@contextlib.contextmanager
def _quiet_picklescan() -> Iterator[None]:
    """picklescan logs every dangerous global at WARNING; Airlock reports them itself."""
    logger = logging.getLogger("picklescan")
    previous = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = previous


def _picklescan_opinion(ctx: ScanContext, blob: Blob, walk: PickleWalk) -> None:
    """Run picklescan on the same opcode bytes; a dangerous global or a parse error blocks."""
    from picklescan.scanner import SafetyLevel, scan_pickle_bytes

    data = b"".join(bytes(blob.buf[a:b]) for a, b in walk.segments)
    where = ctx.where(blob)
    offset = walk.start - blob.start
    try:
        with _quiet_picklescan():
            result = scan_pickle_bytes(io.BytesIO(data), where, multiple_pickles=False)
    except Exception as exc:
        ctx.hit("picklescan.error", f"{where} @{offset}: picklescan failed: {exc!r}", blob, offset)
        return
    for g in result.globals:
        if g.safety == SafetyLevel.Dangerous:
            ctx.hit(
                "picklescan.dangerous_global",
                f"{where} @{offset}: picklescan flags {g.module}.{g.name} as dangerous",
                blob,
                offset,
            )
    if result.scan_err and walk.complete:
        ctx.hit("picklescan.error", f"{where} @{offset}: picklescan could not parse the stream", blob, offset)


# --------------------------------------------------------------------------- legacy torch


def _scan_torch_legacy(ctx: ScanContext, blob: Blob, result: PickleScan) -> None:
    for label in _LEGACY_PICKLES[1:]:
        walk = _walk(ctx, blob, result.walks[-1].end, reading="c")  # torch reads them with pickle's Unpickler
        result.walks.append(walk)
        if not walk.complete:
            ctx.hit("torch.legacy_tail", f"{ctx.where(blob)}: legacy torch {label} pickle is malformed", blob)
            return
    version = result.walks[1].result
    if version != TORCH_LEGACY_PROTOCOL_VERSION:
        ctx.hit("torch.legacy_tail", f"{ctx.where(blob)}: legacy torch protocol version {version!r} is not 1001", blob)
        return
    problem = _check_legacy_records(blob, result.walks[3], result.walks[4])
    if problem:
        ctx.hit("torch.legacy_tail", f"{ctx.where(blob)}: {problem}", blob)


def _storage_decls(walk: PickleWalk) -> dict[str, tuple[int, int]]:
    """``key -> (element size, element count)`` from persistent ids ``('storage', type, key, location, count)``."""
    decls: dict[str, tuple[int, int]] = {}
    for pid in walk.persistent_ids:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            continue
        storage_type, key, count = pid[1], pid[2], pid[4]
        if isinstance(storage_type, GlobalRef) and storage_type.module in ("torch", "torch.storage"):
            size = STORAGE_ELEMENT_SIZE.get(storage_type.name)
            if size is not None and isinstance(key, str) and isinstance(count, int):
                decls.setdefault(key, (size, count))
    return decls


def _check_legacy_records(blob: Blob, main: PickleWalk, keys_walk: PickleWalk) -> str | None:
    """Walk the raw storage records after the pickles; they must match the declarations exactly."""
    keys = keys_walk.result
    if not (isinstance(keys, ListV) and all(isinstance(k, str) for k in keys.items)):
        return "legacy torch storage keys are not a list of strings"
    decls = _storage_decls(main)
    pos = keys_walk.end
    for key in keys.items:
        if key not in decls:
            return f"storage {key!r} is listed but never declared with a known storage type"
        element_size, count = decls[key]
        header = blob.buf[pos : pos + 8]
        if len(header) < 8 or pos + 8 > blob.end:
            return f"storage {key!r} record at offset {pos - blob.start} is truncated"
        (stored_count,) = struct.unpack("<q", header)
        if stored_count != count:
            return f"storage {key!r} has {stored_count} elements on disk but {count} declared"
        pos += 8 + stored_count * element_size
        if pos > blob.end:
            return f"storage {key!r} data runs past the end of the file"
    if pos != blob.end:
        return f"{blob.end - pos} unexplained bytes after the last storage record (offset {pos - blob.start})"
    return None
