"""`make stack-up`'s proxy (scripts/stack.py start_proxy) and `make demo`'s proxy step (scripts/demo_proxy.py).

A state directory of its own (never the shared stack's), a signed filesystem
registry holding demo/tiny-gpt2 and a revoked demo/tiny-gpt2-fp16, the proxy
started as the stack starts it, then the demo step: transformers loads the
model through HF_ENDPOINT and the revoked version is refused.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path
from types import ModuleType

import pytest

from airlock.registry import FilesystemStore, HostState, ModelName, Registry
from airlock.signing import LocalKeySigner
from tests.conftest import REPO
from tests.proxy_fixtures import tiny_gpt2_files
from tests.pull_fixtures import promote_signed
from tests.signing_fixtures import trust_store_for


def _demo_proxy() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_proxy", REPO / "scripts" / "demo_proxy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo_proxy"] = module
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_stack_starts_the_proxy_and_the_demo_loads_through_it(stack: ModuleType, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    signer = LocalKeySigner.generate(key_name="airlock-model-signing", version=1)
    registry = Registry(FilesystemStore(tmp_path / "registry"), workers=2, signer=signer,
                        trust=trust_store_for(signer), host_state=HostState(tmp_path / "writer-state"))
    promote_signed(registry, tmp_path, signer, model="demo/tiny-gpt2", version="1",
                   extra_files=tiny_gpt2_files(tmp_path))
    promote_signed(registry, tmp_path, signer, model="demo/tiny-gpt2-fp16", version="1")
    registry.revoke("demo/tiny-gpt2-fp16", "1", reason="found in an incident", actor="security")
    (tmp_path / "trust.pem").write_text(trust_store_for(signer).dumps())
    env = {"AIRLOCK_STATE_DIR": str(tmp_path / "state"), "AIRLOCK_REGISTRY": str(tmp_path / "registry"),
           "AIRLOCK_TRUST_STORE": str(tmp_path / "trust.pem"), "AIRLOCK_HOST_STATE": str(tmp_path / "proxy-state")}
    for name, value in {**env, "AIRLOCK_PROXY_ADDR": f"http://127.0.0.1:{_free_port()}"}.items():
        monkeypatch.setenv(name, value)
    state = stack.State.from_env()
    stack.start_proxy(state, env)
    try:
        assert stack.proxy_healthy()
        stack.start_proxy(state, env)  # idempotent: the running proxy is left alone
        token = (state.root / "secrets" / "proxy-token-demo").read_text().strip()
        assert token.startswith("alp_") and token not in (state.root / "secrets" / "proxy-tokens.json").read_text()

        result = _demo_proxy().run_proxy_demo()
        assert result.ok, (result.line, result.details)
        assert "loaded demo/tiny-gpt2@1" in result.line and "demo/tiny-gpt2-fp16@1 (revoked) refused" in result.line
        assert any("found in an incident" in detail for detail in result.details)
        state_index = registry.index.state(ModelName.parse("demo/tiny-gpt2"))
        assert state_index is not None and {p.actor for p in state_index.pulls("1")} == {"demo"}
    finally:
        assert stack.stop_process_tree(state, "proxy")
    assert not stack.proxy_healthy()
