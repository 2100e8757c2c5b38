"""Verify-on-pull: copy a released registry version onto a serving host, only if every check passes.

``pull`` never lets an unverified byte reach DEST. In order:

1. DEST is absent or an empty directory (checked first: nothing is fetched for
   a pull that could not land), and the host's trust store is at hand
   (:func:`airlock.trust.host_trust_store`: ``--trust-store``, AIRLOCK_TRUST_STORE
   or /etc/airlock/trust.pem; the registry's ``trust/trust.pem`` only when its
   sha256 is pinned on the host). None at all cannot run.
2. The version has a ``RELEASED`` marker naming its plan. The model's index is
   verified (:func:`airlock.registry.index.verify_chain`): an unbroken hash
   chain, the newest checkpoint signed by a trusted key and covering every
   status change, and no less history than this host verified before
   (:mod:`airlock.registry.hoststate`). In that verified index the version is
   promoted with exactly the plan RELEASED names (the signed promoted event
   pins ``promotion.json``, hence every object's sha256) and is not revoked
   (deprecated is allowed, with a warning).
3. Every object of the plan is streamed into a private staging directory next
   to DEST (same filesystem), hashed as it is written, and compared with the
   plan's size and sha256.
4. ``model.sig`` verifies over the staged ``files/`` with the trust store
   (:func:`airlock.verify.verify_model`), for the subject
   :func:`~airlock.registry.signed_subject_name` (``org/name@version``), and its
   root digest is the released one; ``aibom.sig`` verifies over the staged
   AI-BOM with the same trust store; the AI-BOM's subject is this model,
   version and root digest, and it pins ``model.sig`` and every report by
   sha256 (:func:`airlock.aibom.verify_aibom_binding`). Nothing in a version
   is delivered that no signature covers.
5. The pull is appended to the index (``pulled``: who, host, DEST, root digest,
   key), re-checked against the index as it is then: a version revoked while
   we were verifying is refused here. Recording comes before the move on
   purpose: a pull that is recorded but fails to land over-reports a
   deployment, which is safe; the reverse would hide one from incident response.
6. The staging directory is made read-only (files 0444, directories 0555) and
   renamed to DEST: one atomic ``rename``, so DEST is either untouched or the
   complete verified copy. On any failure the staging directory is removed.

There is no option, argument or environment variable that skips or relaxes any
of this, in production (``AIRLOCK_ENV=production``) or elsewhere.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import shutil
import socket
import stat
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from airlock.errors import AirlockError
from airlock.fsutil import run_all
from airlock.registry import (
    HostState,
    Layout,
    ModelName,
    PulledEvent,
    Registry,
    RegistryIndexError,
    ReleasedVersion,
    Status,
    StoredObjectError,
    VersionNotFoundError,
    parse_reference,
    signed_subject_name,
)
from airlock.registry.index import ModelState
from airlock.registry.promotion import PlannedObject
from airlock.trust import TrustStore, host_trust_store

_CHUNK = 1 << 20
STAGING_PREFIX = ".airlock-pull."
# Where each non-file role must sit in a version; a plan that says otherwise is not one promotion wrote.
_FIXED_KEYS = {"signature": Layout.SIGNATURE, "aibom": Layout.AIBOM, "aibom-signature": Layout.AIBOM_SIGNATURE}
_PREFIXED_KEYS = {"file": Layout.FILES, "report": Layout.REPORTS}


class PullRefused(AirlockError):
    """The version must not be deployed (not released, revoked, tampered, untrusted); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PullError(AirlockError):
    """The pull could not be carried out (DEST unusable, disk full); says which path and why."""


@dataclass(frozen=True)
class PullResult:
    model: str
    version: str
    dest: Path
    root_digest: str
    key_id: str
    status: str
    file_count: int
    total_bytes: int
    event_seq: int
    warnings: tuple[str, ...] = field(default=())

    def to_json_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "dest": str(self.dest),
                "root_digest": self.root_digest, "key_id": self.key_id, "status": self.status,
                "file_count": self.file_count, "total_bytes": self.total_bytes, "event_seq": self.event_seq,
                "warnings": list(self.warnings)}


# --------------------------------------------------------------------------- who and where


def default_host() -> str:
    return socket.gethostname() or "unknown-host"


def default_actor(host: str | None = None) -> str:
    """AIRLOCK_ACTOR, else ``user@host``: who pulled, as incident response will read it."""
    explicit = os.environ.get("AIRLOCK_ACTOR", "").strip()
    if explicit:
        return explicit
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (minimal containers)
        user = f"uid:{os.getuid()}"
    return f"{user}@{host or default_host()}"


