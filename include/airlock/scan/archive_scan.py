"""Tar archives and compressed streams (gzip, bz2, xz/lzma, zlib): unpack within bounds, scan by content.

Each member or decompressed stream is scanned like a file (``ScanContext.scan_member``), with
the nesting depth, member count and expanded bytes capped by the tier policy - a zip bomb or a
deeply nested archive blocks instead of exhausting the worker. Link and device members and
paths that escape the archive are reported (extracting them is an attack of its own). Formats
whose decoder is not installed (7z, zstd, lz4) cannot be looked into: the tier decides.

torch's pre-1.0 checkpoints were tar files of pickles (``sys_info``, ``pickle``, ``tensors``,
``storages``); ``torch.load(weights_only=False)`` still reads them - it unpickles ``storages``
first, so that member alone is enough to run code - and their storage stream interleaves
pickles with raw bytes. Airlock refuses any tar with a ``storages`` member outright.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import tarfile
import zlib
from collections.abc import Iterator
from typing import Any

from airlock.scan.context import Blob, ScanContext, inflate, read_chunks, spool

_COMPRESSED_SUFFIXES = {".gz", ".bz2", ".xz", ".lzma", ".z"}
_TORCH_TAR_FIRST = "storages"  # torch's legacy_load: tar.extract("storages"), then pickle.load on it


class BlobReader(io.RawIOBase):
    """A read-only, seekable file over a blob (tarfile and the decompressors want a file)."""

    def __init__(self, blob: Blob) -> None:
        self.blob = blob
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.blob.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        data = self.blob.read(self.pos, len(buffer))
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


def scan_compressed(ctx: ScanContext, blob: Blob, fmt: str) -> str:
    where = ctx.where(blob)
    if not ctx.count_member(blob):
        return fmt
    limit = ctx.policy.max_archive_expanded_bytes - ctx.expanded_bytes
    blob.prefetch()
    # "w.npy.gz" holds "w.npy" (whose name is then checked against its content like any file's).
    stripped = blob.name[: -len(blob.suffix)] if blob.suffix in _COMPRESSED_SUFFIXES else ""
    inner_name = stripped or f"{blob.name}[{fmt}]"
    with contextlib.ExitStack() as stack:
        try:  # only decompression errors are caught here, not errors of the scan of the content
            inner = stack.enter_context(spool(blob, inner_name, _chunks(blob, fmt), limit))
        except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
            ctx.hit("archive.malformed", f"{where}: {fmt} stream does not decompress: {exc}", blob)
            return fmt
        if ctx.expand(blob, inner.size):
            ctx.scan_member(inner)
    return fmt


def _chunks(blob: Blob, fmt: str) -> Iterator[bytes]:
    if fmt == "zlib":
        return inflate(blob.buf, blob.start, blob.end, zlib.MAX_WBITS)
    reader: Any = BlobReader(blob)  # a binary file object; typeshed wants IO[bytes]
    if fmt == "gzip":
        return read_chunks(gzip.GzipFile(fileobj=reader))  # several gzip members are read as one stream
    if fmt == "bz2":
        return read_chunks(bz2.BZ2File(reader))
    return read_chunks(lzma.LZMAFile(reader))  # xz and legacy .lzma: format detected by lzma


def scan_tar(ctx: ScanContext, blob: Blob) -> str:
    where = ctx.where(blob)
    try:
        tar = tarfile.open(fileobj=BlobReader(blob), mode="r:")  # type: ignore[arg-type]  # noqa: SIM115
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        ctx.hit("archive.malformed", f"{where}: tar archive cannot be read: {exc}", blob)
        return "tar"
    with tar:
        members: list[tarfile.TarInfo] = []
        try:  # listing errors are the archive's; errors while scanning members are not caught here
            for member in tar:
                members.append(member)
                if not ctx.count_member(blob):
                    return "tar"
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            ctx.hit("archive.malformed", f"{where}: tar archive cannot be read: {exc}", blob)
            return "tar"
        if any(m.name == _TORCH_TAR_FIRST for m in members):
            ctx.hit("torch.legacy_tar", f"{where}: torch pre-1.0 tar checkpoint (not loadable with weights_only)", blob)
        for member in members:
            ctx.check_time()
            _scan_tar_member(ctx, blob, tar, member)
    return "tar"


def _scan_tar_member(ctx: ScanContext, blob: Blob, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    from airlock.scan.zip_scan import safe_member_path

    where = ctx.where(blob)
    if not safe_member_path(member.name):
        ctx.hit("archive.path_traversal", f"{where}: member path {member.name!r} is absolute or escapes", blob)
    if member.issym() or member.islnk() or member.isdev() or member.isfifo():
        target = f" -> {member.linkname!r}" if member.linkname else ""
        ctx.hit("archive.link", f"{where}: member {member.name!r} is a link or device{target}", blob)
        return
    if not member.isfile():
        return
    if member.sparse is None and member.offset_data + member.size <= blob.size:
        ctx.scan_member(blob.window(member.offset_data, member.size, member.name))
        return
    limit = ctx.policy.max_archive_expanded_bytes - ctx.expanded_bytes
    with contextlib.ExitStack() as stack:
        try:  # sparse (or truncated) members have to be extracted by tarfile
            inner = stack.enter_context(spool(blob, member.name, read_chunks(tar.extractfile(member)), limit))
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            ctx.hit("archive.malformed", f"{where}: member {member.name!r} cannot be extracted: {exc}", blob)
            return
        if ctx.expand(blob, inner.size):
            ctx.scan_member(inner)


def scan_unscannable(ctx: ScanContext, blob: Blob, fmt: str) -> str:
    ctx.hit("archive.unscannable", f"{ctx.where(blob)}: {fmt} archive; no decoder installed to look inside", blob)
    return fmt
