"""Lineage: the Asset events and OpenLineage datasets each task reports, and the XCom summaries.

Two kinds of Airflow Asset, never mixed:

* the **quarantine source** (``airlock://sources/<kind>/<name>``, group ``airlock-source``, name
  ``source:<kind>:<name>``): what came in from outside the trust boundary. ``hash_manifest`` records an
  event on it through :data:`SOURCE_ALIAS` with the pinned revision and the root digest. A blocked
  source has events here and nowhere else: it never shows up as a model.
* the **registry model** (``airlock://registry/<org>/<name>``, group ``airlock-registry-model``, named by
  its registry name): only what happens to released versions. ``promote`` records a release through
  :data:`RELEASE_ALIAS`, the checks (``model_integrity_watch``, ``model_fingerprint_nightly``) through
  :data:`CHECK_ALIAS`, ``model_incident`` a revocation through :data:`REVOCATION_ALIAS`. Every event's
  ``extra`` names the version, its root, signature and AI-BOM digests and the run id.

Three aliases for one asset kind, because a DAG scheduled on an alias is queued by the events recorded
through that alias: ``model_fingerprint_nightly`` schedules on :data:`RELEASE_ALIAS`, so a new version
triggers it while its own check events (and the watch's, and quarantine events) do not.

OpenLineage: the provider turns a task's ``inlets``/``outlets`` into the input and output datasets of its
events, and takes OpenLineage ``Dataset`` objects there as they are (Assets of an ``airlock://`` URI have no
OpenLineage converter, and converters drop ``extra``). :func:`attach_openlineage` puts the datasets a task
read and wrote -- source URI and revision, quarantine path, registry location and version, each with its
digests as the ``airlockDigests`` facet -- on the running task before the provider's listener reads them
(task callbacks run before listeners).

Airflow and OpenLineage are imported inside the functions that need them, so the summaries can be built
and tested without them.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    from airlock.checksums import VerificationReport
    from airlock.manifest import Manifest
    from airlock.quarantine import DownloadResult, Preflight, QuarantineArea
    from airlock.sources import ResolvedSource

SOURCE_ALIAS = "airlock-sources"
SOURCE_ASSET_GROUP = "airlock-source"
REGISTRY_MODEL_GROUP = "airlock-registry-model"
RELEASE_ALIAS = "airlock-registry-releases"
CHECK_ALIAS = "airlock-registry-checks"
REVOCATION_ALIAS = "airlock-registry-revocations"
REGISTRY_ALIASES = (RELEASE_ALIAS, CHECK_ALIAS, REVOCATION_ALIAS)
# Airflow 3.3 creates an Asset first seen through an alias with the group "asset" (the group is not carried by
# the event), but keeps the Asset's own extra: the kind is stated there too, besides the name and the URI.
SOURCE_ASSET_EXTRA = {"airlock_kind": "quarantine-source",
                      "about": "a model source as it came in from outside the trust boundary; not a registry model"}
REGISTRY_MODEL_EXTRA = {"airlock_kind": "registry-model",
                        "about": "a model in the signed registry: releases, checks and revocations of its versions"}
_log = logging.getLogger(__name__)
DIGESTS_FACET = "airlockDigests"
DIGESTS_FACET_SCHEMA = "https://airlock.invalid/spec/facets/1-0-0/AirlockDigestsDatasetFacet.json"
# What a registry-model event's extra may carry about the version (besides kind, model, version, run_id).
VERSION_DIGEST_KEYS = ("root_digest", "signature_sha256", "aibom_sha256", "plan_sha256", "key_id")


# --------------------------------------------------------------------------- Assets: the quarantine source


def source_asset_uri(resolved: ResolvedSource) -> str:
    return f"airlock://sources/{resolved.kind}/{quote(resolved.model_name, safe='/')}"


def source_asset_name(resolved: ResolvedSource) -> str:
    return f"source:{resolved.kind}:{resolved.model_name}"


def source_asset(resolved: ResolvedSource):
    from airflow.sdk import Asset

    return Asset(name=source_asset_name(resolved), uri=source_asset_uri(resolved), group=SOURCE_ASSET_GROUP,
                 extra=SOURCE_ASSET_EXTRA)


def source_alias():
    """The alias ``hash_manifest`` declares as its outlet (the source is only known at run time)."""
    from airflow.sdk import AssetAlias

    return AssetAlias(SOURCE_ALIAS)


def quarantine_event_extra(resolved: ResolvedSource, manifest: Manifest, run_id: str | None = None) -> dict[str, Any]:
    return {
        "stage": "quarantine",
        "source": resolved.uri,
        "revision": resolved.revision,
        "root_digest": manifest.root_digest,
        "files": len(manifest.files),
        "total_bytes": manifest.total_size,
        **({"run_id": run_id} if run_id else {}),
    }


def record_quarantine_event(outlet_events, resolved: ResolvedSource, manifest: Manifest,
                            run_id: str | None = None) -> dict[str, Any]:
    """An event on the source's Asset (never a registry model's); returns its ``extra``."""
    extra = quarantine_event_extra(resolved, manifest, run_id)
    outlet_events[source_alias()].add(source_asset(resolved), extra=extra)
    return extra


# --------------------------------------------------------------------------- Assets: the registry model


def registry_model_uri(model: str) -> str:
    return f"airlock://registry/{quote(model, safe='/')}"


def registry_model_asset(model: str):
    from airflow.sdk import Asset

    return Asset(name=model, uri=registry_model_uri(model), group=REGISTRY_MODEL_GROUP, extra=REGISTRY_MODEL_EXTRA)


def registry_alias(name: str):
    from airflow.sdk import AssetAlias

    if name not in REGISTRY_ALIASES:
        raise ValueError(f"{name!r} is not a registry-model alias")
    return AssetAlias(name)


def registry_event_extra(kind: str, model: str, version: str, run_id: str | None,
                         digests: Mapping[str, Any] | None = None, **details: Any) -> dict[str, Any]:
    """``extra`` of a registry-model event: what happened (kind), to which version, its digests, the run."""
    known = {k: digests[k] for k in VERSION_DIGEST_KEYS if digests and digests.get(k)}
    return {"kind": kind, "model": model, "version": version, **known, "run_id": run_id,
            **{k: v for k, v in details.items() if v is not None}}


def record_registry_event(outlet_events, alias: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    """An event on the registry model's Asset through one of :data:`REGISTRY_ALIASES`; returns its ``extra``."""
    outlet_events[registry_alias(alias)].add(registry_model_asset(str(extra["model"])), extra=dict(extra))
    return dict(extra)


