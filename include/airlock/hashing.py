"""Single-pass hashing: digest bytes while they are written, so nothing is read twice on the way in.

A byte of a model enters Airlock once (the download into quarantine) and should
be read once. :class:`StreamDigest` is the sha256, plus the git blob sha1 where
a hub publishes one, of a stream fed in order. :class:`HashingSink` wraps the
quarantine's partial file: every byte written at the end of what it has already
hashed is hashed on the way through. Anything else a fetcher may do (seek back
and truncate when a server ignores a resume request, rewrite a range) marks the
stream as not hashed in order, and :meth:`HashingSink.finish` then hashes the
finished file from disk instead: correctness first, the fast path when the
stream allows it.

:class:`PinnedFile` is a file together with the digest of its single pass and
the stat fingerprint taken when that pass ended; the filesystem registry may
publish such a file by linking it, after checking the fingerprint again (see
:mod:`airlock.registry.filesystem`).
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airlock.manifest import FileDigest, hash_file

SHA256_OF_NOTHING = hashlib.sha256(b"").hexdigest()


class StreamDigest:
    """sha256 (and, when ``git_blob_size`` is given, the git blob sha1) of bytes fed in order."""

    def __init__(self, *, git_blob_size: int | None = None) -> None:
        self._sha256 = hashlib.sha256()
        # git hashes a blob as "blob <size>\0" + content: the size is the listed one, checked at the end.
        self._git_blob_size = git_blob_size
        self._sha1 = (hashlib.sha1(b"blob %d\0" % git_blob_size, usedforsecurity=False)
                      if git_blob_size is not None else None)
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._sha256.update(data)
        if self._sha1 is not None:
            self._sha1.update(data)
        self.size += len(data)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def git_sha1(self) -> str | None:
        if self._sha1 is None:
            return None
        if self.size != self._git_blob_size:
            raise ValueError(f"git blob sha1 was started for {self._git_blob_size} bytes, {self.size} were hashed")
        return self._sha1.hexdigest()


class HashingSink:
    """A file-like sink over an open binary file that hashes what is appended, in order.

    ``handle`` is positioned where writing continues; bytes before that position
    (a resumed partial file) are hashed first, from the file, so the digest is of
    the whole file. The one read of quarantine bytes this costs happens only on a
    resume.
    """

    def __init__(self, handle: Any, *, git_blob_size: int | None = None) -> None:
        self._handle = handle
        self._git_blob_size = git_blob_size
        self._digest = StreamDigest(git_blob_size=git_blob_size)
        self.in_order = True
        start = handle.tell()
        if start:
            handle.seek(0)
            remaining = start
            while remaining:
                chunk = handle.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                self._digest.update(chunk)
                remaining -= len(chunk)
            handle.seek(start)
            self.in_order = self._digest.size == start

    def write(self, data: bytes | bytearray | memoryview) -> int:
        position = self._handle.tell()
        written = self._handle.write(data)
        if self.in_order and position == self._digest.size and written == len(data):
            self._digest.update(data)
        else:
            self.in_order = False
        return written

    def tell(self) -> int:
        return self._handle.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        result = self._handle.truncate(size)
        cut = self._handle.tell() if size is None else size
        if cut == 0:
            self._digest = StreamDigest(git_blob_size=self._git_blob_size)  # a restart from the first byte
            self.in_order = True
        elif cut < self._digest.size:
            self.in_order = False
        return result

    def flush(self) -> None:
        self._handle.flush()

    def finish(self, path: Path, relative: str) -> FileDigest:
        """The file's digest with its stat fingerprint now; re-hashed from disk if the stream was not in order.

        Call after the file is complete, read-only and at its final path: the
        fingerprint recorded is the one later stages compare against.
        """
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path}: not a regular file")
        listed_size = self._git_blob_size
        if not self.in_order or self._digest.size != info.st_size or listed_size not in (None, info.st_size):
            return hash_file(path, relative, git_sha1=self._git_blob_size is not None)
        return FileDigest(
            path=relative, size=info.st_size, sha256=self._digest.sha256, git_sha1=self._digest.git_sha1,
            mtime_ns=info.st_mtime_ns, inode=info.st_ino, ctime_ns=info.st_ctime_ns, device=info.st_dev,
        )


def fingerprint_matches(digest: FileDigest, info: os.stat_result) -> bool:
    """Whether ``info`` is the file ``digest`` was taken of, unchanged: size, mtime_ns, ctime_ns, inode, device."""
    return (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev) == (
        digest.size, digest.mtime_ns, digest.ctime_ns, digest.inode, digest.device)


@dataclass(frozen=True)
class PinnedFile:
    """A file to store, with the digest of its one hashing pass and the fingerprint that pass recorded."""

    path: Path
    digest: FileDigest

    def __str__(self) -> str:
        return str(self.path)
