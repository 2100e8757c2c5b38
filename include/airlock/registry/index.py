"""The registry index: each model's record (owner, minimum tier, source), each version's status, every change.

The index is an append-only event log per model, one object per event at
``index/<org>/<name>/events/<seq>.json``; the current state is a fold over it.
Each event is written with put-if-absent at the next sequence number, so two
writers racing for the same number cannot both succeed: the loser re-reads the
log, re-checks its change against the new state, and takes the next number
(optimistic concurrency: serializable without a lock service).

**Tamper evidence.** Every event carries ``prev``, the sha256 of the previous
event's exact stored bytes (None for event 0): a hash chain per model. Every
change of a model's record or a version's status (promotion, deprecation,
revocation, ownership) is followed by a checkpoint of the chain head signed
with the signing key (:mod:`airlock.registry.checkpoint`) at
``index/<org>/<name>/heads/<seq>.json``. Readers check, without any key, that
the events are numbered without gaps, that each ``prev`` is the digest of the
event before, and that every checkpoint names an event that exists with the
digest it has (:meth:`Index.read_chain`); verifying readers (``airlock pull``,
:meth:`Registry.verify_version <airlock.registry.Registry.verify_version>`,
:func:`verify_chain`) also check the newest checkpoint's signature with the
host's trust store and that every status-changing event is covered by it.
``pulled`` events, which serving hosts without Vault access append, may follow
the newest checkpoint unsigned, but they must chain. So a deleted, reordered or
edited event, or a status change nobody signed, is refused; a deleted *newest*
event and checkpoint together (rollback) is caught by each host's memory of
what it verified (:mod:`airlock.registry.hoststate`).

**The model record** is fixed at the model's first release: its owner, its
minimum risk tier and its source repository (the source URI without revision)
come from the first ``promoted`` event and change only through an
``ownership`` event (an admin action with actor and reason, checkpointed like
any status change). A later promotion must name the same owner and at least
the minimum tier; one from another source repository is recorded as such
(the ingest gate requires the owner's reviewers to approve it:
:func:`promotion_claim`).

Statuses: ``approved`` (on promotion) -> ``deprecated`` -> ``revoked``;
``approved`` -> ``revoked``. Revoked is final. ``pulled`` events record
deployments (who, which host and path, which root digest) for incident
response; they never change a status, and a revoked version cannot be pulled.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from airlock import strictjson
from airlock.errors import first_validation_problem
from airlock.policy import RiskTier
from airlock.registry.base import Layout, ModelName, ObjectStore, RegistryError, RegistryIndexError
from airlock.registry.checkpoint import (
    IndexIntegrityError,
    StoredCheckpoint,
    read_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
)

if TYPE_CHECKING:
    from airlock.registry.hoststate import HostState
    from airlock.signing import Signer
    from airlock.trust import TrustStore

EVENT_SCHEMA = "airlock.registry.event/v2"
_APPEND_ATTEMPTS = 100
# How long a status change waits for another writer to sign the event it has just appended (its
# checkpoint follows its event within one signature), before calling that event an unsigned head.
_FOREIGN_HEAD_WAIT_S = 15.0
_SHA256 = r"^[0-9a-f]{64}$"


def foreign_head_wait_s() -> float:
    return _FOREIGN_HEAD_WAIT_S  # a function, so tests can shorten the wait
_TIER_ORDER = (RiskTier.LOW, RiskTier.MEDIUM, RiskTier.HIGH, RiskTier.CRITICAL)
_CHECKPOINT_NAME = re.compile(r"[0-9]{10}\.json\Z")


class Status(StrEnum):
    APPROVED = "approved"
    DEPRECATED = "deprecated"
    REVOKED = "revoked"


def tier_rank(tier: RiskTier | str) -> int:
    return _TIER_ORDER.index(RiskTier(tier))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class _Event(_Frozen):
    schema_: Literal["airlock.registry.event/v2"] = Field(default=EVENT_SCHEMA, alias="schema")
    seq: int = Field(ge=0)
    prev: str | None = Field(default=None, pattern=_SHA256,
                             description="sha256 of the previous event's stored bytes; null for event 0")
    model: str
    at: AwareDatetime
    actor: str = Field(min_length=1, description="who made the change: a person, or the pipeline run")

    @property
    def changes_state(self) -> bool:
        """Whether this event must be covered by a signed checkpoint (everything but a pull record)."""
        return True


class _VersionEvent(_Event):
    version: str


class PromotedEvent(_VersionEvent):
    """A version was released (written right after its RELEASED marker)."""

    kind: Literal["promoted"] = "promoted"
    root_digest: str = Field(pattern=_SHA256)
    plan_sha256: str = Field(pattern=_SHA256)
    owner: str = Field(min_length=1)
    risk_tier: RiskTier
    approver: str = Field(min_length=1,
                          description="who approved it: a reviewer, or 'policy:<tier>' when none is required")
    source: str = Field(min_length=1, description="the source repository (source URI without revision)")
    source_revision: str | None = Field(default=None, description="the immutable revision that was ingested")


class StatusEvent(_VersionEvent):
    """A version was deprecated or revoked, with the reason."""

    kind: Literal["deprecated", "revoked"]
    reason: str = Field(min_length=1)


class PulledEvent(_VersionEvent):
    """A verified copy of a version was placed on a host (``airlock pull``); the status is unchanged."""

    kind: Literal["pulled"] = "pulled"
    root_digest: str = Field(pattern=_SHA256)
    key_id: str = Field(min_length=1, description="the trust-store key that signed the pulled copy")
    host: str = Field(min_length=1)
    dest: str = Field(min_length=1, description="absolute path of the copy on ``host``")

    @property
    def changes_state(self) -> bool:
        return False  # appended by serving hosts that hold no signing key


class OwnershipEvent(_Event):
    """An admin changed the model record: owner, minimum risk tier and/or source repository."""

    kind: Literal["ownership"] = "ownership"
    owner: str | None = Field(default=None, min_length=1)
    risk_tier: RiskTier | None = None
    source: str | None = Field(default=None, min_length=1)
    reason: str = Field(min_length=1)

    @model_validator(mode="after")
    def _changes_something(self) -> OwnershipEvent:
        if self.owner is None and self.risk_tier is None and self.source is None:
            raise ValueError("an ownership event changes at least one of owner, risk_tier, source")
        return self


class CheckedEvent(_VersionEvent):
    """A scheduled check of a version ran (integrity watch, behavioural fingerprint); the status is unchanged.

    Checks are history for incident response (the last check that passed, the first that failed) and for the
    Registry page's trends; a failing check acts through the incident it triggers (a signed revocation), never
    through this record, so check records need no signed checkpoint of their own (they still chain).
    """

    kind: Literal["checked"] = "checked"
    check: Literal["integrity", "fingerprint"]
    verdict: Literal["pass", "fail", "error"]
    target: str = Field(min_length=1, max_length=512,
                        description="what was checked: 'registry', a deployed copy 'host:path', a runtime class")
    summary: str = Field(min_length=1, max_length=2000, description="one line: what deviated, or what passed")
    report_key: str | None = Field(default=None, max_length=1024,
                                   description="registry key of the check's report, when one was stored")
    report_sha256: str | None = Field(default=None, pattern=_SHA256)
    run_id: str | None = Field(default=None, max_length=250)

    @property
    def changes_state(self) -> bool:
        return False


AnyEvent = PromotedEvent | StatusEvent | PulledEvent | OwnershipEvent | CheckedEvent
IndexEvent = Annotated[AnyEvent, Field(discriminator="kind")]
_EVENT = TypeAdapter(IndexEvent)


class VersionState(_Frozen):
    model: str
    version: str
    status: Status
    root_digest: str | None = None  # None only for a version revoked before its promotion event was indexed
    plan_sha256: str | None = None  # the promotion plan the (signed) promoted event names
    owner: str | None = None
    risk_tier: RiskTier | None = None
    approver: str | None = None
    source: str | None = None
    promoted_at: AwareDatetime | None = None
    promoted_by: str | None = None
    updated_at: AwareDatetime
    updated_by: str
    reason: str | None = None


class ModelState(_Frozen):
    """A model's record (owner, minimum tier, source: fixed at first release) and its versions."""

    model: str
    owner: str | None
    risk_tier: RiskTier | None = Field(description="the model's minimum risk tier")
    source: str | None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    versions: tuple[VersionState, ...]
    history: tuple[IndexEvent, ...]

    def version(self, version: str) -> VersionState | None:
        return next((v for v in self.versions if v.version == version), None)

    def pulls(self, version: str | None = None) -> list[PulledEvent]:
        """Every recorded pull (of ``version``), oldest first: where each copy went, for incident response."""
        return [e for e in self.history if isinstance(e, PulledEvent) and version in (None, e.version)]

    def checks(self, version: str | None = None, check: str | None = None) -> list[CheckedEvent]:
        """Every recorded check (of ``version``, of kind ``check``), oldest first."""
        return [e for e in self.history if isinstance(e, CheckedEvent) and version in (None, e.version)
                and check in (None, e.check)]

    def to_json_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


