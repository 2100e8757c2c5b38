"""Model sources: parse a source URI, pin it to an immutable revision, and fetch its bytes.

Three kinds of source:

``hf://org/name[@revision]``
    A Hugging Face (compatible) hub, through ``huggingface_hub``. Pinned to the
    commit sha; the listing carries the hub's published LFS sha256 and git blob ids.
``s3://bucket/prefix[?version=sha256:...]``
    A vendor drop, through boto3. Pinned to the objects' version ids and ETags;
    every fetch names the version and sends ``If-Match: <etag>``, so an object
    overwritten mid-run is refused by S3 itself.
``file:///abs/path[?version=sha256:...]``
    A local drop. ``airlock resolve`` pins it by hashing every file. The
    pipeline pins it cheaply (``file_pin="listing"``): each file's size, mtime,
    ctime, inode and device, with no byte read; the copy into quarantine
    refuses any file whose fingerprint moved (at open, after the last read, and
    at its path), hashes what it copies, and :func:`pin_content` then derives
    the content revision (the same ``sha256:`` ``airlock resolve`` prints) from
    that one pass, refusing a drop that is not the requested revision. ctime is
    what makes a metadata pin exact: every write moves it and nobody but root
    can set it back (see :func:`_settle` for the clock's granularity).

A drop's revision is ``sha256:<hex>`` over its canonical listing (paths, sizes,
version ids, ETags or digests). Passing it back (``?version=`` or the DAG's
``revision`` parameter) asserts the drop is still exactly that, the way an HF
commit sha does. Every later stage works on the :class:`ResolvedSource` this
module returns, never on a branch name or a "latest" listing, so a source that
moves while a run is in flight cannot change what Airlock ingests.

Vendor manifests (``SHA256SUMS``, ``model.sig``) at the root of a drop are
listed apart from the model files: they describe the drop, they are not part of
the model.

Endpoints may carry credentials (``http://user:token@hub``, ``?token=``). A
:class:`ResolvedSource` travels through XCom and logs, so it keeps the endpoint
redacted (:func:`airlock.redact.redact_url`) and every message names the
redacted form; the real URL lives only in the connection objects
(:class:`~airlock.connections.HubAccess`, :class:`~airlock.connections.S3Access`)
the fetchers are built from.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from airlock.errors import ManifestError, SourceError, SourceUnavailable
from airlock.redact import REDACTED, redact_url

if TYPE_CHECKING:
    from airlock.config import Settings
    from airlock.connections import HubAccess, S3Access
    from airlock.manifest import FileDigest

RESOLVED_SOURCE_SCHEMA = "airlock.resolved-source/v1"

SourceKind = Literal["hf", "s3", "file"]
SUPPORTED_SCHEMES: tuple[SourceKind, ...] = ("hf", "s3", "file")

# Root-level files of a drop that vouch for the rest of it.
SHA256SUMS = "SHA256SUMS"
MODEL_SIG = "model.sig"
VENDOR_MANIFEST_NAMES = (SHA256SUMS, MODEL_SIG)

_HF_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# Branches, tags and commit shas; no "..", no leading "-" (never an option), no whitespace.
_REVISION = re.compile(r"^(?!.*\.\.)(?!-)[A-Za-z0-9._/-]{1,255}$")
_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
_DROP_REVISION = re.compile(r"^sha256:[0-9a-f]{64}$")
# S3 bucket naming rules (lower case, digits, dots, hyphens; 3-63 characters).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
READ_CHUNK = 1 << 20


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class SourceRef:
    """A parsed source URI, before resolution.

    ``location`` is ``org/name`` (hf), ``bucket/prefix/`` (s3, prefix empty or
    ending in ``/``) or an absolute directory path (file).
    """

    scheme: SourceKind
    location: str
    requested_revision: str | None

    @property
    def repo_id(self) -> str:
        return self.location

    @property
    def uri(self) -> str:
        if self.scheme == "file":
            return Path(self.location).as_uri()
        return f"{self.scheme}://{self.location}"


def parse_source_uri(uri: str, revision: str | None = None) -> SourceRef:
    """Parse a source URI; ``revision`` may restate the URI's ``@rev``/``?version=`` but never contradict it.

    Raises :class:`SourceError` naming the rule the URI breaks.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise SourceError(f"source {uri!r}: expected SCHEME://LOCATION, e.g. hf://org/name")
    if scheme not in SUPPORTED_SCHEMES:
        raise SourceError(
            f"source {uri!r}: unsupported scheme {scheme!r} (supported: {', '.join(SUPPORTED_SCHEMES)})"
        )
    if _CONTROL.search(uri):
        raise SourceError(f"source {uri!r}: contains control characters")
    if scheme == "hf":
        return _parse_hf(uri, rest, revision)
    location, uri_version = _split_version(uri)
    chosen = _agree(uri, uri_version, revision)
    if chosen is not None and not _DROP_REVISION.fullmatch(chosen):
        raise SourceError(f"source {uri!r}: a drop's revision is sha256:<64 hex> (got {chosen!r})")
    if scheme == "s3":
        return SourceRef(scheme="s3", location=_s3_location(uri, location), requested_revision=chosen)
    return SourceRef(scheme="file", location=_file_location(uri, location), requested_revision=chosen)


