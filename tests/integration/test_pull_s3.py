"""``airlock pull`` from an S3 registry on the local stack's S3 server (moto), in a bucket of its own."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airlock.cli import EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, main
from airlock.registry import Registry, S3Store
from airlock.registry.base import Layout, ModelName
from airlock.signing import LocalKeySigner
from tests.conftest import require_env
from tests.pull_fixtures import MODEL, VERSION, promote_signed, tree_of
from tests.s3_fixtures import s3_client, temporary_bucket
from tests.signing_fixtures import trust_store_for

PREFIX = "registry"
PART_SIZE = 5 * 1024 * 1024  # S3's minimum, so the 6 MiB shard is stored (and pulled back) as a multipart object


@pytest.fixture(scope="module")
def s3() -> Any:
    return s3_client()


@pytest.fixture()
def bucket(s3: Any) -> Iterator[str]:
    with temporary_bucket(s3, "airlock-pull") as name:
        yield name


@pytest.fixture()
def signer() -> LocalKeySigner:
    return LocalKeySigner.generate(key_name="airlock-model-signing", version=1)


@pytest.fixture()
def registry(s3: Any, bucket: str, signer: LocalKeySigner) -> Registry:
    return Registry(S3Store(s3, bucket, PREFIX, part_size=PART_SIZE), workers=4, signer=signer,
                    trust=trust_store_for(signer))


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, bucket: str, tmp_path: Path) -> None:
    # The CLI opens the registry the way a serving host does: AIRLOCK_REGISTRY + AIRLOCK_S3_ENDPOINT, with the
    # host's own state directory and no trust store configured unless the test says.
    monkeypatch.setenv("AIRLOCK_S3_ENDPOINT", require_env("AIRLOCK_S3_ENDPOINT"))
    monkeypatch.setenv("AIRLOCK_REGISTRY", f"s3://{bucket}/{PREFIX}")
    monkeypatch.setenv("AIRLOCK_ACTOR", "ops@serving-1")
    monkeypatch.setenv("AIRLOCK_HOST_STATE", str(tmp_path / "host-state"))
    for name in ("AIRLOCK_TRUST_STORE", "AIRLOCK_TRUST_STORE_SHA256"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("airlock.config.DEFAULT_TRUST_STORE", tmp_path / "etc-airlock-trust.pem")


def test_pull_from_s3_with_a_pinned_registry_trust_store(registry: Registry, s3: Any, bucket: str,
                                                         signer: LocalKeySigner, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    promoted = promote_signed(registry, tmp_path, signer, extra_files={"shard-big.bin": os.urandom(PART_SIZE + 4096)})
    published = trust_store_for(signer).dumps().encode()
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}/{Layout.TRUST_STORE}", Body=published)
    dest = tmp_path / "serving" / "llm"
    dest.parent.mkdir()

    # Published in the bucket is not trusted on its own...
    assert main(["pull", f"{MODEL}@{VERSION}", "--dest", str(dest)]) == EXIT_ERROR
    assert "no trust store configured" in capsys.readouterr().err
    # ...only when the host pins its digest.
    monkeypatch.setenv("AIRLOCK_TRUST_STORE_SHA256", hashlib.sha256(published).hexdigest())
    assert main(["pull", f"{MODEL}@{VERSION}", "--dest", str(dest)]) == EXIT_OK
    assert f"pulled {MODEL}@{VERSION} (approved)" in capsys.readouterr().out
    assert tree_of(dest) == promoted.expected_tree()
    assert all(p.stat().st_mode & 0o222 == 0 for p in [dest, *dest.rglob("*")])
    (event,) = registry.model_state(MODEL).pulls(VERSION)
    assert (event.actor, event.dest, event.root_digest) == ("ops@serving-1", str(dest), promoted.manifest.root_digest)


def test_a_tampered_s3_object_is_refused_by_name(registry: Registry, s3: Any, bucket: str, signer: LocalKeySigner,
                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    promote_signed(registry, tmp_path, signer)
    trust = tmp_path / "trust.pem"
    trust_store_for(signer).write(trust)
    key = f"{PREFIX}/{Layout.key(ModelName.parse(MODEL), VERSION, 'files/config.json')}"
    s3.put_object(Bucket=bucket, Key=key, Body=b'{"model_type": "evil"}')  # someone with raw bucket access
    dest = tmp_path / "llm"

    assert main(["pull", f"{MODEL}@{VERSION}", "--dest", str(dest), "--trust-store", str(trust)]) == EXIT_NEGATIVE
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("refused: files/config.json: stored object s3://") and "released as" in last
    assert not dest.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".airlock-pull.")] == []
    assert registry.model_state(MODEL).pulls() == []


def test_a_deleted_revocation_in_s3_is_still_refused(registry: Registry, s3: Any, bucket: str,
                                                     signer: LocalKeySigner, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    promote_signed(registry, tmp_path, signer)
    registry.revoke(MODEL, VERSION, reason="backdoor", actor="security")
    trust = tmp_path / "trust.pem"
    trust_store_for(signer).write(trust)
    # Someone with raw bucket access deletes the revocation event (its checkpoint stays behind).
    s3.delete_object(Bucket=bucket, Key=f"{PREFIX}/{Layout.event_key(ModelName.parse(MODEL), 1)}")
    dest = tmp_path / "llm"
    assert main(["pull", f"{MODEL}@{VERSION}", "--dest", str(dest), "--trust-store", str(trust)]) == EXIT_NEGATIVE
    assert "checkpoint #1" in capsys.readouterr().out.strip().splitlines()[-1]
    assert not dest.exists()