def record_release_event(outlet_events, resolved: ResolvedSource, promotion: Mapping[str, Any],
                         run_id: str | None) -> dict[str, Any]:
    """The release of a version (``promote``): version, digests, where it came from, the run."""
    extra = registry_event_extra("released", promotion["model"], promotion["version"], run_id, promotion,
                                 source=resolved.uri, revision=resolved.revision, url=promotion.get("url"),
                                 created=promotion.get("created"))
    return record_registry_event(outlet_events, RELEASE_ALIAS, extra)


def record_watch_event(outlet_events, result, run_id: str | None, digests: Mapping[str, Any]) -> dict[str, Any]:
    """An integrity check of a version (``result``: :class:`airlock.watch.check.WatchResult`) on its registry
    model through :data:`CHECK_ALIAS`: verdict, what deviated (counts), the version's digests, the run."""
    target = result.target
    signed = {"root_digest": result.root_digest, "key_id": result.key_id}
    extra = registry_event_extra(
        "checked", target.model, target.version, run_id, {**digests, **{k: v for k, v in signed.items() if v}},
        check="integrity", target=target.describe(), verdict=result.verdict, modified=len(result.modified),
        added=len(result.added), removed=len(result.removed), bytes_hashed=result.bytes_hashed)
    return record_registry_event(outlet_events, CHECK_ALIAS, extra)


