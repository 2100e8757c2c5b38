"""View models of the Registry page, built from a :class:`~airlock.registry.Registry`.

What the page shows as a *status* comes only from the index chain verified
with the host's trust store (:meth:`Registry.verify_index`); a chain that does
not verify (or no trust store) is shown as such, with every version
``unverified``, never with the statuses it claims. The signing key is the one
that verifies ``model.sig`` with the same trust store, after the bundle's bytes
matched the plan RELEASED names. Everything else (owners, reasons, check
summaries, hosts, paths) is stored text and is untrusted: the renderer escapes
it.

Check records (``checked`` events, written by the integrity watch and the
nightly fingerprint) and incident reports are shown when present; without
them a version says "no checks yet". Incident reports live outside the
version's plan (they are written after its release), so they are served as
what they are: stored, not signed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Literal

from airlock.errors import AirlockError
from airlock.redact import one_line
from airlock.registry.base import Layout, ModelName, RegistryError, StoredObjectError, check_version
from airlock.registry.index import (
    CheckedEvent,
    ModelState,
    OwnershipEvent,
    PromotedEvent,
    PulledEvent,
    StatusEvent,
)
from airlock.registry.promotion import PromotionPlan, ReleasedRecord, load_plan, load_released

if TYPE_CHECKING:
    from airlock.registry.core import Registry
    from airlock.trust import TrustStore

# The promotion event's actor when model_ingest promoted the version (airlock.ingest): links to the run.
INGEST_ACTOR_PREFIX = "airflow:model_ingest/"
CHECK_KINDS = ("integrity", "fingerprint")
# Where incident reports are looked for: the incident DAG writes them under the registry root, per version
# (JSON + Markdown); a version's own reports/ may hold more than its plan names (written after release).
INCIDENTS_ROOT = "incidents/"
TREND_POINTS = 60  # newest check records per kind plotted; the page stays small however long the history

Status = Literal["approved", "deprecated", "revoked", "unindexed", "unverified"]
Verdict = Literal["pass", "fail", "error"]


class NotServed(AirlockError):
    """A download that is refused: not an object of this version, absent, or not the bytes recorded for it."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- view models


@dataclass(frozen=True)
class CheckPoint:
    """One ``checked`` record: when, what verdict, on what, and why."""

    at: datetime
    verdict: str
    target: str
    summary: str
    actor: str
    run_id: str | None = None
    report_key: str | None = None


@dataclass(frozen=True)
class CheckTrend:
    """The records of one kind of check of one version, oldest first (the newest :data:`TREND_POINTS`)."""

    check: str
    points: tuple[CheckPoint, ...] = ()
    total: int = 0  # records in the index, the plotted ones included

    @property
    def last(self) -> CheckPoint | None:
        return self.points[-1] if self.points else None

    @property
    def last_pass(self) -> CheckPoint | None:
        return next((p for p in reversed(self.points) if p.verdict == "pass"), None)


@dataclass(frozen=True)
class Artifact:
    """A stored object the page links to, by its key from the registry root."""

    key: str
    kind: Literal["aibom", "aibom-signature", "signature", "scan", "report", "incident", "check-report"]
    sha256: str | None  # the digest recorded for it (plan or check record); None: nothing vouches for it
    signed: bool  # named by the version's plan (pinned by RELEASED and the signed promotion event)

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name


@dataclass(frozen=True)
class Pull:
    at: datetime
    host: str
    dest: str
    actor: str
    key_id: str


@dataclass(frozen=True)
class HistoryEntry:
    seq: int
    at: datetime
    kind: str
    actor: str
    detail: str


