"""The model registry: immutable versions on a local directory or S3, with an append-only status index.

``open_registry()`` reads AIRLOCK_REGISTRY (a path, or ``s3://bucket/prefix``
with AIRLOCK_S3_ENDPOINT). Layout and protocol: :mod:`airlock.registry.base`
and :mod:`airlock.registry.promotion`.
"""

from airlock.registry.base import (
    Layout,
    ModelName,
    ObjectStore,
    RegistryError,
    RegistryIndexError,
    SourceChangedError,
    StoredObjectError,
    VersionConflictError,
    VersionNotFoundError,
    parse_reference,
    signed_subject_name,
    source_repository,
)
from airlock.registry.checkpoint import IndexIntegrityError
from airlock.registry.core import Registry, ReleasedVersion, open_registry
from airlock.registry.filesystem import FilesystemStore
from airlock.registry.hoststate import HostState
from airlock.registry.index import (
    CheckedEvent,
    ModelState,
    OwnershipEvent,
    PromotedEvent,
    PromotionClaim,
    PulledEvent,
    SourceMatch,
    Status,
    StatusEvent,
    VerifiedChain,
    VersionState,
)
from airlock.registry.promotion import PromotionPlan, PromotionRequest, PromotionResult, ReleasedRecord
from airlock.registry.s3 import Retention, S3Store

__all__ = [
    "CheckedEvent",
    "FilesystemStore",
    "HostState",
    "IndexIntegrityError",
    "Layout",
    "ModelName",
    "ModelState",
    "ObjectStore",
    "OwnershipEvent",
    "PromotedEvent",
    "PromotionClaim",
    "PromotionPlan",
    "PromotionRequest",
    "PromotionResult",
    "PulledEvent",
    "Registry",
    "RegistryError",
    "RegistryIndexError",
    "ReleasedRecord",
    "ReleasedVersion",
    "Retention",
    "S3Store",
    "SourceMatch",
    "SourceChangedError",
    "Status",
    "StatusEvent",
    "StoredObjectError",
    "VerifiedChain",
    "VersionConflictError",
    "VersionNotFoundError",
    "VersionState",
    "open_registry",
    "parse_reference",
    "signed_subject_name",
    "source_repository",
]
