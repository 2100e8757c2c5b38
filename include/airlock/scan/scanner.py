"""Scan a model directory (or one file): every file by content, findings turned into a verdict by tier policy.

Failing closed is structural here: a file whose scanner raises is reported as a scan error
(exit 2, blocked); running out of time marks the current and all remaining files as blocked;
an unknown format is a finding the tier turns into flag or block; and the verdict is ``allow``
only if no finding's action is ``block``.
"""

from __future__ import annotations

import functools
import hashlib
import mmap
import os
import platform
import posixpath
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from airlock import __version__
from airlock.errors import AirlockError
from airlock.policy import RiskTier, TierPolicy, policy_for
from airlock.scan import (
    archive_scan,
    detect,
    gguf_scan,
    keras_scan,
    legacy_scan,
    numpy_scan,
    onnx_scan,
    pickle_scan,
    remote_code,
    safetensors_scan,
    text_scan,
    tf_scan,
    zip_scan,
)
from airlock.scan.allowlist import ALLOWED_GLOBALS
from airlock.scan.context import Blob, BudgetExceeded, ScanContext
from airlock.scan.report import FileReport, MemberReport, ScanError, ScanReport
from airlock.scan.rules import Hit, to_finding

# Formats whose loading unpickles; `allow_pickle_weights` decides.
PICKLE_FORMATS = frozenset({"pickle", "pytorch_zip", "pytorch_legacy", "joblib", "joblib_zfile", "torchscript"})
# Other model formats; `allowed_model_formats` decides. (HDF5 cannot be parsed here: its
# unscannable finding goes by `unknown_binary` instead.)
MODEL_FORMATS = frozenset({"safetensors", "gguf", "onnx", "numpy", "numpy_npz", "keras", "tf_savedmodel"})
# A name that claims a format the content must then have (a pickle named .safetensors).
CLAIMED_FORMATS: dict[str, frozenset[str]] = {
    ".safetensors": frozenset({"safetensors"}),
    ".gguf": frozenset({"gguf"}),
    ".onnx": frozenset({"onnx"}),
    ".npy": frozenset({"numpy"}),
    ".npz": frozenset({"numpy_npz", "zip"}),
    ".h5": frozenset({"hdf5"}),
    ".hdf5": frozenset({"hdf5"}),
    ".keras": frozenset({"keras"}),
    ".json": frozenset({"json", "notebook"}),
}


class ScanTargetError(AirlockError):
    """The path to scan does not exist or cannot be read (``airlock scan`` exits 2)."""


Scanner = Callable[[ScanContext, Blob], str]


def _compressed(fmt: str) -> Scanner:
    return lambda ctx, blob: archive_scan.scan_compressed(ctx, blob, fmt)


def _unscannable(fmt: str) -> Scanner:
    return lambda ctx, blob: archive_scan.scan_unscannable(ctx, blob, fmt)


def _unknown(ctx: ScanContext, blob: Blob) -> str:
    if blob.name == "keras_metadata.pb":  # SavedModel's Keras metadata: a protobuf holding layer JSON
        keras_scan.scan_keras_metadata(ctx, blob)
        return "keras_metadata"
    ctx.hit("format.unknown", f"{ctx.where(blob)}: content matches no known format", blob)
    return "unknown"


SCANNERS: dict[str, Scanner] = {
    "zip": zip_scan.scan_zip,
    "pickle": pickle_scan.scan_pickle_format,
    "numpy": numpy_scan.scan_npy,
    "safetensors": safetensors_scan.scan_safetensors,
    "gguf": gguf_scan.scan_gguf,
    "hdf5": keras_scan.scan_hdf5,
    "onnx": onnx_scan.scan_onnx,
    "tf_savedmodel": tf_scan.scan_savedmodel,
    "tar": archive_scan.scan_tar,
    "joblib_zfile": legacy_scan.scan_joblib_zfile,
    "text": text_scan.scan_text,
    "unknown": _unknown,
    **{fmt: _compressed(fmt) for fmt in ("gzip", "bz2", "xz", "lzma", "zlib")},
    **{fmt: _unscannable(fmt) for fmt in ("7z", "zstd", "lz4")},
}


