"""What every format scanner shares: the bytes it looks at (:class:`Blob`) and the scan state.

A :class:`Blob` is a window ``[start, end)`` over a buffer: an ``mmap`` of a file on disk, or
bytes decompressed from an archive. Stored zip/tar members are windows over their parent's
mmap, so a multi-GiB checkpoint is never copied to be sniffed.
"""

from __future__ import annotations

import contextlib
import mmap
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from airlock.policy import TierPolicy
from airlock.scan.report import MemberReport
from airlock.scan.rules import Hit

Buffer = bytes | mmap.mmap

CHUNK = 1 << 20
# Decompressed members up to this size stay in memory; larger ones are spooled to a temporary
# file and mmapped, so a multi-GiB compressed member never has to fit in the worker's RAM.
IN_MEMORY_LIMIT = 64 << 20


class BudgetExceeded(Exception):
    """The scan ran out of time or bytes; the rule says which (``scan.time_budget`` / ``scan.byte_budget``)."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.rule = rule
        self.detail = detail


def basename(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Blob:
    """Bytes ``buf[start:end]`` plus where they came from.

    ``location`` is the member chain inside the top-level file ("archive/data.pkl",
    "a.tar!b.pkl"); ``None`` for the file itself. ``name`` is the member's own file name: used
    only to check claims (a ``.safetensors`` that is not one) and for code files, never to skip
    content sniffing.
    """

    buf: Buffer
    start: int
    end: int
    name: str
    location: str | None = None
    depth: int = 0

    @property
    def size(self) -> int:
        return self.end - self.start

    def head(self, n: int) -> bytes:
        return self.buf[self.start : min(self.end, self.start + n)]

    def read(self, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset`` relative to the blob (fewer at the end)."""
        a = self.start + offset
        return self.buf[a : min(self.end, a + n)]

    def prefetch(self, offset: int = 0, length: int | None = None) -> None:
        """Ask the kernel to read ``[offset, offset + length)`` ahead: it is about to be read in full.

        Files are mapped with MADV_RANDOM (most of a scan is reading headers, and the default
        readahead would pull megabytes around every header); ranges that are read sequentially
        say so here.
        """
        if not isinstance(self.buf, mmap.mmap):
            return
        a = self.start + offset
        b = self.end if length is None else min(self.end, a + length)
        aligned = a - a % mmap.PAGESIZE
        if b > aligned:
            self.buf.madvise(mmap.MADV_WILLNEED, aligned, b - aligned)

    def tobytes(self) -> bytes:
        return self.buf[self.start : self.end]

    def window(self, offset: int, length: int, name: str) -> Blob:
        """A member stored inside this blob, without copying."""
        a = self.start + offset
        return Blob(self.buf, a, a + length, basename(name), self.child_location(name), self.depth + 1)

    def tail_from(self, offset: int) -> Blob:
        """The rest of this blob from ``offset`` (same member: e.g. the pickle after an npy header)."""
        return Blob(self.buf, self.start + offset, self.end, self.name, self.location, self.depth)

    def child(self, data: bytes, name: str) -> Blob:
        """A member whose bytes had to be materialised (decompressed)."""
        return Blob(data, 0, len(data), basename(name), self.child_location(name), self.depth + 1)

    def child_location(self, name: str) -> str:
        return f"{self.location}!{name}" if self.location else name

    @property
    def suffix(self) -> str:
        """``.safetensors`` of ``model.safetensors`` (like PurePosixPath.suffix; string ops: a
        checkpoint has thousands of members)."""
        i = self.name.rfind(".")
        return self.name[i:].lower() if 0 < i < len(self.name) - 1 else ""


