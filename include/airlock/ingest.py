"""The back half of ``model_ingest`` as plain functions: scan, sign, AI-BOM, promote.

Each function takes the quarantine area and what earlier stages recorded there
(the manifest, the reports), does one stage, writes its artefact next to the
model in quarantine, and returns a small JSON summary for XCom. The DAG only
wires them together and maps verdicts to task states, so the whole pipeline is
testable without a scheduler.

Artefacts in the quarantine area, promoted together with the files:

    <area>/manifest.json            (hash_manifest)
    <area>/reports/scan.json        ScanReport
    <area>/model.sig                OpenSSF model-signing bundle over the manifest
    <area>/aibom.cdx.json           CycloneDX 1.6 AI-BOM
    <area>/aibom.sig                DSSE bundle whose subject is the BOM digest
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from airlock.errors import AirlockError
from airlock.fsutil import atomic_write
from airlock.manifest import Manifest
from airlock.quarantine import QuarantineArea

SCAN_REPORT = "reports/scan.json"
SIGNATURE = "model.sig"
AIBOM = "aibom.cdx.json"
AIBOM_SIGNATURE = "aibom.sig"


class ScanBlocked(AirlockError):
    """The scan's verdict is block (or it could not scan): nothing from this model goes further."""


class RegistryConflict(AirlockError):
    """The registry already holds this version with different content."""


@dataclass(frozen=True)
class RegistryTarget:
    """Where an ingested model lands: ``models/<model>/<version>``."""

    model: str  # ORG/NAME
    version: str

    def to_json_dict(self) -> dict[str, str]:
        return {"model": self.model, "version": self.version}


def registry_target(source_kind: str, model_name: str, revision: str, override: str | None) -> RegistryTarget:
    """Registry name and version of an ingested model.

    The version is derived from the immutable revision (HF commit sha, or the
    drop's ``sha256:`` listing digest), so re-ingesting the same revision names
    the same version and immutability does the rest. Drops have no ``org/name``
    of their own: they need ``override``.
    """
    from airlock.registry import ModelName

    name = override or (model_name if source_kind == "hf" else None)
    if not name:
        raise AirlockError(f"a {source_kind}:// drop needs a registry name (ORG/NAME) for {model_name!r}")
    short = revision.removeprefix("sha256:")[:12]
    if not re.fullmatch(r"[0-9a-f]{12}", short):
        raise AirlockError(f"revision {revision!r} is not an immutable revision (commit sha or sha256: digest)")
    return RegistryTarget(model=str(ModelName.parse(name)), version=f"rev-{short}")


def load_manifest(area: QuarantineArea) -> Manifest:
    return Manifest.model_validate_json(area.manifest_file.read_text())


def _now() -> str:
    return datetime.now(UTC).isoformat()


# --------------------------------------------------------------------------- scan


def scan_quarantine(area: QuarantineArea, tier: str, log: Callable[[str], None]) -> dict[str, Any]:
    """Scan the quarantined files at ``tier``, write the ScanReport, log every finding; block unless allowed.

    Raises :class:`ScanBlocked` for a block and for "could not scan" alike (fail closed).
    """
    from airlock.scan import scan_model

    started = _now()
    report = scan_model(area.files_dir, tier)
    path = area.path / SCAN_REPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    report_bytes = (json.dumps(report.to_json_dict(), indent=2) + "\n").encode()
    atomic_write(path, report_bytes)
    lines = report.summary_lines()
    for line in lines:
        log(line)
    if not report.allowed:
        blocking = [line.strip() for line in lines[1:] if line.strip().startswith(("[block]", "[error]"))]
        raise ScanBlocked(
            f"scan verdict {report.verdict} (exit {report.exit_code}) at tier {tier}, report {path}: "
            + "; ".join(blocking)[:2000]
        )
    summary = {
        "verdict": report.verdict,
        "tier": tier,
        "requires_approval": report.requires_approval,
        "files": len(report.files),
        "flagged": len(report.findings("flag")),
        "report": str(path),
        "report_sha256": hashlib.sha256(report_bytes).hexdigest(),
        "started_at": started,
        "ended_at": _now(),
    }
    return summary


