"""Published checksums: do the quarantined bytes match what the source vouches for?

Who vouches, per source:

* a hub (``hf://``): the LFS sha256 of every LFS file and the git blob sha1
  (``blob_id``) of every other file, from the pinned commit's tree listing;
* a drop (``s3://``, ``file://``) carrying a vendor manifest at its root:
  ``SHA256SUMS`` (GNU ``sha256sum`` output) and/or ``model.sig`` (an OMS /
  model_signing bundle, ``files`` serialization, sha256). Every model file
  must be in it with the same digest, and nothing else may be in the drop;
* a local drop: also the sha256 taken when it was pinned (it must not have
  changed while being copied).

A tier policy decides whether a drop without a vendor manifest may proceed
(never for high or critical). The bundle's signature is *not* verified here —
no vendor key is configured — only its digest list is used, with the same
trust as an unsigned SHA256SUMS; the report says so.

The check reuses the one hashing pass taken while downloading into quarantine
(:mod:`airlock.hashing`: sha256 and, for files the hub publishes by blob id, git
sha1 over the same bytes), after re-statting every file against the fingerprint
that pass recorded; it saves the pass with what each file was checked against,
so the manifest is built without reading the files again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from airlock.errors import IntegrityError
from airlock.manifest import (
    MODEL_SIGNING_IGNORE,
    SHA256_HEX,
    DigestSet,
    FileDigest,
    PublishedCheck,
    check_unchanged,
    hash_files,
    hash_tree,
    is_ignored,
    path_sort_key,
)
from airlock.sources import MODEL_SIG, SHA256SUMS, VENDOR_MANIFEST_NAMES

if TYPE_CHECKING:
    from airlock.policy import TierPolicy
    from airlock.quarantine import QuarantineArea
    from airlock.sources import ResolvedSource

log = logging.getLogger(__name__)

REPORT_SCHEMA = "airlock.published-checksums/v1"
MODEL_SIGNING_PREDICATE = "https://model_signing/signature/v1.0"
IN_TOTO_STATEMENT = "https://in-toto.io/Statement/v1"
MAX_VENDOR_MANIFEST_BYTES = 16 * 1024**2  # parsed in memory: bound it
_SUMS_LINE = re.compile(r"^(?P<digest>[0-9a-fA-F]{64}) [ *](?P<path>.+)$")


@dataclass(frozen=True)
class Expected:
    """One checksum someone vouches for."""

    by: str
    sha256: str | None = None
    git_sha1: str | None = None

    def matches(self, digest: FileDigest) -> bool:
        if self.sha256 is not None:
            return digest.sha256 == self.sha256
        return digest.git_sha1 is not None and digest.git_sha1 == self.git_sha1

    def check(self, digest: FileDigest) -> PublishedCheck:
        return PublishedCheck(sha256=self.sha256, git_sha1=self.git_sha1, by=self.by, ok=self.matches(digest))


# --------------------------------------------------------------------------- vendor manifests


def parse_sha256sums(text: str, *, name: str = SHA256SUMS) -> dict[str, str]:
    """``{path: sha256}`` from GNU ``sha256sum`` output; any line it cannot read is an error naming the line."""
    sums: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _SUMS_LINE.match(line)
        if match is None:
            raise IntegrityError(f"{name} line {number}: not '<sha256>  <path>' ({line[:80]!r})")
        path = match["path"].removeprefix("./")
        if path in sums:
            raise IntegrityError(f"{name} line {number}: {path!r} is listed twice")
        sums[path] = match["digest"].lower()
    if not sums:
        raise IntegrityError(f"{name}: lists no files")
    return sums


def parse_model_signing_bundle(data: bytes, *, name: str = MODEL_SIG) -> dict[str, str]:
    """``{path: sha256}`` from a model_signing bundle's in-toto statement (``files`` serialization, sha256).

    Consistency is checked as model_signing does: the subject digest must be the
    sha256 over the resources' digests in the order the predicate lists them.
    """
    try:
        bundle = json.loads(data)
        envelope = bundle["dsseEnvelope"]
        statement = json.loads(base64.b64decode(envelope["payload"], validate=True))
        predicate = statement["predicate"]
        serialization = predicate["serialization"]
        resources = predicate["resources"]
        subject_digest = statement["subject"][0]["digest"]["sha256"]
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error) as exc:
        raise IntegrityError(f"{name}: not a model_signing bundle ({type(exc).__name__}: {exc})") from None
    if statement.get("_type") != IN_TOTO_STATEMENT or statement.get("predicateType") != MODEL_SIGNING_PREDICATE:
        raise IntegrityError(f"{name}: not a model_signing v1.0 in-toto statement")
    if serialization.get("method") != "files" or serialization.get("hash_type") != "sha256":
        raise IntegrityError(
            f"{name}: serialization {serialization.get('method')}/{serialization.get('hash_type')} "
            "is not supported (files/sha256 only)"
        )
    digests: dict[str, str] = {}
    hasher = hashlib.sha256()
    for resource in resources:
        path, digest = resource.get("name"), str(resource.get("digest", "")).lower()
        if resource.get("algorithm") != "sha256" or not isinstance(path, str) or not SHA256_HEX.fullmatch(digest):
            raise IntegrityError(f"{name}: resource {resource!r} is not a sha256 file entry")
        if path in digests:
            raise IntegrityError(f"{name}: {path!r} is listed twice")
        digests[path] = digest
        hasher.update(bytes.fromhex(digest))
    if hasher.hexdigest() != subject_digest:
        raise IntegrityError(f"{name}: inconsistent bundle: the subject digest does not match its resources")
    return digests


def _read_vendor_manifest(path: Path, listed: Mapping[str, str | None]) -> bytes:
    """The bytes of a downloaded vendor manifest, bounded, and equal to its pinned digest when there is one."""
    size = path.stat().st_size
    if size > MAX_VENDOR_MANIFEST_BYTES:
        raise IntegrityError(f"{path.name}: {size} bytes is larger than a vendor manifest may be")
    data = path.read_bytes()
    pinned = listed.get(path.name)
    if pinned is not None and hashlib.sha256(data).hexdigest() != pinned:
        raise IntegrityError(f"{path.name}: changed since the drop was pinned")
    return data


def vendor_expectations(resolved: ResolvedSource, vendor_dir: Path) -> dict[str, dict[str, str]]:
    """``{manifest name: {path: sha256}}`` for every vendor manifest the drop carries."""
    pinned = {f.path: f.sha256 for f in resolved.vendor_manifests}
    found: dict[str, dict[str, str]] = {}
    for listed in resolved.vendor_manifests:
        data = _read_vendor_manifest(vendor_dir / listed.path, pinned)
        if listed.path == SHA256SUMS:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise IntegrityError(f"{SHA256SUMS}: not UTF-8 text") from None
            found[SHA256SUMS] = parse_sha256sums(text)
        elif listed.path == MODEL_SIG:
            found[MODEL_SIG] = parse_model_signing_bundle(data)
    return found


# --------------------------------------------------------------------------- the report


class FileProblem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    problem: Literal["mismatch", "missing", "unexpected", "size"]
    by: str
    detail: str = ""


class VerificationReport(BaseModel):
    """What was checked against whom, and the verdict. Names every file with a problem."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: str = Field(default=REPORT_SCHEMA, alias="schema")
    source: str
    revision: str
    verdict: Literal["allow", "block"]
    checked_against: tuple[str, ...]
    files: int
    verified: int
    unverified: tuple[str, ...] = ()
    problems: tuple[FileProblem, ...] = ()
    policy: str = ""
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        if not self.problems:
            return f"{self.source}@{self.revision}: {self.verified}/{self.files} files verified ({self.verdict})"
        shown = "; ".join(
            f"{p.path!r} {p.problem} ({p.by}{': ' + p.detail if p.detail else ''})" for p in self.problems[:20]
        )
        more = f"; and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        return f"{self.source}@{self.revision}: blocked: {shown}{more}"


