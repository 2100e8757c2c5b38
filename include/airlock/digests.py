"""Hash a model directory into (relative POSIX path, sha256) pairs for signing and verification.

Signing and verification take plain :class:`~airlock.bundle.FileDigest` lists,
so they do not depend on how a directory is walked; this adapter is the one
place that turns a directory into such a list. The walking and hashing are the
manifest stage's (:mod:`airlock.manifest`: symlinks and special files refused,
one parallel read pass, model_signing's path-segment order), so a signed root
digest is the manifest's root digest.

The one difference is matching the ignore set: :mod:`airlock.manifest` ignores
top-level entries, while a bundle's ``ignore_paths`` may name a nested path
(``sub/model.sig``) and, as in model_signing, ignores everything under it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from airlock.bundle import DEFAULT_IGNORE_PATHS, FileDigest, check_relative_posix_path, sorted_digests
from airlock.errors import AirlockError, ManifestError


class HashingError(AirlockError):
    """A model directory could not be hashed (symlink, special file, unreadable file); names the path."""


def hash_model_dir(model_dir: Path, *, ignore_paths: Iterable[str] = DEFAULT_IGNORE_PATHS) -> list[FileDigest]:
    """Every regular file under ``model_dir`` (minus ``ignore_paths``), in model_signing's order.

    Any problem (a symlink, a FIFO, a permission error, a file changing while
    read) raises :class:`HashingError`: a directory that cannot be hashed
    completely is never reported as hashed.
    """
    from airlock.manifest import hash_files

    model_dir = Path(model_dir)
    files = _listing(model_dir, ignore_paths)
    try:
        digests = hash_files(model_dir, files)
    except (ManifestError, OSError) as exc:
        raise HashingError(f"cannot hash {model_dir}: {exc}") from None
    return sorted_digests(FileDigest(d.path, d.sha256) for d in digests)


def list_model_files(model_dir: Path, *, ignore_paths: Iterable[str] = DEFAULT_IGNORE_PATHS) -> list[str]:
    """The relative paths :func:`hash_model_dir` would hash, without reading them (same refusals)."""
    return [path for path, _size in _listing(Path(model_dir), ignore_paths)]


def _listing(model_dir: Path, ignore_paths: Iterable[str]) -> list[tuple[str, int]]:
    from airlock.manifest import walk_files

    ignored = [check_relative_posix_path(p.rstrip("/"), "ignore path") for p in ignore_paths]
    try:
        files = walk_files(model_dir)
    except (ManifestError, OSError) as exc:
        raise HashingError(f"cannot list {model_dir}: {exc}") from None
    return [(path, size) for path, size in files if not _is_ignored(path, ignored)]


def _is_ignored(path: str, ignored: list[str]) -> bool:
    # model_signing's rule (Path.is_relative_to): the path itself or anything under it.
    return any(path == prefix or path.startswith(prefix + "/") for prefix in ignored)
