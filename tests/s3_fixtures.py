"""S3 helpers for integration tests against the stack's S3 server: a client and a bucket that leaves nothing behind."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3

from tests.conftest import require_env


def s3_client() -> Any:
    return boto3.client("s3", endpoint_url=require_env("AIRLOCK_S3_ENDPOINT"), region_name="us-east-1")


@contextmanager
def temporary_bucket(s3: Any, prefix: str) -> Iterator[str]:
    """A fresh bucket named ``<prefix>-<random>``; afterwards every object version, delete marker and open
    multipart upload goes with it (a test that failed half-way leaves those too)."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                s3.delete_object(Bucket=name, Key=item["Key"], VersionId=item["VersionId"])
        for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        s3.delete_bucket(Bucket=name)
