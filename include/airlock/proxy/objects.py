"""Reading stored objects for the proxy: ranges, streaming, and an identity that says "the same bytes as before".

The registry protocol (:class:`~airlock.registry.base.ObjectStore`) streams a
whole object; the proxy also needs byte ranges (resumed downloads) and a cheap
way to know that an object it verified earlier is still the object it is about
to send, so that a file is hashed once, not on every request:

* **filesystem**: the object is opened once per request (``O_NOFOLLOW``, regular
  files only) and everything is read from that descriptor with ``pread``. Its
  identity is ``(device, inode, size, mtime_ns, ctime_ns)`` from ``fstat``; any
  write or replacement changes ``ctime``, which the caller cannot set. The
  identity is re-checked while streaming, so an object rewritten in place
  mid-transfer ends the transfer before its last chunk.
* **S3**: the identity is the object's ``VersionId`` (versioned buckets),
  ``ETag``, size and ``LastModified`` from HEAD; every read is a GET with
  ``IfMatch`` on that ETag (and the version id), so S3 itself refuses to send
  any other bytes.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from typing import Any, Protocol

from airlock.registry.base import RegistryError, StoredObjectError
from airlock.registry.filesystem import FilesystemStore
from airlock.registry.s3 import S3Store

READ_CHUNK = 4 << 20


class ObjectChanged(StoredObjectError):
    """The stored object is no longer the one that was opened (rewritten or replaced)."""


class OpenedObject(Protocol):
    identity: tuple[Any, ...]
    size: int
    url: str

    def chunks(self, start: int, end: int, chunk: int = READ_CHUNK) -> Iterator[bytes]:
        """Bytes ``start..end`` (inclusive) in chunks; :class:`ObjectChanged` if the object changes meanwhile."""
        ...

    def close(self) -> None: ...


class ObjectReader(Protocol):
    def open(self, key: str) -> OpenedObject | None:
        """The stored object under ``key``, or None when absent."""
        ...


def reader_for(store: object) -> ObjectReader:
    if isinstance(store, FilesystemStore):
        return FilesystemReader(store)
    if isinstance(store, S3Store):
        return S3Reader(store)
    raise RegistryError(f"the proxy cannot serve from a {type(store).__name__} registry (filesystem or S3 only)")


def sha256_of(obj: OpenedObject, limit: int) -> tuple[str, int]:
    """sha256 and length of the object's bytes, reading at most ``limit + 1`` (a swapped-in huge object stops early)."""
    hasher = hashlib.sha256()
    read = 0
    if obj.size > limit:
        return "", obj.size
    for chunk in obj.chunks(0, obj.size - 1) if obj.size else ():
        hasher.update(chunk)
        read += len(chunk)
    return hasher.hexdigest(), read


# --------------------------------------------------------------------------- filesystem


class FilesystemReader:
    def __init__(self, store: FilesystemStore) -> None:
        self.store = store

    def open(self, key: str) -> OpenedObject | None:
        parts = key.split("/")
        if key.startswith("/") or "\0" in key or any(p in ("", ".", "..") for p in parts):
            raise RegistryError(f"registry key {key!r} is not a relative POSIX path inside the registry")
        path = self.store.root.joinpath(*parts)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoredObjectError(f"{path.as_uri()}: cannot open ({exc.strerror}); symlinks and special files "
                                    f"are refused") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise StoredObjectError(f"{path.as_uri()}: not a regular file")
        except BaseException:
            os.close(fd)
            raise
        return _FileObject(fd, info, path.as_uri())


def _file_identity(info: os.stat_result) -> tuple[int, int, int, int, int]:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class _FileObject:
    def __init__(self, fd: int, info: os.stat_result, url: str) -> None:
        self._fd = fd
        self.identity = _file_identity(info)
        self.size = info.st_size
        self.url = url

    def _check(self) -> None:
        if _file_identity(os.fstat(self._fd)) != self.identity:
            raise ObjectChanged(f"{self.url}: changed while it was being read")

    def chunks(self, start: int, end: int, chunk: int = READ_CHUNK) -> Iterator[bytes]:
        offset = start
        while offset <= end:
            data = os.pread(self._fd, min(chunk, end + 1 - offset), offset)
            if not data:
                raise ObjectChanged(f"{self.url}: ended at byte {offset}, before its recorded size {self.size}")
            self._check()  # after the read: these bytes are the verified object's, or nothing is sent
            offset += len(data)
            yield data

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# --------------------------------------------------------------------------- S3


class S3Reader:
    def __init__(self, store: S3Store) -> None:
        self.store = store

    def _key(self, key: str) -> str:
        parts = key.split("/")
        if key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise RegistryError(f"registry key {key!r} is not a relative POSIX path inside the registry")
        return f"{self.store.prefix}/{key}" if self.store.prefix else key

    def open(self, key: str) -> OpenedObject | None:
        from botocore.exceptions import ClientError

        full = self._key(key)
        url = self.store.object_url(key)
        try:
            head = self.store.client.head_object(Bucket=self.store.bucket, Key=full)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise RegistryError(f"{url}: cannot read its metadata ({code or 'error'})") from None
        return _S3Object(self.store, full, url, head)


class _S3Object:
    def __init__(self, store: S3Store, key: str, url: str, head: dict[str, Any]) -> None:
        self._store = store
        self._key = key
        self.url = url
        self._etag = head.get("ETag")
        self._version_id = head.get("VersionId")
        modified = head.get("LastModified")
        self.size = int(head.get("ContentLength", 0))
        self.identity = (self._version_id, self._etag, self.size, modified.isoformat() if modified else None)

    def chunks(self, start: int, end: int, chunk: int = READ_CHUNK) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        args: dict[str, Any] = {"Bucket": self._store.bucket, "Key": self._key, "Range": f"bytes={start}-{end}"}
        if self._etag:
            args["IfMatch"] = self._etag
        if self._version_id and self._version_id != "null":
            args["VersionId"] = self._version_id
        try:
            body = self._store.client.get_object(**args)["Body"]
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"PreconditionFailed", "412", "NoSuchKey", "404", "NoSuchVersion"}:
                raise ObjectChanged(f"{self.url}: changed or removed since it was opened ({code})") from None
            raise RegistryError(f"{self.url}: cannot read ({code or 'error'})") from None
        expected = end + 1 - start
        sent = 0
        try:
            with body:
                for data in body.iter_chunks(chunk):
                    sent += len(data)
                    if sent > expected:
                        raise ObjectChanged(f"{self.url}: sent more than the {expected} bytes asked for")
                    yield data
        except BotoCoreError as exc:
            raise RegistryError(f"{self.url}: reading failed ({type(exc).__name__})") from None
        if sent != expected:
            raise ObjectChanged(f"{self.url}: sent {sent} of {expected} bytes")

    def close(self) -> None:
        pass
