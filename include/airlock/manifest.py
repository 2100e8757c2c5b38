"""The manifest: every model file's path, size and sha256, and the model-signing root digest.

The root digest is computed exactly as the OpenSSF model-signing format does it
(``model_signing`` 1.1.1, ``files`` serialization): sha256 over the raw 32-byte
per-file digests, concatenated in the order model_signing sorts its resources.
That order is *path-segment* order (it sorts ``PurePosixPath`` objects), which is
not plain string order: ``a/b`` sorts before ``a.b`` because ``"a" < "a.b"``.
Its default ignore set (top-level ``.git``, ``.gitattributes``, ``.github``,
``.gitignore``) and its refusal of symlinks and special files are mirrored, so
``Manifest.root_digest`` equals what ``model_signing`` computes for the same
directory and a bundle signed over it verifies upstream.

Hashing is one read pass per file: sha256 and, where a git blob sha1 is wanted
(files a hub publishes by blob id), sha1 over the same buffer. Files are hashed
in parallel on a pool sized to the usable cores (hashlib releases the GIL), with
1 MiB ``readinto`` reads into a per-thread buffer, so memory stays flat
whatever the model's size. The per-file stat fingerprint recorded with each
digest lets a later task check, without re-reading, that nothing changed since
the pass.

A digest is only as good as the file staying put while it is read: each file's
identity (device, inode), size, mtime and ctime are taken from the open file
before the read and again after it, and the path is looked up again after it;
any difference (an in-place rewrite of the same size, a rename-swap, a
truncation) is a :class:`ManifestError` "changed while hashing" naming the file.
ctime is what makes this hold against a writer that restores the mtime
(``touch -d``, ``os.utime``): the kernel sets ctime on every change and nobody
can set it back. Still one read pass: the checks are three ``stat`` calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from airlock.errors import IntegrityError, ManifestError
from airlock.fsutil import run_all

MANIFEST_SCHEMA = "airlock.manifest/v1"
DIGESTS_SCHEMA = "airlock.digests/v1"

# model_signing.hashing.Config's default ignore set (ignore_git_paths=True): top-level entries only.
MODEL_SIGNING_IGNORE: tuple[str, ...] = (".git", ".gitattributes", ".github", ".gitignore")

# 1 MiB: large enough that per-call overhead vanishes, small enough to stay cache-resident
# between the kernel's copy and the hash (measured: 4 and 16 MiB are no faster).
READ_CHUNK = 1 << 20

# A sha256 as every stage writes it: 64 lowercase hex characters (the one definition; use fullmatch,
# since "$" alone also matches before a trailing newline).
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def path_sort_key(path: str) -> tuple[str, ...]:
    """model_signing's resource order: by path segments, as ``PurePosixPath`` compares."""
    return tuple(path.split("/"))


def is_ignored(path: str, ignore: Collection[str]) -> bool:
    """True when ``path`` is, or lies under, a top-level entry named in ``ignore``."""
    return path.split("/", 1)[0] in ignore


@dataclass(frozen=True, slots=True)
class FileDigest:
    """One file's digests from one read pass, with the stat fingerprint taken when it was opened."""

    path: str
    size: int
    sha256: str
    git_sha1: str | None = None
    mtime_ns: int = 0
    inode: int = 0
    ctime_ns: int = 0
    device: int = 0


def _fingerprint(info: os.stat_result) -> tuple[int, int, int, int, int]:
    """What must not change while a file is hashed: identity, size, content and metadata change times."""
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


# --------------------------------------------------------------------------- walking


def walk_files(root: Path) -> list[tuple[str, int]]:
    """Every regular file under ``root`` as (POSIX relative path, size), in path-segment order.

    Like model_signing, a symlink or a special file anywhere (ignored directories
    included) is refused rather than skipped: a manifest that silently leaves a
    file out is worse than no manifest.
    """
    root_stat = _lstat(root)
    if stat.S_ISLNK(root_stat.st_mode):
        raise ManifestError(f"{root}: is a symlink; refusing to hash through it (model_signing refuses too)")
    if not stat.S_ISDIR(root_stat.st_mode):
        raise ManifestError(f"{root}: not a directory")
    found: list[tuple[str, int]] = []
    _walk(root, "", found)
    found.sort(key=lambda item: path_sort_key(item[0]))
    return found