@dataclass(frozen=True)
class VersionView:
    model: str
    version: str
    status: Status
    status_reason: str | None = None
    status_by: str | None = None
    status_at: datetime | None = None
    owner: str | None = None
    risk_tier: str | None = None
    source: str | None = None
    source_revision: str | None = None
    root_digest: str | None = None
    approver: str | None = None
    promoted_at: datetime | None = None
    promoted_by: str | None = None
    signing_key: str | None = None
    signature_problem: str | None = None
    problem: str | None = None  # the version's stored records are inconsistent (shown, never hidden)
    integrity: CheckTrend = field(default_factory=lambda: CheckTrend("integrity"))
    fingerprint: CheckTrend = field(default_factory=lambda: CheckTrend("fingerprint"))
    artifacts: tuple[Artifact, ...] = ()
    pulls: tuple[Pull, ...] = ()
    history: tuple[HistoryEntry, ...] = ()

    @property
    def ingest_run_id(self) -> str | None:
        """The ``model_ingest`` run that promoted this version (from the signed promotion event's actor)."""
        actor = self.promoted_by or ""
        run_id = actor[len(INGEST_ACTOR_PREFIX):] if actor.startswith(INGEST_ACTOR_PREFIX) else ""
        return run_id or None

    @property
    def revocable(self) -> bool:
        # Revoked is final; an unverified index is not extended from this page (the registry would refuse too).
        return self.status in ("approved", "deprecated", "unindexed")

    def artifact(self, kind: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.kind == kind), None)

    def artifacts_of(self, *kinds: str) -> tuple[Artifact, ...]:
        return tuple(a for a in self.artifacts if a.kind in kinds)

    def trend(self, check: str) -> CheckTrend:
        return self.integrity if check == "integrity" else self.fingerprint


@dataclass(frozen=True)
class ModelView:
    name: str
    owner: str | None = None
    risk_tier: str | None = None
    source: str | None = None
    verified: bool = False
    checkpoint_key: str | None = None  # the trust-store key that signed the newest index checkpoint
    problem: str | None = None
    versions: tuple[VersionView, ...] = ()

    def version(self, version: str) -> VersionView | None:
        return next((v for v in self.versions if v.version == version), None)


@dataclass(frozen=True)
class RegistryView:
    url: str
    models: tuple[ModelView, ...] = ()
    problem: str | None = None
    query: str = ""


# --------------------------------------------------------------------------- building


def build_registry_view(registry: Registry, *, query: str = "") -> RegistryView:
    """Every model of ``registry`` (whose name contains ``query``, case-insensitively), newest data each call."""
    from airlock.redact import redact_url

    url = redact_url(registry.url)
    trust, trust_problem = _trust(registry)
    try:
        names = _model_names(registry)
    except (AirlockError, OSError) as exc:
        return RegistryView(url, problem=f"cannot list {url}: {one_line(str(exc))}", query=query)
    wanted = query.strip().lower()
    models = tuple(build_model_view(registry, name, trust=trust, trust_problem=trust_problem)
                   for name in names if wanted in str(name).lower())
    return RegistryView(url, models, problem=trust_problem, query=query)


def build_model_view(registry: Registry, model: str | ModelName, *, trust: TrustStore | None = None,
                     trust_problem: str | None = None) -> ModelView:
    """One model: its record and versions from the verified index chain, plus released versions in storage.

    ``trust`` defaults to the registry's (the host trust store); a chain that does
    not verify makes the model ``problem`` and every version ``unverified``.
    """
    name = model if isinstance(model, ModelName) else ModelName.parse(model)
    if trust is None and trust_problem is None:
        trust, trust_problem = _trust(registry)
    state: ModelState | None = None
    problem = None
    checkpoint_key = None
    verified = False
    if trust is None:
        problem = f"index not verified: {trust_problem}"
    else:
        try:
            chain = registry.verify_index(name)
        except (AirlockError, OSError) as exc:
            problem = f"index did not verify: {one_line(str(exc))}"
        else:
            state, verified, checkpoint_key = chain.state, True, chain.key_id
    try:
        stored = registry.released_versions(name)
    except (AirlockError, OSError) as exc:
        stored = []
        problem = problem or f"cannot list versions: {one_line(str(exc))}"
    indexed = [v.version for v in state.versions] if state else []
    names = indexed + sorted(v for v in stored if v not in indexed)
    versions = tuple(_version_view(registry, name, v, state, verified, trust) for v in names)
    return ModelView(
        name=str(name),
        owner=state.owner if state else None,
        risk_tier=state.risk_tier.value if state and state.risk_tier else None,
        source=state.source if state else None,
        verified=verified, checkpoint_key=checkpoint_key, problem=problem,
        versions=tuple(reversed(versions)),  # newest first
    )