# --------------------------------------------------------------------------- transitions

_ALLOWED: dict[str, set[Status | None]] = {
    # None: the version has no promotion event yet (a crash between RELEASED and the index write).
    "deprecated": {Status.APPROVED, None},
    "revoked": {Status.APPROVED, Status.DEPRECATED, None},
}


@dataclass
class _Folding:
    """The state while events are applied in order."""

    model: str
    versions: dict[str, VersionState] = field(default_factory=dict)
    owner: str | None = None
    risk_tier: RiskTier | None = None
    source: str | None = None

    def apply(self, event: AnyEvent) -> None:
        """Apply one event; a change the current state does not allow raises :class:`RegistryIndexError`."""
        if isinstance(event, OwnershipEvent):
            self._ownership(event)
            return
        current = self.versions.get(event.version)
        if isinstance(event, PulledEvent):
            _check_pull(current, event)
            return  # a deployment record: the status (and everything else) stays as it is
        if isinstance(event, CheckedEvent):
            if current is None:
                raise RegistryIndexError(f"{event.model}@{event.version} is not in the index; it cannot be checked")
            return  # a check record: the status changes only through the incident a failure triggers
        if isinstance(event, PromotedEvent):
            self._promoted(current, event)
            return
        status = current.status if current is not None else None
        if status not in _ALLOWED[event.kind]:
            detail = f" ({current.reason})" if current is not None and current.reason else ""
            raise RegistryIndexError(f"{event.model}@{event.version} is {status}{detail}; "
                                     f"it cannot become {event.kind}")
        base = current or VersionState(model=event.model, version=event.version, status=Status.APPROVED,
                                       updated_at=event.at, updated_by=event.actor)
        self.versions[event.version] = base.model_copy(update={
            "status": Status(event.kind), "updated_at": event.at, "updated_by": event.actor, "reason": event.reason,
        })

    def _promoted(self, current: VersionState | None, event: PromotedEvent) -> None:
        where = f"{event.model}@{event.version}"
        if current is not None:
            raise RegistryIndexError(f"{where} is already in the index ({current.status})")
        if self.owner is None:  # the first release defines the model
            self.owner, self.risk_tier, self.source = event.owner, event.risk_tier, event.source
        else:
            if event.owner != self.owner:
                raise RegistryIndexError(
                    f"{where}: owner {event.owner!r} is not the model's owner {self.owner!r} (fixed at its first "
                    f"release; only an ownership change by an admin moves it)")
            assert self.risk_tier is not None
            if tier_rank(event.risk_tier) < tier_rank(self.risk_tier):
                raise RegistryIndexError(
                    f"{where}: risk tier {event.risk_tier} is below the model's minimum tier {self.risk_tier} "
                    f"(fixed at its first release; only an ownership change by an admin lowers it)")
        self.versions[event.version] = VersionState(
            model=event.model, version=event.version, status=Status.APPROVED, root_digest=event.root_digest,
            plan_sha256=event.plan_sha256, owner=event.owner, risk_tier=event.risk_tier, approver=event.approver,
            source=event.source, promoted_at=event.at, promoted_by=event.actor, updated_at=event.at,
            updated_by=event.actor,
        )

    def _ownership(self, event: OwnershipEvent) -> None:
        if self.owner is None:
            raise RegistryIndexError(f"{event.model} has no released version; its record is set by its first release")
        self.owner = event.owner or self.owner
        self.risk_tier = event.risk_tier or self.risk_tier
        self.source = event.source or self.source


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
    folding = _Folding(str(model))
    for event in events:
        try:
            folding.apply(event)
        except RegistryIndexError as exc:
            raise RegistryIndexError(f"index of {model} is damaged at event {event.seq}: {exc}") from None
    # A pull reads the model; it does not change it, so it does not move updated_at.
    changes = [e for e in events if e.changes_state] or events
    ordered = sorted(folding.versions.values(), key=lambda v: (v.promoted_at or v.updated_at, v.version))
    return ModelState(
        model=str(model), owner=folding.owner, risk_tier=folding.risk_tier, source=folding.source,
        created_at=events[0].at, updated_at=changes[-1].at, versions=tuple(ordered), history=tuple(events),
    )


