"""A really signed model promoted through the registry API, for the ``airlock pull`` tests (no services needed)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from airlock.aibom import AibomInputs, ArtifactRef, serialize_aibom, build_aibom, sign_aibom
from airlock.manifest import Manifest, manifest_for_directory
from airlock.registry import ModelName, PromotionRequest, PromotionResult, Registry, signed_subject_name
from airlock.signing import LocalKeySigner, sign_manifest
from tests.signing_fixtures import make_model

MODEL = "acme/tiny"
VERSION = "1"
SOURCE = "hf://acme/tiny"


@dataclass(frozen=True)
class Promoted:
    """What was promoted, for comparing a pulled copy with it."""

    model_dir: Path
    manifest: Manifest
    result: PromotionResult
    artifacts: dict[str, Path]  # key inside the version (model.sig, aibom.cdx.json, ...) -> the promoted file

    def expected_tree(self) -> dict[str, bytes]:
        """Every file a pull of this version must produce, relative to DEST, with its bytes."""
        tree = {f"files/{f.path}": (self.model_dir / f.path).read_bytes() for f in self.manifest.files}
        tree.update({key: path.read_bytes() for key, path in self.artifacts.items()})
        return tree


def promote_signed(
    registry: Registry,
    base: Path,
    signer: LocalKeySigner,
    *,
    model: str = MODEL,
    version: str = VERSION,
    subject: str | None = None,
    aibom_signer: LocalKeySigner | None = None,
    sign_bom: bool = True,
    tamper_after_signing: str | None = None,
    extra_files: dict[str, bytes] | None = None,
    aibom_bytes: bytes | None = None,
    unbound_reports: dict[str, bytes] | None = None,
    forged_scan_report: bytes | None = None,
    owner: str = "ml-platform",
    risk_tier: str = "medium",
    source: str = SOURCE,
) -> Promoted:
    """Sign a small model for ``model@version`` (subject ``org/name@version`` unless given) and promote it.

    The AI-BOM is a real one (:func:`airlock.aibom.build_aibom`) for ``model@version``,
    pinning ``model.sig`` and ``reports/scan.json``, signed like the model; ``aibom_bytes``
    replaces it (a foreign BOM), ``unbound_reports`` adds reports it does not pin,
    ``forged_scan_report`` replaces the scan report after the BOM pinned the real one.
    ``tamper_after_signing`` names a file changed between signing and promotion:
    the registry then holds bytes that match its plan but not the signature.
    """
    work = base / f"promote-{model.replace('/', '_')}-{version}"
    model_dir = make_model(work / "model", with_safetensors=False)
    for relative, data in (extra_files or {}).items():
        (model_dir / relative).write_bytes(data)
    manifest = manifest_for_directory(model_dir)
    signed = sign_manifest(manifest, signer, model_name=subject or signed_subject_name(ModelName.parse(model), version))
    if tamper_after_signing is not None:
        (model_dir / tamper_after_signing).write_bytes(b"changed after signing")
        manifest = manifest_for_directory(model_dir)
    artifacts = work / "artifacts"
    artifacts.mkdir()
    (artifacts / "model.sig").write_bytes(signed.bundle_bytes)
    (artifacts / "scan.json").write_text(json.dumps({"verdict": "allow"}))
    if aibom_bytes is None:
        inputs = AibomInputs.from_manifest(
            manifest, model=model, version=version, source=source, revision=None,
            timestamp=datetime(2026, 5, 1, tzinfo=UTC), version_url=registry.version_url(model, version),
            artifacts=[ArtifactRef.from_file("signature", artifacts / "model.sig"),
                       ArtifactRef.from_file("scan-report", artifacts / "scan.json", key="reports/scan.json")],
        )
        aibom_bytes = serialize_aibom(build_aibom(inputs))
    bom = aibom_bytes
    if forged_scan_report is not None:
        (artifacts / "scan.json").write_bytes(forged_scan_report)
    (artifacts / "aibom.cdx.json").write_bytes(bom)
    stored = {"model.sig": artifacts / "model.sig", "aibom.cdx.json": artifacts / "aibom.cdx.json",
              "reports/scan.json": artifacts / "scan.json"}
    for name, data in (unbound_reports or {}).items():
        (artifacts / name).write_bytes(data)
        stored[f"reports/{name}"] = artifacts / name
    if sign_bom:
        (artifacts / "aibom.sig").write_bytes(sign_aibom(bom, aibom_signer or signer))
        stored["aibom.sig"] = artifacts / "aibom.sig"
    request = PromotionRequest.from_manifest(
        manifest, model=model, version=version, model_dir=model_dir, signature=stored["model.sig"],
        aibom=stored["aibom.cdx.json"], aibom_signature=stored.get("aibom.sig"),
        reports=tuple(path for key, path in stored.items() if key.startswith("reports/")),
        owner=owner, risk_tier=risk_tier, approver=f"policy:{risk_tier}", actor="test", source=source,
    )
    return Promoted(model_dir, manifest, registry.promote(request), stored)


def tree_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
