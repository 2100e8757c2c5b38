"""The embedded default backend: a local directory.

Put-if-absent is "exclusive create + rename" done without a window: the bytes go
to a hidden partial file created with ``O_EXCL``, are hashed while they are
written, fsynced and made read-only, and only then appear under their key via
``os.link``. ``link`` fails with ``EEXIST`` when the key exists, atomically, so
two writers can never both create a key and a reader can never see half a file.
(``os.rename`` would silently replace an existing file; Python has no
``RENAME_NOREPLACE``.) A crash leaves at most a hidden partial file, which no
reader looks at; the writer holds a ``flock`` on it while it lives, so the next
promotion of the version (and ``airlock registry check --clean``) can tell a
dead writer's partial from a live one and remove it (:mod:`airlock.registry.leftovers`).

**Promoting a quarantined file without copying it.** A model file arrives as a
:class:`~airlock.hashing.PinnedFile`: its path in quarantine, the sha256 its one
hashing pass (the download) took, and the stat fingerprint (size, mtime_ns,
ctime_ns, inode, device) recorded when that pass ended, after the file was made
read-only. When the quarantine and the registry share a filesystem, the file is
published as it is, after checking that fingerprint on the open descriptor:

1. a **reflink** (``FICLONE``: btrfs, XFS, bcachefs) gives the registry its own
   inode sharing the extents copy-on-write; a later write through the
   quarantine path (or any descriptor on it) cannot reach the registry copy;
2. otherwise a **hard link** of that descriptor (``/proc/self/fd``; where that is
   refused, of the path, and the new name must then hold the inode checked), only when the
   file is read-only (no write bit), owned by this process's user and has no
   other link. The registry copy then *is* the quarantine inode; why that is
   safe: only the pipeline's user can open it for writing, and only after a
   ``chmod`` (which moves ctime, checked right before the link) or through a
   descriptor opened before it was made read-only. The download closes its
   descriptors before the ``chmod``, and a write through a leftover one moves
   mtime, which is checked again after the link (mtime can only be set back by
   the owner, and the owner can rewrite any registry file anyway). Deleting the
   quarantine only unlinks its name; the registry's name keeps the inode.
3. a fingerprint that moved, another filesystem, a writable or multiply linked
   file, or any error: **one streaming copy**, hashed as it is written and
   compared with the plan (a difference blocks: nothing is stored).

``rename`` is never used: the quarantine must stay whole until the run is torn
down (a failed promotion is re-run from it).

A registry root that exists but is not a directory is an error for every
operation; a root that does not exist yet is an empty registry (the first
promotion creates it), and the CLI's readers refuse it (:meth:`FilesystemStore.check_exists`).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import airlock.registry.leftovers as _policy  # module attributes: the thresholds stay adjustable (tests)
from airlock.hashing import PinnedFile, fingerprint_matches
from airlock.manifest import FileDigest
from airlock.registry.base import (
    MAX_CONTROL_OBJECT_BYTES,
    PARTIAL_PREFIX,
    RegistryError,
    Source,
    SourceChangedError,
)
from airlock.registry.leftovers import Leftover, describe_age

_CHUNK = 1 << 20
log = logging.getLogger(__name__)


class FilesystemStore:
    """An :class:`~airlock.registry.base.ObjectStore` rooted at a local directory."""

    # A key put_if_absent creates holds the bytes it checked against (size, sha256) before linking them in:
    # hashed as they were written, or a pinned inode whose fingerprint held. Promotion need not re-read it.
    confirms_own_writes = True

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
        self._check_root()
        if target.exists():  # cheap early answer; the link below is what decides
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, PinnedFile):
            published = _publish_pinned(target, source, size, sha256)
            if published is not None:
                return published
            source = source.path  # not linkable: one streaming copy, hashed as it is written
        partial = target.with_name(f"{PARTIAL_PREFIX}{uuid.uuid4().hex}.{target.name}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            # Held until the partial is unlinked below: proof, to a cleaner, that this writer is alive.
            _try_lock(fd)
            written, digest = self._write_partial(fd, source)
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
            partial.unlink(missing_ok=True)  # while still locked: a cleaner never sees it unlocked and alive
            os.close(fd)

    @staticmethod
    def _write_partial(fd: int, source: Source) -> tuple[int, str]:
        """Write ``source`` to the new hidden file ``fd``, hashing the very bytes written; read-only and fsynced."""
        hasher = hashlib.sha256()
        written = 0
        with open(fd, "wb", closefd=False) as out:
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
        self._check_root()
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
        self._check_root()
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        try:
            names = os.listdir(base)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(n for n in names if not n.startswith(PARTIAL_PREFIX))

    # ------------------------------------------------------------------ the root

    def check_exists(self) -> None:
        """Raise unless the root is an existing directory (readers: a missing root is a wrong setting)."""
        try:
            info = os.stat(self.root)
        except FileNotFoundError:
            raise RegistryError(f"registry {self.url} does not exist (check --registry / AIRLOCK_REGISTRY)") from None
        except OSError as exc:
            raise RegistryError(f"registry {self.url}: cannot read it ({exc.strerror})") from None
        if not stat.S_ISDIR(info.st_mode):
            raise RegistryError(f"registry {self.url} is not a directory")

    def _check_root(self) -> None:
        """A root that exists must be a directory; a missing one is an empty registry (the first write creates it)."""
        try:
            info = os.stat(self.root)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise RegistryError(f"registry {self.url}: cannot read it ({exc.strerror})") from None
        if not stat.S_ISDIR(info.st_mode):
            raise RegistryError(f"registry {self.url} is not a directory")

    # ------------------------------------------------------------------ leftovers (airlock.registry.leftovers)

    def leftovers(self, prefix: str, *, now: float | None = None) -> list[Leftover]:
        """Partial files under ``prefix`` (recursive), each with whether a live writer still owns it."""
        self._check_root()
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        if not base.is_dir():
            return []
        found = []
        for directory, dirs, files in os.walk(base):
            for name in (*files, *dirs):
                if name.startswith(PARTIAL_PREFIX):
                    item = self._leftover(Path(directory) / name, now)
                    if item is not None:
                        found.append(item)
        return sorted(found, key=lambda item: item.key)

    def remove_leftover(self, item: Leftover, *, now: float | None = None) -> bool:
        path = self._path(item.key)
        if not path.name.startswith(PARTIAL_PREFIX):  # never a key: only our own hidden partial names
            raise RegistryError(f"{item.key}: not a partial file; refusing to remove it")
        seen = _inspect_partial(path, now)
        if seen is None:
            return False
        try:
            if seen.live:
                return False
            current = os.lstat(path)
            # Still the file we inspected (and hold the lock of), not one renamed into its place.
            if seen.fd is not None and (seen.device, seen.inode) != (current.st_dev, current.st_ino):
                return False
            if stat.S_ISDIR(current.st_mode):
                return False  # we never create partial directories; leave one for a person to look at
            path.unlink()
            return True
        except FileNotFoundError:
            return False
        finally:
            seen.release()

    def _leftover(self, path: Path, now: float | None) -> Leftover | None:
        seen = _inspect_partial(path, now)
        if seen is None:
            return None  # gone in between: its writer finished
        seen.release()
        return Leftover(key=path.relative_to(self.root).as_posix(), kind="partial file", size=seen.size,
                        age_s=seen.age, live=seen.live, why=seen.why)

    # ------------------------------------------------------------------ helpers

    def _path(self, key: str) -> Path:
        parts = key.rstrip("/").split("/")
        if key.startswith("/") or "\0" in key or any(p in ("", ".", "..") for p in parts):
            raise RegistryError(f"registry key {key!r} is not a relative POSIX path inside the registry")
        return self.root.joinpath(*parts)


_FICLONE = 0x40049409  # ioctl(dest, FICLONE, src): linux/fs.h


def _publish_pinned(target: Path, pinned: PinnedFile, size: int, sha256: str) -> bool | None:
    """Publish a pinned quarantine file under ``target`` without copying bytes (see the module docstring).

    True: created; False: ``target`` already existed; None: not publishable this way (the caller copies, hashing).
    """
    digest = pinned.digest
    if (digest.size, digest.sha256) != (size, sha256):
        return None
    try:
        fd = os.open(pinned.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None  # the copy reports it
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or not fingerprint_matches(digest, info):
            log.warning("%s: changed since it was hashed (size, mtime, ctime or inode); hashing it again while "
                        "copying", pinned.path)
            return None
        try:
            same_filesystem = os.stat(target.parent).st_dev == info.st_dev
        except OSError:
            return None
        if not same_filesystem:
            return None
        partial = target.with_name(f"{PARTIAL_PREFIX}{uuid.uuid4().hex}.{target.name}")
        try:
            linked = _reflink(fd, partial, digest) or _hard_link(fd, pinned.path, info, partial, digest)
            if not linked:
                return None
            try:
                os.link(partial, target)
            except FileExistsError:
                return False
            except OSError:
                return None
            _fsync_dir(target.parent)
            return True
        finally:
            partial.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _reflink(source_fd: int, partial: Path, digest: FileDigest) -> bool:
    """Clone ``source_fd`` into the new hidden file ``partial`` (own inode, shared extents); False if unsupported."""
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    keep = False
    try:
        _try_lock(fd)  # a live writer's partial, to a cleaner (the lock goes with the descriptor)
        try:
            fcntl.ioctl(fd, _FICLONE, source_fd)
        except OSError:
            return False  # ext4, tmpfs, overlayfs...: no reflinks
        os.fchmod(fd, 0o444)
        os.fsync(fd)
        # The clone is of the file as it was at the ioctl; unchanged before and after it means it is the hashed one.
        keep = fingerprint_matches(digest, os.fstat(source_fd)) and os.fstat(fd).st_size == digest.size
        return keep
    finally:
        os.close(fd)
        if not keep:
            partial.unlink(missing_ok=True)


def _hard_link(fd: int, path: Path, opened: os.stat_result, partial: Path, digest: FileDigest) -> bool:
    """Link the checked inode (by descriptor) as ``partial``; False when the file may not be shared."""
    if opened.st_mode & 0o222 or opened.st_nlink != 1 or opened.st_uid != os.geteuid():
        return False  # writable, linked elsewhere already, or someone else's: copy instead
    _try_lock(fd)  # flock on the shared inode: the partial reads as a live writer's to a cleaner
    try:
        os.link(f"/proc/self/fd/{fd}", partial, follow_symlinks=True)
    except OSError:
        # No linking through /proc here (some kernels and sandboxes refuse it): link the path, then make sure
        # the name now holds the very inode that was checked (a swapped path would be another one).
        try:
            os.link(path, partial, follow_symlinks=False)
        except OSError:
            return False
    linked = os.lstat(partial)
    if (linked.st_ino, linked.st_dev) != (opened.st_ino, opened.st_dev):
        return False
    now = os.fstat(fd)
    # The link itself moves ctime; a write would move mtime (only the owner can set it back).
    unchanged = (now.st_size, now.st_mtime_ns, now.st_ino, now.st_dev, now.st_nlink) == (
        digest.size, digest.mtime_ns, digest.inode, digest.device, 2) and not now.st_mode & 0o222
    return unchanged


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


def _try_lock(fd: int) -> None:
    try:
        # Blocking: a cleaner that is inspecting this brand-new partial holds the lock only for an instant
        # (it is inside the grace period, so it lets go without removing anything).
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        pass  # a filesystem without locks: cleaners then go by age alone (PARTIAL_UNLOCKED_STALE_S)


@dataclass
class _Inspection:
    """What a cleaner found out about one partial; ``fd`` (when not None) holds the partial's lock."""

    live: bool
    why: str
    age: float
    size: int
    fd: int | None = None
    device: int = 0
    inode: int = 0

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _inspect_partial(path: Path, now: float | None) -> _Inspection | None:
    """Whether a live writer owns the partial at ``path``; None when it is gone.

    When the partial's lock could be taken, the returned inspection keeps it,
    so the caller can remove the partial with no writer able to claim it in
    between (none could anyway: partial names are never reused).
    """
    now = time.time() if now is None else now
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    # The last sign of life: writes move mtime, the final fchmod moves ctime.
    age = max(0.0, now - max(info.st_mtime, info.st_ctime))
    if not stat.S_ISREG(info.st_mode):
        return _Inspection(False, "not a regular file", age, 0)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return _Inspection(True, f"cannot open it ({exc.strerror}); left alone", age, info.st_size)
    opened = os.fstat(fd)
    seen = _Inspection(True, "", age, opened.st_size, fd=fd, device=opened.st_dev, inode=opened.st_ino)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        seen.release()
        seen.why = "locked by a running writer"
        return seen
    except OSError as exc:
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF):
            seen.release()
            raise
        seen.live = age < _policy.PARTIAL_UNLOCKED_STALE_S
        seen.why = f"no locks on this filesystem, last written {describe_age(age)} ago"
        return seen
    # Nobody holds the lock: its writer is dead, unless this is the instant between creating and locking.
    if age < _policy.PARTIAL_GRACE_S:
        seen.why = f"unlocked, but written {describe_age(age)} ago (grace period)"
    else:
        seen.live = False
        seen.why = f"no writer holds it, last written {describe_age(age)} ago"
    return seen


def _fsync_dir(directory: Path) -> None:
    # The new directory entry must survive a power cut as surely as the bytes do.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe(source: Source) -> str:
    return str(source) if isinstance(source, Path) else f"<{len(source)} bytes>"
