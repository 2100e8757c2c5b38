"""The model proxy against the real Hub clients: huggingface_hub and transformers, through HF_ENDPOINT.

One filesystem registry per module, really signed (a local key, the trust store
written to a file as the proxy host's), served by the proxy running in a thread
on an ephemeral loopback port. Each model name plays one scenario, so the
tests do not depend on each other's index changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from airlock.proxy.auth import add_consumer, remove_consumer
from airlock.registry import FilesystemStore, HostState, ModelName, Registry
from airlock.signing import LocalKeySigner
from tests.proxy_fixtures import RunningProxy, client_env, run_client, running_proxy, tiny_gpt2_files
from tests.pull_fixtures import promote_signed
from tests.signing_fixtures import trust_store_for

GPT2 = "acme/tiny-gpt2"
REVOKED = "acme/revoked"
TAMPERED = "acme/tampered"
PARALLEL = "acme/parallel"
CONFIG = f"""
[models."{GPT2}"]
main = "latest"
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy")


@pytest.fixture(scope="module")
def signer() -> LocalKeySigner:
    return LocalKeySigner.generate(key_name="airlock-model-signing", version=1)


@pytest.fixture(scope="module")
def registry(work: Path, signer: LocalKeySigner) -> Registry:
    registry = Registry(FilesystemStore(work / "registry"), workers=4, signer=signer, trust=trust_store_for(signer),
                        host_state=HostState(work / "writer-host-state"))
    gpt2 = tiny_gpt2_files(work)
    promote_signed(registry, work, signer, model=GPT2, version="1", extra_files=gpt2)
    promote_signed(registry, work, signer, model=REVOKED, version="1")
    promote_signed(registry, work, signer, model=TAMPERED, version="1", extra_files={"model.bin": os.urandom(3 << 20)})
    promote_signed(registry, work, signer, model=PARALLEL, version="1", extra_files={"big.bin": os.urandom(24 << 20)})
    return registry


@pytest.fixture(scope="module")
def served(registry: Registry, work: Path, signer: LocalKeySigner) -> Iterator[RunningProxy]:
    with running_proxy(registry, work / "proxy", trust_pem=trust_store_for(signer).dumps(), config=CONFIG) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def token(served: RunningProxy, work: Path) -> str:
    return add_consumer(work / "proxy" / "tokens.json", "serving-1")


def _stored(registry: Registry, model: str, version: str, path: str) -> bytes:
    assert isinstance(registry.store, FilesystemStore)
    return (registry.store.root / "models" / model / version / "files" / path).read_bytes()


def _pulls(registry: Registry, model: str) -> list:
    state = registry.index.state(ModelName.parse(model))
    return state.pulls() if state else []


SNAPSHOT = """
import hashlib, json, os
from pathlib import Path
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
repo, revision = {repo!r}, {revision!r}
snapshot = Path(snapshot_download(repo, revision=revision))
files = {{p.relative_to(snapshot).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
         for p in snapshot.rglob('*') if p.is_file()}}
listing = {{f.path: f.lfs.sha256 for f in HfApi().list_repo_tree(repo, revision=revision, recursive=True)
           if hasattr(f, 'lfs')}}
info = HfApi().model_info(repo, revision=revision, files_metadata=True)
# hf_hub_download into a local dir, then again without its metadata: the client re-hashes the local file and
# compares it with the sha256 the proxy sent as ETag (its own check) instead of downloading again.
local = Path({local!r})
first = hf_hub_download(repo, 'config.json', revision=revision, local_dir=local)
for meta in (local / '.cache').rglob('config.json.metadata'):
    meta.unlink()
second = hf_hub_download(repo, 'config.json', revision=revision, local_dir=local)
print(json.dumps({{"files": files, "listing": listing, "sha": info.sha, "snapshot": snapshot.name,
                  "siblings": sorted(s.rfilename for s in info.siblings), "same": first == second,
                  "local_sha256": hashlib.sha256(Path(second).read_bytes()).hexdigest()}}))
"""


def test_snapshot_and_file_downloads_match_the_signed_files_and_are_recorded(
        served: RunningProxy, token: str, registry: Registry, work: Path) -> None:
    out = run_client(SNAPSHOT.format(repo=GPT2, revision="1", local=str(work / "local-dir")), served.url, token,
                     work / "hf-snapshot")
    released = registry.released(GPT2, "1")
    signed = {o.key.removeprefix("files/"): o.sha256 for o in released.plan.by_role("file")}
    assert out["files"] == signed  # every signed file, byte for byte, and nothing else
    assert out["listing"] == signed  # the tree's LFS sha256 is the signed digest
    assert out["siblings"] == sorted(signed)
    assert out["sha"] == out["snapshot"] and len(out["sha"]) == 40
    assert out["same"] and out["local_sha256"] == signed["config.json"]

    pulls = [p for p in _pulls(registry, GPT2) if p.version == "1"]
    assert {p.dest.rpartition("/")[2] for p in pulls} >= {"config.json", "model.safetensors"}
    assert {(p.actor, p.host) for p in pulls} == {("serving-1", "127.0.0.1")}
    assert all(p.root_digest == released.root_digest and p.dest.startswith("hf-proxy://proxy-test/") for p in pulls)
    # HF's own check found the local file intact (its sha256 equals the ETag): no second download was recorded.
    assert sum(p.dest.endswith("/config.json") for p in pulls) == 1