def approval_required(tier: str, scan_summary: dict[str, Any]) -> bool:
    """A human approves when the tier says so, or when the scan flagged something (e.g. remote code)."""
    from airlock.policy import policy_for

    return policy_for(tier).requires_approval or bool(scan_summary.get("requires_approval"))


def approver_of(approval: dict[str, Any] | None, tier: str, scan_summary: dict[str, Any]) -> str:
    """Who let this version in: the UI user who approved, or the policy that needed no approval.

    Checked again where it matters (before signing, at promotion) rather than
    trusting the DAG's branching: an approval task marked skipped or success by
    hand leaves no named approval, and a model that needs one is then refused.
    """
    if not approval:
        if approval_required(tier, scan_summary):
            raise AirlockError(f"tier {tier} (or a flagged finding) requires a human approval and none was recorded")
        return f"policy:{tier}:no-approval-required"
    if approval.get("chosen_options") != ["Approve"]:
        raise AirlockError(f"approval answer {approval.get('chosen_options')!r} is not an approval")
    user = approval.get("responded_by_user") or {}
    name, user_id = user.get("name"), user.get("id")
    if not (name or user_id):
        raise AirlockError("the approval does not say who approved")
    return f"{name} ({user_id})" if name and user_id and name != user_id else str(name or user_id)


_DOWNLOAD_TOOLS = {"hf": "huggingface_hub", "s3": "boto3"}


def ingest_stage_records(
    source_kind: str, downloaded: dict[str, Any], scanned: dict[str, Any], signed: dict[str, Any], run_id: str
) -> list[dict[str, Any]]:
    """Formulation tasks for the stages of this ingestion, each with the start and end it recorded."""
    from importlib.metadata import version

    from airlock import __version__

    download_tool = _DOWNLOAD_TOOLS.get(source_kind)
    records = [
        {"stage": "download", "tool": f"airlock-quarantine ({download_tool or 'local copy'})",
         "tool_version": f"{__version__}" + (f" / {download_tool} {version(download_tool)}" if download_tool else ""),
         "parameters": {"files": downloaded["files"], "bytes": downloaded["bytes"],
                        "revision": downloaded["model"]["revision"]},
         "started_at": downloaded["started_at"], "ended_at": downloaded["ended_at"], "run_id": run_id},
        {"stage": "scan", "tool": "airlock-scan", "tool_version": __version__,
         "parameters": {"tier": scanned["tier"], "picklescan": version("picklescan"),
                        "report_sha256": scanned["report_sha256"]},
         "started_at": scanned["started_at"], "ended_at": scanned["ended_at"], "run_id": run_id},
        {"stage": "sign", "tool": "airlock-sign (Vault Transit)", "tool_version": __version__,
         "parameters": {"key_id": signed["key_id"], "bundle_sha256": signed["bundle_sha256"],
                        "format": "model_signing v1.0 / sigstore bundle v0.3"},
         "started_at": signed["started_at"], "ended_at": signed["ended_at"], "run_id": run_id},
        {"stage": "promote", "tool": "airlock-registry", "tool_version": __version__,
         "parameters": {"source_kind": source_kind}, "started_at": _now(), "ended_at": None, "run_id": run_id},
    ]
    return records


# --------------------------------------------------------------------------- sign


def sign_quarantine(area: QuarantineArea, target: RegistryTarget, signer) -> dict[str, Any]:
    """Sign the manifest (no re-read of the files) and write ``model.sig`` next to it.

    The subject names ``ORG/NAME@VERSION`` (what ``airlock pull`` expects), so a
    signature cannot be replayed under another version of the same model.
    """
    from airlock.registry import ModelName, signed_subject_name
    from airlock.signing import sign_manifest, write_bundle

    started = _now()
    manifest = load_manifest(area)
    subject = signed_subject_name(ModelName.parse(target.model), target.version)
    signed = sign_manifest(manifest, signer, model_name=subject)
    write_bundle(signed.bundle_bytes, area.path / SIGNATURE)
    return {
        "signature": str(area.path / SIGNATURE),
        "bundle_sha256": signed.bundle_sha256,
        "key_id": signed.key_id,
        "key_fingerprint": signed.key_fingerprint,
        "root_digest": signed.root_digest,
        "model_name": signed.model_name,
        "files": signed.file_count,
        "started_at": started,
        "ended_at": _now(),
    }


