"""Model sources: parse a source URI and pin it to an immutable revision.

Every later stage works on the :class:`ResolvedSource` this module returns,
never on a branch name, so a repository that moves while a run is in flight
cannot change what Airlock ingests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from airlock.errors import SourceError

RESOLVED_SOURCE_SCHEMA = "airlock.resolved-source/v1"

_HF_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# Branches, tags and commit shas; no "..", no leading "-" (never an option), no whitespace.
_REVISION = re.compile(r"^(?!.*\.\.)(?!-)[A-Za-z0-9._/-]{1,255}$")
_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")

SUPPORTED_SCHEMES = ("hf",)


@dataclass(frozen=True)
class SourceRef:
    """A parsed source URI, before resolution."""

    scheme: Literal["hf"]
    repo_id: str
    requested_revision: str

    @property
    def uri(self) -> str:
        return f"{self.scheme}://{self.repo_id}"


def parse_source_uri(uri: str, revision: str | None = None) -> SourceRef:
    """Parse ``hf://org/name[@revision]``; ``revision`` overrides the ``@`` suffix only if they agree.

    Raises :class:`SourceError` naming the rule the URI breaks.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise SourceError(f"source {uri!r}: expected SCHEME://LOCATION, e.g. hf://org/name")
    if scheme not in SUPPORTED_SCHEMES:
        raise SourceError(
            f"source {uri!r}: unsupported scheme {scheme!r} (supported: {', '.join(SUPPORTED_SCHEMES)})"
        )
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
    return SourceRef(scheme="hf", repo_id=repo_id, requested_revision=chosen)


class PublishedFile(BaseModel):
    """A file as the source publishes it, with the checksums the source vouches for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    size: int = Field(ge=0)
    git_sha1: str = Field(description="git blob id of the file as stored in the repo (the LFS pointer for LFS files)")
    lfs_sha256: str | None = Field(default=None, description="sha256 of the content, published for LFS files")


class ResolvedSource(BaseModel):
    """A source pinned to an immutable revision, with its published file listing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_: str = Field(default=RESOLVED_SOURCE_SCHEMA, alias="schema")
    uri: str
    kind: Literal["hf"]
    repo_id: str
    requested_revision: str
    revision: str = Field(description="the immutable revision every later stage uses (HF commit sha)")
    endpoint: str
    files: tuple[PublishedFile, ...]

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


def resolve_hf(ref: SourceRef, endpoint: str, token: str | None = None) -> ResolvedSource:
    """Pin a Hugging Face repo to its commit sha and list every file with published checksums."""
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=endpoint, token=token or False)
    where = f"{ref.uri}@{ref.requested_revision} on {endpoint}"
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
        status = exc.response.status_code if exc.response is not None else "no response"
        raise SourceError(f"{where}: hub error (HTTP {status})") from None
    except (httpx2.TransportError, OSError) as exc:
        raise SourceError(f"{where}: hub unreachable ({type(exc).__name__})") from None
    if not files:
        raise SourceError(f"{where}: the revision lists no files")
    return ResolvedSource(
        uri=ref.uri,
        kind="hf",
        repo_id=ref.repo_id,
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


def resolve(uri: str, revision: str | None, *, endpoint: str, token: str | None = None) -> ResolvedSource:
    """Parse ``uri`` and pin it; the one entry point the DAG and the CLI use."""
    ref = parse_source_uri(uri, revision)
    return resolve_hf(ref, endpoint=endpoint, token=token)
