"""The integrity watch and incident reports on the S3 backend (the local stack's S3 server)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from airlock.incident import Revocation, build_report, incident_id, list_reports, revoke_for_incident, store_report
from airlock.incident.respond import IncidentRequest
from airlock.registry import Registry, S3Store
from airlock.watch import check_version, record_result
from tests.conftest import require_env
from tests.pull_fixtures import MODEL, promote_signed
from tests.registry_contract import SIGNER, TRUST

OPENED = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture()
def s3() -> Any:
    return boto3.client("s3", endpoint_url=require_env("AIRLOCK_S3_ENDPOINT"), region_name="us-east-1")


@pytest.fixture()
def registry(s3: Any, tmp_path: Path) -> Iterator[Registry]:
    bucket = f"airlock-watch-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    registry = Registry(S3Store(s3, bucket, "registry"), signer=SIGNER, trust=TRUST)
    promote_signed(registry, tmp_path, SIGNER)
    yield registry
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=bucket)


def _key(registry: Registry, relative: str) -> str:
    return f"registry/models/acme/tiny/1/{relative}"


def test_the_watch_rehashes_s3_objects_against_the_signature(registry: Registry, s3: Any) -> None:
    store = registry.store
    intact = check_version(registry, f"{MODEL}@1", TRUST)
    assert intact.verdict == "pass", intact.summary()
    assert intact.bytes_hashed == sum(o.size for o in registry.released(MODEL, "1").plan.objects)
    # Someone with the bucket's credentials (not Airlock: it never overwrites) replaces and adds objects.
    s3.put_object(Bucket=store.bucket, Key=_key(registry, "files/config.json"), Body=b'{"evil": 1}')
    s3.put_object(Bucket=store.bucket, Key=_key(registry, "files/backdoor.py"), Body=b"import os")
    s3.delete_object(Bucket=store.bucket, Key=_key(registry, "files/tokenizer.json"))
    result = check_version(registry, f"{MODEL}@1", TRUST)
    assert (result.verdict, result.modified, result.added, result.removed) == (
        "fail", ["files/config.json"], ["files/backdoor.py"], ["files/tokenizer.json"])
    assert record_result(registry, result, actor="watch", run_id="w1").verdict == "fail"


def test_incident_reports_are_put_if_absent_on_s3(registry: Registry) -> None:
    request = IncidentRequest.from_params({"model": MODEL, "version": "1", "reason": "tampered", "source": "manual"})
    incident = incident_id("manual__s3", OPENED)
    revocation = revoke_for_incident(registry, request, incident=incident, actor="alice")
    report = build_report(registry, MODEL, "1", incident=incident, opened_at=OPENED, reason="tampered",
                          source="manual", actor="alice", run_id="manual__s3", revocation=revocation)
    stored, json_key, md_key = store_report(registry.store, report)
    assert json_key == f"incidents/acme/tiny/1/{incident}.json" and stored.revocation.outcome == "revoked"
    again, _, _ = store_report(registry.store, report.model_copy(update={"reason": "rewritten",
                                                                        "revocation": Revocation(outcome="failed")}))
    assert again.reason == "tampered" and registry.store.read(md_key) is not None
    assert [key for key, _ in list_reports(registry.store)] == [json_key]
    assert check_version(registry, f"{MODEL}@1", TRUST).verdict == "pass"  # nothing was written into the version
