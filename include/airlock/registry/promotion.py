"""Promotion: put a verified, signed model into the registry as an immutable version, atomically.

The protocol, in order (every write is put-if-absent, nothing is ever overwritten):

1. **Claim** — write ``promotion.json``, the plan: every object's key, size and
   sha256 (model files, ``model.sig``, ``aibom.cdx.json``, reports). Of several
   concurrent promotions of one version exactly one creates the claim; the
   others read it and either join (identical plan: same content) or are
   refused with the first differing object named. A crashed promotion's claim
   stays, so a version name is never reused for other content.
2. **Upload** every object. A key that already exists (a re-run, a concurrent
   identical promotion) is not rewritten; its stored bytes must match the plan.
3. **Confirm** each stored object's sha256 against the plan. An object this
   promotion created was checked by the store before its key appeared (the
   bytes hashed as they were written, or a quarantine inode linked only while
   its recorded fingerprint held; the server's checksums on S3), so it is not
   read again; an object that was already there (a re-run, a planted key) is
   re-read and hashed.
4. **RELEASED** — the commit point, written last. Readers ignore versions
   without it, so a crash anywhere before it leaves nothing visible, and
   running the same promotion again finishes the job.
5. **Index** — the ``promoted`` event (owner, tier, approver, source
   repository), added once even when re-runs race, and its signed checkpoint
   (:mod:`airlock.registry.index`): the event pins ``promotion.json`` by digest,
   so the signed chain covers every object of the version. The index refuses a
   promotion whose owner is not the model's or whose tier is below the model's
   minimum (the model record, fixed at its first release).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from airlock.errors import ManifestError
from airlock.fsutil import FileEntry, run_all
from airlock.hashing import PinnedFile
from airlock.manifest import FileDigest, hash_file, root_digest_of_pairs
from airlock.policy import RiskTier, policy_for
from airlock.registry.base import (
    PARTIAL_PREFIX,
    Layout,
    ModelName,
    ObjectStore,
    RegistryError,
    SourceChangedError,
    StoredObjectError,
    VersionConflictError,
    check_sha256,
    check_version,
    source_repository,
)
from airlock.registry.index import AnyEvent, Index, ModelState, PromotedEvent

if TYPE_CHECKING:
    from airlock.registry.hoststate import HostState
    from airlock.signing import Signer
    from airlock.trust import TrustStore

PLAN_SCHEMA = "airlock.registry.promotion/v1"
RELEASED_SCHEMA = "airlock.registry.released/v1"
DEFAULT_WORKERS = 8

Role = Literal["file", "signature", "aibom", "aibom-signature", "report"]
_ROLE_ORDER: tuple[Role, ...] = ("file", "signature", "aibom", "aibom-signature", "report")
_REPORT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.json\Z")


# --------------------------------------------------------------------------- stored records


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class PlannedObject(_Frozen):
    key: str = Field(description="key inside the version, e.g. files/config.json, model.sig, reports/scan.json")
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    role: Role


class PromotionPlan(_Frozen):
    """``promotion.json``: exactly what the version holds. Content only (no times, no people), so the
    plan of identical content is byte-identical whoever writes it."""

    schema_: Literal["airlock.registry.promotion/v1"] = Field(default=PLAN_SCHEMA, alias="schema")
    model: str
    version: str
    root_digest: str = Field(pattern=r"^[0-9a-f]{64}$", description="model_signing root digest of files/")
    objects: tuple[PlannedObject, ...]

    @model_validator(mode="after")
    def _consistent(self) -> PromotionPlan:
        keys = [o.key for o in self.objects]
        if keys != sorted(set(keys)):
            raise ValueError("objects must be unique and sorted by key")
        roles = [o.role for o in self.objects]
        for role in ("signature", "aibom"):
            if roles.count(role) != 1:
                raise ValueError(f"a version holds exactly one {role}, found {roles.count(role)}")
        files = [o for o in self.objects if o.role == "file"]
        if not files:
            raise ValueError("a version holds at least one model file")
        digest = root_digest_of_pairs((o.key[len(Layout.FILES):], o.sha256) for o in files)
        if digest != self.root_digest:
            raise ValueError(f"root_digest {self.root_digest} does not match the files' digests ({digest})")
        return self

    def by_role(self, role: Role) -> list[PlannedObject]:
        return [o for o in self.objects if o.role == role]

    def to_bytes(self) -> bytes:
        return (json.dumps(self.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True) + "\n").encode()

    def first_difference(self, other: PromotionPlan) -> str | None:
        """The first object whose presence, size or sha256 differs, described; None when identical.

        Model files are compared first (by key), then the signature, the AI-BOM and
        the reports: a new model under an old version should be reported as its
        weights differing, not as its BOM differing.
        """
        mine = {o.key: o for o in self.objects}
        theirs = {o.key: o for o in other.objects}

        def order(key: str) -> tuple[int, str]:
            role = (mine.get(key) or theirs[key]).role
            return _ROLE_ORDER.index(role), key

        for key in sorted(mine.keys() | theirs.keys(), key=order):
            a, b = mine.get(key), theirs.get(key)
            if a is None:
                return f"{key}: not in the stored version, present in this promotion"
            if b is None:
                return f"{key}: in the stored version, missing from this promotion"
            if (a.size, a.sha256) != (b.size, b.sha256):
                return (f"{key}: stored sha256:{a.sha256} ({a.size} bytes), "
                        f"this promotion sha256:{b.sha256} ({b.size} bytes)")
        return None


class ReleasedRecord(_Frozen):
    """``RELEASED``: the commit point; names the plan it releases by digest."""

    schema_: Literal["airlock.registry.released/v1"] = Field(default=RELEASED_SCHEMA, alias="schema")
    model: str
    version: str
    root_digest: str
    plan_sha256: str
    object_count: int
    total_bytes: int
    released_at: AwareDatetime
    released_by: str

    def to_bytes(self) -> bytes:
        return (json.dumps(self.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True) + "\n").encode()


# --------------------------------------------------------------------------- the request


@dataclass(frozen=True)
class PromotionRequest:
    """Everything promotion needs. ``files``/``root_digest`` come from the manifest of ``model_dir``."""

    model: str
    version: str
    model_dir: Path
    files: Sequence[FileEntry]
    root_digest: str
    signature: Path
    aibom: Path
    owner: str
    risk_tier: RiskTier | str
    approver: str
    source: str  # where the model came from (a source URI; recorded as its repository, without revision)
    reports: Sequence[Path] = ()
    aibom_signature: Path | None = None
    actor: str = "airlock"
    source_revision: str | None = None
    # The hashing pass of model_dir's files (path -> digest with stat fingerprint), when one was recorded: a
    # store may then publish a file without copying it (see airlock.registry.filesystem).
    pinned: Mapping[str, FileDigest] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, manifest, **kwargs) -> PromotionRequest:  # manifest: airlock.manifest.Manifest
        kwargs.setdefault("source", manifest.model.source)
        kwargs.setdefault("source_revision", manifest.model.revision)
        return cls(files=tuple(manifest.files), root_digest=manifest.root_digest, **kwargs)


@dataclass(frozen=True)
class PromotionResult:
    model: str
    version: str
    created: bool  # False: the version was already released with identical content (a no-op)
    released: ReleasedRecord
    plan: PromotionPlan
    url: str = field(default="")

    @property
    def root_digest(self) -> str:
        return self.plan.root_digest

    @property
    def signature_sha256(self) -> str:
        return self.plan.by_role("signature")[0].sha256

    @property
    def aibom_sha256(self) -> str:
        return self.plan.by_role("aibom")[0].sha256

    def to_json_dict(self) -> dict:
        """What an Asset event's ``extra`` / XCom carries about the promotion."""
        return {
            "model": self.model, "version": self.version, "created": self.created, "url": self.url,
            "root_digest": self.root_digest, "signature_sha256": self.signature_sha256,
            "aibom_sha256": self.aibom_sha256, "plan_sha256": self.released.plan_sha256,
            "released_at": self.released.released_at.isoformat(),
        }


