"""The registry index: per model its owner and risk tier, per version its status, and every change ever made.

The index is nothing but an append-only event log per model, one object per
event at ``index/<org>/<name>/events/<seq>.json``; the current state is a fold
over it. Each event is written with put-if-absent at the next sequence number,
so two writers racing for the same number cannot both succeed: the loser
re-reads the log, re-checks its change against the new state, and takes the
next number. No event can be lost or rewritten, on either backend, and a
transition is always checked against the state it is appended to (optimistic
concurrency: serializable without a lock service).

Statuses: ``approved`` (on promotion) -> ``deprecated`` -> ``revoked``;
``approved`` -> ``revoked``. Revoked is final: a revoked model stays revoked.

``pulled`` events record deployments (``airlock pull``: who, which host and
path, which root digest) for incident response. They never change a status,
and a revoked version cannot be recorded as pulled.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from airlock.errors import first_validation_problem
from airlock.policy import RiskTier
from airlock.registry.base import RegistryIndexError, Layout, ModelName, ObjectStore, RegistryError

EVENT_SCHEMA = "airlock.registry.event/v1"
_APPEND_ATTEMPTS = 100


class Status(StrEnum):
    APPROVED = "approved"
    DEPRECATED = "deprecated"
    REVOKED = "revoked"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class _Event(_Frozen):
    schema_: Literal["airlock.registry.event/v1"] = Field(default=EVENT_SCHEMA, alias="schema")
    seq: int = Field(ge=0)
    model: str
    version: str
    at: AwareDatetime
    actor: str = Field(min_length=1, description="who made the change: a person, or the pipeline run")


class PromotedEvent(_Event):
    """A version was released (written right after its RELEASED marker)."""

    kind: Literal["promoted"] = "promoted"
    root_digest: str
    plan_sha256: str
    owner: str = Field(min_length=1)
    risk_tier: RiskTier
    approver: str = Field(min_length=1,
                          description="who approved it: a reviewer, or 'policy:<tier>' when none is required")


class StatusEvent(_Event):
    """A version was deprecated or revoked, with the reason."""

    kind: Literal["deprecated", "revoked"]
    reason: str = Field(min_length=1)


class PulledEvent(_Event):
    """A verified copy of a version was placed on a host (``airlock pull``); the status is unchanged."""

    kind: Literal["pulled"] = "pulled"
    root_digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    key_id: str = Field(min_length=1, description="the trust-store key that signed the pulled copy")
    host: str = Field(min_length=1)
    dest: str = Field(min_length=1, description="absolute path of the copy on ``host``")


AnyEvent = PromotedEvent | StatusEvent | PulledEvent
IndexEvent = Annotated[AnyEvent, Field(discriminator="kind")]
_EVENT = TypeAdapter(IndexEvent)


class VersionState(_Frozen):
    model: str
    version: str
    status: Status
    root_digest: str | None = None  # None only for a version revoked before its promotion event was indexed
    owner: str | None = None
    risk_tier: RiskTier | None = None
    approver: str | None = None
    promoted_at: AwareDatetime | None = None
    promoted_by: str | None = None
    updated_at: AwareDatetime
    updated_by: str
    reason: str | None = None


class ModelState(_Frozen):
    model: str
    owner: str | None
    risk_tier: RiskTier | None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    versions: tuple[VersionState, ...]
    history: tuple[IndexEvent, ...]

    def version(self, version: str) -> VersionState | None:
        return next((v for v in self.versions if v.version == version), None)

    def pulls(self, version: str | None = None) -> list[PulledEvent]:
        """Every recorded pull (of ``version``), oldest first: where each copy went, for incident response."""
        return [e for e in self.history if isinstance(e, PulledEvent) and version in (None, e.version)]

    def to_json_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


# --------------------------------------------------------------------------- transitions

_ALLOWED: dict[str, set[Status | None]] = {
    # None: the version has no promotion event yet (a crash between RELEASED and the index write).
    "deprecated": {Status.APPROVED, None},
    "revoked": {Status.APPROVED, Status.DEPRECATED, None},
}


def apply_event(versions: dict[str, VersionState], event: AnyEvent) -> None:
    """Apply one event to ``versions`` in place; a change the current status does not allow raises."""
    current = versions.get(event.version)
    if isinstance(event, PulledEvent):
        _check_pull(current, event)
        return  # a deployment record: the status (and everything else) stays as it is
    if isinstance(event, PromotedEvent):
        if current is not None:
            raise RegistryIndexError(f"{event.model}@{event.version} is already in the index ({current.status})")
        versions[event.version] = VersionState(
            model=event.model, version=event.version, status=Status.APPROVED, root_digest=event.root_digest,
            owner=event.owner, risk_tier=event.risk_tier, approver=event.approver, promoted_at=event.at,
            promoted_by=event.actor, updated_at=event.at, updated_by=event.actor,
        )
        return
    status = current.status if current is not None else None
    if status not in _ALLOWED[event.kind]:
        detail = f" ({current.reason})" if current is not None and current.reason else ""
        raise RegistryIndexError(f"{event.model}@{event.version} is {status}{detail}; it cannot become {event.kind}")
    base = current or VersionState(
        model=event.model, version=event.version, status=Status.APPROVED, updated_at=event.at, updated_by=event.actor
    )
    versions[event.version] = base.model_copy(update={
        "status": Status(event.kind), "updated_at": event.at, "updated_by": event.actor, "reason": event.reason,
    })


def _check_pull(current: VersionState | None, event: PulledEvent) -> None:
    where = f"{event.model}@{event.version}"
    if current is None:
        raise RegistryIndexError(f"{where} is not in the index; it cannot be recorded as pulled")
    if current.status is Status.REVOKED:
        raise RegistryIndexError(f"{where} is revoked ({current.reason}); it cannot be recorded as pulled")
    if current.root_digest is not None and current.root_digest != event.root_digest:
        raise RegistryIndexError(f"{where}: pulled root sha256:{event.root_digest} is not the promoted "
                                 f"sha256:{current.root_digest}")


def fold(model: ModelName, events: list[AnyEvent]) -> ModelState | None:
    """The state the events lead to; a history that breaks the rules is reported as damage, never skipped."""
    if not events:
        return None
    versions: dict[str, VersionState] = {}
    for event in events:
        try:
            apply_event(versions, event)
        except RegistryIndexError as exc:
            raise RegistryIndexError(f"index of {model} is damaged at event {event.seq}: {exc}") from None
    promoted = [e for e in events if isinstance(e, PromotedEvent)]
    latest = promoted[-1] if promoted else None
    # A pull reads the model; it does not change it, so it does not move updated_at.
    changes = [e for e in events if not isinstance(e, PulledEvent)] or events
    ordered = sorted(versions.values(), key=lambda v: (v.promoted_at or v.updated_at, v.version))
    return ModelState(
        model=str(model),
        owner=latest.owner if latest else None,
        risk_tier=latest.risk_tier if latest else None,
        created_at=events[0].at,
        updated_at=changes[-1].at,
        versions=tuple(ordered),
        history=tuple(events),
    )


# --------------------------------------------------------------------------- the log

EventFactory = Callable[[ModelState | None, int, datetime], AnyEvent | None]


class Index:
    """The event logs of every model in one store."""

    def __init__(self, store: ObjectStore, clock: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self._clock = clock or (lambda: datetime.now(UTC))

    def models(self) -> list[ModelName]:
        found = []
        for org in self.store.list_children("index/"):
            for name in self.store.list_children(f"index/{org}/"):
                found.append(ModelName.parse(f"{org}/{name}"))
        return sorted(found)

    def events(self, model: ModelName) -> list[AnyEvent]:
        """Every event of ``model`` in order; a gap, a misnumbered or a foreign event is damage (raises)."""
        prefix = Layout.index_prefix(model)
        events: list[AnyEvent] = []
        for position, key in enumerate(self.store.list_keys(prefix)):
            if key != Layout.event_key(model, position):
                raise RegistryIndexError(f"index of {model} is damaged: expected {Layout.event_key(model, position)}, "
                                  f"found {key}")
            events.append(self._load(model, key, position))
        return events

    def _load(self, model: ModelName, key: str, position: int) -> AnyEvent:
        data = self.store.read(key)
        if data is None:
            raise RegistryIndexError(f"{self.store.object_url(key)}: listed but unreadable")
        try:
            event = _EVENT.validate_json(data)
        except ValidationError as exc:
            raise RegistryIndexError(f"{self.store.object_url(key)}: {first_validation_problem(exc)}") from None
        if event.seq != position or event.model != str(model):
            raise RegistryIndexError(f"{self.store.object_url(key)}: records {event.model} seq {event.seq}, "
                              f"expected {model} seq {position}")
        return event

    def state(self, model: ModelName) -> ModelState | None:
        return fold(model, self.events(model))

    def append(self, model: ModelName, make: EventFactory) -> AnyEvent | None:
        """Append the event ``make(state, seq, now)`` returns (None: nothing to do), re-checked on every race."""
        for _ in range(_APPEND_ATTEMPTS):
            events = self.events(model)
            state = fold(model, events)
            event = make(state, len(events), self._clock())
            if event is None:
                return None
            apply_event({v.version: v for v in state.versions} if state else {}, event)  # raises if not allowed
            data = (json.dumps(event.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True) + "\n").encode()
            key = Layout.event_key(model, len(events))
            # Confirmed by reading back (as the promotion claim is): on a server whose conditional write is not
            # atomic, a racing writer could have replaced the event; the stored one is the one that counts.
            if self.store.put_if_absent(key, data, len(data), hashlib.sha256(data).hexdigest()) \
                    and self.store.read(key) == data:
                return event
            time.sleep(random.uniform(0.001, 0.02))  # another writer took this number: re-read and retry
        raise RegistryError(f"index of {model}: could not append after {_APPEND_ATTEMPTS} attempts (heavy contention)")