def _trust(registry: Registry) -> tuple[TrustStore | None, str | None]:
    try:
        return registry.trust(), None
    except (AirlockError, OSError) as exc:
        return None, one_line(str(exc))


def _model_names(registry: Registry) -> list[ModelName]:
    """Models in the index and models with version directories (a release whose index write never happened)."""
    names = set(registry.models())
    for org in registry.store.list_children("models/"):
        for model in registry.store.list_children(f"models/{org}/"):
            try:
                names.add(ModelName.parse(f"{org}/{model}"))
            except RegistryError:
                continue  # not a name Airlock writes: nothing of ours to show
    return sorted(names)


def _version_view(registry: Registry, name: ModelName, version: str, state: ModelState | None, verified: bool,
                  trust: TrustStore | None) -> VersionView:
    problem = None
    released: tuple[ReleasedRecord, PromotionPlan] | None = None
    try:
        released = _released(registry, name, version, state)
    except (AirlockError, OSError) as exc:
        problem = one_line(str(exc))
    current = state.version(version) if state else None
    promoted = _promoted_event(state, version)
    if not verified:
        status: Status = "unverified"
    elif current is not None:
        status = current.status.value  # type: ignore[assignment]
    else:
        status = "unindexed"  # released, but the index write never happened: not approved
    signing_key, signature_problem = (None, None)
    if released is not None and trust is not None:
        signing_key, signature_problem = _signing_key(registry, name, version, released[1], trust)
    checks = state.checks(version) if state else []
    artifacts = _plan_artifacts(name, version, released[1]) if released else ()
    return VersionView(
        model=str(name), version=version, status=status,
        status_reason=current.reason if current else None,
        status_by=current.updated_by if current else None,
        status_at=current.updated_at if current else None,
        owner=current.owner if current else None,
        risk_tier=current.risk_tier.value if current and current.risk_tier else None,
        source=current.source if current else None,
        source_revision=promoted.source_revision if promoted else None,
        root_digest=(current.root_digest if current and current.root_digest else
                     released[1].root_digest if released else None),
        approver=current.approver if current else None,
        promoted_at=current.promoted_at if current else None,
        promoted_by=current.promoted_by if current else None,
        signing_key=signing_key, signature_problem=signature_problem, problem=problem,
        integrity=_trend("integrity", checks), fingerprint=_trend("fingerprint", checks),
        artifacts=(*artifacts, *_check_reports(checks), *_incident_reports(registry, name, version, released)),
        pulls=tuple(Pull(p.at, p.host, p.dest, p.actor, p.key_id) for p in (state.pulls(version) if state else [])),
        history=_history(state, version),
    )


def _released(registry: Registry, name: ModelName, version: str,
              state: ModelState | None) -> tuple[ReleasedRecord, PromotionPlan] | None:
    """RELEASED and the plan it names, checked as :meth:`Registry.released` checks them.

    Not that method itself: it re-reads the whole index per version, and the page
    has already read (and verified) it once.
    """
    record = load_released(registry.store, name, version)
    if record is None:
        return None
    loaded = load_plan(registry.store, name, version)
    if loaded is None:
        raise StoredObjectError(f"{name}@{version}: RELEASED exists but promotion.json does not")
    plan, plan_bytes = loaded
    if hashlib.sha256(plan_bytes).hexdigest() != record.plan_sha256:
        raise StoredObjectError(f"{name}@{version}: promotion.json is not the plan RELEASED names")
    current = state.version(version) if state else None
    if current is not None and current.plan_sha256 not in (None, record.plan_sha256):
        raise StoredObjectError(f"{name}@{version}: RELEASED names plan sha256:{record.plan_sha256}, the index "
                                f"recorded sha256:{current.plan_sha256} at promotion")
    return record, plan