# --------------------------------------------------------------------------- the pull


def pull(
    registry: Registry,
    reference: str,
    dest: Path,
    *,
    trust: TrustStore | None = None,
    actor: str | None = None,
    host: str | None = None,
    host_state: HostState | None = None,
) -> PullResult:
    """Pull ``ORG/NAME@VERSION`` from ``registry`` into ``dest`` (see the module docstring).

    ``trust`` defaults to the host's trust store (:func:`airlock.trust.host_trust_store`),
    ``host_state`` to the registry's, else the host's (AIRLOCK_HOST_STATE).
    Raises :class:`PullRefused` when the version must not be used and
    :class:`PullError` (or another :class:`AirlockError`: a missing trust store
    is a :class:`~airlock.trust.TrustStoreError`) when the pull could not be
    done; in both cases ``dest`` is exactly as it was.
    """
    model, version = parse_reference(reference, version_required=True)
    assert version is not None
    dest = check_dest(dest)
    trust = trust if trust is not None else host_trust_store(registry=registry)
    host_state = host_state or registry.host_state or HostState.from_settings()
    released = released_for_use(registry, model, version, trust, host_state)
    warnings = _status_warnings(released)
    host = host or default_host()
    actor = actor or default_actor(host)
    staging = _make_staging(dest)
    try:
        key_id = _fetch_and_verify(registry, released, staging, trust)
        event = _record(registry, model, version, released.root_digest, key_id, actor, host, dest)
        _publish(staging, dest)
    except BaseException:
        remove_tree(staging)
        raise
    files = released.plan.by_role("file")
    return PullResult(str(model), version, dest, released.root_digest, key_id, released.status, len(files),
                      sum(o.size for o in released.plan.objects), event.seq, warnings)


@dataclass(frozen=True)
class VerifiedCopy:
    """A private, read-only copy of a version that passed every check of a pull (files/, model.sig, reports/...)."""

    path: Path
    released: ReleasedVersion
    key_id: str

    @property
    def files(self) -> Path:
        return self.path / "files"


def verified_copy(registry: Registry, model: ModelName, version: str, dest: Path, *, trust: TrustStore,
                  host_state: HostState | None = None) -> VerifiedCopy:
    """Everything :func:`pull` checks (steps 2-4), into the new private directory ``dest``, made read-only.

    Not recorded as a pull: a check's working copy (the nightly fingerprint's) is not a deployment, and incident
    response reads pull records as deployments. Raises :class:`PullRefused` when the version must not be used;
    ``dest`` is removed again on any failure.
    """
    host_state = host_state or registry.host_state or HostState.from_settings()
    released = released_for_use(registry, model, version, trust, host_state)
    dest.mkdir(mode=0o700)
    try:
        return VerifiedCopy(dest, released, _fetch_and_verify(registry, released, dest, trust))
    except BaseException:
        remove_tree(dest)
        raise


def _fetch_and_verify(registry: Registry, released: ReleasedVersion, staging: Path, trust: TrustStore) -> str:
    """Steps 3-4 into ``staging``, which is then made read-only; returns the signing key id."""
    model = ModelName.parse(released.model)
    _fetch_all(registry, model, released.version, released.plan.objects, staging)
    key_id = _verify_staged(staging, released, trust, signed_subject_name(model, released.version))
    _make_read_only(staging)
    return key_id


def check_dest(dest: Path) -> Path:
    """``dest`` as an absolute path in a real parent directory; it must not exist or be an empty directory."""
    dest = Path(dest).expanduser()
    if not dest.name or dest.name in (".", ".."):
        raise PullError(f"--dest {dest}: name a directory to create (not '.', '..' or '/')")
    try:
        # The parent's real path: the staging directory must be its sibling on the same filesystem.
        parent = dest.absolute().parent.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise PullError(f"--dest {dest}: the parent directory does not exist ({exc})") from None
    if not parent.is_dir():
        raise PullError(f"--dest {dest}: {parent} is not a directory")
    dest = parent / dest.name
    try:
        info = os.lstat(dest)
    except FileNotFoundError:
        return dest
    except OSError as exc:
        raise PullError(f"--dest {dest}: cannot inspect it ({exc.strerror})") from None
    if not stat.S_ISDIR(info.st_mode):  # a symlink is refused too: lstat does not follow it
        raise PullError(f"--dest {dest}: exists and is not a directory; DEST must not exist or be empty")
    try:
        entries = os.listdir(dest)
    except OSError as exc:
        raise PullError(f"--dest {dest}: cannot list it ({exc.strerror})") from None
    if entries:
        raise PullError(f"--dest {dest}: is not empty ({len(entries)} entries, e.g. {sorted(entries)[0]!r}); "
                        f"DEST must not exist or be empty, a pull never merges into or replaces a copy")
    return dest


