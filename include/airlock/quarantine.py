"""Quarantine: where a model's bytes land before anything trusts them.

One directory per DAG run and model under the quarantine root::

    <root>/<dag_id>/<run slug>/<model slug>/
        files/                     the model, exactly as listed (what every later stage reads)
        vendor/                    a drop's SHA256SUMS / model.sig, kept apart from the model
        .partial/                  downloads in progress (resumed by a retry, never read as the model)
        digests.json               the one hashing pass, taken while downloading (airlock.hashing); verification
                                   adds what each file was checked against (see airlock.manifest.DigestSet)
        published-checksums.json   the verification report
        manifest.json              the manifest

Before a byte is fetched, every listed name is checked (:func:`name_violations`)
and the listing is compared with the tier's limits and the free space, less what
concurrent runs have reserved (:func:`preflight` reserves the run's own share). A file is written to ``.partial/`` under a name Airlock
chooses, capped at its listed size and the run's deadline, and moved into
``files/`` only when complete, after checking the target is inside ``files/``.
Nothing the listing says can place a byte outside the quarantine directory.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from airlock.errors import AirlockError, DownloadError, DownloadTimeout, ManifestError, QuarantineError
from airlock.hashing import HashingSink
from airlock.manifest import DigestSet, FileDigest, hash_file, path_sort_key

if TYPE_CHECKING:
    from airlock.policy import TierPolicy
    from airlock.sources import Fetcher, PublishedFile, ResolvedSource

log = logging.getLogger(__name__)

MAX_SEGMENT_BYTES = 255  # NAME_MAX on Linux and macOS
MAX_PATH_BYTES = 4096  # PATH_MAX on Linux
FREE_SPACE_MARGIN = 64 * 1024**2  # never plan to fill a filesystem to the last byte
RESERVATIONS_DIR = ".reservations"  # under the quarantine root, beside the per-DAG directories
STALE_RESERVATION_S = 600.0  # a reservation without its run directory this long is left over from a lost run
_DRIVE = re.compile(r"^[A-Za-z]:")
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Slack on top of the deadline for fetches blocked in a read to notice and stop.
_DEADLINE_GRACE_S = 30.0


# --------------------------------------------------------------------------- names


@dataclass(frozen=True)
class NameViolation:
    path: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path!r}: {self.rule}"


def _fold(text: str) -> str:
    """The key two names collide under on case-insensitive or normalizing filesystems (NFKC casefold)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def _character_rule(path: str) -> str | None:
    for char in path:
        category = unicodedata.category(char)
        if category == "Cc":
            return f"control character U+{ord(char):04X}"
        if category == "Cf":
            return f"invisible formatting character U+{ord(char):04X} (e.g. a bidi override)"
        if category == "Cs":
            return f"unpaired surrogate U+{ord(char):04X}"
    return None


def _single_name_rule(path: str) -> str | None:
    """The first rule ``path`` breaks on its own, or None."""
    if not path:
        return "empty name"
    if path.startswith("/"):
        return "absolute path"
    if "\\" in path:
        return "backslash in name (a path separator on Windows)"
    if _DRIVE.match(path):
        return "drive-letter path"
    if rule := _character_rule(path):
        return rule
    for segment in path.split("/"):
        if segment == "..":
            return "'..' segment (path traversal)"
        if segment == ".":
            return "'.' segment (non-canonical path)"
        if segment == "":
            return "empty segment ('//' or a trailing '/')"
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            return f"a segment longer than {MAX_SEGMENT_BYTES} bytes"
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        return f"longer than {MAX_PATH_BYTES} bytes"
    return None


def _prefixes(path: str) -> list[str]:
    segments = path.split("/")
    return ["/".join(segments[: i + 1]) for i in range(len(segments))]


