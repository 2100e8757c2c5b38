"""The embedded default backend: a local directory.

Put-if-absent is "exclusive create + rename" done without a window: the bytes go
to a hidden partial file created with ``O_EXCL``, are hashed while they are
written, fsynced and made read-only, and only then appear under their key via
``os.link``. ``link`` fails with ``EEXIST`` when the key exists, atomically, so
two writers can never both create a key and a reader can never see half a file.
(``os.rename`` would silently replace an existing file; Python has no
``RENAME_NOREPLACE``.) A crash leaves at most a hidden partial file, which no
reader looks at.
"""

from __future__ import annotations

import hashlib
import os
import stat
import uuid
from pathlib import Path
from typing import BinaryIO

from airlock.registry.base import (
    MAX_CONTROL_OBJECT_BYTES,
    PARTIAL_PREFIX,
    RegistryError,
    Source,
    SourceChangedError,
)

_CHUNK = 1 << 20


class FilesystemStore:
    """An :class:`~airlock.registry.base.ObjectStore` rooted at a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().absolute()

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def object_url(self, key: str) -> str:
        return self._path(key).as_uri()

    # ------------------------------------------------------------------ writing

    def put_if_absent(self, key: str, source: Source, size: int, sha256: str) -> bool:
        target = self._path(key)
        if target.exists():  # cheap early answer; the link below is what decides
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{PARTIAL_PREFIX}{uuid.uuid4().hex}.{target.name}")
        try:
            written, digest = self._write_partial(partial, source)
            if (written, digest) != (size, sha256):
                raise SourceChangedError(
                    f"{_describe(source)} -> {key}: expected {size} bytes sha256:{sha256}, "
                    f"read {written} bytes sha256:{digest}; the file changed since its manifest, nothing stored"
                )
            try:
                os.link(partial, target)
            except FileExistsError:
                return False
            except OSError as exc:
                raise RegistryError(
                    f"{target}: cannot publish with a hard link ({exc.strerror}); the registry directory must "
                    f"be on a filesystem with hard links (put-if-absent depends on them)"
                ) from None
            _fsync_dir(target.parent)
            return True
        finally:
            partial.unlink(missing_ok=True)

    @staticmethod
    def _write_partial(partial: Path, source: Source) -> tuple[int, str]:
        """Write ``source`` to a new hidden file, hashing the very bytes written; read-only and fsynced."""
        hasher = hashlib.sha256()
        written = 0
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "wb", closefd=True) as out:
            if isinstance(source, bytes):
                hasher.update(source)
                out.write(source)
                written = len(source)
            else:
                with _open_regular(source) as reader:
                    while chunk := reader.read(_CHUNK):
                        hasher.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
            out.flush()
            os.fsync(out.fileno())
            os.fchmod(out.fileno(), 0o444)  # stored objects are never rewritten, not even by mistake
        return written, hasher.hexdigest()

    # ------------------------------------------------------------------ reading

    def stored_sha256(self, key: str) -> str | None:
        """Re-reads the stored file: the confirmation is of the bytes on disk, not of what we sent."""
        path = self._path(key)
        try:
            reader = _open_regular(path)
        except FileNotFoundError:
            return None
        hasher = hashlib.sha256()
        with reader:
            while chunk := reader.read(_CHUNK):
                hasher.update(chunk)
        return hasher.hexdigest()

    def read(self, key: str, max_bytes: int = MAX_CONTROL_OBJECT_BYTES) -> bytes | None:
        path = self._path(key)
        try:
            reader = _open_regular(path)
        except FileNotFoundError:
            return None
        with reader:
            data = reader.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise RegistryError(f"{path}: larger than {max_bytes} bytes; not a registry control object")
        return data

    def open_object(self, key: str) -> BinaryIO | None:
        try:
            return _open_regular(self._path(key))
        except FileNotFoundError:
            return None

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        if not base.is_dir():
            return []
        keys = []
        for directory, dirs, files in os.walk(base):
            dirs[:] = [d for d in dirs if not d.startswith(PARTIAL_PREFIX)]
            for name in files:
                if not name.startswith(PARTIAL_PREFIX):
                    keys.append((Path(directory) / name).relative_to(self.root).as_posix())
        return sorted(keys)

    def list_children(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        try:
            names = os.listdir(base)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(n for n in names if not n.startswith(PARTIAL_PREFIX))

    # ------------------------------------------------------------------ helpers

    def _path(self, key: str) -> Path:
        parts = key.rstrip("/").split("/")
        if key.startswith("/") or "\0" in key or any(p in ("", ".", "..") for p in parts):
            raise RegistryError(f"registry key {key!r} is not a relative POSIX path inside the registry")
        return self.root.joinpath(*parts)


def _open_regular(path: Path):
    """Open for reading without following a symlink; anything but a regular file is refused.

    FileNotFoundError passes through (callers treat it as "absent"); every other
    problem is a :class:`RegistryError` naming the path.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise RegistryError(f"{path}: cannot open ({exc.strerror}); symlinks and special files are refused") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RegistryError(f"{path}: not a regular file")
    return open(fd, "rb", closefd=True)


def _fsync_dir(directory: Path) -> None:
    # The new directory entry must survive a power cut as surely as the bytes do.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe(source: Source) -> str:
    return str(source) if isinstance(source, Path) else f"<{len(source)} bytes>"