# --------------------------------------------------------------------------- registry checks


def released_for_use(registry: Registry, model: ModelName, version: str, trust: TrustStore,
                     host_state: HostState) -> ReleasedVersion:
    """The released version as the signed index states it; :class:`PullRefused` unless it may be used."""
    try:
        released = registry.released(model, version)
        verified = registry.index.verified(model, trust, host_state)
    except VersionNotFoundError:
        raise PullRefused(f"{model}@{version} is not released in {registry.url} (no RELEASED marker)") from None
    except (StoredObjectError, RegistryIndexError) as exc:  # a damaged or unsigned index is not believed
        raise PullRefused(f"{model}@{version}: {exc}") from None
    state = verified.state.version(version) if verified.state else None
    released = replace(released, state=state)
    if state is None:
        # RELEASED but no promotion event: the promotion has not finished (or crashed); nobody approved it yet.
        raise PullRefused(f"{model}@{version} is released but not in the registry index (promotion unfinished); "
                          f"re-run the promotion")
    if state.status is Status.REVOKED:
        raise PullRefused(f"{model}@{version} is revoked: {state.reason} (by {state.updated_by} at "
                          f"{state.updated_at.isoformat()})")
    if state.plan_sha256 != released.released.plan_sha256:
        raise PullRefused(f"{model}@{version}: RELEASED names plan sha256:{released.released.plan_sha256}, but the "
                          f"signed index promoted sha256:{state.plan_sha256}")
    return released


def _status_warnings(released: ReleasedVersion) -> tuple[str, ...]:
    state = released.state
    if state is not None and state.status is Status.DEPRECATED:
        return (f"{released.model}@{released.version} is deprecated: {state.reason} (by {state.updated_by} at "
                f"{state.updated_at.isoformat()})",)
    return ()


# --------------------------------------------------------------------------- fetching


def _make_staging(dest: Path) -> Path:
    staging = dest.with_name(f"{STAGING_PREFIX}{dest.name}.{uuid.uuid4().hex}")
    try:
        staging.mkdir(mode=0o700)  # private until verified: nobody else can change what is checked
    except OSError as exc:
        raise PullError(f"cannot create the staging directory {staging}: {exc.strerror}") from None
    return staging


def staged_path(staging: Path, obj: PlannedObject) -> Path:
    """Where ``obj`` goes under ``staging``; a key the plan could not legitimately hold is a refusal."""
    key = obj.key
    parts = key.split("/")
    if "\\" in key or "\0" in key or any(p in ("", ".", "..") for p in parts):
        raise PullRefused(f"promotion.json lists {key!r}, which is not a safe relative path")
    fixed = _FIXED_KEYS.get(obj.role)
    prefix = _PREFIXED_KEYS.get(obj.role)
    if (fixed is not None and key != fixed) or (prefix is not None and not key.startswith(prefix)):
        raise PullRefused(f"promotion.json lists {key!r} as {obj.role}, which the registry layout does not allow")
    return staging.joinpath(*parts)


def _fetch_all(registry: Registry, model: ModelName, version: str, objects: tuple[PlannedObject, ...],
               staging: Path) -> None:
    targets = [(obj, staged_path(staging, obj)) for obj in objects]  # every key checked before any byte
    for _, path in targets:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, registry.workers), thread_name_prefix="airlock-pull") as pool:
        run_all([pool.submit(_fetch_one, registry, Layout.key(model, version, obj.key), obj, path)
                 for obj, path in targets])


def _fetch_one(registry: Registry, store_key: str, obj: PlannedObject, path: Path) -> None:
    """Stream one object into ``path``, hashing the very bytes written; refuse if they are not the plan's."""
    url = registry.store.object_url(store_key)
    stream = registry.store.open_object(store_key)
    if stream is None:
        raise PullRefused(f"{obj.key}: missing from the registry ({url}) but listed in the released plan")
    hasher = hashlib.sha256()
    written = 0
    with stream:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with open(fd, "wb", closefd=True) as out:
                # Never more than one byte past the planned size: a swapped-in huge object must not fill the disk.
                while written <= obj.size and (chunk := stream.read(min(_CHUNK, obj.size + 1 - written))):
                    hasher.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise PullError(f"{path}: cannot write {obj.key} ({exc.strerror or exc})") from None
        except StoredObjectError as exc:  # the backend itself saw damage while streaming (S3 checksum)
            raise PullRefused(f"{obj.key}: {exc}") from None
    digest = hasher.hexdigest()
    if written != obj.size or digest != obj.sha256:
        size = f"{written} bytes" if written <= obj.size else f"more than {obj.size} bytes"
        raise PullRefused(f"{obj.key}: stored object {url} does not match the released plan: read {size} "
                          f"sha256:{digest}, released as {obj.size} bytes sha256:{obj.sha256}")