def _parse_hf(uri: str, rest: str, revision: str | None) -> SourceRef:
    repo_id, at, uri_revision = rest.partition("@")
    if not _HF_REPO_ID.fullmatch(repo_id):
        raise SourceError(f"source {uri!r}: {repo_id!r} is not a Hugging Face repo id of the form org/name")
    if at and revision and uri_revision != revision:
        raise SourceError(
            f"source {uri!r}: revision {uri_revision!r} in the URI conflicts with revision {revision!r}"
        )
    chosen = revision or (uri_revision if at else "") or "main"
    if not _REVISION.fullmatch(chosen):
        raise SourceError(f"source {uri!r}: revision {chosen!r} is not a valid branch, tag or commit sha")
    return SourceRef(scheme="hf", location=repo_id, requested_revision=chosen)


def _split_version(uri: str) -> tuple[str, str | None]:
    """(everything before ``?``, the ``version`` query value); any other query or a fragment is refused."""
    parts = urlsplit(uri)
    if parts.fragment:
        raise SourceError(f"source {uri!r}: fragments (#...) are not allowed")
    location = uri.split("://", 1)[1].split("?", 1)[0]
    if not parts.query:
        return location, None
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=True)
    if set(query) != {"version"} or len(query["version"]) != 1:
        raise SourceError(f"source {uri!r}: the only query parameter allowed is one ?version=")
    return location, query["version"][0]


def _agree(uri: str, in_uri: str | None, given: str | None) -> str | None:
    if in_uri and given and in_uri != given:
        raise SourceError(f"source {uri!r}: version {in_uri!r} in the URI conflicts with revision {given!r}")
    return given or in_uri or None


def _s3_location(uri: str, location: str) -> str:
    bucket, _, prefix = location.partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise SourceError(f"source {uri!r}: {bucket!r} is not a valid S3 bucket name")
    if prefix and ("\\" in prefix or any(part in ("", ".", "..") for part in prefix.rstrip("/").split("/"))):
        raise SourceError(f"source {uri!r}: prefix {prefix!r} has empty, '.' or '..' segments or backslashes")
    if prefix and not prefix.endswith("/"):
        prefix += "/"  # a drop is a "directory": never match sibling keys that merely share a prefix
    return f"{bucket}/{prefix}"