def hub_expectations(resolved: ResolvedSource) -> dict[str, Expected]:
    """The hub's LFS sha256 (LFS files) or git blob sha1 (everything else) for each listed file."""
    expected = {}
    for file in resolved.files:
        if file.lfs_sha256:
            expected[file.path] = Expected(by="hub-lfs", sha256=file.lfs_sha256)
        elif file.git_sha1:
            expected[file.path] = Expected(by="hub-git-blob", git_sha1=file.git_sha1)
    return expected


def check_published(
    resolved: ResolvedSource,
    digests: list[FileDigest],
    *,
    vendor: Mapping[str, Mapping[str, str]],
    policy: TierPolicy,
) -> tuple[VerificationReport, dict[str, PublishedCheck]]:
    """Compare one hashing pass with everything the source vouches for.

    Returns the report and, per file, the check the manifest records (vendor
    manifest first, then the hub, then the drop's pinned digest).
    """
    on_disk = {d.path: d for d in digests}
    listed = {f.path: f for f in resolved.files}
    problems: list[FileProblem] = []
    by_file: dict[str, list[Expected]] = {path: [] for path in listed}
    against: list[str] = []
    notes: list[str] = []

    # The listing itself: nothing missing, nothing extra, sizes as listed.
    problems += [FileProblem(path=p, problem="missing", by="listing") for p in sorted(set(listed) - set(on_disk))]
    problems += [FileProblem(path=p, problem="unexpected", by="listing") for p in sorted(set(on_disk) - set(listed))]
    for path in sorted(set(listed) & set(on_disk)):
        if on_disk[path].size != listed[path].size:
            detail = f"{on_disk[path].size} bytes, listed {listed[path].size}"
            problems.append(FileProblem(path=path, problem="size", by="listing", detail=detail))

    if resolved.kind == "hf":
        against.append("hub")
        hub = hub_expectations(resolved)
        for path in listed:
            if path in hub:
                by_file[path].append(hub[path])
    if resolved.kind == "file":
        against.append("drop-resolution")
        for path, file in listed.items():
            if file.sha256:
                by_file[path].append(Expected(by="drop-resolution", sha256=file.sha256))

    for name, sums in sorted(vendor.items()):
        against.append(name)
        exempt = MODEL_SIGNING_IGNORE if name == MODEL_SIG else ()
        for path in sorted(set(listed) - set(sums)):
            if not is_ignored(path, exempt):
                problems.append(FileProblem(path=path, problem="unexpected", by=name, detail=f"not in {name}"))
        for path in sorted(set(sums) - set(listed)):
            problems.append(FileProblem(path=path, problem="missing", by=name, detail=f"in {name}, not in the drop"))
        for path in set(sums) & set(listed):
            by_file[path].insert(0, Expected(by=name, sha256=sums[path]))
    if MODEL_SIG in vendor:
        notes.append(f"{MODEL_SIG}: digest list used; signature not verified (no vendor key configured)")

    if resolved.kind != "hf" and not vendor:
        if policy.require_vendor_manifest:
            problems.append(
                FileProblem(
                    path="(drop)",
                    problem="missing",
                    by="policy",
                    detail=f"tier {policy.tier.value} requires SHA256SUMS or model.sig",
                )
            )
        else:
            notes.append(f"no vendor manifest; tier {policy.tier.value} allows the drop to proceed")

    published: dict[str, PublishedCheck] = {}
    unverified: list[str] = []
    verified = 0
    for path in sorted(listed, key=path_sort_key):
        digest = on_disk.get(path)
        if digest is None:
            continue
        expectations = by_file[path]
        if not expectations:
            unverified.append(path)
            continue
        mismatches = [e for e in expectations if not e.matches(digest)]
        for expected in mismatches:
            actual = digest.sha256 if expected.sha256 else digest.git_sha1
            detail = f"expected {expected.sha256 or expected.git_sha1}, got {actual}"
            problems.append(FileProblem(path=path, problem="mismatch", by=expected.by, detail=detail))
        verified += not mismatches
        published[path] = expectations[0].check(digest)
    if resolved.kind == "hf" and unverified:
        # The hub publishes a blob id for every file; one without is a listing we cannot trust.
        problems += [
            FileProblem(path=p, problem="missing", by="hub", detail="no published checksum") for p in unverified
        ]

    report = VerificationReport(
        source=resolved.uri,
        revision=resolved.revision,
        verdict="block" if problems else "allow",
        checked_against=tuple(against),
        files=len(listed),
        verified=verified,
        unverified=tuple(unverified),
        problems=tuple(problems),
        policy=policy.tier.value,
        notes=tuple(notes),
    )
    return report, published