def _lstat(path: Path) -> os.stat_result:
    try:
        return os.lstat(path)
    except OSError as exc:
        raise ManifestError(f"{path}: cannot stat ({exc.strerror})") from None


def _walk(directory: Path, prefix: str, found: list[tuple[str, int]]) -> None:
    try:
        entries = list(os.scandir(directory))
    except OSError as exc:
        raise ManifestError(f"{directory}: cannot list ({exc.strerror})") from None
    for entry in entries:
        relative = f"{prefix}{entry.name}"
        if entry.is_symlink():
            raise ManifestError(f"{relative}: is a symlink; symlinks are refused (as model_signing does)")
        if entry.is_dir(follow_symlinks=False):
            _walk(Path(entry.path), f"{relative}/", found)
        elif entry.is_file(follow_symlinks=False):
            found.append((relative, entry.stat(follow_symlinks=False).st_size))
        else:
            raise ManifestError(f"{relative}: is a special file (device, FIFO or socket); refused")


# --------------------------------------------------------------------------- hashing

_buffers = threading.local()


def _thread_buffer() -> memoryview:
    view = getattr(_buffers, "view", None)
    if view is None:
        view = _buffers.view = memoryview(bytearray(READ_CHUNK))
    return view


def hash_file(path: Path, relative: str, *, git_sha1: bool = False) -> FileDigest:
    """sha256 (and optionally the git blob sha1) of one file in a single pass with flat memory.

    Raises :class:`ManifestError` when the file changed while it was read (see the module docstring).
    """
    try:
        # O_NOFOLLOW: a symlink swapped in after the walk is refused, never followed.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ManifestError(f"{relative}: cannot open ({exc.strerror})") from None
    with open(fd, "rb", buffering=0, closefd=True) as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ManifestError(f"{relative}: not a regular file")
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except (AttributeError, OSError):  # advisory only
            pass
        sha256 = hashlib.sha256()
        # git hashes a blob as "blob <size>\0" + content; the size must be known before the content.
        sha1 = hashlib.sha1(b"blob %d\0" % info.st_size, usedforsecurity=False) if git_sha1 else None
        buffer = _thread_buffer()
        total = 0
        while count := handle.readinto(buffer):
            chunk = buffer[:count]
            sha256.update(chunk)
            if sha1 is not None:
                sha1.update(chunk)
            total += count
        after = os.fstat(fd)
    if total != info.st_size:
        raise ManifestError(f"{relative}: changed while hashing ({info.st_size} bytes at open, {total} read)")
    if _fingerprint(after) != _fingerprint(info):
        raise ManifestError(f"{relative}: changed while hashing (size, mtime or ctime moved during the read); "
                            f"the digest would not describe the file, nothing recorded")
    try:
        # The path must still name the file that was read: a rename-swap leaves the fd on the old inode.
        now_at_path = os.lstat(path)
    except OSError as exc:
        raise ManifestError(f"{relative}: changed while hashing (gone after the read: {exc.strerror})") from None
    if _fingerprint(now_at_path) != _fingerprint(info):
        raise ManifestError(f"{relative}: changed while hashing (the path names another file, or its size, mtime "
                            f"or ctime moved, after the read)")
    return FileDigest(
        path=relative,
        size=total,
        sha256=sha256.hexdigest(),
        git_sha1=sha1.hexdigest() if sha1 is not None else None,
        mtime_ns=info.st_mtime_ns,
        inode=info.st_ino,
        ctime_ns=info.st_ctime_ns,
        device=info.st_dev,
    )


