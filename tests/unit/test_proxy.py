"""The model proxy's pieces without services: Hub shapes, ranges, tokens, policy, and the routes in-process."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from airlock.errors import ConfigurationError
from airlock.proxy import hub
from airlock.proxy.app import build_app
from airlock.proxy.auth import TokenFileError, TokenStore, Unauthorized, add_consumer, bearer_token, remove_consumer
from airlock.proxy.config import load_proxy_file, parse_addr
from airlock.proxy.server import ProxyOptions, build_proxy
from airlock.registry import FilesystemStore, HostState, ModelName, Registry
from airlock.signing import LocalKeySigner
from tests.pull_fixtures import promote_signed
from tests.signing_fixtures import trust_store_for

# --------------------------------------------------------------------------- Hub shapes


def test_ranges_parse_as_http_clients_send_them() -> None:
    assert hub.parse_range(None, 100) is None
    assert hub.parse_range("bytes=10-19", 100) == (10, 19)
    assert hub.parse_range("bytes=90-", 100) == (90, 99)
    assert hub.parse_range("bytes=90-500", 100) == (90, 99)
    assert hub.parse_range("bytes=-10", 100) == (90, 99)
    assert hub.parse_range("bytes=0-1,5-6", 100) is None  # several ranges: the whole file (RFC 9110 allows it)
    assert hub.parse_range("items=0-1", 100) is None
    assert hub.parse_range("bytes=abc-", 100) is None
    for unsatisfiable in ("bytes=100-", "bytes=200-300", "bytes=-0"):
        with pytest.raises(hub.UnsatisfiableRange):
            hub.parse_range(unsatisfiable, 100)


FILES = {p: hub.HubFile(p, i + 1, f"{i:064x}") for i, p in
         enumerate(["config.json", "a/b/c.bin", "a/d.bin", "a-b/e.bin"])}


def test_tree_lists_children_or_everything_below_folders_first() -> None:
    root = hub.tree(FILES, "", recursive=False)
    assert [(e["type"], e["path"]) for e in root] == [("directory", "a"), ("directory", "a-b"), ("file", "config.json")]
    everything = hub.tree(FILES, "", recursive=True)
    assert [e["path"] for e in everything if e["type"] == "file"] == sorted(FILES)
    assert {e["path"] for e in everything if e["type"] == "directory"} == {"a", "a/b", "a-b"}
    assert [e["path"] for e in hub.tree(FILES, "a", recursive=False)] == ["a/b", "a/d.bin"]
    entry = hub.tree(FILES, "a/d.bin", recursive=False)[0]
    assert entry["lfs"] == {"oid": FILES["a/d.bin"].sha256, "size": 3, "pointerSize": len(FILES["a/d.bin"].pointer)}
    with pytest.raises(hub.NoSuchPath):
        hub.tree(FILES, "nope", recursive=True)
    assert [e["path"] for e in hub.paths_info(FILES, ["a/b", "config.json", "missing"])] == ["a/b", "config.json"]


def test_the_blob_id_is_the_git_id_of_the_lfs_pointer_and_commits_differ_per_version() -> None:
    import subprocess

    file = FILES["config.json"]
    git = subprocess.run(["git", "hash-object", "--stdin"], input=file.pointer, capture_output=True, check=True)
    assert git.stdout.decode().strip() == file.blob_id
    plan = "ab" * 32
    assert hub.commit_id("a/b", "1", plan) == hub.commit_id("a/b", "1", plan)
    assert len({hub.commit_id("a/b", "1", plan), hub.commit_id("a/b", "2", plan), hub.commit_id("a/c", "1", plan)}) == 3
    assert hub.COMMIT.fullmatch(hub.commit_id("a/b", "1", plan))


def test_error_messages_become_one_ascii_header_line() -> None:
    headers = hub.error_headers("RevisionNotFound", "revoked:\nfake: header ü" + "x" * 2000)
    assert headers["X-Error-Code"] == "RevisionNotFound"
    message = headers["X-Error-Message"]
    assert "\n" not in message and message.isascii() and len(message) <= 900


# --------------------------------------------------------------------------- tokens and configuration


def test_tokens_are_stored_hashed_and_checked_against_the_current_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token = add_consumer(path, "serving-1")
    assert token.startswith("alp_") and token not in path.read_text()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    store = TokenStore(path)
    assert store.consumer(f"Bearer {token}") == "serving-1"
    assert store.consumer(f"bearer   {token}") == "serving-1"
    for bad in (None, "", f"Basic {token}", "Bearer alp_guess", token):
        with pytest.raises(Unauthorized):
            store.consumer(bad)
    with pytest.raises(TokenFileError, match="exists already"):
        add_consumer(path, "serving-1")
    other = add_consumer(path, "serving-2")
    assert store.consumer(f"Bearer {other}") == "serving-2"  # re-read without a restart
    assert remove_consumer(path, "serving-1") and not remove_consumer(path, "serving-1")
    with pytest.raises(Unauthorized):
        store.consumer(f"Bearer {token}")
    path.write_text("{not json")  # a broken file refuses everyone (fails closed), it never means "no auth"
    with pytest.raises(TokenFileError):
        store.consumer(f"Bearer {other}")
    with pytest.raises(TokenFileError):
        TokenStore(tmp_path / "missing.json")
    assert bearer_token("Bearer x") == "x" and bearer_token("Bearer ") is None


def test_configuration_is_checked(tmp_path: Path) -> None:
    assert parse_addr("127.0.0.1:8300") == ("127.0.0.1", 8300)
    assert parse_addr("[::1]:8301") == ("::1", 8301)
    for bad in ("8300", "host:", "host:99999", ":80"):
        with pytest.raises(ConfigurationError):
            parse_addr(bad)
    config = tmp_path / "proxy.toml"
    config.write_text('[models."demo/tiny"]\nmain = "latest"\nallow_deprecated = ["1"]\n')
    assert load_proxy_file(config).models["demo/tiny"].allow_deprecated == ("1",)
    config.write_text('[models."not a name"]\nmain = "latest"\n')
    with pytest.raises(Exception, match="model name"):
        load_proxy_file(config)
    config.write_text('[models."demo/tiny"]\nserve_revoked = true\n')
    with pytest.raises(ConfigurationError):
        load_proxy_file(config)


# --------------------------------------------------------------------------- the routes, in-process

MODEL = "acme/tiny"
CONFIG = f"""
[proxy]
name = "unit-proxy"

