"""A really signed version promoted the way ``model_ingest`` promotes it (actor ``airflow:model_ingest/<run>``),
for the Registry page's unit and browser tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from airlock.aibom import AibomInputs, ArtifactRef, build_aibom, serialize_aibom, sign_aibom
from airlock.manifest import manifest_for_directory
from airlock.registry import ModelName, PromotionRequest, PromotionResult, Registry, signed_subject_name
from airlock.signing import Signer, sign_manifest
from tests.signing_fixtures import make_model


def promote_version(registry: Registry, base: Path, signer: Signer, *, model: str, version: str,
                    owner: str = "ml-platform", risk_tier: str = "medium", source: str | None = None,
                    run_id: str = "manual__2026-05-01T00:00:00+00:00", approver: str | None = None,
                    scan_report: bytes = b'{"verdict": "allow"}') -> PromotionResult:
    """Sign a small model for ``model@version``, build and sign its AI-BOM, and promote it with a scan report."""
    source = source or f"hf://{model}"
    work = base / f"page-{model.replace('/', '_')}-{version}"
    model_dir = make_model(work / "model", with_safetensors=False)
    manifest = manifest_for_directory(model_dir)
    signed = sign_manifest(manifest, signer, model_name=signed_subject_name(ModelName.parse(model), version))
    artifacts = work / "artifacts"
    artifacts.mkdir()
    (artifacts / "model.sig").write_bytes(signed.bundle_bytes)
    (artifacts / "scan.json").write_bytes(scan_report)
    inputs = AibomInputs.from_manifest(
        manifest, model=model, version=version, source=source, revision="0" * 40,
        timestamp=datetime(2026, 5, 1, tzinfo=UTC), version_url=registry.version_url(model, version),
        artifacts=[ArtifactRef.from_file("signature", artifacts / "model.sig"),
                   ArtifactRef.from_file("scan-report", artifacts / "scan.json", key="reports/scan.json")],
    )
    bom = serialize_aibom(build_aibom(inputs))
    (artifacts / "aibom.cdx.json").write_bytes(bom)
    (artifacts / "aibom.sig").write_bytes(sign_aibom(bom, signer))
    request = PromotionRequest.from_manifest(
        manifest, model=model, version=version, model_dir=model_dir, signature=artifacts / "model.sig",
        aibom=artifacts / "aibom.cdx.json", aibom_signature=artifacts / "aibom.sig",
        reports=(artifacts / "scan.json",), owner=owner, risk_tier=risk_tier,
        approver=approver or f"policy:{risk_tier}", actor=f"airflow:model_ingest/{run_id}", source=source,
        source_revision="0" * 40,
    )
    return registry.promote(request)


def scan_report(verdict: str = "allow") -> bytes:
    return json.dumps({"schema": "airlock.scan/v1", "verdict": verdict, "files": []}).encode()