def check_append(model: ModelName, events: list[AnyEvent], event: AnyEvent) -> None:
    """Raise unless ``event`` may follow ``events`` (the rules :func:`fold` applies)."""
    folding = _Folding(str(model))
    for earlier in events:
        folding.apply(earlier)
    folding.apply(event)


def serialize_event(event: AnyEvent) -> bytes:
    """The exact bytes stored for ``event`` (the next event's ``prev`` is their sha256)."""
    return (json.dumps(event.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True) + "\n").encode()


# --------------------------------------------------------------------------- the chain


@dataclass(frozen=True)
class Chain:
    """One model's events and checkpoints as stored, structurally consistent (see :meth:`Index.read_chain`)."""

    model: ModelName
    events: tuple[AnyEvent, ...]
    digests: tuple[str, ...]  # sha256 of each event's stored bytes
    checkpoints: tuple[StoredCheckpoint, ...]  # by seq, unverified

    @property
    def head(self) -> str | None:
        return self.digests[-1] if self.digests else None

    @property
    def newest_checkpoint(self) -> StoredCheckpoint | None:
        return self.checkpoints[-1] if self.checkpoints else None

    def unsigned_changes(self, covered_through: int | None = None) -> list[AnyEvent]:
        """State-changing events after the newest checkpoint (or after ``covered_through``)."""
        if covered_through is None and self.checkpoints:
            covered_through = self.checkpoints[-1].seq
        start = -1 if covered_through is None else covered_through
        return [e for e in self.events if e.seq > start and e.changes_state]

    def state(self) -> ModelState | None:
        return fold(self.model, list(self.events))


