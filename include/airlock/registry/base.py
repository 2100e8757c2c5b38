"""What every registry backend provides, and where things live in it.

A backend is an :class:`ObjectStore`: a flat key space (POSIX keys relative to
the registry root) with exactly one way to write, :meth:`ObjectStore.put_if_absent`.
There is no overwrite and no delete anywhere in the protocol, so nothing a
backend has stored can be lost or changed through Airlock. Promotion, the index
and the readers are written once against this protocol; the filesystem and S3
backends only implement its primitives.

Layout (ARCHITECTURE.md), identical on every backend::

    models/<org>/<name>/<version>/promotion.json     the claim: every object's key, size and sha256 (first)
    models/<org>/<name>/<version>/files/...          model files
    models/<org>/<name>/<version>/model.sig          signature bundle over files/
    models/<org>/<name>/<version>/aibom.cdx.json     CycloneDX AI-BOM
    models/<org>/<name>/<version>/aibom.sig          DSSE bundle over the AI-BOM (when signed)
    models/<org>/<name>/<version>/reports/*.json     scan, eval, fingerprint baseline
    models/<org>/<name>/<version>/RELEASED           written last: the commit point
    index/<org>/<name>/events/<seq>.json             append-only status history, one object per event (hash chain)
    index/<org>/<name>/heads/<seq>.json              signed checkpoints of that chain (see airlock.registry.index)
    trust/trust.pem                                  a published copy of the trust store (optional, see below)

``promotion.json`` is not in ARCHITECTURE.md's sketch; it is what makes
"exactly one concurrent promotion wins" true (see :mod:`airlock.registry.promotion`).

``trust/trust.pem`` is the ``airlock keys export`` file, published there by the
key administrator with the storage's own tools (it must be replaceable, for
rotation and revocation, so Airlock's put-if-absent never writes it). It is
never an authority: anyone who can write the storage can replace it. A host
uses it only when its sha256 equals a fingerprint pinned in the host's own
configuration (:func:`airlock.trust.host_trust_store`).

Signature subjects: the ``model.sig`` of ``<org>/<name>@<version>`` signs the
subject name :func:`signed_subject_name` returns (``org/name@version``), so a
bundle cannot be replayed under another version of the same model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from airlock.errors import AirlockError
from airlock.manifest import SHA256_HEX

# Hub-style names: what Hugging Face accepts for users, orgs and repos, minus anything path-like.
# Always used with fullmatch (and anchored with \Z): "$" would accept a trailing newline, and
# "demo/tiny-gpt2\n" would be a second model that prints exactly like the first.
_NAME_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}\Z")
# Versions become a path segment / key segment on every backend: no separators, no dot-only names.
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}\Z")
# Hidden names the filesystem backend uses for partial writes; never valid as a stored key segment.
PARTIAL_PREFIX = ".airlock-partial."

# Small control objects (plans, markers, index events) are read whole; a larger one is not ours.
MAX_CONTROL_OBJECT_BYTES = 16 * 1024 * 1024

Source = Path | bytes


# --------------------------------------------------------------------------- errors


class RegistryError(AirlockError):
    """A registry operation could not be done; the message names the model, version, key or setting."""


class VersionConflictError(RegistryError):
    """The version already holds (or is claimed for) different content; names the first differing object."""


class VersionNotFoundError(RegistryError):
    """No released version by that name: absent, or a promotion that never reached RELEASED."""


class StoredObjectError(RegistryError):
    """A stored object does not have the bytes its promotion plan records (names the key)."""


class SourceChangedError(RegistryError):
    """A file to promote no longer has the size or sha256 the manifest recorded; nothing was stored from it."""


class RegistryIndexError(RegistryError):
    """An index change was refused (a transition the status does not allow) or the index is damaged."""


# --------------------------------------------------------------------------- names


@dataclass(frozen=True, order=True)
class ModelName:
    """``org/name``, each segment hub-safe, so it can be a key prefix on any backend."""

    org: str
    name: str

    @classmethod
    def parse(cls, value: str) -> ModelName:
        parts = value.split("/")
        if len(parts) != 2 or not all(_NAME_SEGMENT.fullmatch(p) for p in parts) or any(".." in p for p in parts):
            raise RegistryError(
                f"model name {value!r} must be ORG/NAME (letters, digits, '.', '_', '-'; no '..')"
            )
        return cls(parts[0], parts[1])

    def __str__(self) -> str:
        return f"{self.org}/{self.name}"


def check_version(version: str) -> str:
    if not _VERSION.fullmatch(version) or ".." in version:
        raise RegistryError(
            f"version {version!r} must start with a letter or digit and use only letters, digits, '.', '_', '+', '-'"
        )
    return version


def parse_reference(value: str, *, version_required: bool) -> tuple[ModelName, str | None]:
    """``ORG/NAME[@VERSION]`` as the CLI and derivation records write it."""
    name, sep, version = value.partition("@")
    model = ModelName.parse(name)
    if not sep:
        if version_required:
            raise RegistryError(f"{value!r}: a version is required (ORG/NAME@VERSION)")
        return model, None
    return model, check_version(version)


def source_repository(uri: str) -> str:
    """The source repository a model comes from: its source URI without the revision.

    ``hf://demo/tiny-gpt2@abc`` -> ``hf://demo/tiny-gpt2``; S3 and file drops keep
    their location (``s3://bucket/prefix/``, ``file:///path``). This is what a
    model's record in the index is fixed to at its first release.
    """
    from airlock.errors import SourceError
    from airlock.sources import parse_source_uri

    try:
        ref = parse_source_uri(uri)
    except SourceError as exc:
        raise RegistryError(str(exc)) from None
    return type(ref)(scheme=ref.scheme, location=ref.location, requested_revision=None).uri


def signed_subject_name(model: ModelName, version: str) -> str:
    """The in-toto subject name ``model.sig`` must carry for ``model@version`` (sign with it; pull expects it)."""
    return f"{model}@{check_version(version)}"


def check_sha256(value: str, what: str) -> str:
    if not SHA256_HEX.fullmatch(value):
        raise RegistryError(f"{what}: {value!r} is not a sha256 (64 lowercase hex characters)")
    return value


# --------------------------------------------------------------------------- layout


class Layout:
    """Key builders for ARCHITECTURE.md's registry layout; the only place that spells keys."""

    PLAN = "promotion.json"
    RELEASED = "RELEASED"
    SIGNATURE = "model.sig"
    AIBOM = "aibom.cdx.json"
    AIBOM_SIGNATURE = "aibom.sig"
    FILES = "files/"
    REPORTS = "reports/"
    TRUST_STORE = "trust/trust.pem"  # at the registry root, not per version

    @staticmethod
    def model_prefix(model: ModelName) -> str:
        return f"models/{model.org}/{model.name}/"

    @classmethod
    def version_prefix(cls, model: ModelName, version: str) -> str:
        return f"{cls.model_prefix(model)}{check_version(version)}/"

    @classmethod
    def key(cls, model: ModelName, version: str, relative: str) -> str:
        """The store key of ``relative`` (a key inside the version, e.g. ``files/config.json``)."""
        return cls.version_prefix(model, version) + relative

    @staticmethod
    def index_prefix(model: ModelName) -> str:
        return f"index/{model.org}/{model.name}/events/"

    @classmethod
    def event_key(cls, model: ModelName, seq: int) -> str:
        # Zero-padded so lexical listing order is sequence order on every backend.
        return f"{cls.index_prefix(model)}{seq:010d}.json"

    @staticmethod
    def heads_prefix(model: ModelName) -> str:
        return f"index/{model.org}/{model.name}/heads/"

    @classmethod
    def checkpoint_key(cls, model: ModelName, seq: int) -> str:
        """The signed checkpoint of the chain whose newest event is ``seq`` (same padding as events)."""
        return f"{cls.heads_prefix(model)}{seq:010d}.json"


# --------------------------------------------------------------------------- the backend protocol


@runtime_checkable
class ObjectStore(Protocol):
    """Five primitives; no overwrite, no delete. Keys are POSIX paths relative to the registry root."""

    @property
    def url(self) -> str:
        """Where the registry lives (``file:///...`` or ``s3://bucket/prefix``), for messages and BOM links."""
        ...

    def put_if_absent(self, key: str, source: Source, size: int, sha256: str) -> bool:
        """Store ``source`` under ``key`` unless the key exists; True when this call created it.

        Implementations check that the bytes they send have ``size`` and ``sha256``
        *before* the object becomes visible and raise :class:`SourceChangedError`
        otherwise, so a file that changed since its manifest is never stored. An
        object becomes visible whole or not at all.
        """
        ...

    def stored_sha256(self, key: str) -> str | None:
        """The sha256 of the bytes stored under ``key`` as the backend can best confirm it; None if absent."""
        ...

    def read(self, key: str, max_bytes: int = MAX_CONTROL_OBJECT_BYTES) -> bytes | None:
        """A small object's bytes, or None when absent; larger than ``max_bytes`` is an error."""
        ...

    def open_object(self, key: str) -> BinaryIO | None:
        """A stream of the stored bytes of ``key`` (any size; the caller closes it), or None when absent.

        Nothing is checked here: callers hash what they read and compare it with
        the plan. A backend that notices damage while streaming raises
        :class:`StoredObjectError` naming the key.
        """
        ...

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (recursive), sorted."""
        ...

    def list_children(self, prefix: str) -> list[str]:
        """Immediate child names under ``prefix`` (``prefix`` ends with '/'), sorted."""
        ...

    def object_url(self, key: str) -> str:
        """A URL naming ``key`` in this store (for references in BOMs and messages)."""
        ...