def name_violations(paths: Iterable[str]) -> list[NameViolation]:
    """Every refused name in a listing, each with the rule it breaks.

    Single names: absolute, ``..``/``.``/empty segments, backslashes, drive
    letters, control and invisible characters, over-long names. Across the
    listing: duplicates, names (or parent directories) that collide after case
    folding or Unicode normalization, and a name that is both a file and a
    directory.
    """
    paths = list(paths)
    violations: list[NameViolation] = []
    seen: set[str] = set()
    valid: list[str] = []
    for path in paths:
        if path in seen:
            violations.append(NameViolation(path, "listed twice"))
            continue
        seen.add(path)
        if rule := _single_name_rule(path):
            violations.append(NameViolation(path, rule))
        else:
            valid.append(path)
    files = set(valid)
    folded: dict[str, str] = {}
    for path in sorted(valid):
        for prefix in _prefixes(path):
            if prefix != path and prefix in files:
                violations.append(NameViolation(path, f"its parent {prefix!r} is also listed as a file"))
                break
            other = folded.setdefault(_fold(prefix), prefix)
            if other != prefix:
                how = (
                    "Unicode normalization"
                    if unicodedata.normalize("NFC", other) == unicodedata.normalize("NFC", prefix)
                    else "case folding"
                )
                violations.append(NameViolation(path, f"collides with {other!r} after {how}"))
                break
    return violations


def check_names(paths: Iterable[str], *, where: str) -> None:
    """Raise :class:`QuarantineError` naming every refused file in ``where``'s listing."""
    violations = name_violations(paths)
    if violations:
        raise QuarantineError(f"{where}: refused file names: {_listing(violations)}")


def _listing(items: list, limit: int = 20) -> str:
    shown = "; ".join(str(item) for item in items[:limit])
    return shown + (f"; and {len(items) - limit} more" if len(items) > limit else "")


# --------------------------------------------------------------------------- the area


def _slug(text: str, limit: int = 64) -> str:
    """A readable, filesystem-safe and collision-free directory name for ``text``."""
    readable = _SLUG_UNSAFE.sub("_", text).strip("._-")[:limit] or "x"
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _inside(path: Path, parent: Path) -> bool:
    real = Path(os.path.realpath(path))
    return real == Path(os.path.realpath(parent)) or real.is_relative_to(os.path.realpath(parent))


