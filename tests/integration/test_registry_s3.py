"""The S3 registry backend against the local stack's S3 server (moto), with and without Object Lock.

Every test gets its own bucket; Object Lock buckets use GOVERNANCE retention so
the fixture can remove what the test wrote (COMPLIANCE could not be removed).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from airlock.registry import Registry, Retention, S3Store, SourceChangedError, StoredObjectError, open_registry
from airlock.registry.base import Layout, ModelName
from tests.conftest import require_env
from tests.registry_contract import MODEL, SIGNER, TRUST, RegistryContract, make_model, request

PART_SIZE = 5 * 1024 * 1024  # S3's minimum, so a 6 MiB file exercises multipart
TEST_RETENTION = Retention(mode="GOVERNANCE", days=1)


@pytest.fixture(scope="module")
def s3() -> Any:
    return boto3.client("s3", endpoint_url=require_env("AIRLOCK_S3_ENDPOINT"), region_name="us-east-1")


def _empty_and_delete(s3: Any, bucket: str) -> None:
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"],
                             BypassGovernanceRetention=True)
    for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    s3.delete_bucket(Bucket=bucket)


@pytest.fixture(params=["plain", "object-lock"])
def bucket(request: pytest.FixtureRequest, s3: Any) -> Iterator[str]:
    name = f"airlock-reg-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=request.param == "object-lock")
    if request.param == "object-lock":
        # A default rule, so registries opened without an explicit retention (child processes) use GOVERNANCE too.
        s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    yield name
    _empty_and_delete(s3, name)


@pytest.fixture()
def registry_spec(bucket: str, monkeypatch: pytest.MonkeyPatch) -> str:
    # Child processes open the registry from AIRLOCK_REGISTRY-style specs and the S3 env of the stack.
    monkeypatch.setenv("AIRLOCK_S3_ENDPOINT", require_env("AIRLOCK_S3_ENDPOINT"))
    return f"s3://{bucket}/registry"


@pytest.fixture()
def registry_factory(s3: Any, bucket: str) -> Callable[..., Registry]:
    def factory(store_wrapper: Callable[[Any], Any] | None = None, workers: int = 8) -> Registry:
        store = S3Store(s3, bucket, "registry", retention=TEST_RETENTION, part_size=PART_SIZE)
        return Registry(store_wrapper(store) if store_wrapper else store, workers=workers, signer=SIGNER,
                        trust=TRUST)

    return factory


class TestS3Registry(RegistryContract):
    pass


# --------------------------------------------------------------------------- S3 specifics


def _locked(s3: Any, bucket: str) -> bool:
    try:
        s3.get_object_lock_configuration(Bucket=bucket)
    except s3.exceptions.ClientError:
        return False
    return True


def test_object_lock_is_detected_and_applied(s3: Any, bucket: str, registry_factory: Callable[..., Registry],
                                             tmp_path: Path) -> None:
    registry = registry_factory()
    registry.promote(request(tmp_path))
    locked = _locked(s3, bucket)
    assert (registry.store.object_lock is not None) == locked
    for key in ("promotion.json", "files/config.json", "model.sig", "RELEASED"):
        head = s3.head_object(Bucket=bucket, Key=f"registry/{Layout.key(ModelName.parse(MODEL), '1', key)}")
        assert head.get("ObjectLockMode") == ("GOVERNANCE" if locked else None), key
    event = s3.head_object(Bucket=bucket, Key=f"registry/{Layout.event_key(ModelName.parse(MODEL), 0)}")
    assert event.get("ObjectLockMode") == ("GOVERNANCE" if locked else None)
    if locked:  # and a locked version cannot be deleted, even with delete rights
        key = f"registry/{Layout.key(ModelName.parse(MODEL), '1', 'RELEASED')}"
        version_id = s3.head_object(Bucket=bucket, Key=key)["VersionId"]
        with pytest.raises(s3.exceptions.ClientError, match="AccessDenied"):
            s3.delete_object(Bucket=bucket, Key=key, VersionId=version_id)


def test_bucket_default_retention_is_used_when_none_is_configured(s3: Any, bucket: str) -> None:
    if not _locked(s3, bucket):
        assert S3Store(s3, bucket).object_lock is None
        return
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 2}}})
    assert S3Store(s3, bucket).object_lock == Retention(mode="GOVERNANCE", days=2)


def test_large_file_goes_up_multipart_and_is_confirmed(registry_factory: Callable[..., Registry], s3: Any,
                                                       bucket: str, tmp_path: Path) -> None:
    big = os.urandom(PART_SIZE + 1024 * 1024)
    req = request(tmp_path, **{k: v for k, v in make_model(tmp_path, "big", extra={"shard.bin": big}).items()})
    registry = registry_factory()
    assert registry.promote(req).created
    released = registry.verify_version(MODEL, "1")
    assert released.object_sha256("files/shard.bin") == hashlib.sha256(big).hexdigest()
    body = s3.get_object(Bucket=bucket, Key=f"registry/{Layout.key(ModelName.parse(MODEL), '1', 'files/shard.bin')}")
    assert hashlib.sha256(body["Body"].read()).hexdigest() == hashlib.sha256(big).hexdigest()


def test_large_file_changed_since_manifest_is_aborted_not_stored(registry_factory: Callable[..., Registry],
                                                                 s3: Any, bucket: str, tmp_path: Path) -> None:
    big = os.urandom(PART_SIZE + 1024)
    kwargs = make_model(tmp_path, "big", extra={"shard.bin": big})
    (kwargs["model_dir"] / "shard.bin").write_bytes(os.urandom(len(big)))  # same size, other bytes
    registry = registry_factory()
    with pytest.raises(SourceChangedError, match="shard.bin"):
        registry.promote(request(tmp_path, **kwargs))
    key = f"registry/{Layout.key(ModelName.parse(MODEL), '1', 'files/shard.bin')}"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=key)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_an_object_planted_under_the_version_is_detected(registry_factory: Callable[..., Registry], s3: Any,
                                                         bucket: str, tmp_path: Path) -> None:
    # Someone wrote a key of the version before the promotion did: put-if-absent keeps it (nothing stored is
    # ever replaced), and the confirmation step refuses to release a version whose stored bytes are not the plan's.
    req = request(tmp_path)
    key = f"registry/{Layout.key(ModelName.parse(MODEL), '1', 'files/config.json')}"
    s3.put_object(Bucket=bucket, Key=key, Body=b"planted")
    registry = registry_factory()
    with pytest.raises(StoredObjectError, match="files/config.json"):
        registry.promote(req)
    assert registry.released_versions(MODEL) == []


def test_moto_does_not_validate_client_checksums_so_we_reread(s3: Any, bucket: str) -> None:
    # Why S3Store re-reads by default: this server keeps a client-supplied checksum without checking it.
    import base64

    wrong = base64.b64encode(hashlib.sha256(b"something else").digest()).decode()
    s3.put_object(Bucket=bucket, Key="probe", Body=b"data", ChecksumAlgorithm="SHA256", ChecksumSHA256=wrong)
    assert s3.head_object(Bucket=bucket, Key="probe", ChecksumMode="ENABLED")["ChecksumSHA256"] == wrong
    trusting = S3Store(s3, bucket, reread=False)
    assert trusting.stored_sha256("probe") == hashlib.sha256(b"something else").hexdigest()  # fooled
    with pytest.raises(StoredObjectError, match="stored bytes hash to"):
        S3Store(s3, bucket).stored_sha256("probe")  # the default re-read is not


def test_open_registry_from_an_s3_url(registry_spec: str, registry_factory: Callable[..., Registry],
                                      tmp_path: Path) -> None:
    registry_factory().promote(request(tmp_path))
    opened = open_registry(registry_spec)
    assert opened.url == registry_spec
    assert [r.version for r in opened.list()] == ["1"]
