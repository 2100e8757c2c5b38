"""Unfinished multipart uploads a killed promotion leaves on S3: listed, checked, cleaned (local moto server).

The killed writer is a child process that starts a real multipart upload
through :class:`S3Store` and SIGKILLs itself right after its first part, so the
upload stays unfinished exactly as after a crash.

moto reports a fixed ``Initiated`` date (2010) for every upload; part
``LastModified`` times are real. Liveness goes by the newest of both, so these
tests give a "live" upload a part, as a real promotion's would have within
seconds.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import airlock.registry.leftovers as leftovers_policy
from airlock.cli import EXIT_NEGATIVE, EXIT_OK, main
from airlock.registry import Registry, S3Store
from airlock.registry.base import Layout, ModelName
from tests.conftest import require_env
from tests.registry_contract import MODEL, SIGNER, TRUST, request
from tests.s3_fixtures import s3_client, temporary_bucket

PART_SIZE = 5 * 1024 * 1024
NAME = ModelName.parse(MODEL)

_KILLED_UPLOAD = r"""
import os, signal, sys
from pathlib import Path
import boto3
from airlock.registry.s3 import S3Store

endpoint, bucket, key, path, size, sha256 = sys.argv[1:7]
client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
real_upload_part = client.upload_part

def upload_then_die(**kwargs):
    response = real_upload_part(**kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # killed between parts: no abort runs
    return response

client.upload_part = upload_then_die
# One part in flight: the parts go up in order, so the one stored is the first (parallel parts could race).
S3Store(client, bucket, "registry", part_size=5 * 1024 * 1024, max_parts_in_flight=1).put_if_absent(
    key, Path(path), int(size), sha256)
"""


@pytest.fixture(scope="module")
def s3() -> Any:
    return s3_client()


@pytest.fixture()
def bucket(s3: Any) -> Iterator[str]:
    with temporary_bucket(s3, "airlock-partial") as name:
        yield name


def _killed_upload(bucket: str, key: str, tmp_path: Path) -> None:
    data = os.urandom(PART_SIZE + 1024)
    source = tmp_path / f"big-{uuid.uuid4().hex}.bin"
    source.write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_UPLOAD, require_env("AIRLOCK_S3_ENDPOINT"), bucket, key, str(source),
         str(len(data)), hashlib.sha256(data).hexdigest()], capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr


def _uploads(s3: Any, bucket: str, prefix: str = "registry/") -> list[str]:
    return sorted(u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []))


def test_a_killed_multipart_upload_is_a_leftover_judged_by_its_last_part(s3: Any, bucket: str,
                                                                         tmp_path: Path) -> None:
    key = Layout.key(NAME, "1", "files/shard.bin")
    _killed_upload(bucket, key, tmp_path)
    store = S3Store(s3, bucket, "registry", part_size=PART_SIZE)
    [item] = store.leftovers("")
    assert (item.key, item.kind, item.size) == (key, "unfinished multipart upload", PART_SIZE)
    assert item.live  # its part is seconds old: a promotion may still be sending the next one
    assert not store.remove_leftover(item)
    later = time.time() + leftovers_policy.UPLOAD_STALE_S + 60
    [item] = store.leftovers("", now=later)
    assert not item.live
    assert store.remove_leftover(item, now=later)
    assert _uploads(s3, bucket) == []


def test_the_next_promotion_aborts_only_its_versions_dead_uploads(s3: Any, bucket: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _killed_upload(bucket, Layout.key(NAME, "1", "files/shard.bin"), tmp_path)
    _killed_upload(bucket, Layout.key(NAME, "2", "files/shard.bin"), tmp_path)
    monkeypatch.setattr(leftovers_policy, "UPLOAD_STALE_S", 0.0)  # the writers are dead: no need to wait an hour
    registry = Registry(S3Store(s3, bucket, "registry", part_size=PART_SIZE), signer=SIGNER, trust=TRUST)
    assert registry.promote(request(tmp_path, version="1")).created
    assert _uploads(s3, bucket) == [f"registry/{Layout.key(NAME, '2', 'files/shard.bin')}"]


def test_registry_check_lists_unfinished_uploads_and_clean_aborts_them(
        s3: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    spec = f"s3://{bucket}/registry"
    monkeypatch.setenv("AIRLOCK_S3_ENDPOINT", require_env("AIRLOCK_S3_ENDPOINT"))
    assert main(["registry", "check", "--registry", spec]) == EXIT_OK  # an empty registry is clean
    capsys.readouterr()

    key = Layout.key(NAME, "3", "files/shard.bin")
    _killed_upload(bucket, key, tmp_path)
    # Fresh: a promotion may still be sending it; a note, not a problem.
    assert main(["registry", "check", "--registry", spec]) == EXIT_OK
    assert f"note     {key}: unfinished multipart upload in progress" in capsys.readouterr().out

    monkeypatch.setattr(leftovers_policy, "UPLOAD_STALE_S", 0.0)
    assert main(["registry", "check", "--registry", spec]) == EXIT_NEGATIVE
    assert f"PROBLEM  {key}: leftover unfinished multipart upload, {PART_SIZE} bytes" in capsys.readouterr().out
    assert main(["registry", "check", "--registry", spec, "--clean"]) == EXIT_OK
    assert f"removed  {key}" in capsys.readouterr().out
    assert _uploads(s3, bucket) == []


def test_registry_check_on_a_missing_bucket_is_exit_2(s3: Any, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AIRLOCK_S3_ENDPOINT", require_env("AIRLOCK_S3_ENDPOINT"))
    spec = f"s3://airlock-missing-{uuid.uuid4().hex[:12]}/registry"
    for verb in ("check", "list"):
        assert main(["registry", verb, "--registry", spec]) == 2
        assert "does not exist" in capsys.readouterr().err