def record_revocation_event(outlet_events, model: str, version: str, run_id: str | None,
                            digests: Mapping[str, Any], *, incident: str, reason: str | None,
                            source: str | None) -> dict[str, Any]:
    """A revocation (``model_incident``) on the registry model through :data:`REVOCATION_ALIAS`."""
    extra = registry_event_extra("revoked", model, version, run_id, digests, incident=incident, reason=reason,
                                 incident_source=source)
    return record_registry_event(outlet_events, REVOCATION_ALIAS, extra)


def version_digests(registry, model: str, version: str) -> dict[str, Any]:
    """A version's root, signature, AI-BOM and plan digests from its stored plan; empty when unreadable.

    For lineage only (an event's ``extra``): no verdict is taken from it.
    """
    import hashlib

    from airlock.registry import ModelName, RegistryError
    from airlock.registry.promotion import load_plan

    try:
        loaded = load_plan(registry.store, ModelName.parse(model), version)
    except (RegistryError, ValueError):
        return {}
    if not loaded:
        return {}
    plan, data = loaded
    by_role = {o.role: o.sha256 for o in plan.objects}
    return {"root_digest": plan.root_digest, "signature_sha256": by_role.get("signature"),
            "aibom_sha256": by_role.get("aibom"), "plan_sha256": hashlib.sha256(data).hexdigest()}


# --------------------------------------------------------------------------- OpenLineage datasets


@dataclass(frozen=True)
class LineageDataset:
    """One OpenLineage dataset a task read or wrote, with its digests (plain data: testable without OpenLineage)."""

    namespace: str
    name: str
    digests: dict[str, Any] = field(default_factory=dict)
    version: str | None = None  # the source's revision, the registry version
    dropped: bool = False  # the task deleted it (the quarantine's teardown)

    def to_openlineage(self):
        """The ``openlineage.client`` Dataset the provider puts into the event as it is."""
        from openlineage.client.event_v2 import Dataset
        from openlineage.client.facet_v2 import dataset_version_dataset, lifecycle_state_change_dataset

        facets: dict[str, Any] = {DIGESTS_FACET: _digests_facet(self.digests)}
        if self.version:
            facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=self.version)
        if self.dropped:
            facets["lifecycleStateChange"] = lifecycle_state_change_dataset.LifecycleStateChangeDatasetFacet(
                lifecycleStateChange=lifecycle_state_change_dataset.LifecycleStateChange.DROP)
        return Dataset(namespace=self.namespace, name=self.name, facets=facets)


def _digests_facet(digests: Mapping[str, Any]):
    import attr
    from openlineage.client.generated.base import DatasetFacet

    @attr.define
    class AirlockDigestsDatasetFacet(DatasetFacet):
        """Airlock's digests of a dataset: root digest, per-file and report sha256s, revision."""

        digests: dict[str, Any] = attr.field(factory=dict)

        @staticmethod
        def _get_schema() -> str:
            return DIGESTS_FACET_SCHEMA

    return AirlockDigestsDatasetFacet(digests=dict(digests))


MAX_FILES_IN_FACET = 200  # a facet is a summary: beyond this the listing is counted, not listed


def source_dataset(resolved: ResolvedSource) -> LineageDataset:
    """The source as published: URI, pinned revision, and the checksums the source vouches for per file."""
    if resolved.kind == "hf":
        host = urlsplit(resolved.endpoint).netloc if resolved.endpoint else "huggingface.co"
        namespace, name = f"hf://{host}", resolved.location.strip("/")
    else:
        parts = urlsplit(resolved.uri)
        namespace = f"{parts.scheme}://{parts.netloc}" if parts.netloc else parts.scheme
        name = parts.path.lstrip("/") if parts.netloc else parts.path
    published = {}
    for f in resolved.files[:MAX_FILES_IN_FACET]:
        if f.lfs_sha256 or f.sha256:
            published[f.path] = f"sha256:{f.lfs_sha256 or f.sha256}"
        elif f.git_sha1:
            published[f.path] = f"git-sha1:{f.git_sha1}"
    return LineageDataset(namespace=namespace, name=name, version=resolved.revision, digests={
        "source": resolved.uri, "revision": resolved.revision, "files": len(resolved.files),
        "total_bytes": resolved.total_size, "published": published})