[models."{MODEL}"]
main = "latest"
allow_deprecated = ["1"]
"""


@pytest.fixture()
def signer() -> LocalKeySigner:
    return LocalKeySigner.generate(key_name="airlock-model-signing", version=1)


@pytest.fixture()
def registry(tmp_path: Path, signer: LocalKeySigner) -> Registry:
    registry = Registry(FilesystemStore(tmp_path / "registry"), workers=2, signer=signer,
                        trust=trust_store_for(signer), host_state=HostState(tmp_path / "writer-state"))
    for version in ("1", "2", "3"):
        promote_signed(registry, tmp_path, signer, model=MODEL, version=version)
    return registry


@pytest.fixture()
def client(registry: Registry, tmp_path: Path, signer: LocalKeySigner) -> TestClient:
    (tmp_path / "trust.pem").write_text(trust_store_for(signer).dumps())
    (tmp_path / "proxy.toml").write_text(CONFIG)
    token = add_consumer(tmp_path / "tokens.json", "unit")
    proxy = build_proxy(registry, ProxyOptions(tokens=tmp_path / "tokens.json", config=tmp_path / "proxy.toml",
                                               trust_store=tmp_path / "trust.pem"),
                        host_state=HostState(tmp_path / "proxy-state"))
    return TestClient(build_app(proxy), headers={"authorization": f"Bearer {token}"})


def test_model_info_and_head_carry_what_huggingface_hub_reads(client: TestClient, registry: Registry) -> None:
    info = client.get(f"/api/models/{MODEL}/revision/2")
    assert info.status_code == 200
    body = info.json()
    released = registry.released(MODEL, "2")
    files = {o.key.removeprefix("files/"): o for o in released.plan.by_role("file")}
    assert body["id"] == MODEL and body["sha"] == hub.commit_id(MODEL, "2", released.released.plan_sha256)
    assert {s["rfilename"]: s["lfs"]["sha256"] for s in body["siblings"]} == {p: o.sha256 for p, o in files.items()}
    assert body["airlock"]["root_digest"] == released.root_digest

    head = client.head(f"/{MODEL}/resolve/2/config.json")
    assert head.status_code == 200
    assert head.headers["etag"] == f'"{files["config.json"].sha256}"' == head.headers["x-linked-etag"]
    assert head.headers["x-linked-size"] == head.headers["content-length"] == str(files["config.json"].size)
    assert head.headers["x-repo-commit"] == body["sha"]
    # The commit id works as a revision too (what snapshot_download uses after resolving).
    assert client.get(f"/{MODEL}/resolve/{body['sha']}/config.json").content == \
        (registry.store.root / "models" / MODEL / "2" / "files" / "config.json").read_bytes()  # type: ignore[attr-defined]


def test_no_token_is_refused_and_health_needs_none(client: TestClient) -> None:
    response = client.get(f"/api/models/{MODEL}/revision/1", headers={"authorization": ""})
    assert response.status_code == 401 and "bearer token" in response.json()["error"]
    assert client.get("/healthz", headers={"authorization": ""}).json() == {"status": "ok"}


def test_statuses_decide_what_is_served(client: TestClient, registry: Registry) -> None:
    def sha_of(revision: str) -> str | None:
        response = client.get(f"/api/models/{MODEL}/revision/{revision}")
        return response.json()["airlock"]["version"] if response.status_code == 200 else None

    assert sha_of("main") == "3"  # the newest approved version
    registry.deprecate(MODEL, "3", reason="superseded", actor="owner")
    registry.deprecate(MODEL, "1", reason="old", actor="owner")
    assert sha_of("main") == "2"  # deprecated versions are never 'main'
    refused = client.get(f"/api/models/{MODEL}/revision/3")
    assert refused.status_code == 403 and refused.headers["x-error-code"] == "RevisionNotFound"
    assert "deprecated: superseded" in refused.json()["error"]
    assert sha_of("1") == "1"  # deprecated, but this proxy's policy still allows it
    registry.revoke(MODEL, "1", reason="bad weights", actor="security")
    revoked = client.get(f"/{MODEL}/resolve/1/config.json")
    assert revoked.status_code == 403 and "revoked: bad weights" in revoked.json()["error"]
    assert revoked.headers["x-error-code"] == "RevisionNotFound"  # the client must not fall back to its cache
    assert client.head(f"/{MODEL}/resolve/1/config.json").status_code == 403


def test_downloads_are_recorded_once_per_window(client: TestClient, registry: Registry) -> None:
    for _ in range(3):
        assert client.get(f"/{MODEL}/resolve/1/config.json").status_code == 200
    assert client.head(f"/{MODEL}/resolve/1/tokenizer.json").status_code == 200  # HEAD sends nothing: no record
    state = registry.index.state(ModelName.parse(MODEL))
    assert state is not None
    pulls = state.pulls("1")
    assert [(p.actor, p.host, p.dest) for p in pulls] == [("unit", "testclient", "hf-proxy://unit-proxy/config.json")]


def test_a_version_signed_by_an_untrusted_key_is_refused(registry: Registry, tmp_path: Path,
                                                         client: TestClient) -> None:
    stranger = LocalKeySigner.generate(key_name="someone-else", version=1)
    # Promotion itself is signed into the index by the registry's key; only model.sig comes from the stranger.
    promote_signed(registry, tmp_path / "stranger", stranger, model=MODEL, version="4", aibom_signer=stranger)
    response = client.get(f"/api/models/{MODEL}/revision/4")
    assert response.status_code == 403 and "model.sig does not verify" in response.json()["error"]


def test_tree_and_paths_info(client: TestClient) -> None:
    tree = client.get(f"/api/models/{MODEL}/tree/1", params={"recursive": "true"}).json()
    assert "weights/a/shard-0.bin" in {e["path"] for e in tree if e["type"] == "file"}
    top = client.get(f"/api/models/{MODEL}/tree/1").json()
    assert {e["path"] for e in top} == {"config.json", "nested", "tokenizer.json", "weights"}
    sub = client.get(f"/api/models/{MODEL}/tree/1/weights%2Fa").json()
    assert [e["path"] for e in sub] == ["weights/a/shard-0.bin"]
    missing = client.get(f"/api/models/{MODEL}/tree/1/additional_chat_templates")
    assert missing.status_code == 404 and missing.headers["x-error-code"] == "EntryNotFound"
    info = client.post(f"/api/models/{MODEL}/paths-info/1", data={"paths": ["config.json", "weights", "nope"]})
    assert [e["path"] for e in info.json()] == ["config.json", "weights"]
    assert json.loads(info.content)[0]["lfs"]["size"] > 0


def test_cli_token_commands_and_serve_failures_exit_as_every_verb_does(tmp_path: Path, registry: Registry,
                                                                      signer: LocalKeySigner,
                                                                      capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from airlock.cli import EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, main

    tokens = tmp_path / "cli-tokens.json"
    assert main(["proxy", "token", "add", "serving-1", "--tokens", str(tokens)]) == EXIT_OK
    token = capsys.readouterr().out.strip()
    assert TokenStore(tokens).consumer(f"Bearer {token}") == "serving-1"
    assert main(["proxy", "token", "list", "--tokens", str(tokens), "--format", "json"]) == EXIT_OK
    assert [c["name"] for c in json.loads(capsys.readouterr().out)] == ["serving-1"]
    assert main(["proxy", "token", "remove", "nobody", "--tokens", str(tokens)]) == EXIT_NEGATIVE

    monkeypatch.setenv("AIRLOCK_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("AIRLOCK_HOST_STATE", str(tmp_path / "cli-state"))
    monkeypatch.delenv("AIRLOCK_TRUST_STORE", raising=False)
    monkeypatch.delenv("AIRLOCK_TRUST_STORE_SHA256", raising=False)
    monkeypatch.setattr("airlock.config.DEFAULT_TRUST_STORE", tmp_path / "etc-airlock-trust.pem")
    serve = ["proxy", "serve", "--tokens", str(tokens)]
    assert main(serve) == EXIT_ERROR  # no trust store: it does not start, rather than refuse every request
    assert "no trust store configured" in capsys.readouterr().err
    (tmp_path / "host-trust.pem").write_text(trust_store_for(signer).dumps())
    monkeypatch.setenv("AIRLOCK_TRUST_STORE", str(tmp_path / "host-trust.pem"))
    assert main([*serve[:2], "--tokens", str(tmp_path / "none.json")]) == EXIT_ERROR
    assert "cannot read the proxy token file" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main([*serve, "--listen", f"127.0.0.1:{taken.getsockname()[1]}"]) == EXIT_ERROR
    assert "cannot listen on" in capsys.readouterr().err