def _file_location(uri: str, location: str) -> str:
    host, slash, path = location.partition("/")
    if host not in ("", "localhost") or not slash:
        raise SourceError(f"source {uri!r}: expected file:///absolute/path (no host)")
    path = unquote("/" + path)  # Path.as_uri() percent-encodes; undo it
    if _CONTROL.search(path) or "\\" in path:
        raise SourceError(f"source {uri!r}: path contains control characters or backslashes")
    trimmed = path.rstrip("/") or "/"
    if any(part in (".", "..") for part in trimmed.split("/")) or "//" in trimmed:
        raise SourceError(f"source {uri!r}: path {path!r} is not normalized ('.', '..' or empty segments)")
    return trimmed


# --------------------------------------------------------------------------- resolved form


class PublishedFile(BaseModel):
    """A file as the source publishes it, with whatever the source vouches for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    size: int = Field(ge=0)
    git_sha1: str | None = Field(
        default=None, description="hf: git blob id as stored in the repo (the LFS pointer for LFS files)"
    )
    lfs_sha256: str | None = Field(default=None, description="hf: sha256 of the content, published for LFS files")
    sha256: str | None = Field(default=None, description="file: sha256 of the content when the drop was pinned")
    # file, pinned by listing: the stat fingerprint every read of the file must still find (see FileFetcher).
    mtime_ns: int | None = Field(default=None, description="file (listing pin): st_mtime_ns")
    ctime_ns: int | None = Field(default=None, description="file (listing pin): st_ctime_ns")
    inode: int | None = Field(default=None, description="file (listing pin): st_ino")
    device: int | None = Field(default=None, description="file (listing pin): st_dev")
    version_id: str | None = Field(default=None, description="s3: object version id ('null' when unversioned)")
    etag: str | None = Field(default=None, description="s3: ETag, sent as If-Match on every fetch")


class ResolvedSource(BaseModel):
    """A source pinned to an immutable revision, with its file listing."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: str = Field(default=RESOLVED_SOURCE_SCHEMA, alias="schema")
    uri: str
    kind: SourceKind
    location: str
    requested_revision: str | None
    revision: str = Field(description="the immutable revision every later stage uses (commit sha or drop digest)")
    endpoint: str | None = Field(default=None, description="where it was resolved, credentials redacted")
    files: tuple[PublishedFile, ...]
    vendor_manifests: tuple[PublishedFile, ...] = ()
    pinned_by: Literal["content", "listing"] = Field(
        default="content",
        description="listing: a file drop pinned by stat fingerprints; its revision is the listing's until the "
                    "download pass pins the content (pin_content)",
    )

    @field_validator("endpoint")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        # This record is XCom: whoever builds it, a credential in the endpoint URL never gets stored.
        return redact_url(value) if value is not None else None

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files) + sum(f.size for f in self.vendor_manifests)

    @property
    def model_name(self) -> str:
        """``org/name`` for a hub repo, ``bucket/prefix`` for S3, the directory name for a local drop."""
        if self.kind == "file":
            return PurePosixPath(self.location).name or "root"
        return self.location.rstrip("/")

    @property
    def bucket(self) -> str:
        return self.location.split("/", 1)[0]

    @property
    def prefix(self) -> str:
        return self.location.split("/", 1)[1] if "/" in self.location else ""

    def to_json_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