def quarantine_dataset(path: str, digests: Mapping[str, Any] | None = None, *, dropped: bool = False
                       ) -> LineageDataset:
    """The run's quarantine directory on this worker host."""
    return LineageDataset(namespace=f"file://{socket.gethostname() or 'localhost'}", name=str(path),
                          digests=dict(digests or {}), dropped=dropped)


def registry_dataset(url: str, version: str, digests: Mapping[str, Any]) -> LineageDataset:
    """A registry version at its location (``file:///...`` or ``s3://bucket/key``)."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        namespace, name = f"s3://{parts.netloc}", parts.path.lstrip("/")
    else:
        namespace, name = "file", parts.path or url
    return LineageDataset(namespace=namespace, name=name, version=version,
                          digests={k: v for k, v in digests.items() if v is not None})


def digests_of(summary: Any) -> dict[str, Any]:
    """The digests a task's summary names (``root_digest`` and every ``*sha256``), for a facet."""
    if not isinstance(summary, Mapping):
        return {}
    return {k: v for k, v in summary.items()
            if isinstance(v, str) and (k == "root_digest" or k.endswith("sha256")) and v}


# What each model_ingest task reads and writes: "source" (the published model at its revision), "quarantine"
# (this run's quarantine directory), "registry" (the version promoted). Tasks not listed report nothing.
INGEST_LINEAGE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "resolve_source": (("source",), ("quarantine",)),
    "prepare_quarantine": (("source",), ("quarantine",)),
    "download_to_quarantine": (("source",), ("quarantine",)),
    "verify_published_checksums": (("source", "quarantine"), ("quarantine",)),
    "hash_manifest": (("quarantine",), ("quarantine",)),
    "scan_model": (("quarantine",), ("quarantine",)),
    "evaluate": (("quarantine",), ("quarantine",)),
    "fingerprint_baseline": (("quarantine",), ("quarantine",)),
    "review_gate": (("quarantine",), ()),
    "approve": (("quarantine",), ()),
    "sign_model": (("quarantine",), ("quarantine",)),
    "build_aibom": (("quarantine",), ("quarantine",)),
    "promote": (("quarantine",), ("registry",)),
    "remove_quarantine": ((), ("dropped",)),
}


def ingest_datasets(task_id: str, source: ResolvedSource | None, quarantine: str | None, manifest_root: str | None,
                    returned: Any) -> tuple[list[LineageDataset], list[LineageDataset]]:
    """The inputs and outputs of one ``model_ingest`` task, from the run's records and what the task returned."""
    reads, writes = INGEST_LINEAGE.get(task_id, ((), ()))
    summary = returned if isinstance(returned, Mapping) else {}
    root = {"root_digest": manifest_root} if manifest_root else {}

    def build(kind: str, *, written: bool) -> LineageDataset | None:
        if kind == "source" and source is not None:
            return source_dataset(source)
        if kind == "dropped" and summary.get("kept_for_forensics"):
            return None  # kept, not dropped: nothing was written either
        if kind in ("quarantine", "dropped") and (quarantine or summary.get("quarantine")):
            digests = {**root, **(digests_of(summary) if written else {})}
            if source is not None:
                digests.update(source=source.uri, revision=source.revision)
            return quarantine_dataset(quarantine or str(summary["quarantine"]), digests, dropped=kind == "dropped")
        if kind == "registry" and summary.get("url") and summary.get("version"):
            return registry_dataset(str(summary["url"]), str(summary["version"]),
                                    {"model": summary.get("model"), **digests_of(summary)})
        return None

    inputs = [d for d in (build(k, written=False) for k in reads) if d is not None]
    outputs = [d for d in (build(k, written=True) for k in writes) if d is not None]
    return inputs, outputs


