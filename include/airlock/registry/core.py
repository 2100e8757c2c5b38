"""The registry as callers see it: promote, read released versions, list, revoke, deprecate, change owners.

Readers trust a version only through its ``RELEASED`` marker and the plan that
marker names by digest; a version directory without ``RELEASED`` does not exist
as far as any method here is concerned.

Every change of a status or of a model record is signed into the index
(:mod:`airlock.registry.index`): a :class:`Registry` that writes needs a
``signer`` (Vault Transit in production, the same signer as model signing) and
a ``trust`` store to check the history it extends. Verifying readers
(:meth:`Registry.verify_version`, :meth:`Registry.verify_index`, ``airlock
pull``) need the trust store only; it comes from the host's configuration
(:func:`airlock.trust.host_trust_store`), never from the registry itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airlock.registry.base import (
    Layout,
    ModelName,
    ObjectStore,
    RegistryError,
    StoredObjectError,
    VersionNotFoundError,
    check_version,
)
from airlock.registry.filesystem import FilesystemStore
from airlock.registry.index import (
    AnyEvent,
    CheckedEvent,
    Index,
    ModelState,
    OwnershipEvent,
    PromotionClaim,
    StatusEvent,
    VerifiedChain,
    VersionState,
    promotion_claim,
)
from airlock.registry.promotion import (
    DEFAULT_WORKERS,
    PromotionPlan,
    PromotionRequest,
    PromotionResult,
    ReleasedRecord,
    load_plan,
    load_released,
    promote,
)
from airlock.registry.s3 import Retention, S3Store, parse_s3_url

if TYPE_CHECKING:
    from airlock.policy import RiskTier
    from airlock.registry.hoststate import HostState
    from airlock.signing import Signer
    from airlock.trust import TrustStore


@dataclass(frozen=True)
class ReleasedVersion:
    """A version that reached RELEASED, its plan, and its index state (None: not indexed yet)."""

    model: str
    version: str
    released: ReleasedRecord
    plan: PromotionPlan
    state: VersionState | None
    url: str

    @property
    def status(self) -> str:
        # A released version missing from the index is mid-promotion (crash before the index write);
        # it is reported as such, never as approved.
        return self.state.status.value if self.state else "unindexed"

    @property
    def root_digest(self) -> str:
        return self.plan.root_digest

    def object_sha256(self, key: str) -> str | None:
        return next((o.sha256 for o in self.plan.objects if o.key == key), None)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "status": self.status,
            "url": self.url,
            "root_digest": self.root_digest,
            "released": self.released.model_dump(mode="json", by_alias=True),
            "state": self.state.model_dump(mode="json") if self.state else None,
            "objects": [o.model_dump(mode="json") for o in self.plan.objects],
        }


class Registry:
    """One registry (a store plus its index).

    ``signer`` signs index checkpoints (needed by :meth:`promote`, :meth:`revoke`,
    :meth:`deprecate`, :meth:`change_ownership`); ``trust`` verifies them (default:
    the host's trust store, :func:`airlock.trust.host_trust_store`, looked up when
    first needed); ``host_state`` remembers the newest checkpoint verified per
    model, so that a registry rolled back to an older history is refused.
    """

    def __init__(self, store: ObjectStore, *, workers: int = DEFAULT_WORKERS,
                 clock: Callable[[], datetime] | None = None, signer: Signer | None = None,
                 trust: TrustStore | None = None, host_state: HostState | None = None) -> None:
        self.store = store
        self.index = Index(store, clock=clock)
        self.workers = workers
        self.signer = signer
        self.host_state = host_state
        self._trust = trust
        self._clock = clock

    @property
    def url(self) -> str:
        return self.store.url

    def trust(self) -> TrustStore:
        """The trust store index checkpoints are verified with: the one given, else the host's."""
        if self._trust is None:
            from airlock.trust import host_trust_store

            self._trust = host_trust_store()
        return self._trust

    def _writer_trust(self, model: ModelName) -> TrustStore | None:
        # A model with no checkpoint yet has nothing to verify: its first promotion needs no trust store.
        if self._trust is not None or not self.store.list_keys(Layout.heads_prefix(model)):
            return self._trust
        return self.trust()

    # ------------------------------------------------------------------ writing

    def promote(self, request: PromotionRequest) -> PromotionResult:
        model = _model(request.model)
        return promote(self.store, self.index, request, workers=self.workers, clock=self._clock,
                       signer=self._require_signer(model, "promote"), trust=self._writer_trust(model),
                       host_state=self.host_state)

    def revoke(self, model: str | ModelName, version: str, *, reason: str, actor: str) -> StatusEvent:
        return self._change_status(model, version, "revoked", reason, actor)

    def deprecate(self, model: str | ModelName, version: str, *, reason: str, actor: str) -> StatusEvent:
        return self._change_status(model, version, "deprecated", reason, actor)

    def _require_signer(self, model: ModelName, what: str) -> Signer:
        if self.signer is None:
            raise RegistryError(f"{model}: to {what}, the registry needs a signer for the index checkpoint "
                                f"(the Vault Transit key: AIRLOCK_VAULT_ADDR/AIRLOCK_VAULT_TOKEN, or the "
                                f"airlock_vault connection in Airflow)")
        return self.signer

    def _change_status(self, model: str | ModelName, version: str, kind: str, reason: str,
                       actor: str) -> StatusEvent:
        name = _model(model)
        signer = self._require_signer(name, f"mark {name}@{version} {kind}")
        self.released(name, version)  # only released versions have a status to change
        reason, actor = reason.strip(), actor.strip()
        if not reason:
            raise RegistryError(f"{name}@{version}: a reason is required to mark it {kind}")
        if not actor:
            raise RegistryError(f"{name}@{version}: the actor (who marks it {kind}) is required")

        def mine(event: AnyEvent) -> bool:
            return (isinstance(event, StatusEvent) and (event.version, event.kind, event.reason, event.actor)
                    == (version, kind, reason, actor))

        def make(state: ModelState | None, seq: int, at: datetime) -> StatusEvent | None:
            current = state.version(version) if state else None
            if current is not None and current.status == kind and current.reason == reason:
                recorded = [e for e in state.history if mine(e)] if state else []
                if recorded:
                    return None  # the same change again (a re-run): recorded already, signed if it was not
            return StatusEvent(seq=seq, model=str(name), version=version, at=at, actor=actor, kind=kind,
                               reason=reason)

        event = self.index.append(name, make, signer=signer, trust=self._writer_trust(name), own=mine,
                                  host_state=self.host_state)
        if event is None:
            state = self.index.state(name)
            event = next(e for e in reversed(state.history) if mine(e)) if state else None
        assert isinstance(event, StatusEvent)
        return event

    def change_ownership(self, model: str | ModelName, *, reason: str, actor: str, owner: str | None = None,
                         risk_tier: RiskTier | str | None = None, source: str | None = None) -> OwnershipEvent:
        """The admin action that changes a model's record (owner, minimum tier, source repository)."""
        from airlock.policy import policy_for
        from airlock.registry.base import source_repository

        name = _model(model)
        signer = self._require_signer(name, "change its owner or minimum tier")
        reason, actor = reason.strip(), actor.strip()
        if not reason or not actor:
            raise RegistryError(f"{name}: an ownership change needs a reason and an actor")
        tier = policy_for(risk_tier).tier if risk_tier is not None else None
        if owner is not None and not owner.strip():
            raise RegistryError(f"{name}: the new owner is empty")
        repository = source_repository(source) if source is not None else None

        def make(state: ModelState | None, seq: int, at: datetime) -> OwnershipEvent:
            if state is None or state.owner is None:
                raise RegistryError(f"{name} has no released version in {self.url}; its record is set by its "
                                    f"first release")
            return OwnershipEvent(seq=seq, model=str(name), at=at, actor=actor, reason=reason,
                                  owner=owner.strip() if owner else None, risk_tier=tier, source=repository)

        event = self.index.append(name, make, signer=signer, trust=self._writer_trust(name),
                                  host_state=self.host_state)
        assert isinstance(event, OwnershipEvent)
        return event

    def record_check(self, model: str | ModelName, version: str, *, check: str, verdict: str, target: str,
                     summary: str, actor: str, report_key: str | None = None, report_sha256: str | None = None,
                     run_id: str | None = None) -> CheckedEvent:
        """Append a check's outcome to the version's history (no status change, so no signer is needed)."""
        name = _model(model)

        def make(_state: ModelState | None, seq: int, at: datetime) -> CheckedEvent:
            return CheckedEvent(seq=seq, model=str(name), version=version, at=at, actor=actor, check=check,
                                verdict=verdict, target=target, summary=summary[:2000], report_key=report_key,
                                report_sha256=report_sha256, run_id=run_id)

        event = self.index.append(name, make)
        assert isinstance(event, CheckedEvent)
        return event

    # ------------------------------------------------------------------ reading

    def version_url(self, model: str | ModelName, version: str) -> str:
        """The URL of a version's directory/prefix (AI-BOM external references are under it)."""
        return self.store.object_url(Layout.version_prefix(_model(model), version).rstrip("/"))

    def released(self, model: str | ModelName, version: str, *, verified: bool = False) -> ReleasedVersion:
        """The released version, or :class:`VersionNotFoundError` (absent or never finished).

        ``verified``: its index state comes from a chain verified with the trust
        store (:meth:`verify_index`); otherwise the chain is only checked for
        structure (enough for listings, not for trusting a status).
        """
        name = _model(model)
        check_version(version)
        record = load_released(self.store, name, version)
        if record is None:
            raise VersionNotFoundError(f"{name}@{version} is not a released version of {self.url}")
        loaded = load_plan(self.store, name, version)
        if loaded is None:
            raise StoredObjectError(f"{name}@{version}: RELEASED exists but promotion.json does not")
        plan, plan_bytes = loaded
        if hashlib.sha256(plan_bytes).hexdigest() != record.plan_sha256:
            raise StoredObjectError(f"{name}@{version}: promotion.json is not the plan RELEASED names")
        state = self.verify_index(name).state if verified else self.index.state(name)
        version_state = state.version(version) if state else None
        if version_state is not None and version_state.plan_sha256 not in (None, record.plan_sha256):
            # The index's promoted event (signed into the chain) pins the plan: every object's size and sha256.
            raise StoredObjectError(f"{name}@{version}: RELEASED names plan sha256:{record.plan_sha256}, the "
                                    f"index recorded sha256:{version_state.plan_sha256} at promotion")
        return ReleasedVersion(str(name), version, record, plan, version_state, self.version_url(name, version))

    def released_versions(self, model: str | ModelName) -> list[str]:
        """Versions of ``model`` that reached RELEASED (a storage scan, independent of the index)."""
        name = _model(model)
        prefix = Layout.model_prefix(name)
        return [v for v in self.store.list_children(prefix)
                if self.store.read(f"{prefix}{v}/{Layout.RELEASED}") is not None]

    def find_by_digest(self, model: str | ModelName, root_digest: str) -> list[ReleasedVersion]:
        """Released versions of ``model`` whose files have ``root_digest`` (oldest first)."""
        found = [self.released(model, v) for v in self.released_versions(model)]
        matches = [r for r in found if r.root_digest == root_digest]
        return sorted(matches, key=lambda r: r.released.released_at)

    def models(self) -> list[ModelName]:
        return self.index.models()

    def model_state(self, model: str | ModelName, *, verified: bool = False) -> ModelState | None:
        name = _model(model)
        return self.verify_index(name).state if verified else self.index.state(name)

    def verify_index(self, model: str | ModelName) -> VerifiedChain:
        """The whole event chain of ``model`` checked: structure, the newest checkpoint's signature with the
        trust store, every status change covered by it, and (with a host state) no rollback.

        Raises :class:`~airlock.registry.checkpoint.IndexIntegrityError` on any of
        it; what the integrity watch calls for each model.
        """
        return self.index.verified(_model(model), self.trust(), self.host_state)

    def promotion_claim(self, model: str | ModelName, source: str, owner: str,
                        risk_tier: RiskTier | str) -> PromotionClaim:
        """For the ingest gate: is promoting ``source`` as ``model`` a new model, the same source repository, or
        another one (the owner's reviewers must approve), and will the index refuse it (owner, minimum tier)?

        ``source`` may carry a revision (``hf://org/name@sha``): it is compared as a
        repository. The model record is read from the verified chain.
        """
        from airlock.registry.base import source_repository

        name = _model(model)
        return promotion_claim(self.model_state(name, verified=True), str(name), source_repository(source), owner,
                               risk_tier)

    def list(self, model: str | ModelName | None = None) -> list[VersionState]:
        """Every indexed version (of ``model``, or of every model), by model then promotion time."""
        names = [_model(model)] if model is not None else self.models()
        rows: list[VersionState] = []
        for name in names:
            state = self.index.state(name)
            if state is not None:
                rows.extend(state.versions)
        return rows

    def verify_version(self, model: str | ModelName, version: str) -> ReleasedVersion:
        """Verify the index chain (:meth:`verify_index`), the plan against the signed promoted event, and every
        stored object of a released version against its plan; raises on the first problem."""
        released = self.released(model, version, verified=True)
        if released.state is None:
            raise StoredObjectError(f"{model}@{version} is released but not in the index (promotion unfinished)")
        name = _model(model)
        for obj in released.plan.objects:
            key = Layout.key(name, version, obj.key)
            stored = self.store.stored_sha256(key)
            if stored != obj.sha256:
                raise StoredObjectError(f"{self.store.object_url(key)}: stored sha256:{stored}, "
                                        f"released as sha256:{obj.sha256}")
        return released


