"""The local S3-compatible server round-trips objects with SHA-256 checksums."""

from __future__ import annotations

import base64
import hashlib
import uuid

import boto3
import pytest

from tests.conftest import require_env


@pytest.fixture(scope="module")
def s3():
    return boto3.client("s3", endpoint_url=require_env("AIRLOCK_S3_ENDPOINT"), region_name="us-east-1")


@pytest.fixture()
def bucket(s3) -> str:
    name = f"airlock-test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    yield name
    for obj in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


def test_round_trip_with_sha256_checksum(s3, bucket: str) -> None:
    body = b"weights" * 1000
    expected = base64.b64encode(hashlib.sha256(body).digest()).decode()
    put = s3.put_object(Bucket=bucket, Key="models/x/files/model.safetensors", Body=body, ChecksumAlgorithm="SHA256")
    assert put["ChecksumSHA256"] == expected
    got = s3.get_object(Bucket=bucket, Key="models/x/files/model.safetensors", ChecksumMode="ENABLED")
    assert got["ChecksumSHA256"] == expected
    assert got["Body"].read() == body