# --------------------------------------------------------------------------- verification


def _verify_staged(staging: Path, released: ReleasedVersion, trust: TrustStore, subject: str) -> str:
    """Signature and digests of the staged files, then the AI-BOM signature; returns the signing key id."""
    from airlock.aibom import AibomError, verify_aibom_binding, verify_aibom_with_trust_store
    from airlock.verify import verify_model

    result = verify_model(staging / "files", staging / Layout.SIGNATURE, trust, expected_model_name=subject)
    if not result.ok:
        raise PullRefused(f"{Layout.SIGNATURE}: invalid ({result.failure}): {result.reason}")
    assert result.key_id is not None
    if result.root_digest != released.root_digest:
        raise PullRefused(f"{Layout.SIGNATURE}: signs root sha256:{result.root_digest}, but the version was "
                          f"released as sha256:{released.root_digest}")
    if not released.plan.by_role("aibom-signature"):
        raise PullRefused(f"{Layout.AIBOM_SIGNATURE}: {released.model}@{released.version} has no signed AI-BOM; "
                          f"an unsigned AI-BOM is not deployed")
    try:
        bom = (staging / Layout.AIBOM).read_bytes()
        bom_signature = (staging / Layout.AIBOM_SIGNATURE).read_bytes()
    except OSError as exc:
        raise PullError(f"cannot read the staged AI-BOM: {exc}") from None
    try:
        verify_aibom_with_trust_store(bom, bom_signature, trust)
    except AibomError as exc:
        raise PullRefused(f"AI-BOM signature invalid: {exc}") from None
    # Signed is not enough: it must be *this* version's BOM, and it must pin what the signatures do not cover.
    model = ModelName.parse(released.model)
    bound = {o.key: o.sha256 for o in released.plan.objects if o.role in ("signature", "report")}
    try:
        verify_aibom_binding(bom, model=released.model, version=released.version, root_digest=released.root_digest,
                             version_path=Layout.version_prefix(model, released.version), bound=bound)
    except AibomError as exc:
        raise PullRefused(f"AI-BOM does not bind the version: {exc}") from None
    return result.key_id


# --------------------------------------------------------------------------- recording and publishing


def _record(registry: Registry, model: ModelName, version: str, root_digest: str, key_id: str, actor: str,
            host: str, dest: Path) -> PulledEvent:
    def make(state: ModelState | None, seq: int, at: Any) -> PulledEvent:
        # Re-checked against the index as it is now (the append retries on every race), so a revocation
        # that landed while we were fetching and verifying still refuses this pull.
        current = state.version(version) if state else None
        if current is not None and current.status is Status.REVOKED:
            raise PullRefused(f"{model}@{version} was revoked during the pull: {current.reason} "
                              f"(by {current.updated_by} at {current.updated_at.isoformat()})")
        return PulledEvent(seq=seq, model=str(model), version=version, at=at, actor=actor,
                           root_digest=root_digest, key_id=key_id, host=host, dest=str(dest))

    event = registry.index.append(model, make)
    assert isinstance(event, PulledEvent)
    return event


def _make_read_only(root: Path) -> None:
    """Files 0444, directories 0555, deepest first (a directory is locked only after its contents)."""
    for directory, dirs, files in os.walk(root, topdown=False):
        for name in files:
            os.chmod(os.path.join(directory, name), 0o444, follow_symlinks=False)
        os.chmod(directory, 0o555)


def _publish(staging: Path, dest: Path) -> None:
    # rename(2) is atomic and, for a directory, replaces only an empty directory: if DEST gained an entry since
    # it was checked, this fails (ENOTEMPTY) instead of merging into it.
    try:
        os.rename(staging, dest)
    except OSError as exc:
        raise PullError(f"--dest {dest}: cannot move the verified copy into place ({exc.strerror}); "
                        f"DEST must not exist or be empty") from None
    fd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)  # the new directory entry must survive a power cut as surely as the bytes do
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Remove a staging directory, read-only or not; it is ours, so nothing of value is lost."""
    if not path.exists():
        return
    for directory, _dirs, _files in os.walk(path):
        os.chmod(directory, 0o700)
    shutil.rmtree(path, ignore_errors=True)