def hash_files(
    root: Path,
    files: Sequence[tuple[str, int]],
    *,
    git_sha1_for: Callable[[str], bool] | None = None,
    workers: int | None = None,
) -> list[FileDigest]:
    """Hash ``files`` (relative path, expected size) under ``root`` in parallel; path-segment order.

    Largest files start first so the pool's tail is small files, not one big shard
    hashed alone while the other cores idle. The first failure cancels what has
    not started and is raised.
    """
    if workers is not None and workers < 1:
        raise ManifestError(f"hashing needs at least one worker thread (got {workers})")
    want_sha1 = git_sha1_for or (lambda _path: False)
    ordered = sorted(files, key=lambda item: item[1], reverse=True)
    with ThreadPoolExecutor(max_workers=workers or usable_cores(), thread_name_prefix="airlock-hash") as pool:
        futures: list[Future[FileDigest]] = [
            pool.submit(hash_file, root / relative, relative, git_sha1=want_sha1(relative)) for relative, _ in ordered
        ]
        digests = run_all(futures)
    expected = dict(files)
    changed = [d.path for d in digests if d.size != expected[d.path]]
    if changed:
        raise ManifestError(f"changed size between listing and hashing: {', '.join(sorted(changed))}")
    digests.sort(key=lambda d: path_sort_key(d.path))
    return digests


def hash_tree(
    root: Path,
    *,
    ignore: Collection[str] = MODEL_SIGNING_IGNORE,
    include_ignored: bool = False,
    git_sha1_for: Callable[[str], bool] | None = None,
    workers: int | None = None,
) -> list[FileDigest]:
    """Walk ``root`` and hash its files; ignored paths are hashed only with ``include_ignored``.

    Published-checksum verification needs every file (``.gitattributes`` is part
    of a hub listing) while the manifest leaves ignored ones out; both come from
    this one pass.
    """
    files = walk_files(root)
    if not include_ignored:
        files = [item for item in files if not is_ignored(item[0], ignore)]
    return hash_files(root, files, git_sha1_for=git_sha1_for, workers=workers)


def root_digest(digests: Iterable[FileDigest | ManifestFile]) -> str:
    """sha256 over the raw per-file sha256 digests in path-segment order (model_signing's subject digest)."""
    return root_digest_of_pairs((item.path, item.sha256) for item in digests)


def root_digest_of_pairs(files: Iterable[tuple[str, str]]) -> str:
    """:func:`root_digest` over ``(path, sha256 hex)`` pairs: the one implementation every stage uses."""
    hasher = hashlib.sha256()
    for _, sha256 in sorted(files, key=lambda item: path_sort_key(item[0])):
        hasher.update(bytes.fromhex(sha256))
    return hasher.hexdigest()


# --------------------------------------------------------------------------- JSON contracts


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class PublishedCheck(_Frozen):
    """What the source vouched for (exactly one of sha256 / git_sha1) and whether the bytes matched."""

    sha256: str | None = None
    git_sha1: str | None = None
    by: str = Field(description="who vouched: hub-lfs, hub-git-blob, SHA256SUMS, model.sig, drop-resolution")
    ok: bool

    @model_validator(mode="after")
    def _exactly_one_checksum(self) -> PublishedCheck:
        if (self.sha256 is None) == (self.git_sha1 is None):
            raise ValueError("a published check names exactly one of sha256 or git_sha1")
        return self


class ManifestFile(_Frozen):
    path: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=SHA256_HEX.pattern)
    published: PublishedCheck | None = None


class ModelRef(_Frozen):
    name: str
    source: str
    revision: str | None = None


class Serialization(_Frozen):
    """The model_signing ``serialization`` section a signer must reproduce for this manifest."""

    method: str = "files"
    hash_type: str = "sha256"
    allow_symlinks: bool = False
    ignore_paths: tuple[str, ...] = MODEL_SIGNING_IGNORE


class Manifest(_Frozen):
    """``{schema, model: {name, source, revision}, files: [...], root_digest}`` (see ARCHITECTURE.md)."""

    schema_: str = Field(default=MANIFEST_SCHEMA, alias="schema")
    model: ModelRef
    files: tuple[ManifestFile, ...]
    root_digest: str
    serialization: Serialization = Serialization()

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        # A manifest read back from disk or XCom must be self-consistent, as model_signing
        # insists of a bundle's resources and subject digest.
        paths = [f.path for f in self.files]
        if paths != sorted(paths, key=path_sort_key) or len(set(paths)) != len(paths):
            raise ValueError("manifest files must be unique and in path-segment order")
        ignored = [p for p in paths if is_ignored(p, self.serialization.ignore_paths)]
        if ignored:
            raise ValueError(f"manifest lists ignored paths: {', '.join(ignored)}")
        if root_digest(self.files) != self.root_digest:
            raise ValueError("root_digest does not match the files' digests")
        return self

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