@dataclass
class ScanContext:
    """State for one top-level file, plus what crosses files (ONNX external data, SavedModel dirs)."""

    policy: TierPolicy
    deadline: float
    clock: Callable[[], float] = time.monotonic
    # Set by the orchestrator: sniff a blob and run the right scanner; returns the detected format.
    # ``apply_policy`` is False for the internals of one model file (a torch zip's data.pkl), which
    # the policy judges as the whole file, not member by member.
    dispatch: Callable[[ScanContext, Blob, bool], str] | None = None
    rel_path: str = ""
    hits: list[Hit] = field(default_factory=list)
    members: list[MemberReport] = field(default_factory=list)
    expanded_bytes: int = 0
    archive_members: int = 0
    onnx_external_refs: set[str] = field(default_factory=set)
    savedmodel_dirs: set[str] = field(default_factory=set)

    def hit(self, rule: str, detail: str, blob: Blob | None = None, offset: int | None = None) -> None:
        self.hits.append(Hit(rule, detail, blob.location if blob else None, offset))

    def check_time(self) -> None:
        if self.clock() > self.deadline:
            raise BudgetExceeded(
                "scan.time_budget", f"scan time budget of {self.policy.scan_time_budget_s:g}s exceeded"
            )

    def scan_member(self, blob: Blob, *, apply_policy: bool = True) -> str:
        """Scan a container member by content (recursion point for zip, tar, gzip ...)."""
        assert self.dispatch is not None
        if blob.depth > self.policy.max_archive_depth:
            limit = self.policy.max_archive_depth
            self.hit(
                "archive.too_deep",
                f"{blob.location} is nested {blob.depth} deep (policy max_archive_depth={limit})",
                blob,
            )
            return "unscanned"
        fmt = self.dispatch(self, blob, apply_policy)
        self.record_member(blob, fmt)
        return fmt

    def record_member(self, blob: Blob, fmt: str) -> None:
        self.members.append(MemberReport(path=blob.location or blob.name, detected_format=fmt, size=blob.size))

    def count_member(self, blob: Blob, count: int = 1) -> bool:
        """Account archive members; False (with a hit) once the policy's member cap is passed."""
        self.archive_members += count
        if self.archive_members > self.policy.max_archive_members:
            self.hit(
                "archive.too_many_members",
                f"more than {self.policy.max_archive_members} archive members (policy max_archive_members)",
                blob,
            )
            return False
        return True

    def expand(self, blob: Blob, nbytes: int) -> bool:
        """Account bytes an archive expands to; False (with a hit) once over the policy limit."""
        self.expanded_bytes += nbytes
        if self.expanded_bytes > self.policy.max_archive_expanded_bytes:
            self.hit(
                "archive.too_large",
                f"archive members expand beyond {self.policy.max_archive_expanded_bytes} bytes "
                "(policy max_archive_expanded_bytes)",
                blob,
            )
            return False
        return True

    def where(self, blob: Blob) -> str:
        """``file`` or ``file!member`` for details that must name the file."""
        return f"{self.rel_path}!{blob.location}" if blob.location else self.rel_path


@contextlib.contextmanager
def spool(parent: Blob, name: str, chunks: Iterable[bytes], limit: int) -> Iterator[Blob]:
    """A child blob from decompressed ``chunks``, read up to ``limit + 1`` bytes (more = over policy)."""
    held: list[bytes] = []
    total = 0
    spill = None
    try:
        for chunk in chunks:
            chunk = chunk[: limit + 1 - total]
            total += len(chunk)
            if spill is None and total > IN_MEMORY_LIMIT:
                spill = tempfile.TemporaryFile(prefix="airlock-scan-")  # noqa: SIM115 - closed in finally
                spill.writelines(held)
                held.clear()
            if spill is not None:
                spill.write(chunk)
            else:
                held.append(chunk)
            if total > limit:
                break
        if spill is None:
            yield parent.child(b"".join(held), name)
            return
        spill.flush()
        with mmap.mmap(spill.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            yield Blob(mapped, 0, total, name.rsplit("/", 1)[-1], parent.child_location(name), parent.depth + 1)
    finally:
        if spill is not None:
            spill.close()


def inflate(buf: Buffer, start: int, end: int, wbits: int) -> Iterator[bytes]:
    """Decompress a zlib/deflate stream in bounded chunks; raises zlib.error if it is cut short."""
    d = zlib.decompressobj(wbits)
    pos = start
    while not d.eof:
        if d.unconsumed_tail:
            data = d.unconsumed_tail
        elif pos < end:
            data = buf[pos : min(end, pos + CHUNK)]
            pos += len(data)
        else:
            tail = d.flush()
            if tail:
                yield tail
            if not d.eof:
                raise zlib.error("compressed stream is truncated")
            return
        out = d.decompress(data, CHUNK)
        if out:
            yield out


def read_chunks(stream: object) -> Iterator[bytes]:
    """Chunks of a decompressing file object (gzip.GzipFile, bz2.BZ2File, lzma.LZMAFile)."""
    while True:
        chunk = stream.read(CHUNK)  # type: ignore[attr-defined]
        if not chunk:
            return
        yield chunk