@dataclass(frozen=True)
class VerifiedChain:
    """A chain whose newest checkpoint verified with the host trust store and covers every status change."""

    chain: Chain
    checkpoint: StoredCheckpoint | None  # None only for an empty index
    state: ModelState | None

    @property
    def key_id(self) -> str | None:
        return self.checkpoint.key_id if self.checkpoint else None


def verify_chain(chain: Chain, trust: TrustStore, *, registry_url: str,
                 host_state: HostState | None = None) -> VerifiedChain:
    """Everything a reader must check before believing ``chain`` (raises :class:`IndexIntegrityError`).

    The structure was checked when the chain was read. Here: the newest
    checkpoint's signature, with a trusted and unrevoked key of ``trust``; every
    state-changing event at or before it (only ``pulled`` events may follow);
    and, with ``host_state``, that this host has not verified more history
    before (rollback), after which the newest checkpoint is remembered.

    Older checkpoints are covered by the newest one (the chain links them) and
    were checked for consistency when read; their signatures are not needed,
    which is also what lets a revoked key's checkpoints be superseded.
    """
    model = str(chain.model)
    if not chain.events:
        if host_state is not None:
            host_state.check(registry_url, model, [], None)
        return VerifiedChain(chain, None, None)
    newest = chain.newest_checkpoint
    if chain.unsigned_changes():
        raise _unsigned_head(chain)
    if newest is None:  # only pull records and no checkpoint: not a history any writer produces
        raise IndexIntegrityError(f"index of {model} has no signed checkpoint")
    verified = verify_checkpoint(newest, trust)
    if host_state is not None:
        host_state.check(registry_url, model, list(chain.digests), verified.seq)
        host_state.record(registry_url, model, verified.seq, verified.checkpoint.head)
    return VerifiedChain(chain, verified, chain.state())