def verify_quarantine(
    resolved: ResolvedSource, area: QuarantineArea, policy: TierPolicy, *, workers: int | None = None
) -> VerificationReport:
    """Hash the quarantined files once, check them, save the pass and the report; raise on a block.

    Git blob sha1 is computed only for files the hub publishes by blob id (small
    non-LFS files), so large weights cost one sha256 and nothing more.
    """
    by_blob_id = {f.path for f in resolved.files if f.git_sha1 and not f.lfs_sha256}
    digests = _the_pass(area, by_blob_id, workers)  # a file changed since the pass: IntegrityError, a block
    try:
        vendor = vendor_expectations(resolved, area.vendor_dir) if resolved.kind != "hf" else {}
    except IntegrityError as exc:
        report = VerificationReport(
            source=resolved.uri,
            revision=resolved.revision,
            verdict="block",
            checked_against=tuple(f.path for f in resolved.vendor_manifests),
            files=len(resolved.files),
            verified=0,
            problems=(FileProblem(path="(vendor manifest)", problem="mismatch", by="vendor", detail=str(exc)),),
            policy=policy.tier.value,
        )
        _save_report(report, area.report_file)
        raise
    report, published = check_published(resolved, digests, vendor=vendor, policy=policy)
    DigestSet(files=tuple(digests), published=published).save(area.digests_file)
    _save_report(report, area.report_file)
    if report.verdict != "allow":
        raise IntegrityError(report.summary())
    return report


