"""Re-hash a registry version, or a deployed copy of one, against its signed manifest.

Like AIDE or OSSEC, but the reference is the signature, not a local database:

* the files under ``files/`` are compared with the resources of ``model.sig``,
  verified with the **host's** trust store (never one read from the storage
  being checked) and required to name this very model and version;
* every other object of the version (``model.sig`` itself, the AI-BOM and its
  signature, the reports) is compared with ``promotion.json``, which the
  ``promoted`` event of the model's index pins by digest; the index chain is
  verified first (hash chain, newest checkpoint signed by a trusted key, no
  rollback this host has seen), so the plan is signed too, just one step removed.

What is reported, per object key relative to the version directory (which is
also the layout ``airlock pull`` writes into DEST): **modified** (other bytes,
or no longer a regular file), **added** (present but covered by no signature:
anything under a released version that promotion did not write) and
**removed** (signed but absent), plus **problems** with the references
themselves (a signature that does not verify, an index that does not, a plan
that is not the signed one). Any of them is a deviation (verdict ``fail``).
A check that could not run (storage unreachable, no trust store, a file this
process may not read) is ``error``: never a pass, and never mistaken for a
deviation either.

The bytes are read once, by the project's parallel hasher
(:func:`airlock.manifest.hash_files`: one pass, flat memory, every core, and a
file that changes while it is read is refused). Objects of a non-filesystem
store (S3) are streamed from the store and hashed on a thread pool. Every check
logs what it cost: bytes re-hashed and seconds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from airlock.errors import AirlockError, ManifestError
from airlock.watch.targets import PathMappings, WatchTarget, this_host

if TYPE_CHECKING:
    from airlock.registry import CheckedEvent, ModelName, Registry
    from airlock.registry.index import ModelState
    from airlock.trust import TrustStore

_log = logging.getLogger("airlock.watch")
_READ_CHUNK = 1 << 20
# Written by promotion next to the objects and checked through the index, not through the plan they define.
_CONTROL_KEYS = frozenset({"promotion.json", "RELEASED"})
_MAX_LISTED = 20  # keys named per category in a one-line summary; the rest are counted

Verdict = Literal["pass", "fail", "error"]


class WatchError(AirlockError):
    """The check could not run (the copy is gone, storage unreachable, a file unreadable); names what and why."""


# --------------------------------------------------------------------------- results


class WatchResult(BaseModel):
    """The outcome of one check (JSON: it travels as XCom and is summarised into the index)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: WatchTarget
    verdict: Verdict
    modified: list[str] = Field(default_factory=list)
    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    objects_checked: int = 0
    bytes_hashed: int = 0
    seconds: float = 0.0
    root_digest: str | None = None
    key_id: str | None = None

    @property
    def deviates(self) -> bool:
        return self.verdict == "fail"

    def summary(self) -> str:
        """One line for the index and the task log: what deviated, or what was confirmed.

        File names, hosts and paths come from storage and serving hosts: control characters (a newline that
        would forge a second log line) are escaped here, once, for every place the line is shown.
        """
        from airlock.redact import one_line

        cost = f"{self.bytes_hashed} bytes re-hashed in {self.seconds:.2f}s"
        if self.verdict == "error":
            text = f"could not check {self.target.describe()}: {'; '.join(self.problems)} ({cost})"
        elif self.verdict == "pass":
            text = (f"intact: {self.objects_checked} objects of {self.target.describe()} match root "
                    f"sha256:{self.root_digest} signed by {self.key_id} ({cost})")
        else:
            parts = [f"{what} {_names(keys)}" for what, keys in
                     (("modified", self.modified), ("added", self.added), ("removed", self.removed)) if keys]
            text = f"DEVIATION in {self.target.describe()}: {'; '.join(parts + self.problems)} ({cost})"
        return one_line(text)

    def to_json_dict(self) -> dict:
        return self.model_dump(mode="json")


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f" and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else "")


# --------------------------------------------------------------------------- the reference


