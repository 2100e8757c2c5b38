"""A really signed model promoted through the registry API, for the ``airlock pull`` tests (no services needed)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from airlock.aibom import sign_aibom
from airlock.manifest import Manifest, manifest_for_directory
from airlock.registry import ModelName, PromotionRequest, PromotionResult, Registry, signed_subject_name
from airlock.signing import LocalKeySigner, sign_manifest
from tests.signing_fixtures import make_model

MODEL = "acme/tiny"
VERSION = "1"


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
) -> Promoted:
    """Sign a small model for ``model@version`` (subject ``org/name@version`` unless given) and promote it.

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
    bom = json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "root": manifest.root_digest}).encode()
    (artifacts / "aibom.cdx.json").write_bytes(bom)
    (artifacts / "scan.json").write_text(json.dumps({"verdict": "allow"}))
    stored = {"model.sig": artifacts / "model.sig", "aibom.cdx.json": artifacts / "aibom.cdx.json",
              "reports/scan.json": artifacts / "scan.json"}
    if sign_bom:
        (artifacts / "aibom.sig").write_bytes(sign_aibom(bom, aibom_signer or signer))
        stored["aibom.sig"] = artifacts / "aibom.sig"
    request = PromotionRequest.from_manifest(
        manifest, model=model, version=version, model_dir=model_dir, signature=stored["model.sig"],
        aibom=stored["aibom.cdx.json"], aibom_signature=stored.get("aibom.sig"), reports=(stored["reports/scan.json"],),
        owner="ml-platform", risk_tier="medium", approver="policy:medium", actor="test",
    )
    return Promoted(model_dir, manifest, registry.promote(request), stored)


def tree_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