# --------------------------------------------------------------------------- AI-BOM


def build_quarantine_aibom(
    area: QuarantineArea,
    target: RegistryTarget,
    *,
    stages: list[dict[str, Any]],
    run_id: str,
    registry_url: str | None,
    signer,
    derivation: dict | None = None,
    registry=None,
) -> dict[str, Any]:
    """Write and strictly validate ``aibom.cdx.json``, then sign it into ``aibom.sig``."""
    from airlock.aibom import (
        AibomInputs,
        ArtifactRef,
        DerivationRecord,
        StageRecord,
        resolve_parent,
        sign_aibom,
        write_aibom,
    )
    from airlock.signing import write_bundle

    manifest = load_manifest(area)
    record = DerivationRecord.load(derivation) if derivation else None
    parent = resolve_parent(record, registry) if record else None
    artifacts = [ArtifactRef.from_file("signature", area.path / SIGNATURE)]
    if (area.path / SCAN_REPORT).exists():
        artifacts.append(ArtifactRef.from_file("scan-report", area.path / SCAN_REPORT, key=SCAN_REPORT))
    inputs = AibomInputs.from_manifest(
        manifest,
        model=target.model,
        version=target.version,
        timestamp=datetime.now(UTC),
        model_dir=area.files_dir,
        version_url=registry_url,
        artifacts=artifacts,
        stages=[StageRecord.model_validate(stage) for stage in stages],
        run_id=run_id,
        derivation=record,
        parent=parent,
    )
    written = write_aibom(inputs, area.path / AIBOM)
    # Sign the bytes as stored, not a re-serialisation of the document.
    aibom_signature = sign_aibom(written.path.read_bytes(), signer)
    write_bundle(aibom_signature, area.path / AIBOM_SIGNATURE)
    return {
        "aibom": str(written.path),
        "aibom_sha256": written.sha256,
        "aibom_signature_sha256": hashlib.sha256(aibom_signature).hexdigest(),
        "parent": asdict(parent) if parent is not None else None,
    }


# --------------------------------------------------------------------------- promote


def promote_quarantine(
    area: QuarantineArea,
    target: RegistryTarget,
    registry,
    *,
    owner: str,
    tier: str,
    approver: str,
    actor: str,
) -> dict[str, Any]:
    """Promote files, signature, BOM and reports atomically; RELEASED is written last by the registry."""
    from airlock.registry.promotion import PromotionRequest

    manifest = load_manifest(area)
    reports = [area.path / SCAN_REPORT] if (area.path / SCAN_REPORT).exists() else []
    result = registry.promote(
        PromotionRequest.from_manifest(
            manifest,
            model=target.model,
            version=target.version,
            model_dir=area.files_dir,
            signature=area.path / SIGNATURE,
            aibom=area.path / AIBOM,
            aibom_signature=area.path / AIBOM_SIGNATURE,
            reports=reports,
            owner=owner,
            risk_tier=tier,
            approver=approver,
            actor=actor,
        )
    )
    return {**result.to_json_dict(), **target.to_json_dict()}


def open_configured_registry(s3_client_factory: Callable[[], Any]):
    """The registry at AIRLOCK_REGISTRY; for ``s3://`` with the client the caller's credentials give."""
    from airlock.config import load_settings
    from airlock.registry import open_registry

    spec = load_settings().registry
    return open_registry(spec, s3_client=s3_client_factory() if spec.startswith("s3://") else None)


def already_released(registry, target: RegistryTarget, root_digest: str) -> dict[str, Any] | None:
    """The released version's record if ``target`` already holds this exact model; a conflict if it differs.

    Checked before signing so that re-ingesting a revision is a no-op instead of
    a second signature that immutability would then refuse.
    """
    from airlock.registry.base import VersionNotFoundError

    try:
        released = registry.released(target.model, target.version)
    except VersionNotFoundError:
        return None
    if released.root_digest != root_digest:
        raise RegistryConflict(
            f"{target.model}@{target.version} is already released with root digest sha256:{released.root_digest}, "
            f"this ingestion has sha256:{root_digest}; a version is never rewritten"
        )
    return {**released.to_json_dict(), **target.to_json_dict(), "created": False}