# --------------------------------------------------------------------------- helpers


def _check_file_path(path: str) -> str:
    parts = path.split("/")
    if (not path or path.startswith("/") or "\\" in path or "\0" in path
            or any(p in ("", ".", "..") or p.startswith(PARTIAL_PREFIX) for p in parts)):
        raise RegistryError(f"manifest file path {path!r} is not a safe relative POSIX path")
    return path


def _sha256_file(path: Path) -> tuple[int, str]:
    """Size and sha256 of an artefact to store, read the manifest stage's way (no symlinks, flat memory)."""
    try:
        digest = hash_file(path, str(path))
    except ManifestError as exc:
        raise RegistryError(str(exc)) from None
    return digest.size, digest.sha256


def _check_on_disk(path: Path, entry: FileEntry) -> None:
    """Fail fast (before claiming the version) when a model file is missing or has the wrong size."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise SourceChangedError(f"{path}: manifest file {entry.path} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise SourceChangedError(f"{path}: manifest file {entry.path} is not a regular file")
    if info.st_size != entry.size:
        raise SourceChangedError(f"{path}: manifest file {entry.path} is {info.st_size} bytes, "
                                 f"the manifest says {entry.size}")


def _load_json(path: Path, what: str) -> None:
    try:
        json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{path}: the {what} is not readable JSON ({exc})") from None


def build_plan(request: PromotionRequest) -> tuple[PromotionPlan, dict[str, Path | PinnedFile]]:
    """The plan for ``request`` and, per key, the local file it comes from. Nothing is written."""
    model = ModelName.parse(request.model)
    version = check_version(request.version)
    check_sha256(request.root_digest, "root_digest")
    # Checked before anything is written: the index event after RELEASED must not be the first to object.
    policy_for(request.risk_tier)
    source_repository(request.source)
    for what in ("owner", "approver", "actor"):
        if not str(getattr(request, what)).strip():
            raise RegistryError(f"{model}@{version}: {what} is empty")
    model_dir = Path(request.model_dir)
    objects: list[PlannedObject] = []
    sources: dict[str, Path | PinnedFile] = {}
    for entry in request.files:
        relative = _check_file_path(entry.path)
        check_sha256(entry.sha256, f"sha256 of {relative}")
        _check_on_disk(model_dir / relative, entry)
        key = Layout.FILES + relative
        objects.append(PlannedObject(key=key, size=entry.size, sha256=entry.sha256, role="file"))
        pinned = request.pinned.get(entry.path)
        if pinned is not None and (pinned.size, pinned.sha256) == (entry.size, entry.sha256):
            sources[key] = PinnedFile(model_dir / relative, pinned)
        else:
            sources[key] = model_dir / relative
    artifacts: list[tuple[str, Path, Role]] = [
        (Layout.SIGNATURE, Path(request.signature), "signature"),
        (Layout.AIBOM, Path(request.aibom), "aibom"),
    ]
    if request.aibom_signature is not None:
        artifacts.append((Layout.AIBOM_SIGNATURE, Path(request.aibom_signature), "aibom-signature"))
    for report in request.reports:
        report = Path(report)
        if not _REPORT_NAME.fullmatch(report.name):
            raise RegistryError(f"{report}: report files must be named <letters, digits, ._->.json")
        artifacts.append((Layout.REPORTS + report.name, report, "report"))
    for key, path, role in artifacts:
        if key in sources:
            raise RegistryError(f"{path}: a second {role} would be stored as {key}")
        if role != "signature":
            _load_json(path, role)
        size, sha256 = _sha256_file(path)
        objects.append(PlannedObject(key=key, size=size, sha256=sha256, role=role))
        sources[key] = path
    try:
        plan = PromotionPlan(model=str(model), version=version, root_digest=request.root_digest,
                             objects=tuple(sorted(objects, key=lambda o: o.key)))
    except ValidationError as exc:
        raise RegistryError(f"{model}@{version}: {exc.errors()[0]['msg']}") from None
    return plan, sources


def load_plan(store: ObjectStore, model: ModelName, version: str) -> tuple[PromotionPlan, bytes] | None:
    key = Layout.key(model, version, Layout.PLAN)
    data = store.read(key)
    if data is None:
        return None
    try:
        return PromotionPlan.model_validate_json(data), data
    except ValidationError as exc:
        raise StoredObjectError(f"{store.object_url(key)}: not a promotion plan ({exc.errors()[0]['msg']})") from None


def load_released(store: ObjectStore, model: ModelName, version: str) -> ReleasedRecord | None:
    key = Layout.key(model, version, Layout.RELEASED)
    data = store.read(key)
    if data is None:
        return None
    try:
        record = ReleasedRecord.model_validate_json(data)
    except ValidationError as exc:
        raise StoredObjectError(f"{store.object_url(key)}: not a RELEASED record ({exc.errors()[0]['msg']})") from None
    if (record.model, record.version) != (str(model), version):
        raise StoredObjectError(f"{store.object_url(key)}: names {record.model}@{record.version}")
    return record


# --------------------------------------------------------------------------- promote


def promote(
    store: ObjectStore,
    index: Index,
    request: PromotionRequest,
    *,
    workers: int = DEFAULT_WORKERS,
    clock: Callable[[], datetime] | None = None,
    signer: Signer | None = None,
    trust: TrustStore | None = None,
    host_state: HostState | None = None,
) -> PromotionResult:
    """Promote ``request`` (see the module docstring). Safe to re-run after any failure.

    ``signer`` signs the index checkpoint; ``trust`` verifies the chain the
    promotion extends (see :meth:`airlock.registry.index.Index.append`).
    """
    if signer is None:
        raise RegistryError(f"{request.model}@{request.version}: promotion needs a signer for the index checkpoint")
    now = clock or (lambda: datetime.now(UTC))
    plan, sources = build_plan(request)
    model, version = ModelName.parse(plan.model), plan.version
    plan_bytes = _claim(store, model, version, plan)
    clean_leftovers(store, Layout.version_prefix(model, version))
    plan_sha256 = hashlib.sha256(plan_bytes).hexdigest()
    released = load_released(store, model, version)
    created = False
    if released is None:
        _upload_all(store, model, version, plan, sources, workers)
        released, created = _release(store, model, version, plan, plan_sha256, request.actor, now())
    if released.plan_sha256 != plan_sha256:
        raise StoredObjectError(f"{store.object_url(Layout.key(model, version, Layout.RELEASED))}: releases plan "
                                f"sha256:{released.plan_sha256}, but promotion.json is sha256:{plan_sha256}")
    _index_promotion(index, model, version, plan, plan_sha256, request, signer, trust, host_state)
    return PromotionResult(str(model), version, created, released, plan,
                           url=store.object_url(Layout.version_prefix(model, version).rstrip("/")))


def clean_leftovers(store: ObjectStore, prefix: str) -> list[str]:
    """Remove what dead promotions left under ``prefix`` (partial files, unfinished uploads); the keys removed.

    Called once the claim is ours (or joined): only then is this promotion the
    version's writer. Leftovers a live writer still owns (a concurrent identical
    promotion) are kept; see :mod:`airlock.registry.leftovers` for how each
    backend tells. Housekeeping never fails a promotion: a leftover that cannot
    be removed now is logged and stays listed by ``airlock registry check``.
    """
    import logging

    from airlock.registry.leftovers import LeftoverStore

    if not isinstance(store, LeftoverStore):
        return []
    log = logging.getLogger(__name__)
    removed: list[str] = []
    try:
        for item in store.leftovers(prefix):
            if not item.live and store.remove_leftover(item):
                removed.append(item.key)
    except (RegistryError, OSError) as exc:
        log.warning("could not clean leftovers under %s: %s", prefix, exc)
    if removed:
        log.info("removed %d leftover(s) of dead promotions under %s: %s", len(removed), prefix, ", ".join(removed))
    return removed


def _claim(store: ObjectStore, model: ModelName, version: str, plan: PromotionPlan) -> bytes:
    """Create the claim, or join an identical one; a different one is a conflict naming the first difference."""
    data = plan.to_bytes()
    key = Layout.key(model, version, Layout.PLAN)
    created = store.put_if_absent(key, data, len(data), hashlib.sha256(data).hexdigest())
    # Read the claim back even when we created it: a server whose conditional write is not atomic
    # (moto checks, then writes, without a lock) could let a racing writer replace it. Whoever's claim
    # is stored owns the version.
    loaded = load_plan(store, model, version)
    if created and loaded is not None and loaded[1] == data:
        return data
    if loaded is None:
        raise RegistryError(f"{store.object_url(key)}: exists but cannot be read")
    stored, stored_bytes = loaded
    difference = stored.first_difference(plan)
    if difference is not None:
        state = "is released" if load_released(store, model, version) else "is claimed by an unfinished promotion"
        raise VersionConflictError(
            f"{model}@{version} {state} with different content; versions are immutable, promote under a new "
            f"version. First difference: {difference}"
        )
    return stored_bytes


def _upload_all(store: ObjectStore, model: ModelName, version: str, plan: PromotionPlan,
                sources: dict[str, Path | PinnedFile], workers: int) -> None:
    checks_its_writes = bool(getattr(store, "confirms_own_writes", False))

    def one(obj: PlannedObject) -> None:
        key = Layout.key(model, version, obj.key)
        created = store.put_if_absent(key, sources[obj.key], obj.size, obj.sha256)  # type: ignore[arg-type]
        if created and checks_its_writes:
            return  # checked against the plan before the key appeared (see step 3 above): no second read
        confirmed = store.stored_sha256(key)
        if confirmed != obj.sha256:
            raise StoredObjectError(
                f"{store.object_url(key)}: stored bytes hash to sha256:{confirmed}, the plan says "
                f"sha256:{obj.sha256}; {model}@{version} cannot be released (promote under a new version)"
            )

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="airlock-promote") as pool:
        run_all([pool.submit(one, obj) for obj in plan.objects])


def _release(store: ObjectStore, model: ModelName, version: str, plan: PromotionPlan, plan_sha256: str,
             actor: str, at: datetime) -> tuple[ReleasedRecord, bool]:
    record = ReleasedRecord(
        model=str(model), version=version, root_digest=plan.root_digest, plan_sha256=plan_sha256,
        object_count=len(plan.objects), total_bytes=sum(o.size for o in plan.objects),
        released_at=at, released_by=actor,
    )
    data = record.to_bytes()
    if store.put_if_absent(Layout.key(model, version, Layout.RELEASED), data, len(data),
                           hashlib.sha256(data).hexdigest()):
        return record, True
    existing = load_released(store, model, version)  # a concurrent identical promotion got there first
    if existing is None:
        raise RegistryError(f"{store.object_url(Layout.key(model, version, Layout.RELEASED))}: exists but unreadable")
    return existing, False


def _index_promotion(index: Index, model: ModelName, version: str, plan: PromotionPlan, plan_sha256: str,
                     request: PromotionRequest, signer: Signer, trust: TrustStore | None,
                     host_state: HostState | None) -> None:
    tier = policy_for(request.risk_tier).tier
    source = source_repository(request.source)

    def mine(event: AnyEvent) -> bool:
        # The promoted event this request would write (a re-run after a crash before its checkpoint).
        return (isinstance(event, PromotedEvent) and event.version == version and event.plan_sha256 == plan_sha256
                and (event.owner, event.risk_tier, event.approver, event.source)
                == (request.owner, tier, request.approver, source))

    def make(state: ModelState | None, seq: int, at: datetime) -> PromotedEvent | None:
        current = state.version(version) if state is not None else None
        if current is not None:
            if current.plan_sha256 not in (None, plan_sha256):
                raise StoredObjectError(f"{model}@{version}: the index recorded plan sha256:{current.plan_sha256}, "
                                        f"the stored plan is sha256:{plan_sha256}")
            return None  # already indexed (a re-run, or a concurrent identical promotion)
        return PromotedEvent(seq=seq, model=str(model), version=version, at=at, actor=request.actor,
                             root_digest=plan.root_digest, plan_sha256=plan_sha256, owner=request.owner,
                             risk_tier=tier, approver=request.approver, source=source,
                             source_revision=request.source_revision)

    index.append(model, make, signer=signer, trust=trust, own=mine, host_state=host_state)
