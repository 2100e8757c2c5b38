"""The registry as callers see it: promote, read released versions, list, revoke, deprecate.

Readers trust a version only through its ``RELEASED`` marker and the plan that
marker names by digest; a version directory without ``RELEASED`` does not exist
as far as any method here is concerned.
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
from airlock.registry.index import Index, ModelState, StatusEvent, VersionState
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
    """One registry (a store plus its index)."""

    def __init__(self, store: ObjectStore, *, workers: int = DEFAULT_WORKERS,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self.index = Index(store, clock=clock)
        self.workers = workers
        self._clock = clock

    @property
    def url(self) -> str:
        return self.store.url

    # ------------------------------------------------------------------ writing

    def promote(self, request: PromotionRequest) -> PromotionResult:
        return promote(self.store, self.index, request, workers=self.workers, clock=self._clock)

    def revoke(self, model: str | ModelName, version: str, *, reason: str, actor: str) -> StatusEvent:
        return self._change_status(model, version, "revoked", reason, actor)

    def deprecate(self, model: str | ModelName, version: str, *, reason: str, actor: str) -> StatusEvent:
        return self._change_status(model, version, "deprecated", reason, actor)

    def _change_status(self, model: str | ModelName, version: str, kind: str, reason: str,
                       actor: str) -> StatusEvent:
        name = _model(model)
        self.released(name, version)  # only released versions have a status to change
        if not reason.strip():
            raise RegistryError(f"{name}@{version}: a reason is required to mark it {kind}")
        if not actor.strip():
            raise RegistryError(f"{name}@{version}: the actor (who marks it {kind}) is required")

        def make(_state: ModelState | None, seq: int, at: datetime) -> StatusEvent:
            return StatusEvent(seq=seq, model=str(name), version=version, at=at, actor=actor, kind=kind,
                               reason=reason.strip())

        event = self.index.append(name, make)
        assert isinstance(event, StatusEvent)
        return event

    # ------------------------------------------------------------------ reading

    def version_url(self, model: str | ModelName, version: str) -> str:
        """The URL of a version's directory/prefix (AI-BOM external references are under it)."""
        return self.store.object_url(Layout.version_prefix(_model(model), version).rstrip("/"))

    def released(self, model: str | ModelName, version: str) -> ReleasedVersion:
        """The released version, or :class:`VersionNotFoundError` (absent or never finished)."""
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
        state = self.index.state(name)
        return ReleasedVersion(str(name), version, record, plan, state.version(version) if state else None,
                               self.version_url(name, version))

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

    def model_state(self, model: str | ModelName) -> ModelState | None:
        return self.index.state(_model(model))

    def list(self, model: str | ModelName | None = None) -> list[VersionState]:
        """Every indexed version (of ``model``, or of every model), by model then promotion time."""
        names = [_model(model)] if model is not None else self.models()
        rows: list[VersionState] = []
        for name in names:
            state = self.index.state(name)
            if state is not None:
                rows.extend(state.versions)
        return rows

    def trust_store(self) -> TrustStore | None:
        """The trust store published at ``trust/trust.pem`` (see :mod:`airlock.registry.base`); None if there is none.

        A file that is there but unreadable or malformed raises
        :class:`~airlock.trust.TrustStoreError`: it is never treated as absent.
        """
        from airlock.trust import TrustStore, TrustStoreError

        data = self.store.read(Layout.TRUST_STORE)
        if data is None:
            return None
        source = self.store.object_url(Layout.TRUST_STORE)
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError as exc:
            raise TrustStoreError(f"cannot read trust store {source}: {exc}") from None
        return TrustStore.parse(text, source=source)

    def verify_version(self, model: str | ModelName, version: str) -> ReleasedVersion:
        """Re-confirm every stored object of a released version against its plan; raises on the first mismatch."""
        released = self.released(model, version)
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
) -> Registry:
    """The registry at ``spec`` (default AIRLOCK_REGISTRY): a directory, ``file://`` URL or ``s3://bucket/prefix``.

    For S3 without an explicit client, the endpoint is AIRLOCK_S3_ENDPOINT and
    credentials come from boto3's chain (inside Airflow, pass the client of the
    ``airlock_s3`` connection: :func:`airlock.connections.s3_access`).
    """
    if spec is None:
        from airlock.config import load_settings

        spec = load_settings().registry
    text = str(spec)
    if text.startswith("s3://"):
        bucket, prefix = parse_s3_url(text)
        if s3_client is None:
            from airlock.connections import s3_access_from_env

            s3_client = s3_access_from_env().client()
        return Registry(S3Store(s3_client, bucket, prefix, retention=retention, reread=reread), workers=workers)
    if "://" in text and not text.startswith("file://"):
        raise RegistryError(f"AIRLOCK_REGISTRY={text!r}: use a directory, file:///path or s3://bucket/prefix")
    path = Path(text.removeprefix("file://"))
    return Registry(FilesystemStore(path), workers=workers)