@dataclass(frozen=True)
class SignedReference:
    """What a version must hold, from its signatures, and what did not verify on the way there.

    ``files``: ``files/<path>`` -> sha256 from ``model.sig`` (verified with the
    host trust store), or from the signed plan when the signature itself is
    damaged. ``others``: every non-file object of the plan -> sha256
    (``plan_trusted`` says whether the plan is the one the verified index pins).
    """

    model: str
    version: str
    files: dict[str, str]
    others: dict[str, str]
    signature_ok: bool
    plan_trusted: bool
    root_digest: str | None
    key_id: str | None
    state: ModelState | None  # from the verified chain; None when it did not verify
    problems: tuple[str, ...] = field(default=())

    @property
    def expected(self) -> dict[str, str]:
        return {**self.others, **self.files}


def load_reference(registry: Registry, model: str | ModelName, version: str, trust: TrustStore) -> SignedReference:
    """The signed reference of ``model@version`` (see :class:`SignedReference`).

    Integrity problems (an index, plan or signature that does not verify) are
    collected, not raised: they are findings. What stops the check from running
    at all (storage unreachable) raises.
    """
    from airlock.registry import Layout, ModelName, RegistryIndexError, StoredObjectError, signed_subject_name
    from airlock.registry.promotion import load_plan, load_released
    from airlock.verify import Failure, VerificationError, verify_bundle

    name = model if isinstance(model, ModelName) else ModelName.parse(model)
    problems: list[str] = []
    state = None
    try:
        state = registry.index.verified(name, trust, registry.host_state).state
    except RegistryIndexError as exc:
        problems.append(f"index: {exc}")

    # RELEASED and the plan, read as Registry.released reads them, but without its index read: a damaged index
    # is a finding above, and the plan must still name the objects to compare.
    plan = None
    released_plan_sha256 = None
    try:
        record = load_released(registry.store, name, version)
        if record is None:
            problems.append(f"{Layout.RELEASED}: missing (the version's commit marker was removed)")
        else:
            released_plan_sha256 = record.plan_sha256
    except StoredObjectError as exc:
        problems.append(f"{Layout.RELEASED}: {exc}")
    try:
        loaded = load_plan(registry.store, name, version)
        if loaded is None:
            problems.append(f"{Layout.PLAN}: missing")
        else:
            plan = loaded[0]
            if released_plan_sha256 is not None and hashlib.sha256(loaded[1]).hexdigest() != released_plan_sha256:
                problems.append(f"{Layout.PLAN}: is not the plan RELEASED names (sha256:{released_plan_sha256})")
                released_plan_sha256 = None
    except StoredObjectError as exc:
        problems.append(f"{Layout.PLAN}: {exc}")

    plan_trusted = False
    version_state = state.version(version) if state is not None else None
    if state is not None and version_state is None:
        problems.append(f"index: {name}@{version} is not in the verified index")
    elif version_state is not None and plan is not None and released_plan_sha256 is not None:
        if version_state.plan_sha256 != released_plan_sha256:
            problems.append(f"plan: RELEASED names sha256:{released_plan_sha256}, the signed index promoted "
                            f"sha256:{version_state.plan_sha256}")
        elif version_state.root_digest != plan.root_digest:
            problems.append(f"plan: root sha256:{plan.root_digest}, the signed index promoted "
                            f"sha256:{version_state.root_digest}")
        else:
            plan_trusted = True

    plan_files = {o.key: o.sha256 for o in plan.objects if o.role == "file"} if plan else {}
    # Untrusted, the stored plan still names the objects (its problem is reported above).
    others = {o.key: o.sha256 for o in plan.objects if o.role != "file"} if plan else {}
    files: dict[str, str] = {}
    signature_ok, root, key_id = False, None, None
    sig_key = Layout.key(name, version, Layout.SIGNATURE)
    bundle = registry.store.read(sig_key)
    if bundle is None:
        problems.append(f"{Layout.SIGNATURE}: missing")
    else:
        try:
            statement = verify_bundle(bundle, trust, source=registry.store.object_url(sig_key))
            signed = statement.manifest
            subject = signed_subject_name(name, version)
            if signed.model_name != subject:
                raise VerificationError(Failure.OTHER_MODEL, f"signed for {signed.model_name!r}, expected "
                                                             f"{subject!r}")
        except VerificationError as exc:
            problems.append(f"{Layout.SIGNATURE}: {exc.reason}")
        else:
            signature_ok = True
            files = {Layout.FILES + f.path: f.sha256 for f in signed.files}
            root, key_id = signed.root_digest, statement.key.key_id
            if plan is not None and signed.root_digest != plan.root_digest:
                problems.append(f"{Layout.SIGNATURE}: signs root sha256:{signed.root_digest}, the plan has "
                                f"sha256:{plan.root_digest}")
            elif plan_files and plan_files != files:
                problems.append(f"plan: its files differ from the signed ones ({_names(_differing(plan_files, files))})")
    if not signature_ok:
        # The signature is the reference; without it, the signed plan still says what each file must be.
        files = plan_files if plan_trusted else {}
        if not files:
            problems.append(f"{Layout.FILES}: no verified reference for the model files")
        root = plan.root_digest if plan_trusted and plan is not None else None
    return SignedReference(str(name), version, files, others, signature_ok, plan_trusted, root, key_id,
                           state, tuple(problems))