def _model(model: str | ModelName) -> ModelName:
    return model if isinstance(model, ModelName) else ModelName.parse(model)


# --------------------------------------------------------------------------- opening


def open_registry(
    spec: str | Path | None = None,
    *,
    s3_client: Any = None,
    retention: Retention | None = None,
    reread: bool = True,
    workers: int = DEFAULT_WORKERS,
    signer: Signer | None = None,
    trust: TrustStore | None = None,
    host_state: HostState | None = None,
) -> Registry:
    """The registry at ``spec`` (default AIRLOCK_REGISTRY): a directory, ``file://`` URL or ``s3://bucket/prefix``.

    For S3 without an explicit client, the endpoint is AIRLOCK_S3_ENDPOINT and
    credentials come from boto3's chain (inside Airflow, pass the client of the
    ``airlock_s3`` connection: :func:`airlock.connections.s3_access`).
    ``signer``/``trust``/``host_state``: see :class:`Registry`.
    """
    extra: dict[str, Any] = {"workers": workers, "signer": signer, "trust": trust, "host_state": host_state}
    if spec is None:
        from airlock.config import load_settings

        spec = load_settings().registry
    text = str(spec)
    if text.startswith("s3://"):
        bucket, prefix = parse_s3_url(text)
        if s3_client is None:
            from airlock.connections import s3_access_from_env

            s3_client = s3_access_from_env().client()
        return Registry(S3Store(s3_client, bucket, prefix, retention=retention, reread=reread), **extra)
    if "://" in text and not text.startswith("file://"):
        from airlock.redact import redact_url

        raise RegistryError(f"AIRLOCK_REGISTRY={redact_url(text)!r}: use a directory, file:///path or "
                            f"s3://bucket/prefix")
    path = Path(text.removeprefix("file://"))
    return Registry(FilesystemStore(path), **extra)