def _signing_key(registry: Registry, name: ModelName, version: str, plan: PromotionPlan,
                 trust: TrustStore) -> tuple[str | None, str | None]:
    """The trust-store key that signed ``model.sig`` (verified), or why none can be named."""
    from airlock.registry.base import signed_subject_name
    from airlock.verify import verify_bundle

    planned = plan.by_role("signature")[0]  # the plan validator guarantees exactly one
    key = Layout.key(name, version, planned.key)
    try:
        data = registry.store.read(key)
    except (AirlockError, OSError) as exc:
        return None, one_line(str(exc))
    if data is None:
        return None, f"{planned.key} is missing"
    if hashlib.sha256(data).hexdigest() != planned.sha256:
        return None, f"{planned.key} is not the signature the plan records"
    try:
        statement = verify_bundle(data, trust, source=planned.key)
    except AirlockError as exc:
        return None, one_line(str(exc))
    if statement.manifest.model_name != signed_subject_name(name, version):
        return None, f"{planned.key} signs {statement.manifest.model_name!r}, not {name}@{version}"
    if statement.manifest.root_digest != plan.root_digest:
        return None, f"{planned.key} signs root sha256:{statement.manifest.root_digest}, not the released files"
    return statement.key.key_id, None


def _promoted_event(state: ModelState | None, version: str) -> PromotedEvent | None:
    if state is None:
        return None
    return next((e for e in state.history if isinstance(e, PromotedEvent) and e.version == version), None)


def _trend(check: str, checks: list[CheckedEvent]) -> CheckTrend:
    mine = [e for e in checks if e.check == check]
    points = tuple(CheckPoint(e.at, e.verdict, e.target, e.summary, e.actor, e.run_id, e.report_key)
                   for e in mine[-TREND_POINTS:])
    return CheckTrend(check, points, len(mine))


_ROLE_KINDS = {"aibom": "aibom", "aibom-signature": "aibom-signature", "signature": "signature"}


def _plan_artifacts(name: ModelName, version: str, plan: PromotionPlan) -> tuple[Artifact, ...]:
    found = []
    for obj in plan.objects:
        if obj.role == "file":
            continue
        kind = _ROLE_KINDS.get(obj.role) or ("scan" if obj.key == "reports/scan.json" else "report")
        found.append(Artifact(Layout.key(name, version, obj.key), kind, obj.sha256, signed=True))  # type: ignore[arg-type]
    return tuple(found)


def _check_reports(checks: list[CheckedEvent]) -> tuple[Artifact, ...]:
    seen: dict[str, Artifact] = {}
    for event in checks:
        if event.report_key and _servable_key(event.report_key):
            seen[event.report_key] = Artifact(event.report_key, "check-report", event.report_sha256, signed=False)
    return tuple(seen.values())


def incident_prefix(name: ModelName, version: str) -> str:
    return f"{INCIDENTS_ROOT}{name.org}/{name.name}/{check_version(version)}/"


def _incident_reports(registry: Registry, name: ModelName, version: str,
                      released: tuple[ReleasedRecord, PromotionPlan] | None) -> tuple[Artifact, ...]:
    planned = {Layout.key(name, version, o.key) for o in released[1].objects} if released else set()
    keys: list[str] = []
    try:
        keys += registry.store.list_keys(incident_prefix(name, version))
        keys += [k for k in registry.store.list_keys(Layout.key(name, version, Layout.REPORTS))
                 if k not in planned and PurePosixPath(k).name.startswith("incident")]
    except (AirlockError, OSError):
        return ()  # listing failed: the incident links are missing, the rest of the page is not
    return tuple(Artifact(k, "incident", None, signed=False) for k in sorted(set(keys)) if _servable_key(k))