def dispatch(ctx: ScanContext, blob: Blob, apply_policy: bool = True) -> str:
    """Sniff ``blob``, run its scanner, then the checks every blob gets; returns the detected format."""
    ctx.check_time()
    fmt = detect.sniff(blob)
    scanner = SCANNERS.get(fmt)
    if scanner is not None:
        fmt = scanner(ctx, blob)
    # What torch.load / joblib.load / np.load / pickle.load would open besides what the magic says.
    fmt = legacy_scan.scan_other_readings(ctx, blob, fmt)
    claimed = CLAIMED_FORMATS.get(blob.suffix)
    if claimed is not None and fmt not in claimed and fmt != "empty":
        ctx.hit("format.mismatch", f"{ctx.where(blob)}: named {blob.suffix} but the content is {fmt}", blob)
    remote_code.check_code(ctx, blob, fmt)
    if apply_policy:
        _apply_format_policy(ctx, blob, fmt)
    return fmt


def _apply_format_policy(ctx: ScanContext, blob: Blob, fmt: str) -> None:
    policy = ctx.policy
    if fmt in PICKLE_FORMATS and not policy.allow_pickle_weights:
        ctx.hit(
            "policy.pickle_weights",
            f"{ctx.where(blob)}: {fmt} loads through pickle; tier {policy.tier.value} accepts no pickle-based weights",
            blob,
        )
    elif fmt in MODEL_FORMATS and fmt not in policy.allowed_model_formats:
        ctx.hit(
            "policy.format_not_allowed",
            f"{ctx.where(blob)}: {fmt} is not among tier {policy.tier.value}'s formats "
            f"({', '.join(policy.allowed_model_formats)})",
            blob,
        )


# --------------------------------------------------------------------------- files


@dataclass
class _FileResult:
    path: str
    size: int
    detected_format: str
    hits: list[Hit] = field(default_factory=list)
    members: list[MemberReport] = field(default_factory=list)


def _list_files(target: Path) -> list[tuple[str, Path]]:
    """``(POSIX relative path, path)`` of every entry under ``target``, sorted; symlinks not followed."""
    if not target.is_dir() or target.is_symlink():
        return [(target.name, target)]
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(target, followlinks=False):
        base = Path(dirpath)
        # A symlinked directory is reported as an entry, never descended into.
        entries = filenames + [d for d in dirnames if (base / d).is_symlink()]
        for name in entries:
            path = base / name
            found.append((path.relative_to(target).as_posix(), path))
    return sorted(found)


def _scan_file(ctx: ScanContext, rel: str, path: Path) -> _FileResult:
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        kind = "symlink" if stat.S_ISLNK(info.st_mode) else "special file"
        ctx.hit("scan.special_file", f"{rel}: {kind}; only regular files are accepted")
        return _FileResult(rel, 0, kind.replace(" ", "_"))
    size = info.st_size
    with open(path, "rb") as handle:
        if size == 0:
            fmt = dispatch(ctx, Blob(b"", 0, 0, path.name))
        else:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                # Random access: a scan mostly reads headers; full reads prefetch (Blob.prefetch).
                mapped.madvise(mmap.MADV_RANDOM)
                fmt = dispatch(ctx, Blob(mapped, 0, size, path.name))
    return _FileResult(rel, size, fmt)


# --------------------------------------------------------------------------- the entry point