@dataclass(frozen=True)
class QuarantineArea:
    """The quarantine directory of one model in one DAG run."""

    root: Path
    path: Path

    @classmethod
    def for_run(cls, root: Path, dag_id: str, run_id: str, source: str) -> QuarantineArea:
        return cls(root=Path(root), path=run_directory(root, dag_id, run_id) / _slug(source))

    @classmethod
    def at(cls, root: Path, path: str | Path) -> QuarantineArea:
        """Re-open an area from a path another task reported; refused unless it is under ``root``."""
        area = cls(root=Path(root), path=Path(path))
        if not area.path.is_absolute() or not area.path.is_relative_to(area.root) or not _inside(area.path, area.root):
            raise QuarantineError(f"{path}: not a quarantine directory under {root}")
        return area

    @property
    def files_dir(self) -> Path:
        return self.path / "files"

    @property
    def vendor_dir(self) -> Path:
        return self.path / "vendor"

    @property
    def partial_dir(self) -> Path:
        return self.path / ".partial"

    @property
    def digests_file(self) -> Path:
        return self.path / "digests.json"

    @property
    def report_file(self) -> Path:
        return self.path / "published-checksums.json"

    @property
    def manifest_file(self) -> Path:
        return self.path / "manifest.json"

    def create(self) -> None:
        """Create the directories (owner-only) and check none of them resolves outside the root."""
        self.root.mkdir(parents=True, exist_ok=True)
        for directory in (self.files_dir, self.vendor_dir, self.partial_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not _inside(directory, self.root) or os.path.islink(directory):
                raise QuarantineError(f"{directory}: resolves outside the quarantine root {self.root}; refused")


def run_directory(root: Path, dag_id: str, run_id: str) -> Path:
    return Path(root) / _slug(dag_id) / _slug(run_id)


# --------------------------------------------------------------------------- preflight


@dataclass(frozen=True)
class Preflight:
    files: int
    total_bytes: int
    needed_bytes: int
    free_bytes: int


def preflight(resolved: ResolvedSource, policy: TierPolicy, area: QuarantineArea) -> Preflight:
    """Check names, the tier's limits, the vendor-manifest rule and free space before downloading."""
    where = f"{resolved.uri}@{resolved.revision}"
    listed = [*resolved.files, *resolved.vendor_manifests]
    check_names((f.path for f in listed), where=where)
    tier = policy.tier.value
    if len(resolved.files) > policy.max_files:
        raise QuarantineError(f"{where}: {len(resolved.files)} files exceed tier {tier}'s max_files {policy.max_files}")
    oversized = [f for f in listed if f.size > policy.max_file_bytes]
    if oversized:
        names = _listing([f"{f.path!r} ({f.size} bytes)" for f in oversized])
        raise QuarantineError(f"{where}: larger than tier {tier}'s max_file_bytes {policy.max_file_bytes}: {names}")
    if resolved.total_size > policy.max_total_bytes:
        raise QuarantineError(
            f"{where}: {resolved.total_size} bytes exceed tier {tier}'s max_total_bytes {policy.max_total_bytes}"
        )
    if resolved.kind != "hf" and policy.require_vendor_manifest and not resolved.vendor_manifests:
        raise QuarantineError(
            f"{where}: tier {tier} requires a vendor manifest (SHA256SUMS or model.sig at the drop's root); none found"
        )
    needed = resolved.total_size - _bytes_already_here(area, resolved)
    with _reservation_ledger(area.root) as ledger:
        free = shutil.disk_usage(_existing_ancestor(area.path)).free
        promised = sum(r.outstanding_bytes() for r in _live_reservations(ledger) if r.area != area.path)
        if needed + promised + FREE_SPACE_MARGIN > free:
            others = f", {promised} of them reserved by concurrent runs" if promised else ""
            raise QuarantineError(
                f"{where}: needs {needed} bytes (+{FREE_SPACE_MARGIN} margin) in {area.root} but only {free} are "
                f"free{others}"
            )
        _write_reservation(ledger, area, resolved.total_size)
    return Preflight(files=len(resolved.files), total_bytes=resolved.total_size, needed_bytes=needed, free_bytes=free)


# --------------------------------------------------------------------------- space reservations
#
# Free space alone is not enough: concurrent runs on one volume all see the same free bytes before any of them has
# written, so each passes and all fail mid-download. Every run that passes preflight therefore records how many bytes
# it will occupy; later preflights subtract what the others still have to write (their declared size minus what is
# already on disk, which free space already accounts for). Check and record happen under one exclusive lock.


@dataclass(frozen=True)
class _Reservation:
    file: Path
    area: Path
    total_bytes: int
    created: float

    def outstanding_bytes(self) -> int:
        return max(0, self.total_bytes - _bytes_on_disk(self.area))


@contextmanager
def _reservation_ledger(root: Path) -> Iterator[Path]:
    """The reservations directory of ``root``, locked exclusively (flock) for the caller's check-and-record."""
    ledger = Path(root) / RESERVATIONS_DIR
    ledger.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(ledger / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield ledger
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _reservation_file(ledger: Path, area: Path) -> Path:
    # One file per area, named after the run directory so teardown finds every reservation of its run.
    relative = area.relative_to(ledger.parent)
    return ledger / ("+".join(relative.parts) + ".json")


def _write_reservation(ledger: Path, area: QuarantineArea, total_bytes: int) -> None:
    from airlock.fsutil import atomic_write

    record = {"area": str(area.path), "total_bytes": total_bytes, "created": time.time()}
    atomic_write(_reservation_file(ledger, area.path), json.dumps(record).encode())


def _live_reservations(ledger: Path) -> list[_Reservation]:
    """Every reservation still holding space; stale ones (their run directory long gone) are dropped.

    An unreadable record cannot say what it holds; it is dropped once it is old (records are written atomically,
    so only damage leaves one behind).
    """
    live = []
    now = time.time()
    for file in sorted(ledger.glob("*.json")):
        try:
            record = json.loads(file.read_text())
            reservation = _Reservation(file, Path(record["area"]), int(record["total_bytes"]), float(record["created"]))
        except (OSError, ValueError, KeyError, TypeError):
            if now - _mtime(file) > STALE_RESERVATION_S:
                file.unlink(missing_ok=True)
            continue
        # Preflight records before the area is created, so a missing area is stale only after a grace period.
        if not reservation.area.exists() and now - reservation.created > STALE_RESERVATION_S:
            file.unlink(missing_ok=True)
            continue
        live.append(reservation)
    return live


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _bytes_on_disk(area: Path) -> int:
    total = 0
    for directory, _dirs, files in os.walk(area):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                continue
    return total


def release_reservations(root: Path, dag_id: str, run_id: str) -> int:
    """Drop every space reservation of the run (teardown); returns how many were dropped."""
    ledger = Path(root) / RESERVATIONS_DIR
    if not ledger.is_dir():
        return 0
    prefix = "+".join(run_directory(root, dag_id, run_id).relative_to(root).parts) + "+"
    with _reservation_ledger(root):
        mine = [f for f in ledger.glob("*.json") if f.name.startswith(prefix)]
        for file in mine:
            file.unlink(missing_ok=True)
    return len(mine)


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _bytes_already_here(area: QuarantineArea, resolved: ResolvedSource) -> int:
    """Bytes a resumed download will not fetch again (complete files and partials)."""
    total = 0
    for directory, files in ((area.files_dir, resolved.files), (area.vendor_dir, resolved.vendor_manifests)):
        for file in files:
            for candidate in (directory / file.path, _partial_path(area, directory, file.path)):
                try:
                    total += min(os.lstat(candidate).st_size, file.size)
                    break
                except (OSError, ValueError):
                    continue
    return total


# --------------------------------------------------------------------------- download


@dataclass(frozen=True)
class DownloadResult:
    files: int
    bytes: int
    fetched: int
    resumed: int
    already_present: int
    seconds: float
    # The download's hashing pass: model files (also saved as the area's digests.json) and vendor manifests.
    digests: tuple[FileDigest, ...] = ()
    vendor_digests: tuple[FileDigest, ...] = ()


FileOutcome = Literal["fetched", "resumed", "present"]


class _Incomplete(Exception):
    """A fetch ended before the listed size (a short body); resume and retry."""


class _Aborted(Exception):
    """Another file failed for good; stop this one promptly."""


class _BoundedSink:
    """A file-like sink that refuses bytes beyond the listed size, after the deadline, or after an abort.

    Capping at the listed size means a hostile server cannot fill the disk.
    """

    def __init__(self, handle, limit: int, deadline: float, abort: threading.Event, label: str) -> None:
        self._handle = handle
        self._limit = limit
        self._deadline = deadline
        self._abort = abort
        self._label = label

    def write(self, data: bytes | memoryview) -> int:
        if self._abort.is_set():
            raise _Aborted(self._label)
        if time.monotonic() > self._deadline:
            raise DownloadTimeout(f"{self._label}: download deadline passed")
        if self._handle.tell() + len(data) > self._limit:
            raise DownloadError(
                f"{self._label}: the source sent more than the {self._limit} bytes it listed; refused",
                retryable=False,
            )
        return self._handle.write(data)

    def tell(self) -> int:
        return self._handle.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        return self._handle.truncate(size)

    def flush(self) -> None:
        self._handle.flush()


def _partial_path(area: QuarantineArea, dest_dir: Path, relative: str) -> Path:
    # Named by a hash, never by the listed name: a partial file can't be placed by the listing.
    key = hashlib.sha256(f"{dest_dir.name}\0{relative}".encode()).hexdigest()[:40]
    return area.partial_dir / f"{key}.part"


def _target_path(dest_dir: Path, relative: str) -> Path:
    """``dest_dir/relative`` after re-checking the name and that its parent resolves inside ``dest_dir``."""
    if rule := _single_name_rule(relative):
        raise QuarantineError(f"{relative!r}: {rule}")
    target = dest_dir.joinpath(*relative.split("/"))
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not _inside(target.parent, dest_dir):
        raise QuarantineError(f"{relative!r}: resolves outside {dest_dir}; refused")
    return target


def _open_partial(path: Path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    handle = open(fd, "r+b")
    handle.seek(0, os.SEEK_END)
    return handle


def _fetch_one(
    file: PublishedFile,
    dest_dir: Path,
    area: QuarantineArea,
    fetcher: Fetcher,
    deadline: float,
    abort: threading.Event,
    attempts: int,
) -> tuple[FileOutcome, FileDigest]:
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_before_delay, wait_exponential_jitter

    target = _target_path(dest_dir, file.path)
    git_sha1 = bool(file.git_sha1 and not file.lfs_sha256)  # the hub vouches for this file by git blob id
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        info = None
    if info is not None:
        if stat.S_ISREG(info.st_mode) and info.st_size == file.size:
            # Completed by an earlier attempt whose pass was not recorded: hash it now (retries only).
            try:
                return "present", hash_file(target, file.path, git_sha1=git_sha1)
            except ManifestError as exc:
                raise QuarantineError(f"{file.path!r}: {exc}") from None
        raise QuarantineError(f"{file.path!r}: {target} exists but is not the listed {file.size}-byte file")
    partial = _partial_path(area, dest_dir, file.path)
    resumed = partial.exists()

    def transient(error: BaseException) -> bool:
        if abort.is_set() or isinstance(error, (AirlockError, _Aborted)):
            return False
        return isinstance(error, _Incomplete) or fetcher.is_transient(error)

    retrying = Retrying(
        stop=stop_after_attempt(attempts) | stop_before_delay(max(0.0, deadline - time.monotonic())),
        wait=wait_exponential_jitter(initial=1, max=30),
        retry=retry_if_exception(transient),
        reraise=True,
    )
    hashing: HashingSink | None = None
    try:
        for attempt in retrying:
            with attempt:
                with _open_partial(partial) as handle:
                    if handle.tell() > file.size:  # cannot be ours: start over
                        handle.seek(0)
                        handle.truncate()
                    # The one read of these bytes: hashed as they are written (see airlock.hashing).
                    hashing = HashingSink(handle, git_blob_size=file.size if git_sha1 else None)
                    sink = _BoundedSink(hashing, file.size, deadline, abort, file.path)
                    fetcher.fetch(file, sink, handle.tell())
                    handle.flush()
                    if handle.tell() != file.size:
                        raise _Incomplete(f"{file.path}: {handle.tell()} of {file.size} bytes")
    except OSError as exc:
        # A full volume is the operator's to fix: a verdict naming the volume, not a retry into the same wall.
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise QuarantineError(f"{file.path!r}: no space left on the quarantine volume ({area.root}); "
                                  f"the partial file is kept at {partial}") from None
        raise
    # Read-only before the fingerprint is taken: later stages (and the registry's link) compare against it,
    # and a chmod moves ctime.
    os.chmod(partial, 0o444)  # quarantined bytes are read-only to every later stage
    os.replace(partial, target)
    assert hashing is not None
    try:
        digest = hashing.finish(target, file.path)
    except (ManifestError, OSError) as exc:
        raise QuarantineError(f"{file.path!r}: cannot hash the downloaded file ({exc})") from None
    return ("resumed" if resumed else "fetched"), digest


def download(
    resolved: ResolvedSource,
    area: QuarantineArea,
    fetcher: Fetcher,
    *,
    workers: int = 8,
    timeout_s: float = 3600.0,
    attempts: int = 5,
) -> DownloadResult:
    """Fetch every listed file (model into ``files/``, vendor manifests into ``vendor/``) in parallel.

    Each file is retried with exponential backoff and jitter on transient errors,
    resumes from its partial file, and stops at the deadline. The first permanent
    failure stops the other fetches; the error names every file that failed.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    jobs = [(f, area.files_dir) for f in resolved.files] + [(f, area.vendor_dir) for f in resolved.vendor_manifests]
    # The same check as the preflight, again: this function must be safe whoever calls it.
    check_names((f.path for f, _ in jobs), where=f"{resolved.uri}@{resolved.revision}")
    area.create()
    abort = threading.Event()
    outcomes: dict[tuple[Path, str], tuple[FileOutcome, FileDigest]] = {}
    failures: list[tuple[str, BaseException]] = []
    # A stale pass must never stand for these files: it is written again, whole, when the download ends.
    area.digests_file.unlink(missing_ok=True)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="airlock-fetch")
    try:
        futures: dict[Future[tuple[FileOutcome, FileDigest]], tuple[PublishedFile, Path]] = {
            pool.submit(_fetch_one, file, dest, area, fetcher, deadline, abort, attempts): (file, dest)
            for file, dest in sorted(jobs, key=lambda job: job[0].size, reverse=True)
        }
        pending = set(futures)
        while pending:
            remaining = deadline + _DEADLINE_GRACE_S - time.monotonic()
            done, pending = wait(pending, timeout=max(0.0, remaining), return_when=FIRST_EXCEPTION)
            for future in done:
                file, dest = futures[future]
                if (error := future.exception()) is None:
                    outcomes[(dest, file.path)] = future.result()
                elif not isinstance(error, _Aborted):
                    failures.append((file.path, error))
            if failures:
                abort.set()  # stop the others promptly; their partials stay for a resumed retry
            if pending and (failures or remaining <= 0):
                if not failures:
                    failures.extend((futures[f][0].path, DownloadTimeout("deadline passed")) for f in pending)
                abort.set()
                break
    finally:
        pool.shutdown(wait=not abort.is_set(), cancel_futures=True)
    if failures:
        raise _download_error(resolved, failures, timeout_s)
    _remove_if_empty(area.partial_dir)
    kinds = [outcome for outcome, _digest in outcomes.values()]
    model = tuple(sorted((d for (dest, _), (_, d) in outcomes.items() if dest == area.files_dir),
                         key=lambda d: path_sort_key(d.path)))
    vendor = tuple(sorted((d for (dest, _), (_, d) in outcomes.items() if dest == area.vendor_dir),
                          key=lambda d: d.path))
    # The pass every later stage uses instead of reading the files again (they re-stat, see check_unchanged).
    DigestSet(files=model).save(area.digests_file)
    return DownloadResult(
        files=len(resolved.files),
        bytes=resolved.total_size,
        fetched=kinds.count("fetched"),
        resumed=kinds.count("resumed"),
        already_present=kinds.count("present"),
        seconds=round(time.monotonic() - started, 3),
        digests=model,
        vendor_digests=vendor,
    )


def _download_error(
    resolved: ResolvedSource, failures: list[tuple[str, BaseException]], timeout_s: float
) -> DownloadError:
    """One error naming every failed file; retryable only if every failure was (network, timeout)."""
    described = [f"{path!r} ({_describe(error)})" for path, error in sorted(failures)]
    message = f"{resolved.uri}@{resolved.revision}: download failed for {len(failures)} file(s): {_listing(described)}"
    if all(isinstance(error, DownloadTimeout) for _, error in failures):
        return DownloadTimeout(f"{message} (budget {timeout_s:.0f}s)")
    retryable = all(
        (isinstance(error, DownloadError) and error.retryable) or not isinstance(error, AirlockError)
        for _, error in failures
    )
    return DownloadError(message, retryable=retryable)


def _describe(error: BaseException) -> str:
    if isinstance(error, AirlockError):
        return str(error)
    return type(error).__name__  # library messages may carry URLs with signed query strings


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass


# --------------------------------------------------------------------------- teardown


def remove_run(root: Path, dag_id: str, run_id: str) -> Path | None:
    """Delete the run's quarantine directory (every model in it); the path removed, or None if absent.

    Refuses a directory that resolves outside ``root``: teardown must never be a
    way to delete something else.
    """
    run_dir = run_directory(root, dag_id, run_id)
    release_reservations(root, dag_id, run_id)
    if not os.path.lexists(run_dir):
        return None
    if os.path.islink(run_dir) or not _inside(run_dir, root):
        raise QuarantineError(f"{run_dir}: not a directory under the quarantine root {root}; not removing it")
    shutil.rmtree(run_dir, onerror=_make_writable_and_retry)
    return run_dir


def _make_writable_and_retry(function, path: str, _exc_info) -> None:
    # Files are read-only; their directories are not, but be robust to a stage that chmod'ed one.
    parent = os.path.dirname(path)
    os.chmod(parent, stat.S_IRWXU)
    function(path)