LOAD = """
import json
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained({repo!r}{revision})
print(json.dumps({{"parameters": sum(p.numel() for p in model.parameters()), "type": model.config.model_type}}))
"""


def test_transformers_from_pretrained_through_the_proxy_main_is_the_newest_approved(
        served: RunningProxy, token: str, work: Path) -> None:
    pinned = run_client(LOAD.format(repo=GPT2, revision=", revision='1'"), served.url, token, work / "hf-load")
    latest = run_client(LOAD.format(repo=GPT2, revision=""), served.url, token, work / "hf-load-main")
    assert pinned["type"] == latest["type"] == "gpt2"
    assert pinned["parameters"] == latest["parameters"] > 0


def test_a_resumed_download_gets_exactly_the_missing_bytes(served: RunningProxy, token: str, registry: Registry,
                                                           tmp_path: Path) -> None:
    from huggingface_hub.file_download import http_get

    data = _stored(registry, GPT2, "1", "model.safetensors")
    url = f"{served.url}/{GPT2}/resolve/1/model.safetensors"
    partial = tmp_path / "model.safetensors.incomplete"
    partial.write_bytes(data[:1000])
    with partial.open("ab") as out:  # huggingface_hub's own resume: Range: bytes=1000-
        http_get(url, out, resume_size=1000, headers={"authorization": f"Bearer {token}"}, expected_size=len(data))
    assert partial.read_bytes() == data

    headers = {"authorization": f"Bearer {token}", "range": "bytes=10-19"}
    response = httpx.get(url, headers=headers)
    assert response.status_code == 206 and response.content == data[10:20]
    assert response.headers["content-range"] == f"bytes 10-19/{len(data)}"
    beyond = httpx.get(url, headers={**headers, "range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416


REVOKE_SESSION = """
import json, sys
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import RevisionNotFoundError
snapshot_download({repo!r}, revision='1')
print('downloaded', flush=True)
sys.stdin.readline()  # the version is revoked now
try:
    snapshot_download({repo!r}, revision='1')  # the copy is in this client's cache: it must not be used
    outcome = 'served'
except RevisionNotFoundError as exc:
    outcome = str(exc)
try:
    hf_hub_download({repo!r}, 'config.json', revision='1', force_download=True)
    single = 'served'
except RevisionNotFoundError as exc:
    single = str(exc)
print(json.dumps({{"snapshot": outcome, "file": single}}))
"""


def test_a_version_revoked_mid_session_is_refused_on_the_next_request(
        served: RunningProxy, token: str, registry: Registry, work: Path) -> None:
    client = subprocess.Popen([sys.executable, "-c", REVOKE_SESSION.format(repo=REVOKED)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=client_env(served.url, token, work / "hf-revoke"))
    assert client.stdout is not None and client.stdin is not None
    assert client.stdout.readline().strip() == "downloaded"
    registry.revoke(REVOKED, "1", reason="backdoor found in the weights", actor="security@acme")
    out, err = client.communicate("go\n", timeout=120)
    assert client.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    for refusal in result.values():
        assert "revoked: backdoor found in the weights" in refusal
    pulls_before = len(_pulls(registry, REVOKED))
    assert pulls_before >= 1  # the download before the revocation, for incident response
    response = httpx.get(f"{served.url}/{REVOKED}/resolve/1/config.json", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 403 and "revoked" in response.json()["error"]
    assert len(_pulls(registry, REVOKED)) == pulls_before


UNKNOWN_TOKEN = """
import json
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError
outcomes = []
for call in (lambda: HfApi().model_info({repo!r}, revision='1'),
             lambda: hf_hub_download({repo!r}, 'config.json', revision='1')):
    try:
        call()
        outcomes.append('served')
    except Exception as exc:
        cause = exc if isinstance(exc, HfHubHTTPError) else exc.__cause__
        outcomes.append(getattr(getattr(cause, 'response', None), 'status_code', repr(exc)))
print(json.dumps(outcomes))
"""


def test_an_unknown_or_removed_token_is_refused(served: RunningProxy, token: str, work: Path,
                                               registry: Registry) -> None:
    before = len(_pulls(registry, GPT2))
    assert run_client(UNKNOWN_TOKEN.format(repo=GPT2), served.url, "alp_not-a-token", work / "hf-bad") == [401, 401]
    assert run_client(UNKNOWN_TOKEN.format(repo=GPT2), served.url, None, work / "hf-none") == [401, 401]
    tokens = work / "proxy" / "tokens.json"
    leaving = add_consumer(tokens, "leaving-team")
    url = f"{served.url}/api/models/{GPT2}/revision/1"
    assert httpx.get(url, headers={"authorization": f"Bearer {leaving}"}).status_code == 200
    assert remove_consumer(tokens, "leaving-team")
    assert httpx.get(url, headers={"authorization": f"Bearer {leaving}"}).status_code == 401  # no restart needed
    assert len(_pulls(registry, GPT2)) == before


def test_a_file_altered_in_the_registry_after_release_is_refused_and_reported(
        served: RunningProxy, token: str, registry: Registry, work: Path) -> None:
    url = f"{served.url}/{TAMPERED}/resolve/1/model.bin"
    headers = {"authorization": f"Bearer {token}"}
    good = httpx.get(url, headers=headers)
    assert good.status_code == 200  # verified once, now cached for this stored object

    assert isinstance(registry.store, FilesystemStore)
    stored = registry.store.root / "models" / TAMPERED / "1" / "files" / "model.bin"
    altered = bytearray(stored.read_bytes())
    altered[len(altered) // 2] ^= 0xFF  # same size, one byte flipped in place
    stored.chmod(0o644)
    stored.write_bytes(bytes(altered))

    head = httpx.head(url, headers=headers)
    assert head.status_code == 403 and "model.bin" in head.headers["x-error-message"]
    response = httpx.get(url, headers=headers)
    assert response.status_code == 403 and "signed as sha256:" in response.json()["error"]
    script = f"""
import json
from huggingface_hub import hf_hub_download
try:
    hf_hub_download({TAMPERED!r}, 'model.bin', revision='1')
    print(json.dumps('served'))
except Exception as exc:
    print(json.dumps(type(exc).__name__))
"""
    assert run_client(script, served.url, token, work / "hf-tampered") != "served"
    # The untouched files of the version are still the signed ones, and still served.
    assert httpx.get(f"{served.url}/{TAMPERED}/resolve/1/config.json", headers=headers).status_code == 200

    state = registry.index.state(ModelName.parse(TAMPERED))
    assert state is not None
    failed = [c for c in state.checks("1", "integrity") if c.verdict == "fail"]
    assert len(failed) == 1 and "model.bin" in failed[0].summary and failed[0].target == "registry"
    assert hashlib.sha256(bytes(altered)).hexdigest() in failed[0].summary


def test_parallel_clients_share_one_verification_and_each_get_the_signed_bytes(
        served: RunningProxy, token: str, registry: Registry) -> None:
    from concurrent.futures import ThreadPoolExecutor

    data = _stored(registry, PARALLEL, "1", "big.bin")
    url = f"{served.url}/{PARALLEL}/resolve/1/big.bin"
    before = served.proxy.files.hashed_bytes

    def fetch(_: int) -> str:
        with httpx.stream("GET", url, headers={"authorization": f"Bearer {token}"}, timeout=60) as response:
            assert response.status_code == 200
            return hashlib.sha256(b"".join(response.iter_bytes())).hexdigest()

    with ThreadPoolExecutor(6) as pool:
        digests = set(pool.map(fetch, range(6)))
    assert digests == {hashlib.sha256(data).hexdigest()}
    assert served.proxy.files.hashed_bytes - before == len(data)  # hashed once, before the first byte of any
    assert len(_pulls(registry, PARALLEL)) == 1  # one consumer, one host, one file: one pull record


def test_unknown_models_versions_and_files_are_hub_not_found_errors(served: RunningProxy, token: str) -> None:
    headers = {"authorization": f"Bearer {token}"}
    cases = {
        "/api/models/acme/nothing/revision/1": (404, "RepoNotFound"),
        f"/api/models/{GPT2}/revision/9": (404, "RevisionNotFound"),
        f"/api/models/{REVOKED}/revision/main": (404, "RevisionNotFound"),  # no 'main' configured for it
        f"/{GPT2}/resolve/1/not-there.txt": (404, "EntryNotFound"),
        f"/{GPT2}/resolve/1/..%2Fmodel.sig": (404, "EntryNotFound"),  # only signed files, never other objects
        f"/{GPT2}/resolve/1/%2E%2E/%2E%2E/promotion.json": (404, "EntryNotFound"),
    }
    for path, (status, code) in cases.items():
        response = httpx.get(served.url + path, headers=headers)
        assert response.status_code == status, path
        assert response.headers.get("x-error-code") == code, path