def _servable_key(key: str) -> bool:
    # A key from storage or a check record becomes a link and a read: POSIX, relative, no dot segments.
    parts = key.split("/")
    return (bool(key) and len(key) <= 1024 and not key.startswith("/") and key.isprintable()
            and all(p not in ("", ".", "..") for p in parts))


def _history(state: ModelState | None, version: str) -> tuple[HistoryEntry, ...]:
    if state is None:
        return ()
    entries = []
    for event in state.history:
        if isinstance(event, OwnershipEvent):
            changed = ", ".join(f"{k} {v}" for k, v in (("owner", event.owner), ("minimum tier", event.risk_tier),
                                                       ("source", event.source)) if v)
            entries.append(HistoryEntry(event.seq, event.at, "ownership", event.actor,
                                        f"{changed} ({event.reason})"))
            continue
        if getattr(event, "version", None) != version:
            continue
        if isinstance(event, PromotedEvent):
            detail = f"approved by {event.approver}; {event.source}" + (
                f"@{event.source_revision}" if event.source_revision else "")
        elif isinstance(event, StatusEvent):
            detail = event.reason
        elif isinstance(event, PulledEvent):
            detail = f"{event.host}:{event.dest}"
        elif isinstance(event, CheckedEvent):
            detail = f"{event.check} {event.verdict} on {event.target}: {event.summary}"
        else:
            detail = ""
        entries.append(HistoryEntry(event.seq, event.at, event.kind, event.actor, detail))
    return tuple(reversed(entries))  # newest first


# --------------------------------------------------------------------------- downloads


@dataclass(frozen=True)
class Download:
    artifact: Artifact
    data: bytes

    @property
    def media_type(self) -> str:
        suffix = PurePosixPath(self.artifact.key).suffix
        if suffix in (".json", ".sig"):
            return "application/json"
        return "text/plain; charset=utf-8"

    @property
    def filename(self) -> str:
        # Only characters every header and filesystem take; keys are already restricted, this is belt and braces.
        return "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in self.artifact.name) or "file"


def read_artifact(version: VersionView, key: str, registry: Registry) -> Download:
    """The bytes of ``key`` if the page links it for ``version`` (nothing else), checked against their record.

    Objects of the plan and check reports with a recorded digest are served only
    when the stored bytes have that digest (409 otherwise): the registry page
    never hands out a BOM or report the signed records do not name.
    """
    artifact = next((a for a in version.artifacts if a.key == key), None)
    if artifact is None:
        raise NotServed(f"{key!r} is not an object of {version.model}@{version.version}", 404)
    try:
        data = registry.store.read(key)
    except (AirlockError, OSError) as exc:
        raise NotServed(f"cannot read {key}: {one_line(str(exc))}", 502) from None
    if data is None:
        raise NotServed(f"{key} is missing from the registry", 404)
    if artifact.sha256 is not None and hashlib.sha256(data).hexdigest() != artifact.sha256:
        raise NotServed(f"{key} does not have the sha256 its record names (sha256:{artifact.sha256}): "
                        f"not served", 409)
    return Download(artifact, data)


# --------------------------------------------------------------------------- revoke


REASON_MAX = 500


def clean_reason(reason: str) -> str:
    """A revocation reason as the index will record it: one line, printable, bounded; raises ValueError."""
    text = " ".join(reason.split())
    if not text:
        raise ValueError("a reason is required")
    if len(text) > REASON_MAX:
        raise ValueError(f"the reason is longer than {REASON_MAX} characters")
    if not text.isprintable():
        raise ValueError("the reason holds unprintable characters")
    return text


def revoke(registry: Registry, model: str, version: str, *, reason: str, actor: str) -> StatusEvent:
    """Revoke ``model@version`` through the registry (signed index checkpoint, actor and reason recorded)."""
    return registry.revoke(model, version, reason=clean_reason(reason), actor=actor)