def scan_model(
    path: str | Path,
    tier: str | RiskTier,
    *,
    time_budget_s: float | None = None,
    byte_budget: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ScanReport:
    """Scan every file under ``path`` (a model directory or one file) at ``tier``.

    ``time_budget_s`` / ``byte_budget`` override the tier's budgets (tests, benchmarks). The time
    budget is checked cooperatively (between files, members and every 16k pickle opcodes); single
    steps are bounded by the size limits, and the task's execution_timeout is the hard stop.
    Raises :class:`ScanTargetError` if ``path`` does not exist, ConfigurationError for an unknown
    tier; every other problem is in the report.
    """
    policy = policy_for(tier)
    target = Path(path)
    if not target.exists() and not target.is_symlink():
        raise ScanTargetError(f"{target}: no such file or directory")
    started = clock()
    budget_s = policy.scan_time_budget_s if time_budget_s is None else time_budget_s
    budget_bytes = policy.scan_byte_budget if byte_budget is None else byte_budget
    files = _list_files(target)
    results: list[_FileResult] = []
    errors: list[ScanError] = []
    shared = ScanContext(policy, started + budget_s, clock)
    total = sum(p.lstat().st_size for _, p in files if p.is_file() and not p.is_symlink())
    if total > budget_bytes:
        for rel, p in files:
            hit = Hit("scan.byte_budget", f"{rel}: not scanned: {total} bytes to scan, budget is {budget_bytes}")
            results.append(_FileResult(rel, p.lstat().st_size, "unscanned", [hit]))
    else:
        _scan_all(files, policy, shared, results, errors)
    _resolve_cross_file(results, shared)
    return _report(target, policy, results, errors, elapsed=clock() - started, total=total)


def _scan_all(
    files: list[tuple[str, Path]],
    policy: TierPolicy,
    shared: ScanContext,
    results: list[_FileResult],
    errors: list[ScanError],
) -> None:
    out_of_time: str | None = None
    for rel, path in files:
        if out_of_time:
            hit = Hit("scan.not_scanned", f"{rel}: not scanned: {out_of_time}")
            results.append(_FileResult(rel, path.lstat().st_size, "unscanned", [hit]))
            continue
        ctx = ScanContext(policy, shared.deadline, shared.clock, dispatch=dispatch, rel_path=rel)
        try:
            result = _scan_file(ctx, rel, path)
        except BudgetExceeded as exc:
            out_of_time = exc.detail
            ctx.hit(exc.rule, f"{rel}: {exc.detail} while scanning this file")
            result = _FileResult(rel, path.lstat().st_size, "unscanned")
        except Exception as exc:
            errors.append(ScanError(path=rel, detail=f"{type(exc).__name__}: {exc}"))
            ctx.hit("scan.error", f"{rel}: scanner failed: {type(exc).__name__}: {exc}")
            result = _FileResult(rel, path.lstat().st_size, "error")
        result.hits = ctx.hits
        result.members = ctx.members
        shared.onnx_external_refs |= ctx.onnx_external_refs
        shared.savedmodel_dirs |= ctx.savedmodel_dirs
        results.append(result)


def _resolve_cross_file(results: list[_FileResult], shared: ScanContext) -> None:
    """Raw files another file vouches for: ONNX external data, a SavedModel's variables and fingerprint."""
    for result in results:
        if result.detected_format != "unknown":
            continue
        if result.path in shared.onnx_external_refs:
            result.detected_format = "onnx_external_data"
        elif _is_savedmodel_component(result.path, shared.savedmodel_dirs):
            result.detected_format = "tf_savedmodel_component"
        else:
            continue
        result.hits = [h for h in result.hits if h.rule != "format.unknown"]


def _is_savedmodel_component(path: str, savedmodel_dirs: set[str]) -> bool:
    directory, name = posixpath.split(path)
    return any(
        directory == posixpath.join(d, "variables") or (directory == d and name == "fingerprint.pb")
        for d in savedmodel_dirs
    )


def _report(
    target: Path,
    policy: TierPolicy,
    results: list[_FileResult],
    errors: list[ScanError],
    *,
    elapsed: float,
    total: int,
) -> ScanReport:
    files = [
        FileReport(
            path=r.path,
            detected_format=r.detected_format,
            size=r.size,
            findings=[to_finding(h, policy) for h in r.hits],
            members=r.members,
        )
        for r in results
    ]
    blocked = bool(errors) or any(f.blocked for f in files)
    flagged = any(finding.action == "flag" for f in files for finding in f.findings)
    return ScanReport(
        verdict="block" if blocked else "allow",
        requires_approval=flagged and not blocked,
        tier=policy.tier.value,
        target=str(target),
        files=files,
        scanners=scanner_versions(),
        policy=policy.to_json_dict(),
        errors=errors,
        elapsed_s=round(elapsed, 6),
        bytes_scanned=total,
    )


@functools.lru_cache(maxsize=1)
def allowlist_digest() -> str:
    """Identifies the pickle allowlist a report was produced with."""
    entries = "\n".join(f"{m}.{n}:{r.value}" for (m, n), r in sorted(ALLOWED_GLOBALS.items()))
    return hashlib.sha256(entries.encode()).hexdigest()[:16]


def scanner_versions() -> dict[str, str]:
    return dict(_scanner_versions())


@functools.lru_cache(maxsize=1)  # package metadata lookups cost milliseconds; versions do not change
def _scanner_versions() -> dict[str, str]:
    versions = {
        "airlock": __version__,
        "airlock-pickle-allowlist": allowlist_digest(),
        "python": platform.python_version(),
    }
    for dist in ("picklescan", "numpy", "jinja2"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions
