"""What the proxy may serve, decided from the signed registry index and signatures, and cached only while valid.

Three layers, each cached with the key that invalidates it:

1. **The model's index** (:meth:`RegistryView.model`): verified exactly as
   ``airlock pull`` verifies it (:meth:`airlock.registry.index.Index.verified`:
   hash chain, newest checkpoint signed by a key of the host's trust store,
   every status change covered, no rollback this host has seen). Re-verified
   whenever the listing of the model's events or checkpoints changes, which is
   checked on **every request**: a revocation is an appended, signed event, so
   it takes effect on the next request.
2. **The version** (:meth:`RegistryView.version`): :func:`airlock.pull.released_for_use`
   (RELEASED, the plan the signed index pins, not revoked), then ``model.sig``
   verified with the trust store for subject ``org/name@version`` and its
   signed files equal to the plan's, then ``aibom.sig`` and the AI-BOM's
   binding, as a pull checks them. Cached per (version, signed plan digest,
   trust store).
3. **Each file** (:class:`FileChecks`): the stored bytes hashed and compared with
   the signed sha256 before the first byte is sent; the result is remembered
   for the stored object's identity (:mod:`airlock.proxy.objects`), so an
   object that is rewritten or replaced is hashed again (and refused).

Which version a revision means (:meth:`RegistryView.select`): a version name,
the commit id the proxy presents for it, or ``main`` when the model's policy
maps it (the newest approved version, or a fixed one). Approved versions are
served; deprecated ones only where the policy names them; revoked, unreleased,
unindexed and unknown ones never.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airlock.errors import AirlockError
from airlock.proxy import hub
from airlock.proxy.objects import ObjectChanged, OpenedObject, sha256_of
from airlock.registry import (
    HostState,
    Layout,
    ModelName,
    Registry,
    RegistryError,
    Status,
    VersionNotFoundError,
    signed_subject_name,
)

if TYPE_CHECKING:
    from airlock.proxy.config import ModelPolicy
    from airlock.registry.index import ModelState
    from airlock.trust import TrustStore

_log = logging.getLogger("airlock.proxy")


class Refusal(AirlockError):
    """The request is refused: HTTP ``status``, the Hub's ``code`` (or None) and the ``reason`` for the body."""

    def __init__(self, status: int, code: str | None, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason


def refuse_version(reason: str, status: int = 403) -> Refusal:
    # RevisionNotFound whatever the status: huggingface_hub then raises instead of using a copy it cached earlier.
    return Refusal(status, hub.ERROR_REVISION, reason)


@dataclass(frozen=True)
class ModelView:
    """A model's verified index state, and the commit id of each of its indexed versions."""

    model: ModelName
    state: ModelState
    token: tuple[Any, ...]
    commits: dict[str, str]  # commit id -> version


@dataclass(frozen=True)
class VerifiedVersion:
    model: str
    version: str
    commit: str
    status: str
    root_digest: str
    key_id: str
    plan_sha256: str
    promoted_at: datetime | None
    files: dict[str, hub.HubFile]  # path under files/ -> size and signed sha256

    def key(self, path: str) -> str:
        return Layout.key(ModelName.parse(self.model), self.version, Layout.FILES + path)


# --------------------------------------------------------------------------- the registry as the proxy sees it


class RegistryView:
    def __init__(self, registry: Registry, trust: Callable[[], TrustStore], host_state: HostState,
                 policy: Callable[[str], ModelPolicy]) -> None:
        self.registry = registry
        self._trust = trust
        self.host_state = host_state
        self._policy = policy
        self._lock = threading.Lock()
        self._model_locks: dict[ModelName, threading.Lock] = {}
        self._models: dict[ModelName, ModelView] = {}
        self._versions: dict[tuple[str, str, str, int], VerifiedVersion] = {}

    def trust(self) -> TrustStore:
        return self._trust()

    def _trust_generation(self) -> int:
        self.trust()  # reloads a changed trust store file first
        return int(getattr(self._trust, "generation", 0))

    def _model_lock(self, model: ModelName) -> threading.Lock:
        with self._lock:
            return self._model_locks.setdefault(model, threading.Lock())

    def _index_token(self, model: ModelName) -> tuple[Any, ...]:
        store = self.registry.store
        events = store.list_keys(Layout.index_prefix(model))
        heads = store.list_keys(Layout.heads_prefix(model))
        # Legitimate changes only ever append events and checkpoints; the trust store's identity is part of it
        # (a key revoked on this host re-verifies every chain).
        return (len(events), events[-1] if events else None, len(heads), heads[-1] if heads else None,
                self._trust_generation())

    def model(self, model: ModelName) -> ModelView:
        """The verified view of ``model``, re-verified when its index changed; :class:`Refusal` when unusable."""
        with self._model_lock(model):
            try:
                token = self._index_token(model)
            except RegistryError as exc:
                raise Refusal(503, None, f"the registry cannot be read: {exc}") from None
            cached = self._models.get(model)
            if cached is not None and cached.token == token:
                return cached
            try:
                verified = self.registry.index.verified(model, self.trust(), self.host_state)
            except RegistryError as exc:  # damaged, unsigned or rolled back: nothing of this model is believed
                raise refuse_version(f"the registry index of {model} does not verify: {exc}") from None
            if verified.state is None:
                raise Refusal(404, hub.ERROR_REPO, f"{model} is not in the registry")
            commits = {hub.commit_id(str(model), v.version, v.plan_sha256): v.version
                       for v in verified.state.versions if v.plan_sha256}
            view = ModelView(model, verified.state, token, commits)
            self._models[model] = view
            return view

    # ------------------------------------------------------------------ which version

    def select(self, view: ModelView, revision: str) -> str:
        """The version ``revision`` names, if it may be served now; :class:`Refusal` otherwise."""
        model = str(view.model)
        policy = self._policy(model)
        if revision == "main":
            version = self._main(view, policy)
        elif hub.COMMIT.fullmatch(revision) and revision in view.commits:
            version = view.commits[revision]
        else:
            version = revision
        current = view.state.version(version)
        if current is None:
            raise refuse_version(f"{model}@{version} is not a released version in the registry index "
                                 f"(unknown, unreleased, or its promotion has not finished)", 404)
        if current.status is Status.REVOKED:
            raise refuse_version(f"{model}@{version} is revoked: {current.reason} (by {current.updated_by} at "
                                 f"{current.updated_at.isoformat()})")
        if current.status is Status.DEPRECATED and version not in policy.allow_deprecated:
            raise refuse_version(f"{model}@{version} is deprecated: {current.reason}; this proxy serves it only "
                                 f"where its configuration allows it (models.\"{model}\".allow_deprecated)")
        return version

    @staticmethod
    def _main(view: ModelView, policy: ModelPolicy) -> str:
        model = str(view.model)
        if policy.main is None:
            raise refuse_version(f"{model}: 'main' is not mapped to a version on this proxy; ask for a version "
                                 f"(revision=<version>) or configure models.\"{model}\".main", 404)
        if policy.main != "latest":
            return policy.main
        approved = [v for v in view.state.versions if v.status is Status.APPROVED and v.plan_sha256]
        if not approved:
            raise refuse_version(f"{model}: 'main' maps to the newest approved version, and there is none", 404)
        newest = max(approved, key=lambda v: (v.promoted_at or v.updated_at, v.version))
        return newest.version

    # ------------------------------------------------------------------ the version's signatures

    def version(self, view: ModelView, version: str) -> VerifiedVersion:
        state = view.state.version(version)
        assert state is not None and state.plan_sha256 is not None
        trust = self.trust()
        key = (str(view.model), version, state.plan_sha256, self._trust_generation())
        cached = self._versions.get(key)
        if cached is not None:
            return cached
        verified = self._verify_version(view.model, version, trust)
        self._versions[key] = verified
        return verified

    def _verify_version(self, model: ModelName, version: str, trust: TrustStore) -> VerifiedVersion:
        from airlock.pull import PullRefused, released_for_use

        try:
            released = released_for_use(self.registry, model, version, trust, self.host_state)
        except PullRefused as exc:
            raise refuse_version(exc.reason) from None
        except VersionNotFoundError as exc:
            raise refuse_version(str(exc), 404) from None
        pinned = {o.key: o for o in released.plan.objects}
        try:
            key_id = self._check_signature(model, version, released.root_digest, pinned, trust)
            self._check_aibom(model, version, released.root_digest, pinned, trust)
        except RegistryError as exc:
            raise Refusal(503, None, f"the registry cannot be read: {exc}") from None
        files = {o.key[len(Layout.FILES):]: hub.HubFile(o.key[len(Layout.FILES):], o.size, o.sha256)
                 for o in released.plan.by_role("file")}
        state = released.state
        assert state is not None
        return VerifiedVersion(str(model), version, hub.commit_id(str(model), version, released.released.plan_sha256),
                               state.status.value, released.root_digest, key_id, released.released.plan_sha256,
                               state.promoted_at, files)

    def _pinned_bytes(self, model: ModelName, version: str, name: str, pinned: dict[str, Any]) -> bytes:
        """A small object of the version, which must be the one the signed plan pins."""
        planned = pinned.get(name)
        if planned is None:
            raise refuse_version(f"{model}@{version}: the released plan has no {name}; nothing unsigned is served")
        data = self.registry.store.read(Layout.key(model, version, name))
        if data is None or hashlib.sha256(data).hexdigest() != planned.sha256:
            raise refuse_version(f"{model}@{version}: the stored {name} is not the one the signed plan pins")
        return data

    def _check_signature(self, model: ModelName, version: str, root_digest: str, pinned: dict[str, Any],
                         trust: TrustStore) -> str:
        from airlock.verify import VerificationError, verify_bundle

        bundle = self._pinned_bytes(model, version, Layout.SIGNATURE, pinned)
        source = self.registry.store.object_url(Layout.key(model, version, Layout.SIGNATURE))
        try:
            statement = verify_bundle(bundle, trust, source=source)
        except VerificationError as exc:
            raise refuse_version(f"{model}@{version}: {Layout.SIGNATURE} does not verify ({exc.failure}): "
                                 f"{exc.reason}") from None
        signed = statement.manifest
        subject = signed_subject_name(model, version)
        if signed.model_name != subject:
            raise refuse_version(f"{model}@{version}: {Layout.SIGNATURE} is signed for {signed.model_name!r}, "
                                 f"not {subject!r}")
        if signed.root_digest != root_digest:
            raise refuse_version(f"{model}@{version}: {Layout.SIGNATURE} signs root sha256:{signed.root_digest}, "
                                 f"the version was released as sha256:{root_digest}")
        signed_files = {Layout.FILES + f.path: f.sha256 for f in signed.files}
        planned_files = {k: o.sha256 for k, o in pinned.items() if o.role == "file"}
        if signed_files != planned_files:
            differing = sorted(k for k in signed_files.keys() | planned_files.keys()
                               if signed_files.get(k) != planned_files.get(k))
            raise refuse_version(f"{model}@{version}: the signed files differ from the released plan "
                                 f"({', '.join(differing[:5])})")
        return statement.key.key_id

    def _check_aibom(self, model: ModelName, version: str, root_digest: str, pinned: dict[str, Any],
                     trust: TrustStore) -> None:
        from airlock.aibom import AibomError, verify_aibom_binding, verify_aibom_with_trust_store

        bom = self._pinned_bytes(model, version, Layout.AIBOM, pinned)
        signature = self._pinned_bytes(model, version, Layout.AIBOM_SIGNATURE, pinned)
        bound = {k: o.sha256 for k, o in pinned.items() if o.role in ("signature", "report")}
        try:
            verify_aibom_with_trust_store(bom, signature, trust)
            verify_aibom_binding(bom, model=str(model), version=version, root_digest=root_digest,
                                 version_path=Layout.version_prefix(model, version), bound=bound)
        except AibomError as exc:
            raise refuse_version(f"{model}@{version}: the AI-BOM does not verify: {exc}") from None


# --------------------------------------------------------------------------- the bytes of each file


class Tampered(Refusal):
    """A stored file is not the signed one; ``summary`` is what gets reported."""

    def __init__(self, reason: str) -> None:
        super().__init__(403, None, reason)


@dataclass
class FileChecks:
    """Which stored objects were hashed and matched their signed sha256, by object identity."""

    _verified: dict[tuple[str, str, str], tuple[Any, ...]] = field(default_factory=dict)
    _locks: dict[tuple[str, str, str], threading.Lock] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    hashed_bytes: int = 0

    def ensure(self, version: VerifiedVersion, path: str, obj: OpenedObject) -> bool:
        """Raise :class:`Tampered` unless ``obj`` holds the signed bytes of ``path``; True when it was hashed now.

        Concurrent requests for the same file wait for one hash instead of each reading the file.
        """
        key = (version.model, version.version, path)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if self._verified.get(key) == obj.identity:
                return False
            expected = version.files[path]
            where = f"{version.model}@{version.version} files/{path} ({obj.url})"
            if obj.size != expected.size:
                self._verified.pop(key, None)
                raise Tampered(f"{where}: stored object is {obj.size} bytes, signed as {expected.size} bytes "
                               f"sha256:{expected.sha256}")
            try:
                digest, read = sha256_of(obj, expected.size)
            except ObjectChanged as exc:
                raise Tampered(f"{where}: {exc}") from None
            with self._lock:
                self.hashed_bytes += read
            if digest != expected.sha256:
                self._verified.pop(key, None)
                raise Tampered(f"{where}: stored bytes hash to sha256:{digest}, signed as sha256:{expected.sha256}")
            self._verified[key] = obj.identity
            return True
