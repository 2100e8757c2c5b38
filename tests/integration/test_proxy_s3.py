"""The model proxy over an S3 registry on the local stack's S3 server (moto), in a bucket of its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from airlock.proxy.auth import add_consumer
from airlock.registry import HostState, ModelName, Registry, S3Store
from airlock.signing import LocalKeySigner
from tests.proxy_fixtures import run_client, running_proxy
from tests.pull_fixtures import promote_signed
from tests.s3_fixtures import s3_client, temporary_bucket
from tests.signing_fixtures import trust_store_for

MODEL = "acme/tiny-s3"
PREFIX = "registry"
PART_SIZE = 5 * 1024 * 1024  # the big file is stored as a multipart object (an ETag that is not an MD5)


@pytest.fixture()
def s3() -> Any:
    return s3_client()


@pytest.fixture()
def bucket(s3: Any) -> Iterator[str]:
    with temporary_bucket(s3, "airlock-proxy") as name:
        yield name


SNAPSHOT = """
import hashlib, json
from pathlib import Path
from huggingface_hub import snapshot_download
snapshot = Path(snapshot_download({repo!r}, revision='1'))
print(json.dumps({{p.relative_to(snapshot).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                  for p in snapshot.rglob('*') if p.is_file()}}))
"""


def test_snapshot_download_from_an_s3_registry_and_a_replaced_object_is_refused(
        s3: Any, bucket: str, tmp_path: Path) -> None:
    signer = LocalKeySigner.generate(key_name="airlock-model-signing", version=1)
    registry = Registry(S3Store(s3, bucket, PREFIX, part_size=PART_SIZE), workers=4, signer=signer,
                        trust=trust_store_for(signer), host_state=HostState(tmp_path / "writer-state"))
    promote_signed(registry, tmp_path, signer, model=MODEL, version="1",
                   extra_files={"shard-big.bin": os.urandom(PART_SIZE + 4096)})
    with running_proxy(registry, tmp_path / "proxy", trust_pem=trust_store_for(signer).dumps()) as served:
        token = add_consumer(tmp_path / "proxy" / "tokens.json", "serving-s3")
        files = run_client(SNAPSHOT.format(repo=MODEL), served.url, token, tmp_path / "hf")
        released = registry.released(MODEL, "1")
        assert files == {o.key.removeprefix("files/"): o.sha256 for o in released.plan.by_role("file")}
        state = registry.index.state(ModelName.parse(MODEL))
        assert state is not None and {p.actor for p in state.pulls("1")} == {"serving-s3"}
        assert len(state.pulls("1")) == len(files)

        # Someone with write access to the bucket replaces a released object (same size, other bytes).
        key = f"{PREFIX}/models/{MODEL}/1/files/tokenizer.json"
        original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        s3.put_object(Bucket=bucket, Key=key, Body=bytes(reversed(original)))
        headers = {"authorization": f"Bearer {token}"}
        response = httpx.get(f"{served.url}/{MODEL}/resolve/1/tokenizer.json", headers=headers)
        assert response.status_code == 403 and "tokenizer.json" in response.json()["error"]
        ranged = httpx.get(f"{served.url}/{MODEL}/resolve/1/shard-big.bin", headers={**headers, "range": "bytes=5-"})
        assert ranged.status_code == 206 and len(ranged.content) == PART_SIZE + 4096 - 5
        state = registry.index.state(ModelName.parse(MODEL))
        assert state is not None
        assert [c.verdict for c in state.checks("1", "integrity")] == ["fail"]
