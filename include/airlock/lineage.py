"""Lineage: what each task returns as XCom, and the model's Asset events.

XCom is for small JSON summaries -- paths, counts, digests -- that later tasks
and the UI read; never file contents and never the full file listing twice.
The model itself is an Airflow Asset (one per model, URI
``airlock://models/<kind>/<name>``); the task that produces its manifest adds an
event to it through the :data:`MODEL_ALIAS` asset alias (the model is only
known at run time), carrying the pinned revision and the root digest.

Airflow is imported inside the functions that need it, so the summaries can be
built and tested without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from airlock.checksums import VerificationReport
    from airlock.manifest import Manifest
    from airlock.quarantine import DownloadResult, Preflight, QuarantineArea
    from airlock.sources import ResolvedSource

MODEL_ALIAS = "airlock-models"
MODEL_ASSET_GROUP = "airlock-model"


def model_asset_uri(resolved: ResolvedSource) -> str:
    return f"airlock://models/{resolved.kind}/{quote(resolved.model_name, safe='/')}"


def model_asset_name(resolved: ResolvedSource) -> str:
    return f"{resolved.kind}:{resolved.model_name}"


def model_alias():
    """The asset alias model-producing tasks declare as their outlet."""
    from airflow.sdk import AssetAlias

    return AssetAlias(MODEL_ALIAS)


def model_event_extra(resolved: ResolvedSource, manifest: Manifest, stage: str) -> dict[str, Any]:
    return {
        "stage": stage,
        "source": resolved.uri,
        "revision": resolved.revision,
        "root_digest": manifest.root_digest,
        "files": len(manifest.files),
        "total_bytes": manifest.total_size,
    }


def record_model_event(outlet_events, resolved: ResolvedSource, manifest: Manifest, stage: str) -> dict[str, Any]:
    """Add an event for the model's Asset through the alias; returns the event's ``extra``."""
    return add_model_event(outlet_events, resolved, model_event_extra(resolved, manifest, stage))


def record_promotion_event(outlet_events, resolved: ResolvedSource, promotion: dict[str, Any]) -> dict[str, Any]:
    """The model's Asset event for a promotion: registry version, root, signature and BOM digests."""
    keys = ("model", "version", "created", "url", "root_digest", "signature_sha256", "key_id", "aibom_sha256",
            "plan_sha256")
    extra = {"stage": "promote", "source": resolved.uri, "revision": resolved.revision,
             **{k: promotion[k] for k in keys if k in promotion}}
    return add_model_event(outlet_events, resolved, extra)


def add_model_event(outlet_events, resolved: ResolvedSource, extra: dict[str, Any]) -> dict[str, Any]:
    from airflow.sdk import Asset

    asset = Asset(name=model_asset_name(resolved), uri=model_asset_uri(resolved), group=MODEL_ASSET_GROUP)
    outlet_events[model_alias()].add(asset, extra=extra)
    return extra


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