def attach_openlineage(task, inputs: Iterable[LineageDataset], outputs: Iterable[LineageDataset]) -> None:
    """Put the datasets on the running task's inlets/outlets, where the OpenLineage listener reads them.

    Airflow's own Asset handling ignores objects that are not Assets, so only OpenLineage sees these.
    """
    task.inlets = [*(task.inlets or []), *(d.to_openlineage() for d in inputs)]
    task.outlets = [*(task.outlets or []), *(d.to_openlineage() for d in outputs)]


def attach_ingest_lineage(task, task_id: str, run_id: str, quarantine_root, returned: Callable[[], Any]
                          ) -> tuple[list[LineageDataset], list[LineageDataset]]:
    """A ``model_ingest`` task's datasets, from the run's records (source, quarantine, manifest) and what the
    task returned, attached for the OpenLineage listener. Lineage never fails a task: errors are logged."""
    from pathlib import Path

    try:
        from airlock.errors import AirlockError
        from airlock.ingest import run_area, run_dir, run_source

        # The run's quarantine directory is the dataset (one name for the whole run, the teardown's included).
        directory = run_dir(Path(quarantine_root), run_id)
        try:
            source = run_source(Path(quarantine_root), run_id)
            area = run_area(Path(quarantine_root), run_id)
        except AirlockError:  # no source record (yet, or any more): what the task returned must do
            source, area = None, None
        manifest_root = None
        if area is not None and area.manifest_file.is_file():
            manifest_root = json.loads(area.manifest_file.read_bytes()).get("root_digest")
        try:
            summary = returned()
        except Exception:  # noqa: BLE001 - a failed task has no return value
            summary = None
        quarantine = str(directory) if directory.is_dir() else None
        inputs, outputs = ingest_datasets(task_id, source, quarantine, manifest_root, summary)
        attach_openlineage(task, inputs, outputs)
        return inputs, outputs
    except Exception as exc:  # noqa: BLE001 - lineage is a report, never a reason for the task to fail
        _log.warning("lineage of %s not reported: %s: %s", task_id, type(exc).__name__, exc)
        return [], []


# --------------------------------------------------------------------------- XCom summaries


def _model(resolved: ResolvedSource) -> dict[str, str]:
    return {"name": resolved.model_name, "source": resolved.uri, "revision": resolved.revision}


def prepare_summary(resolved: ResolvedSource, area: QuarantineArea, checked: Preflight) -> dict[str, Any]:
    return {
        "model": _model(resolved),
        "quarantine": str(area.path),
        "files": checked.files,
        "total_bytes": checked.total_bytes,
        "needed_bytes": checked.needed_bytes,
        "free_bytes": checked.free_bytes,
    }


def download_summary(resolved: ResolvedSource, area: QuarantineArea, result: DownloadResult) -> dict[str, Any]:
    return {
        "model": _model(resolved),
        "quarantine": str(area.path),
        "files_dir": str(area.files_dir),
        "files": result.files,
        "vendor_manifests": [f.path for f in resolved.vendor_manifests],
        "bytes": result.bytes,
        "fetched": result.fetched,
        "resumed": result.resumed,
        "already_present": result.already_present,
        "seconds": result.seconds,
    }


def verification_summary(area: QuarantineArea, report: VerificationReport) -> dict[str, Any]:
    return {
        "quarantine": str(area.path),
        "verdict": report.verdict,
        "checked_against": list(report.checked_against),
        "files": report.files,
        "verified": report.verified,
        "unverified": len(report.unverified),
        "report": str(area.report_file),
        "digests": str(area.digests_file),
    }


def manifest_summary(area: QuarantineArea, manifest: Manifest) -> dict[str, Any]:
    """What later stages (scan, sign, promote) need: where the files and the manifest are, and its digest."""
    return {
        "model": manifest.model.model_dump(mode="json"),
        "quarantine": str(area.path),
        "files_dir": str(area.files_dir),
        "manifest": str(area.manifest_file),
        "root_digest": manifest.root_digest,
        "files": len(manifest.files),
        "total_bytes": manifest.total_size,
        "ignore_paths": list(manifest.serialization.ignore_paths),
    }
