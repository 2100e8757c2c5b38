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
)
from airlock.registry.core import Registry, ReleasedVersion, open_registry
from airlock.registry.filesystem import FilesystemStore
from airlock.registry.index import ModelState, PromotedEvent, PulledEvent, Status, StatusEvent, VersionState
from airlock.registry.promotion import PromotionPlan, PromotionRequest, PromotionResult, ReleasedRecord
from airlock.registry.s3 import Retention, S3Store

__all__ = [
    "FilesystemStore",
    "Layout",
    "ModelName",
    "ModelState",
    "ObjectStore",
    "PromotedEvent",
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
    "SourceChangedError",
    "Status",
    "StatusEvent",
    "StoredObjectError",
    "VersionConflictError",
    "VersionNotFoundError",
    "VersionState",
    "open_registry",
    "parse_reference",
    "signed_subject_name",
]