def build_manifest(
    model: ModelRef,
    digests: Iterable[FileDigest],
    *,
    ignore: Collection[str] = MODEL_SIGNING_IGNORE,
    published: Mapping[str, PublishedCheck] | None = None,
) -> Manifest:
    """The manifest of ``digests`` minus ignored paths, with each file's published check where known."""
    published = published or {}
    kept = sorted((d for d in digests if not is_ignored(d.path, ignore)), key=lambda d: path_sort_key(d.path))
    files = tuple(
        ManifestFile(path=d.path, size=d.size, sha256=d.sha256, published=published.get(d.path)) for d in kept
    )
    return Manifest(
        model=model,
        files=files,
        root_digest=root_digest(files),
        serialization=Serialization(ignore_paths=tuple(ignore)),
    )


def manifest_for_directory(path: Path, *, workers: int | None = None) -> Manifest:
    """The manifest of a local directory (``airlock hash``): named after it, no revision, nothing published."""
    path = Path(path).absolute()
    digests = hash_tree(path, workers=workers)
    return build_manifest(ModelRef(name=path.name, source=path.as_uri()), digests)


# --------------------------------------------------------------------------- the pass, kept between tasks


class DigestSet(_Frozen):
    """One hashing pass over a quarantine directory, saved so later tasks need not read the files again."""

    schema_: str = Field(default=DIGESTS_SCHEMA, alias="schema")
    files: tuple[FileDigest, ...]
    # What each file was checked against, for the manifest's ``published`` field.
    published: dict[str, PublishedCheck] = Field(default_factory=dict)

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.model_dump_json(by_alias=True))
        os.replace(tmp, path)  # atomic: a reader never sees half a record

    @classmethod
    def load(cls, path: Path) -> DigestSet:
        return cls.model_validate_json(path.read_bytes())


def check_unchanged(root: Path, recorded: DigestSet) -> None:
    """Refuse when any file under ``root`` appeared, vanished or changed (size, mtime, ctime, inode) since the pass.

    Cheap (metadata only) and fails closed: a difference is an integrity error
    naming the files, never a silent re-hash. ctime catches a same-size rewrite
    whose mtime was set back. A record from before ctime/device were kept (0)
    compares unequal: such a pass is refused, not trusted.
    """
    on_disk = dict(walk_files(root))
    by_path = {d.path: d for d in recorded.files}
    appeared = sorted(set(on_disk) - set(by_path))
    vanished = sorted(set(by_path) - set(on_disk))
    changed = []
    for relative in sorted(set(on_disk) & set(by_path), key=path_sort_key):
        info = os.lstat(root / relative)
        digest = by_path[relative]
        if (info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns, info.st_dev) != (
                digest.size, digest.mtime_ns, digest.inode, digest.ctime_ns, digest.device):
            changed.append(relative)
    problems = [
        f"{label}: {', '.join(names)}"
        for label, names in (("appeared", appeared), ("vanished", vanished), ("changed", changed))
        if names
    ]
    if problems:
        raise IntegrityError(f"{root}: files differ from the verified hashing pass ({'; '.join(problems)})")


def manifest_from_pass(files_dir: Path, digests_file: Path, model: ModelRef) -> Manifest:
    """The manifest of a verified quarantine directory, from the verification's hashing pass.

    No file is read again; instead every file must still be exactly the one that
    pass read (:func:`check_unchanged`). Without a recorded pass there is no
    manifest: verification must come first.
    """
    if not digests_file.is_file():
        raise ManifestError(f"{digests_file}: no verified hashing pass; verify the published checksums first")
    recorded = DigestSet.load(digests_file)
    check_unchanged(files_dir, recorded)
    return build_manifest(model, recorded.files, published=recorded.published)


def save_manifest(manifest: Manifest, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(manifest.to_json_dict(), indent=2) + "\n")
    os.replace(tmp, path)
