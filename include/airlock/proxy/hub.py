"""The Hugging Face Hub HTTP shapes the proxy speaks, checked against the ``huggingface_hub`` in the lock (2.4).

Only what model downloads use (``hf_hub_download``, ``snapshot_download``,
``HfApi.model_info``/``repo_info``/``list_repo_tree``/``get_paths_info``,
``transformers.from_pretrained``):

* ``GET /api/models/<org>/<name>[/revision/<rev>]``: model info, ``sha`` (the
  commit) and ``siblings`` with size and LFS sha256 (``ModelInfo(**json)``).
* ``GET /api/models/<org>/<name>/tree/<rev>[/<path>]?recursive=&expand=``: entries
  ``{type, oid, size, path, lfs: {oid, size, pointerSize}}`` (``RepoFile``/``RepoFolder``).
* ``HEAD|GET /<org>/<name>/resolve/<rev>/<path>``: ``ETag`` and ``X-Linked-Etag``
  (the sha256: what ``get_hf_file_metadata`` keys the blob cache by),
  ``X-Linked-Size``, ``X-Repo-Commit`` (required, or the client refuses the
  endpoint), ``Content-Length``, ``Accept-Ranges``; GET honours one ``Range``
  (``http_get`` resumes with ``bytes=<n>-``).
* Errors: ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
  ``EntryNotFound``) and ``X-Error-Message`` headers plus ``{"error": reason}``
  (``hf_raise_for_status`` shows both). A refused *version* carries
  ``RevisionNotFound`` whatever its status code: the client then raises instead
  of falling back to a copy it cached earlier (a revoked version must not load
  from a serving host's cache either).

Every file is presented as an LFS file (its ``oid`` is the git sha1 of its LFS
pointer, as on the Hub), so clients see one sha256 per file, the signed one.
A version's commit id is a sha1 over the model, the version and the plan the
signed index pins: 40 hex digits as clients expect, stable, and different for
every version.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

COMMIT = re.compile(r"[0-9a-f]{40}\Z")
LFS_SPEC = "https://git-lfs.github.com/spec/v1"
ERROR_REPO = "RepoNotFound"
ERROR_REVISION = "RevisionNotFound"
ERROR_ENTRY = "EntryNotFound"
HEADER_COMMIT = "X-Repo-Commit"
HEADER_LINKED_ETAG = "X-Linked-Etag"
HEADER_LINKED_SIZE = "X-Linked-Size"
HEADER_ERROR_CODE = "X-Error-Code"
HEADER_ERROR_MESSAGE = "X-Error-Message"
_MAX_HEADER_MESSAGE = 900


@dataclass(frozen=True)
class HubFile:
    """One file of a version as the Hub describes it: path under the repo root, size, signed sha256."""

    path: str
    size: int
    sha256: str

    @property
    def pointer(self) -> bytes:
        return f"version {LFS_SPEC}\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @property
    def blob_id(self) -> str:
        """The git blob id of the file's LFS pointer: what the Hub reports as ``oid`` for an LFS file."""
        pointer = self.pointer
        return hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()  # noqa: S324 - git's object id

    def lfs(self) -> dict[str, Any]:
        return {"oid": self.sha256, "size": self.size, "pointerSize": len(self.pointer)}


def commit_id(model: str, version: str, plan_sha256: str) -> str:
    """The 40-hex commit a version is presented as (stable; pinned by the signed plan digest)."""
    return hashlib.sha1(f"airlock\0{model}\0{version}\0{plan_sha256}".encode()).hexdigest()  # noqa: S324


def model_info(model: str, commit: str, files: Iterable[HubFile], *, version: str, status: str,
               root_digest: str, key_id: str, promoted_at: datetime | None) -> dict[str, Any]:
    """``ModelInfo`` JSON (``files_metadata`` always on: siblings carry size and LFS sha256)."""
    when = promoted_at.isoformat().replace("+00:00", "Z") if promoted_at else None
    org = model.partition("/")[0]
    return {
        "_id": commit, "id": model, "modelId": model, "author": org, "sha": commit, "private": False,
        "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": ["airlock"],
        "lastModified": when, "createdAt": when,
        "siblings": [{"rfilename": f.path, "size": f.size, "blobId": f.blob_id,
                      "lfs": {"sha256": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}} for f in files],
        # Not a Hub field: what Airlock verified, for humans reading the JSON (clients ignore unknown keys).
        "airlock": {"version": version, "status": status, "root_digest": root_digest, "signed_by": key_id},
    }