def _the_pass(area: QuarantineArea, by_blob_id: set[str], workers: int | None) -> list[FileDigest]:
    """The download's hashing pass, re-statted (not re-read); a hashing pass now when none was recorded.

    The download hashed every byte as it wrote it and recorded each file's stat
    fingerprint (size, mtime_ns, ctime_ns, inode, device) after making it
    read-only. Any file that appeared, vanished or whose fingerprint moved since
    is an :class:`IntegrityError` (:func:`check_unchanged`), so the digests
    compared below are of the bytes on disk. Without a recorded pass (a
    quarantine filled some other way) the files are hashed here, as before.
    """
    if area.digests_file.is_file():
        recorded = DigestSet.load(area.digests_file)
        check_unchanged(area.files_dir, recorded)
        digests = list(recorded.files)
        missing_sha1 = {d.path for d in digests if d.path in by_blob_id and d.git_sha1 is None}
        if not missing_sha1:
            return digests
        # A pass taken without the git blob sha1 this hub vouches by (older record): hash just those files.
        redone = {d.path: d for d in hash_files(area.files_dir, [(d.path, d.size) for d in digests
                                                                 if d.path in missing_sha1],
                                                git_sha1_for=lambda _path: True, workers=workers)}
        return [redone.get(d.path, d) for d in digests]
    return hash_tree(area.files_dir, include_ignored=True, git_sha1_for=by_blob_id.__contains__, workers=workers)


def _save_report(report: VerificationReport, path: Path) -> None:
    path.write_text(json.dumps(report.model_dump(mode="json", by_alias=True), indent=2) + "\n")


__all__ = [
    "VENDOR_MANIFEST_NAMES",
    "Expected",
    "FileProblem",
    "VerificationReport",
    "check_published",
    "hub_expectations",
    "parse_model_signing_bundle",
    "parse_sha256sums",
    "vendor_expectations",
    "verify_quarantine",
]