def _unsigned_head(chain: Chain) -> IndexIntegrityError:
    first = chain.unsigned_changes()[0]
    newest = chain.newest_checkpoint
    what = f"{first.kind} {getattr(first, 'version', '')}".rstrip()
    covered = f"the newest signed checkpoint is #{newest.seq}" if newest else "there is no signed checkpoint"
    return IndexIntegrityError(
        f"index of {chain.model} has an unsigned head: event #{first.seq} ({what}) is not covered by a signed "
        f"checkpoint ({covered}); a status change nobody signed is not believed")


# --------------------------------------------------------------------------- the log

EventFactory = Callable[[ModelState | None, int, datetime], AnyEvent | None]
OwnEvent = Callable[[AnyEvent], bool]


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

    # ------------------------------------------------------------------ reading

    def read_chain(self, model: ModelName) -> Chain:
        """Events and checkpoints of ``model``, checked for everything that needs no key.

        Events numbered 0..n-1 with no gap, each for this model and at its own
        number, each ``prev`` the digest of the stored event before it; every
        checkpoint under its own number, for this model, naming an event that
        exists with exactly the digest it has. Anything else is
        :class:`IndexIntegrityError`: a deleted event (a "gap", or a checkpoint
        past the end), an edited one (a broken ``prev`` or checkpoint digest),
        a reordered one (a misnumbered event).
        """
        # Checkpoints are listed before events: a writer stores its event before its checkpoint, so every
        # checkpoint listed here names an event the listing below must contain, even while writers race.
        head_keys = self.store.list_keys(Layout.heads_prefix(model))
        events: list[AnyEvent] = []
        digests: list[str] = []
        for position, key in enumerate(self.store.list_keys(Layout.index_prefix(model))):
            if key != Layout.event_key(model, position):
                raise IndexIntegrityError(f"index of {model} is damaged: expected {Layout.event_key(model, position)}, "
                                          f"found {key} (an event was deleted or misnamed)")
            data = self._read(key)
            event = self._parse(model, key, position, data)
            expected_prev = digests[-1] if digests else None
            if event.prev != expected_prev:
                raise IndexIntegrityError(
                    f"{self.store.object_url(key)}: prev is {event.prev}, but the event before it is "
                    f"{'absent' if expected_prev is None else 'sha256:' + expected_prev} (an event was edited, "
                    f"deleted or reordered)")
            events.append(event)
            digests.append(hashlib.sha256(data).hexdigest())
        checkpoints = [self._checkpoint(model, key, digests) for key in head_keys]
        return Chain(model, tuple(events), tuple(digests), tuple(sorted(checkpoints, key=lambda c: c.seq)))

    def _read(self, key: str) -> bytes:
        data = self.store.read(key)
        if data is None:
            raise IndexIntegrityError(f"{self.store.object_url(key)}: listed but unreadable")
        return data

    def _parse(self, model: ModelName, key: str, position: int, data: bytes) -> AnyEvent:
        where = self.store.object_url(key)
        try:
            event = _EVENT.validate_python(strictjson.loads(data))
        except (ValueError, UnicodeDecodeError) as exc:
            raise IndexIntegrityError(f"{where}: not an index event ({exc})") from None
        except ValidationError as exc:
            raise IndexIntegrityError(f"{where}: {first_validation_problem(exc)}") from None
        if event.seq != position or event.model != str(model):
            raise IndexIntegrityError(f"{where}: records {event.model} seq {event.seq}, expected {model} seq {position}")
        return event

    def _checkpoint(self, model: ModelName, key: str, digests: list[str]) -> StoredCheckpoint:
        where = self.store.object_url(key)
        name = key[len(Layout.heads_prefix(model)):]
        if not _CHECKPOINT_NAME.fullmatch(name):
            raise IndexIntegrityError(f"{where}: not a checkpoint name (<10 digits>.json)")
        data = self._read(key)
        _, checkpoint = read_checkpoint(data, where)
        if checkpoint.model != str(model) or Layout.checkpoint_key(model, checkpoint.seq) != key:
            raise IndexIntegrityError(f"{where}: checkpoint of {checkpoint.model} #{checkpoint.seq} stored under "
                                      f"another name")
        if checkpoint.seq >= len(digests):
            raise IndexIntegrityError(f"index of {model} is damaged: checkpoint #{checkpoint.seq} ({where}) covers "
                                      f"events that are not there (the index ends at #{len(digests) - 1}): events "
                                      f"were deleted")
        if digests[checkpoint.seq] != checkpoint.head:
            raise IndexIntegrityError(f"index of {model} is damaged: event #{checkpoint.seq} is "
                                      f"sha256:{digests[checkpoint.seq]}, its checkpoint ({where}) says "
                                      f"sha256:{checkpoint.head} (the history was rewritten)")
        return StoredCheckpoint(key, checkpoint, data)

    def events(self, model: ModelName) -> list[AnyEvent]:
        """Every event of ``model`` in order (structurally checked, see :meth:`read_chain`)."""
        return list(self.read_chain(model).events)

    def state(self, model: ModelName) -> ModelState | None:
        """The state of the stored events, checked structurally but not against signatures (listings)."""
        return self.read_chain(model).state()

    def verified(self, model: ModelName, trust: TrustStore, host_state: HostState | None = None) -> VerifiedChain:
        """The chain of ``model`` after every check a reader must make (:func:`verify_chain`)."""
        return verify_chain(self.read_chain(model), trust, registry_url=self.store.url, host_state=host_state)

    # ------------------------------------------------------------------ writing

    def append(self, model: ModelName, make: EventFactory, *, signer: Signer | None = None,
               trust: TrustStore | None = None, own: OwnEvent | None = None,
               host_state: HostState | None = None) -> AnyEvent | None:
        """Append the event ``make(state, seq, now)`` returns (None: nothing to do), re-checked on every race.

        A state-changing event needs ``signer`` (its checkpoint is signed before
        the event is written and stored right after it) and ``trust`` (the
        chain it extends is verified first: a writer must never sign over a
        history it has not checked). Unsigned state changes already in the
        chain are refused, except those ``own`` recognizes as this very
        operation's (a re-run after a crash between event and checkpoint),
        which are then signed. A ``pulled`` event needs neither.
        """
        deadline = time.monotonic() + foreign_head_wait_s()
        conflicts = 0
        while True:
            chain = self.read_chain(model)
            events = list(chain.events)
            state = chain.state()
            event = make(state, len(events), self._clock())
            if event is None and signer is None:
                return None
            if event is not None and not event.changes_state:
                stored = self._put_event(chain, event)
            else:
                if signer is None:
                    raise RegistryError(f"index of {model}: a status change must be signed (checkpoint), "
                                        f"and no signer was given")
                pending = self._check_before_signing(chain, trust, own, host_state)
                if pending is None:  # another writer's event is still waiting for its checkpoint
                    if time.monotonic() < deadline:
                        time.sleep(random.uniform(0.02, 0.08))
                        continue
                    raise _unsigned_head(chain)
                if event is None:
                    if pending:  # the change is recorded but was never signed (a crash): sign it now
                        self._put_checkpoint(model, chain.events[-1].seq, chain.digests[-1], signer)
                    return None
                stored = self._put_event(chain, event, signer)
            if stored is not None:
                return stored
            conflicts += 1
            if conflicts >= _APPEND_ATTEMPTS:
                raise RegistryError(f"index of {model}: could not append after {_APPEND_ATTEMPTS} attempts "
                                    f"(heavy contention)")
            time.sleep(random.uniform(0.001, 0.02))  # another writer took this number: re-read and retry

    def _check_before_signing(self, chain: Chain, trust: TrustStore | None, own: OwnEvent | None,
                              host_state: HostState | None) -> list[AnyEvent] | None:
        """The unsigned state changes this writer may sign (its own); None while a foreign one is pending."""
        newest = chain.newest_checkpoint
        if newest is not None:
            if trust is None:
                raise RegistryError(f"index of {chain.model}: a trust store is needed to verify the chain before "
                                    f"signing a new head")
            verified = verify_checkpoint(newest, trust)
            if host_state is not None:
                host_state.check(self.store.url, str(chain.model), list(chain.digests), verified.seq)
        pending = chain.unsigned_changes()
        if any(own is None or not own(e) for e in pending):
            return None
        return pending

    def _put_event(self, chain: Chain, event: AnyEvent, signer: Signer | None = None) -> AnyEvent | None:
        """Store ``event`` as the next one (and its signed checkpoint); None when another writer got the number."""
        model = chain.model
        event = event.model_copy(update={"prev": chain.head, "seq": len(chain.events)})
        event = _EVENT.validate_python(event.model_dump(by_alias=True))  # the copy re-validated, as it will be read
        check_append(model, list(chain.events), event)  # raises if the state does not allow it
        data = serialize_event(event)
        digest = hashlib.sha256(data).hexdigest()
        # Signed before the event is written, so the checkpoint follows it within one write: the window in
        # which readers see an unsigned head (and refuse) is as short as it can be.
        checkpoint = sign_checkpoint(str(model), event.seq, digest, self._clock(), signer) if signer else None
        key = Layout.event_key(model, event.seq)
        # Confirmed by reading back (as the promotion claim is): on a server whose conditional write is not
        # atomic, a racing writer could have replaced the event; the stored one is the one that counts.
        if not (self.store.put_if_absent(key, data, len(data), digest) and self.store.read(key) == data):
            return None
        if checkpoint is not None:
            self._store_checkpoint(model, event.seq, checkpoint)
        return event

    def _put_checkpoint(self, model: ModelName, seq: int, head: str, signer: Signer) -> None:
        self._store_checkpoint(model, seq, sign_checkpoint(str(model), seq, head, self._clock(), signer))

    def _store_checkpoint(self, model: ModelName, seq: int, data: bytes) -> None:
        key = Layout.checkpoint_key(model, seq)
        # Another writer may have signed the same head first; either checkpoint serves (read_chain checks it).
        self.store.put_if_absent(key, data, len(data), hashlib.sha256(data).hexdigest())


