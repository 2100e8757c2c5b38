"""A signed registry, a running model proxy over it, and Hub clients in subprocesses, for the proxy tests.

``huggingface_hub`` reads ``HF_ENDPOINT`` when it is imported, so every client
runs in a fresh interpreter (:func:`run_client`) with ``HF_ENDPOINT``,
``HF_TOKEN`` and a private ``HF_HOME``, and ``HF_HUB_OFFLINE`` removed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airlock.proxy.app import Proxy, build_app
from airlock.proxy.server import ProxyOptions, build_proxy
from airlock.registry import HostState, Registry

REPO = Path(__file__).resolve().parent.parent


@dataclass
class RunningProxy:
    url: str
    proxy: Proxy


@contextmanager
def running_proxy(registry: Registry, work: Path, *, trust_pem: str, config: str | None = None,
                  name: str = "proxy-test") -> Iterator[RunningProxy]:
    """``airlock proxy serve`` in a thread (uvicorn, an ephemeral loopback port), stopped on exit."""
    import uvicorn

    work.mkdir(parents=True, exist_ok=True)
    (work / "trust.pem").write_text(trust_pem)
    tokens = work / "tokens.json"
    if not tokens.exists():
        tokens.write_text('{"schema": "airlock.proxy.tokens/v1", "consumers": []}')
    config_path = None
    if config is not None:
        config_path = work / "proxy.toml"
        config_path.write_text(config)
    proxy = build_proxy(registry, ProxyOptions(tokens=tokens, config=config_path, trust_store=work / "trust.pem",
                                               name=name, chunk_size=1 << 20),
                        host_state=HostState(work / "proxy-host-state"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(proxy), log_level="warning", proxy_headers=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="airlock-proxy")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the proxy did not start")
        time.sleep(0.02)
    try:
        yield RunningProxy(f"http://127.0.0.1:{port}", proxy)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def client_env(url: str, token: str | None, hf_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=url, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error", PYTHONPATH=str(REPO))
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def run_client(code: str, url: str, token: str | None, hf_home: Path, timeout: float = 300) -> dict[str, Any]:
    """Run ``code`` (which must print one JSON line last) as a fresh Hub client; return that JSON."""
    result = subprocess.run([sys.executable, "-c", code], env=client_env(url, token, hf_home), capture_output=True,
                            text=True, timeout=timeout)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise AssertionError(f"client failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return json.loads(lines[-1])


def tiny_gpt2_files(work: Path) -> dict[str, bytes]:
    """A small, real GPT-2 (config + safetensors) that transformers loads; built locally, deterministic."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                              bos_token_id=0, eos_token_id=0))
    out = work / "tiny-gpt2"
    model.save_pretrained(str(out))
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}