def _differing(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


# --------------------------------------------------------------------------- checks


def check_version(registry: Registry, target: WatchTarget | str, trust: TrustStore | None = None, *,
                  workers: int | None = None) -> WatchResult:
    """Re-hash every stored object of a registry version against its signed reference.

    ``target``: a registry :class:`WatchTarget` or ``ORG/NAME@VERSION``;
    ``trust`` defaults to the host's trust store (:func:`airlock.trust.host_trust_store`).
    """
    from airlock.registry import Layout, ModelName, parse_reference

    if isinstance(target, str):
        model, version = parse_reference(target, version_required=True)
        target = WatchTarget(kind="registry", model=str(model), version=str(version))
    started = time.monotonic()
    try:
        trust = trust if trust is not None else _host_trust()
        reference = load_reference(registry, target.model, target.version, trust)
        prefix = Layout.version_prefix(ModelName.parse(target.model), target.version)
        scan = _scan_store(registry, prefix, workers)
    except (AirlockError, OSError) as exc:
        return _error(target, exc, started)
    return _result(target, reference, scan, started, allowed=_CONTROL_KEYS)


def check_deployed_copy(path: Path, reference: SignedReference, *, target: WatchTarget | None = None,
                        workers: int | None = None) -> WatchResult:
    """Re-hash a pulled copy (``airlock pull`` DEST) against the registry's signed reference.

    The copy's own ``model.sig`` is one of the objects compared (with the
    registry's, whose digest the signed plan pins); nothing in the copy is ever
    used as a reference. Build ``reference`` with :func:`load_reference`.
    """
    path = Path(path)
    target = target or WatchTarget(kind="deployed", model=reference.model, version=reference.version,
                                   host=this_host(), dest=str(path), path=str(path))
    started = time.monotonic()
    if not (reference.signature_ok and reference.plan_trusted):
        # The registry copy's own check reports this (and its incident covers the deployments); a copy cannot be
        # judged against a reference that does not verify.
        return _error(target, WatchError(f"the registry's signed reference of {reference.model}@"
                                         f"{reference.version} does not verify: {'; '.join(reference.problems)}"),
                      started)
    try:
        scan = _scan_directory(path, workers, what="deployed copy")
    except (AirlockError, OSError) as exc:
        return _error(target, exc, started)
    # Problems that do not stop the references from verifying (a registry object that deviates) are the
    # registry check's findings; the copy is judged by its own bytes.
    copy_reference = SignedReference(reference.model, reference.version, reference.files, reference.others,
                                     True, True, reference.root_digest, reference.key_id, reference.state)
    return _result(target, copy_reference, scan, started, allowed=frozenset())


def check_target(registry: Registry, target: WatchTarget, trust: TrustStore | None = None, *,
                 mappings: PathMappings | None = None, host: str | None = None,
                 workers: int | None = None) -> WatchResult:
    """Check one planned target; a deployed copy only when the index records that deployment.

    Targets travel through XCom (operator-editable), so a deployed target is
    re-derived here: the verified index must hold a pull of exactly this
    version to this host and path, and the path must be where this host reads
    it (itself, or through ``mappings``).
    """
    if target.kind == "registry":
        return check_version(registry, target, trust, workers=workers)
    started = time.monotonic()
    try:
        trust = trust if trust is not None else _host_trust()
        reference = load_reference(registry, target.model, target.version, trust)
        _confirm_deployment(reference, target, mappings, host or this_host())
    except (AirlockError, OSError) as exc:
        return _error(target, exc, started)
    assert target.path is not None
    return check_deployed_copy(Path(target.path), reference, target=target, workers=workers)


def _confirm_deployment(reference: SignedReference, target: WatchTarget, mappings: PathMappings | None,
                        host: str) -> None:
    from airlock.watch.targets import load_path_mappings

    if reference.state is None:
        raise WatchError(f"{target.reference}: the index does not verify, so its pull records cannot say where "
                         f"copies are")
    pulls = [p for p in reference.state.pulls(target.version) if (p.host, p.dest) == (target.host, target.dest)]
    if not pulls:
        raise WatchError(f"no pull of {target.reference} to {target.label} is recorded in the index")
    assert target.host is not None and target.dest is not None
    expected = (Path(target.dest) if target.host == host
                else (mappings if mappings is not None else load_path_mappings()).local_path(target.host, target.dest))
    if expected is None or str(expected) != target.path:
        raise WatchError(f"{target.label} is not read at {target.path} from this host (expected {expected})")


def _host_trust() -> TrustStore:
    from airlock.trust import host_trust_store

    return host_trust_store()


# --------------------------------------------------------------------------- reading and hashing


@dataclass
class _Scan:
    digests: dict[str, str]  # key -> sha256 of what is there now
    irregular: dict[str, str]  # key -> what it is instead of a regular file
    unreadable: list[str]  # keys whose bytes changed or vanished while they were read
    bytes_hashed: int


def _scan_store(registry: Registry, prefix: str, workers: int | None) -> _Scan:
    from airlock.registry import FilesystemStore

    store = registry.store
    if isinstance(store, FilesystemStore):
        return _scan_directory(store.root / prefix, workers, what="registry version", skip=_CONTROL_KEYS)
    keys = [key[len(prefix):] for key in store.list_keys(prefix)]
    keys = [k for k in keys if k not in _CONTROL_KEYS]
    return _hash_objects(registry, prefix, keys, workers)


def _scan_directory(root: Path, workers: int | None, *, what: str, skip: frozenset[str] = frozenset()) -> _Scan:
    from airlock.manifest import hash_files

    try:
        info = os.lstat(root)
    except FileNotFoundError:
        raise WatchError(f"{what} {root} is not there (removed, or never landed)") from None
    if stat.S_ISLNK(info.st_mode):
        return _Scan({}, {".": "the directory was replaced by a symlink"}, [], 0)
    if not stat.S_ISDIR(info.st_mode):
        raise WatchError(f"{what} {root} is not a directory")
    files: list[tuple[str, int]] = []
    irregular: dict[str, str] = {}
    _walk(root, "", files, irregular)
    files = [(p, s) for p, s in files if p not in skip]
    try:
        digests = hash_files(root, files, workers=workers)
    except ManifestError as exc:
        return _rescan_after(root, files, irregular, exc, what)
    return _Scan({d.path: d.sha256 for d in digests}, irregular, [], sum(d.size for d in digests))


def _rescan_after(root: Path, files: list[tuple[str, int]], irregular: dict[str, str], exc: ManifestError,
                  what: str) -> _Scan:
    """One file could not be hashed in the parallel pass: an unreadable file cannot be judged (error); one that
    changed or vanished while being read deviates. Hashed again one by one, so every other file is still judged."""
    from airlock.manifest import hash_file
    from airlock.redact import one_line

    digests: dict[str, str] = {}
    unreadable: list[str] = []
    total = 0
    for relative, _size in files:
        path = root / relative
        try:
            digest = hash_file(path, relative)
        except ManifestError as failure:
            if not os.path.lexists(path):
                continue  # vanished: reported as removed
            if not os.access(path, os.R_OK, follow_symlinks=False):
                raise WatchError(f"{what} {root}: {relative} cannot be read by this process ({failure}); check "
                                 f"its permissions") from None
            unreadable.append(relative)
            continue
        digests[relative] = digest.sha256
        total += digest.size
    _log.info("%s %s: re-hashed file by file after %s", what, root, one_line(str(exc)))
    return _Scan(digests, irregular, unreadable, total)


def _walk(directory: Path, prefix: str, files: list[tuple[str, int]], irregular: dict[str, str]) -> None:
    try:
        entries = list(os.scandir(directory))
    except OSError as exc:
        raise WatchError(f"{directory}: cannot list it ({exc.strerror})") from None
    for entry in entries:
        relative = f"{prefix}{entry.name}"
        if entry.is_symlink():
            irregular[relative] = "a symlink"
        elif entry.is_dir(follow_symlinks=False):
            _walk(Path(entry.path), f"{relative}/", files, irregular)
        elif entry.is_file(follow_symlinks=False):
            files.append((relative, entry.stat(follow_symlinks=False).st_size))
        else:
            irregular[relative] = "a special file (device, FIFO or socket)"


def _hash_objects(registry: Registry, prefix: str, keys: list[str], workers: int | None) -> _Scan:
    """Stream and hash the objects of a non-filesystem store (S3), several at a time."""
    from airlock.manifest import usable_cores
    from airlock.registry import StoredObjectError

    store = registry.store

    def one(key: str) -> tuple[str, str | None, int]:
        stream = store.open_object(prefix + key)
        if stream is None:
            return key, None, 0  # listed, then gone: removed
        hasher = hashlib.sha256()
        total = 0
        try:
            with stream:
                while chunk := stream.read(_READ_CHUNK):
                    hasher.update(chunk)
                    total += len(chunk)
        except StoredObjectError:  # the backend saw the bytes differ from its own checksum while streaming
            return key, "damaged", total
        return key, hasher.hexdigest(), total

    # Object reads are network-bound: more streams than cores keep the link busy.
    with ThreadPoolExecutor(max_workers=workers or max(8, usable_cores()), thread_name_prefix="airlock-watch") as pool:
        outcomes = list(pool.map(one, keys))
    digests = {k: d for k, d, _ in outcomes if d is not None and d != "damaged"}
    unreadable = [k for k, d, _ in outcomes if d == "damaged"]
    return _Scan(digests, {}, unreadable, sum(n for _, _, n in outcomes))


# --------------------------------------------------------------------------- comparing


def _result(target: WatchTarget, reference: SignedReference, scan: _Scan, started: float, *,
            allowed: frozenset[str]) -> WatchResult:
    expected = reference.expected
    present = set(scan.digests) | set(scan.irregular) | set(scan.unreadable)
    modified = sorted(k for k in expected.keys() & scan.digests.keys() if scan.digests[k] != expected[k])
    modified += [k for k in sorted(expected.keys() & (set(scan.irregular) | set(scan.unreadable)))]
    added = sorted(k for k in present - expected.keys() - allowed)
    removed = sorted(k for k in expected.keys() - present)
    problems = list(reference.problems)
    problems += [f"{key}: is {what}" for key, what in sorted(scan.irregular.items())]
    problems += [f"{key}: changed or was replaced while being read" for key in scan.unreadable]
    deviates = bool(modified or added or removed or problems)
    result = WatchResult(
        target=target, verdict="fail" if deviates else "pass", modified=sorted(set(modified)), added=added,
        removed=removed, problems=problems, objects_checked=len(expected), bytes_hashed=scan.bytes_hashed,
        seconds=round(time.monotonic() - started, 3), root_digest=reference.root_digest, key_id=reference.key_id,
    )
    _log_cost(result)
    return result


def _error(target: WatchTarget, exc: BaseException, started: float) -> WatchResult:
    from airlock.redact import one_line

    message = one_line(str(exc) if isinstance(exc, AirlockError) else f"{type(exc).__name__}: {exc}")
    result = WatchResult(target=target, verdict="error", problems=[message],
                         seconds=round(time.monotonic() - started, 3))
    _log.warning("%s", result.summary())
    return result


def _log_cost(result: WatchResult) -> None:
    rate = result.bytes_hashed / result.seconds / 2**20 if result.seconds > 0 else 0.0
    from airlock.redact import one_line

    _log.info("%s: %s; %d bytes re-hashed in %.2fs (%.0f MiB/s)", one_line(result.target.describe()),
              result.verdict, result.bytes_hashed, result.seconds, rate)


# --------------------------------------------------------------------------- reporting back


def record_result(registry: Registry, result: WatchResult, *, actor: str, run_id: str | None = None) -> CheckedEvent:
    """Append the check to the version's index history (``checked``, check=integrity; no signer needed)."""
    label = result.target.label
    if len(label) > 512:  # the event's limit; the full path stays in the task log
        label = label[:509] + "..."
    return registry.record_check(result.target.model, result.target.version, check="integrity",
                                 verdict=result.verdict, target=label, summary=result.summary(), actor=actor,
                                 run_id=run_id)