def file_entry(file: HubFile) -> dict[str, Any]:
    return {"type": "file", "oid": file.blob_id, "size": file.size, "path": file.path, "lfs": file.lfs()}


def folder_entry(path: str) -> dict[str, Any]:
    return {"type": "directory", "oid": hashlib.sha1(f"airlock-tree\0{path}".encode()).hexdigest(),  # noqa: S324
            "size": 0, "path": path}


class NoSuchPath(LookupError):
    """The tree has no file or folder at that path."""


def tree(files: Mapping[str, HubFile], path: str, *, recursive: bool) -> list[dict[str, Any]]:
    """The entries under ``path`` ('' = root): immediate children, or everything below when ``recursive``.

    Folders first then files, each sorted, as the Hub lists them. A path that is
    neither a folder nor a file raises :class:`NoSuchPath` (the Hub's 404).
    """
    path = path.strip("/")
    if path in files:
        return [file_entry(files[path])]
    prefix = f"{path}/" if path else ""
    below = [p for p in files if p.startswith(prefix)]
    if path and not below:
        raise NoSuchPath(path)
    folders: set[str] = set()
    listed: list[str] = []
    for name in below:
        rest = name[len(prefix):]
        parts = rest.split("/")
        for depth in range(1, len(parts)):
            if recursive or depth == 1:
                folders.add(prefix + "/".join(parts[:depth]))
        if recursive or len(parts) == 1:
            listed.append(name)
    return [folder_entry(f) for f in sorted(folders)] + [file_entry(files[n]) for n in sorted(listed)]


def paths_info(files: Mapping[str, HubFile], paths: Iterable[str]) -> list[dict[str, Any]]:
    """``POST .../paths-info/<rev>``: the entry of each path that exists (files and folders); others are omitted."""
    entries = []
    folders = {posixpath.dirname(p) for p in files}
    folders |= {f for d in list(folders) for f in _ancestors(d)}
    for raw in paths:
        path = raw.strip("/")
        if path in files:
            entries.append(file_entry(files[path]))
        elif path and path in folders:
            entries.append(folder_entry(path))
    return entries


def _ancestors(folder: str) -> list[str]:
    parts = folder.split("/") if folder else []
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def error_headers(code: str | None, reason: str) -> dict[str, str]:
    """``X-Error-Code``/``X-Error-Message``; the message made header-safe (one printable ASCII line)."""
    from airlock.redact import one_line

    message = one_line(reason).encode("ascii", "backslashreplace").decode("ascii")
    if len(message) > _MAX_HEADER_MESSAGE:
        message = message[:_MAX_HEADER_MESSAGE - 3] + "..."
    headers = {HEADER_ERROR_MESSAGE: message}
    if code:
        headers[HEADER_ERROR_CODE] = code
    return headers


def file_headers(file: HubFile, commit: str) -> dict[str, str]:
    """What ``get_hf_file_metadata`` reads from a HEAD (and what a GET carries too)."""
    return {
        "ETag": f'"{file.sha256}"',
        HEADER_LINKED_ETAG: f'"{file.sha256}"',
        HEADER_LINKED_SIZE: str(file.size),
        HEADER_COMMIT: commit,
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Cache-Control": "private, no-store",  # a shared cache in between must not outlive a revocation
    }


# --------------------------------------------------------------------------- ranges


class UnsatisfiableRange(ValueError):
    """The requested range lies outside the file (416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range: bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` as inclusive ``(start, end)``; None means the whole file.

    Several ranges, other units and malformed values are ignored (the whole
    file is sent with 200, which RFC 9110 allows); a start past the end is
    :class:`UnsatisfiableRange`.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = (part.strip() for part in spec.partition("-"))
    if not dash or not (first or last) or any(p and not (p.isascii() and p.isdigit()) for p in (first, last)):
        return None
    if not first:  # a suffix: the last n bytes
        count = int(last)
        if count == 0 or size == 0:
            raise UnsatisfiableRange(header)
        return max(0, size - count), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size:
        raise UnsatisfiableRange(header)
    if end < start:
        return None
    return start, min(end, size - 1)