def drop_revision(files: tuple[PublishedFile, ...], vendor_manifests: tuple[PublishedFile, ...]) -> str:
    """``sha256:<hex>`` over the canonical JSON of a drop's listing: the drop's immutable revision."""
    listing = sorted((*files, *vendor_manifests), key=lambda f: f.path)
    canonical = json.dumps(
        [f.model_dump(mode="json", exclude_none=True) for f in listing], sort_keys=True, separators=(",", ":")
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _split_vendor(
    files: list[PublishedFile],
) -> tuple[tuple[PublishedFile, ...], tuple[PublishedFile, ...]]:
    model = tuple(sorted((f for f in files if f.path not in VENDOR_MANIFEST_NAMES), key=lambda f: f.path))
    vendor = tuple(sorted((f for f in files if f.path in VENDOR_MANIFEST_NAMES), key=lambda f: f.path))
    return model, vendor


def _pin_drop(ref: SourceRef, files: list[PublishedFile], endpoint: str | None,
              pinned_by: Literal["content", "listing"] = "content") -> ResolvedSource:
    model, vendor = _split_vendor(files)
    if not model:
        raise SourceError(f"{ref.uri}: the drop holds no model files")
    revision = drop_revision(model, vendor)
    # A listing pin cannot be compared with a content revision: pin_content checks it after the download pass.
    if ref.requested_revision and ref.requested_revision != revision and pinned_by == "content":
        raise SourceError(
            f"{ref.uri}: the drop changed since it was pinned (expected {ref.requested_revision}, found {revision})"
        )
    return ResolvedSource(
        uri=ref.uri,
        kind=ref.scheme,
        location=ref.location,
        requested_revision=ref.requested_revision,
        revision=revision,
        endpoint=endpoint,
        files=model,
        vendor_manifests=vendor,
        pinned_by=pinned_by,
    )


# --------------------------------------------------------------------------- hf


def resolve_hf(ref: SourceRef, endpoint: str, token: str | None = None) -> ResolvedSource:
    """Pin a Hugging Face repo to its commit sha and list every file with published checksums."""
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile

    assert ref.requested_revision is not None
    # token=False, not None: never fall back to a token from the user's HF config files.
    api = HfApi(endpoint=endpoint, token=token or False)
    where = f"{ref.uri}@{ref.requested_revision} on {redact_url(endpoint)}"
    try:
        info = api.model_info(ref.repo_id, revision=ref.requested_revision)
        commit = info.sha
        if not commit or not _COMMIT_SHA.fullmatch(commit):
            raise SourceError(f"{where}: hub returned no commit sha ({commit!r})")
        if _COMMIT_SHA.fullmatch(ref.requested_revision) and commit != ref.requested_revision:
            raise SourceError(f"{where}: hub answered with a different commit {commit}")
        entries = api.list_repo_tree(ref.repo_id, revision=commit, recursive=True)
        files = tuple(
            sorted(
                (_published_file(entry) for entry in entries if isinstance(entry, RepoFile)),
                key=lambda f: f.path,
            )
        )
    except RepositoryNotFoundError:
        raise SourceError(f"{where}: repository not found (or the token may not read it)") from None
    except RevisionNotFoundError:
        raise SourceError(f"{where}: revision not found") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        error = SourceUnavailable if status is None or status >= 500 or status in (408, 429) else SourceError
        raise error(f"{where}: hub error (HTTP {status or 'no response'})") from None
    except (httpx2.TransportError, OSError) as exc:
        raise SourceUnavailable(f"{where}: hub unreachable ({type(exc).__name__})") from None
    if not files:
        raise SourceError(f"{where}: the revision lists no files")
    return ResolvedSource(
        uri=ref.uri,
        kind="hf",
        location=ref.repo_id,
        requested_revision=ref.requested_revision,
        revision=commit,
        endpoint=endpoint,
        files=files,
    )


def _published_file(entry) -> PublishedFile:  # entry: huggingface_hub.hf_api.RepoFile
    return PublishedFile(
        path=entry.path,
        size=entry.size,
        git_sha1=entry.blob_id,
        lfs_sha256=entry.lfs.sha256 if entry.lfs is not None else None,
    )


# --------------------------------------------------------------------------- s3


def resolve_s3(ref: SourceRef, access: S3Access) -> ResolvedSource:
    """Pin an S3 drop to the current object versions and ETags under its prefix."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, prefix = ref.location.partition("/")
    where = f"{ref.uri} on {access.where}"
    try:
        objects = _list_s3_objects(access.client(), bucket, prefix)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        error = SourceUnavailable if status >= 500 or status in (408, 429) else SourceError
        raise error(f"{where}: cannot list the drop ({code})") from None
    except BotoCoreError as exc:
        raise SourceUnavailable(f"{where}: S3 unreachable ({type(exc).__name__})") from None
    files = []
    for obj in objects:
        key = obj["Key"]
        relative = key[len(prefix) :]
        if key.endswith("/"):
            if obj["Size"] == 0:
                continue  # a console-made "folder" marker, not a file
            raise SourceError(f"{where}: object {key!r} ends in '/' but has content; refusing the drop")
        files.append(
            PublishedFile(path=relative, size=obj["Size"], version_id=obj.get("VersionId"), etag=obj["ETag"])
        )
    return _pin_drop(ref, files, access.endpoint)


def _list_s3_objects(client, bucket: str, prefix: str) -> list[dict]:
    """Current objects under ``prefix`` with their version ids; unversioned listing if versions are denied."""
    from botocore.exceptions import ClientError

    try:
        current = []
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            # Delete markers that are latest hide their key: such keys have no IsLatest version here.
            current.extend(v for v in page.get("Versions", []) if v.get("IsLatest"))
        return current
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("AccessDenied", "NotImplemented", "MethodNotAllowed"):
            raise
    # Without s3:ListBucketVersions the ETag (sent as If-Match) still pins each object's bytes.
    objects = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects.extend(page.get("Contents", []))
    return objects


# --------------------------------------------------------------------------- file


FilePin = Literal["content", "listing"]
# File timestamps come from the kernel's coarse clock (one tick: 1-10 ms). A write in the same tick as the change
# a pin recorded would leave mtime and ctime as they were, so a listing pin is taken only of files whose last
# change is at least this much older than the pin.
_TIMESTAMP_SETTLE_NS = 50_000_000


def resolve_file(ref: SourceRef, settings: Settings, *, file_pin: FilePin = "content") -> ResolvedSource:
    """Pin a local drop; symlinks and special files are refused, naming them.

    ``content`` hashes every file (``airlock resolve``); ``listing`` records
    each file's stat fingerprint without reading it (the pipeline: the
    download's pass derives the content revision, see :func:`pin_content`).
    """
    from airlock.manifest import hash_files, walk_files

    root = Path(ref.location)
    _check_file_drop_allowed(ref, root, settings)
    try:
        listed = walk_files(root)
        if file_pin == "listing":
            return _pin_drop(ref, _listing_pins(root, listed), None, pinned_by="listing")
        digests = hash_files(root, listed)
    except ManifestError as exc:
        raise SourceError(f"{ref.uri}: {exc}") from None
    files = [PublishedFile(path=d.path, size=d.size, sha256=d.sha256) for d in digests]
    return _pin_drop(ref, files, None)


def _listing_pins(root: Path, listed: list[tuple[str, int]]) -> list[PublishedFile]:
    infos = _settle(root, [path for path, _size in listed])
    files = []
    for path, _size in listed:
        info = infos[path]
        if not stat.S_ISREG(info.st_mode):
            raise ManifestError(f"{path}: no longer a regular file")
        files.append(PublishedFile(path=path, size=info.st_size, mtime_ns=info.st_mtime_ns,
                                   ctime_ns=info.st_ctime_ns, inode=info.st_ino, device=info.st_dev))
    return files


def _settle(root: Path, paths: list[str]) -> dict[str, os.stat_result]:
    """Each file's lstat, taken only once its last change is older than a clock tick (waiting if needed)."""
    import time

    for _ in range(100):
        infos = {path: os.lstat(root / path) for path in paths}
        newest = max((max(i.st_ctime_ns, i.st_mtime_ns) for i in infos.values()), default=0)
        wait_ns = newest + _TIMESTAMP_SETTLE_NS - time.time_ns()
        if wait_ns <= 0:
            return infos
        time.sleep(wait_ns / 1e9)
    raise ManifestError(f"{root}: files keep changing; the drop is still being written")


def pin_content(listed: ResolvedSource, model: Iterable[FileDigest], vendor: Iterable[FileDigest] = ()) -> ResolvedSource:
    """The content-pinned form of a listing-pinned drop, from the download's hashing pass.

    Every listed file must be in the pass with its listed size (the copy
    already refused any file whose fingerprint moved). The revision is then
    exactly what hashing the drop at resolution would have given, and a
    requested revision that differs is refused: the drop changed.
    """
    if listed.pinned_by != "listing":
        return listed
    digests = {d.path: d for d in model}
    vendor_digests = {d.path: d for d in vendor}

    def pinned(files: tuple[PublishedFile, ...], found: dict[str, FileDigest]) -> tuple[PublishedFile, ...]:
        out = []
        for file in files:
            digest = found.get(file.path)
            if digest is None or digest.size != file.size:
                raise SourceError(f"{listed.uri}: {file.path!r} was not copied as listed; the drop changed")
            out.append(PublishedFile(path=file.path, size=file.size, sha256=digest.sha256))
        return tuple(out)

    files, vendors = pinned(listed.files, digests), pinned(listed.vendor_manifests, vendor_digests)
    if set(digests) != {f.path for f in listed.files}:
        raise SourceError(f"{listed.uri}: the download pass does not match the listing")
    revision = drop_revision(files, vendors)
    if listed.requested_revision and listed.requested_revision != revision:
        raise SourceError(f"{listed.uri}: the drop changed since it was pinned "
                          f"(expected {listed.requested_revision}, found {revision})")
    return listed.model_copy(update={"revision": revision, "files": files, "vendor_manifests": vendors,
                                     "pinned_by": "content"})


def _check_file_drop_allowed(ref: SourceRef, root: Path, settings: Settings) -> None:
    try:
        info = os.lstat(root)
    except OSError as exc:
        raise SourceError(f"{ref.uri}: cannot read the drop ({exc.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        raise SourceError(f"{ref.uri}: the drop directory is a symlink; refused")
    if not stat.S_ISDIR(info.st_mode):
        raise SourceError(f"{ref.uri}: not a directory")
    real = Path(os.path.realpath(root))
    quarantine = Path(os.path.realpath(settings.quarantine_root))
    if real == quarantine or real.is_relative_to(quarantine) or quarantine.is_relative_to(real):
        raise SourceError(f"{ref.uri}: a drop may not overlap the quarantine root {quarantine}")
    if settings.file_drop_roots:
        if not any(real.is_relative_to(allowed) for allowed in settings.file_drop_roots):
            allowed = ", ".join(str(p) for p in settings.file_drop_roots)
            raise SourceError(f"{ref.uri}: outside AIRLOCK_FILE_DROP_ROOTS ({allowed})")
    elif settings.is_production:
        raise SourceError(f"{ref.uri}: file:// drops are disabled in production until AIRLOCK_FILE_DROP_ROOTS is set")


# --------------------------------------------------------------------------- entry points


def resolve_ref(
    ref: SourceRef,
    *,
    hub: HubAccess | None = None,
    s3: S3Access | None = None,
    settings: Settings | None = None,
    file_pin: FilePin = "content",
) -> ResolvedSource:
    """Pin a parsed source; collaborators default to the environment (the CLI's path).

    ``file_pin``: how a ``file://`` drop is pinned (see :func:`resolve_file`).
    """
    from airlock.config import load_settings
    from airlock.connections import hub_access_from_env, s3_access_from_env

    if ref.scheme == "hf":
        hub = hub or hub_access_from_env()
        return resolve_hf(ref, endpoint=hub.endpoint, token=hub.token)
    if ref.scheme == "s3":
        return resolve_s3(ref, s3 or s3_access_from_env())
    return resolve_file(ref, settings or load_settings(), file_pin=file_pin)


def resolve(
    uri: str,
    revision: str | None = None,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    s3: S3Access | None = None,
) -> ResolvedSource:
    """Parse ``uri`` and pin it; ``endpoint``/``token`` override the hub from the environment."""
    from airlock.connections import HubAccess

    ref = parse_source_uri(uri, revision)
    hub = HubAccess(endpoint=endpoint, token=token, origin="argument") if endpoint else None
    return resolve_ref(ref, hub=hub, s3=s3)


# --------------------------------------------------------------------------- fetching


class Sink(Protocol):
    """Where fetched bytes go: quarantine's bounded writer (it enforces size and deadline)."""

    def write(self, data: bytes | memoryview) -> int: ...
    def tell(self) -> int: ...
    def seek(self, offset: int, whence: int = 0) -> int: ...
    def truncate(self, size: int | None = None) -> int: ...


class Fetcher(Protocol):
    """Streams one listed file, from ``offset`` on, into a sink; knows which of its errors are worth a retry."""

    def fetch(self, file: PublishedFile, sink: Sink, offset: int) -> None: ...
    def is_transient(self, error: BaseException) -> bool: ...


def _silent_tqdm():
    from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

    class Silent(hf_tqdm):  # task logs get Airlock's summary lines, not progress bars
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent


@dataclass(frozen=True, repr=False)
class HfFetcher:
    """GET ``/<repo>/resolve/<commit>/<path>`` with huggingface_hub's streaming ``http_get``.

    ``hf_hub_download`` is not used: it names files after server-sent ETags and
    may copy from a shared cache outside quarantine. ``http_get`` keeps the hub's
    redirects, resumable retries and size check while Airlock owns the path.
    """

    endpoint: str  # the real URL (it may carry credentials): never printed, see __repr__
    repo_id: str
    revision: str
    token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (f"HfFetcher(endpoint={redact_url(self.endpoint)!r}, repo_id={self.repo_id!r}, "
                f"revision={self.revision!r})")

    def fetch(self, file: PublishedFile, sink: Sink, offset: int) -> None:
        from huggingface_hub import hf_hub_url
        from huggingface_hub.file_download import http_get
        from huggingface_hub.utils import build_hf_headers

        from airlock import __version__

        if offset >= file.size:
            return
        url = hf_hub_url(self.repo_id, file.path, revision=self.revision, endpoint=self.endpoint)
        headers = build_hf_headers(token=self.token or False, library_name="airlock", library_version=__version__)
        http_get(
            url,
            sink,  # type: ignore[arg-type]  # a file-like object: write/tell/seek/truncate
            resume_size=offset,
            headers=headers,
            expected_size=file.size,
            displayed_filename=file.path,
            tqdm_class=_silent_tqdm(),
        )

    def is_transient(self, error: BaseException) -> bool:
        import httpx2
        from huggingface_hub.errors import HfHubHTTPError

        if isinstance(error, HfHubHTTPError):
            status = error.response.status_code if error.response is not None else None
            return status is None or status >= 500 or status in (408, 429)
        # OSError covers http_get's "Consistency check failed" (short body): resume and retry.
        return isinstance(error, (httpx2.TransportError, OSError))


@dataclass(frozen=True)
class S3Fetcher:
    """GetObject with the pinned VersionId and ``If-Match`` ETag; ranged from ``offset`` to resume."""

    client: object
    bucket: str
    prefix: str

    def fetch(self, file: PublishedFile, sink: Sink, offset: int) -> None:
        from botocore.exceptions import ClientError

        if offset >= file.size:
            return
        request = {"Bucket": self.bucket, "Key": f"{self.prefix}{file.path}"}
        if file.version_id and file.version_id != "null":
            request["VersionId"] = file.version_id
        if file.etag:
            request["IfMatch"] = file.etag
        if offset:
            request["Range"] = f"bytes={offset}-"
        try:
            response = self.client.get_object(**request)  # type: ignore[attr-defined]
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (404, 412):
                raise SourceError(
                    f"s3://{self.bucket}/{request['Key']}: changed or removed since the drop was pinned (HTTP {status})"
                ) from None
            raise
        body = response["Body"]
        try:
            for chunk in body.iter_chunks(READ_CHUNK):
                sink.write(chunk)
        finally:
            body.close()

    def is_transient(self, error: BaseException) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError
        from urllib3.exceptions import HTTPError as Urllib3Error

        if isinstance(error, ClientError):
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return status >= 500 or status in (408, 429)
        return isinstance(error, (BotoCoreError, Urllib3Error, ConnectionError, TimeoutError))


@dataclass(frozen=True)
class FileFetcher:
    """Copies from a local drop, refusing a file that is no longer the regular file of the pinned size."""

    root: Path

    def fetch(self, file: PublishedFile, sink: Sink, offset: int) -> None:
        source = self.root / file.path
        try:
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise SourceError(f"{source}: cannot open ({exc.strerror}); changed since the drop was pinned?") from None
        with open(fd, "rb", buffering=0, closefd=True) as handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size != file.size:
                raise SourceError(f"{source}: no longer a regular file of {file.size} bytes; the drop changed")
            self._check_pin(source, file, info, "when opened")
            handle.seek(offset)
            while chunk := handle.read(READ_CHUNK):
                sink.write(chunk)
            # The bytes read are the pinned file's only if nothing moved while they were read,
            # and the path still names that file (a rename-swap leaves this descriptor on the old one).
            self._check_pin(source, file, os.fstat(fd), "while it was copied")
        try:
            self._check_pin(source, file, os.lstat(source), "at its path after the copy")
        except OSError as exc:
            raise SourceError(f"{source}: gone after the copy ({exc.strerror}); the drop changed") from None

    @staticmethod
    def _check_pin(source: Path, file: PublishedFile, info: os.stat_result, when: str) -> None:
        if file.mtime_ns is None:
            return  # pinned by content: the download pass is compared with the pinned sha256 instead
        found = (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev)
        if found != (file.size, file.mtime_ns, file.ctime_ns, file.inode, file.device):
            raise SourceError(f"{source}: changed since the drop was pinned ({when}: size, mtime, ctime or inode "
                              f"moved); refused")

    def is_transient(self, error: BaseException) -> bool:
        return False  # a local read that fails once will fail again


def fetcher_for(resolved: ResolvedSource, *, hub: HubAccess | None = None, s3: S3Access | None = None) -> Fetcher:
    """The fetcher for a resolved source; hub/S3 access default to the environment."""
    from airlock.connections import hub_access_from_env, s3_access_from_env

    if resolved.kind == "hf":
        hub = hub or hub_access_from_env()
        return HfFetcher(
            endpoint=_hub_endpoint(resolved, hub), repo_id=resolved.location, revision=resolved.revision,
            token=hub.token,
        )
    if resolved.kind == "s3":
        access = s3 or s3_access_from_env()
        return S3Fetcher(client=access.client(), bucket=resolved.bucket, prefix=resolved.prefix)
    return FileFetcher(root=Path(resolved.location))


def _hub_endpoint(resolved: ResolvedSource, hub: HubAccess) -> str:
    """The real endpoint to fetch from: the connection's, when it is the one the source was resolved on.

    The resolved record only has the redacted form. A credential-free endpoint
    is usable as it is (``airlock resolve --endpoint`` may have named another
    hub than the connection); a redacted one must be the connection's own.
    """
    if resolved.endpoint is None:
        raise SourceError(f"{resolved.uri}: the resolved source names no hub endpoint")
    if redact_url(hub.endpoint) == resolved.endpoint:
        return hub.endpoint
    if REDACTED not in resolved.endpoint:
        return resolved.endpoint
    raise SourceError(f"{resolved.uri}: resolved on {resolved.endpoint}, but the hub connection points to "
                      f"{redact_url(hub.endpoint)}; credentials are never stored with the resolved source")