# --------------------------------------------------------------------------- the model record, for the gate


class SourceMatch(StrEnum):
    NEW_MODEL = "new-model"  # no release yet: this promotion defines the record
    SAME_SOURCE = "same-source"  # the model's own source repository
    OTHER_SOURCE = "other-source"  # another repository under this name: the owner's reviewers must approve


@dataclass(frozen=True)
class PromotionClaim:
    """What the index says about promoting ``source`` as ``model`` with ``owner`` and ``risk_tier``."""

    model: str
    source: str
    match: SourceMatch
    owner: str | None  # the model's owner (None for a new model)
    min_risk_tier: RiskTier | None
    record_source: str | None
    refusal: str | None  # the index will refuse this promotion: why

    @property
    def needs_owner_approval(self) -> bool:
        """The version must carry an approval by the model owner's reviewers (a different source)."""
        return self.match is SourceMatch.OTHER_SOURCE

    def to_json_dict(self) -> dict[str, Any]:
        return {"model": self.model, "source": self.source, "match": self.match.value, "owner": self.owner,
                "min_risk_tier": self.min_risk_tier.value if self.min_risk_tier else None,
                "record_source": self.record_source, "refusal": self.refusal,
                "needs_owner_approval": self.needs_owner_approval}


def promotion_claim(state: ModelState | None, model: str, source: str, owner: str,
                    risk_tier: RiskTier | str) -> PromotionClaim:
    """Compare a promotion with the model's record (``state`` must come from a verified chain).

    ``source`` is the source repository (:func:`airlock.registry.base.source_repository`).
    """
    tier = RiskTier(risk_tier)
    if state is None or state.owner is None:
        return PromotionClaim(model, source, SourceMatch.NEW_MODEL, None, None, None, None)
    assert state.risk_tier is not None
    refusal = None
    if owner != state.owner:
        refusal = (f"{model} is owned by {state.owner!r} (fixed at its first release); a promotion by owner "
                   f"{owner!r} is refused (an admin changes owners: airlock registry ownership)")
    elif tier_rank(tier) < tier_rank(state.risk_tier):
        refusal = (f"{model} has minimum risk tier {state.risk_tier} (fixed at its first release); a promotion at "
                   f"tier {tier} is refused")
    match = SourceMatch.SAME_SOURCE if source == state.source else SourceMatch.OTHER_SOURCE
    return PromotionClaim(model, source, match, state.owner, state.risk_tier, state.source, refusal)
