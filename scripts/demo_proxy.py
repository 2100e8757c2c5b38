#!/usr/bin/env python3
"""`make demo`'s last step: a serving host loads demo/tiny-gpt2 through the model proxy; a revoked version is refused.

What a serving stack does: ``HF_ENDPOINT`` points at the proxy, ``HF_TOKEN`` is its
consumer token, ``HF_HUB_OFFLINE`` is unset, and
``transformers.AutoModelForCausalLM.from_pretrained("demo/tiny-gpt2")`` runs as
usual (``main`` = the newest approved version, the stack's proxy policy). Then
the same client asks for a revoked version and is refused (``RevisionNotFoundError``
with the revocation's reason). The client runs in a fresh interpreter because
``huggingface_hub`` reads ``HF_ENDPOINT`` when it is imported.

A revoked version to show: the first one the registry already has; if none,
the newest version of ``demo/tiny-gpt2-fp16`` (the derivative; else of the loaded
model) is revoked here with a reason that says so, through ``airlock registry
revoke`` (the stack's signer token).

``scripts/demo.py`` calls :func:`run_proxy_demo` and shows :attr:`ProxyDemoResult.line`
in its summary; ``python scripts/demo_proxy.py`` runs it alone (exit 0 when both
steps ended as expected).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

MODEL = "demo/tiny-gpt2"
DERIVATIVE = "demo/tiny-gpt2-fp16"
CONSUMER = "demo"
REVOKE_REASON = "make demo: shows the model proxy refusing a revoked version"

LOAD_AND_REFUSE = """
import json
from huggingface_hub import HfApi
from huggingface_hub.errors import RevisionNotFoundError
from transformers import AutoModelForCausalLM
result = {}
model = AutoModelForCausalLM.from_pretrained(%(model)r)
info = HfApi().model_info(%(model)r, revision="main")
result["loaded"] = {"version": (getattr(info, "airlock", None) or {}).get("version"), "commit": info.sha,
                    "parameters": sum(p.numel() for p in model.parameters()), "type": model.config.model_type}
try:
    AutoModelForCausalLM.from_pretrained(%(revoked_model)r, revision=%(revoked_version)r)
    result["refused"] = None
except (OSError, RevisionNotFoundError) as exc:
    cause = exc if isinstance(exc, RevisionNotFoundError) else (exc.__cause__ or exc)
    result["refused"] = " ".join(str(cause).split())
print(json.dumps(result))
"""


@dataclass
class ProxyDemoResult:
    ok: bool
    line: str  # one line for the demo's summary table
    details: list[str] = field(default_factory=list)


def _state_dir() -> Path:
    return Path(os.environ.get("AIRLOCK_STATE_DIR", ".airlock"))


def _proxy_url() -> str:
    addr = os.environ.get("AIRLOCK_PROXY_ADDR", "http://127.0.0.1:8300").rstrip("/")
    return addr if "://" in addr else f"http://{addr}"


def _airlock() -> str:
    return str(Path(sys.executable).parent / "airlock")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=3) as response:  # noqa: S310 - the stack's loopback URL
            return response.status == 200
    except OSError:
        return False


def _versions() -> list[dict]:
    listing = subprocess.run([_airlock(), "registry", "list", "--format", "json"], capture_output=True, text=True)
    if listing.returncode != 0:
        raise RuntimeError(listing.stderr.strip() or "airlock registry list failed")
    data = json.loads(listing.stdout)
    return data if isinstance(data, list) else data.get("versions", [])


def _revoked_version(loaded_model: str) -> tuple[str, str, str]:
    """(model, version, how): an already revoked version, else one revoked now for the demo."""
    rows = _versions()
    revoked = [r for r in rows if r.get("status") == "revoked"]
    if revoked:
        return revoked[0]["model"], revoked[0]["version"], "revoked earlier"
    for model in (DERIVATIVE, loaded_model):
        candidates = [r for r in rows if r.get("model") == model]
        if candidates:
            version = candidates[-1]["version"]
            result = subprocess.run([_airlock(), "registry", "revoke", f"{model}@{version}", "--reason", REVOKE_REASON,
                                     "--by", "make-demo"], capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"airlock registry revoke {model}@{version}: {result.stderr.strip()}")
            return model, version, "revoked now, for the demo"
    raise RuntimeError(f"no version of {DERIVATIVE} or {loaded_model} in the registry to revoke")


def _pulls_by(consumer: str, model: str) -> int:
    from airlock.registry import ModelName, open_registry

    state = open_registry().index.state(ModelName.parse(model))
    return sum(1 for p in (state.pulls() if state else []) if p.actor == consumer)


def run_proxy_demo(model: str = MODEL, revoked: str | None = None) -> ProxyDemoResult:
    """Load ``model`` through the proxy with transformers, then show a revoked version refused.

    ``revoked``: ``ORG/NAME@VERSION`` of a version the caller revoked (an incident the demo ran); default: the
    first revoked version in the registry, else one revoked here (module docstring).
    """
    url = _proxy_url()
    token_file = _state_dir() / "secrets" / f"proxy-token-{CONSUMER}"
    if not _healthy(url):
        return ProxyDemoResult(False, f"model proxy: not running at {url} (make stack-up starts it)")
    if not token_file.exists():
        return ProxyDemoResult(False, f"model proxy: no consumer token at {token_file} (make stack-up issues it)")
    try:
        if revoked:
            revoked_model, _, revoked_version = revoked.partition("@")
            how = "revoked by the demo"
        else:
            revoked_model, revoked_version, how = _revoked_version(model)
    except (RuntimeError, ValueError) as exc:
        return ProxyDemoResult(False, f"model proxy: {exc}")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    with tempfile.TemporaryDirectory(prefix="airlock-demo-hf-") as hf_home:
        env.update(HF_ENDPOINT=url, HF_TOKEN=token_file.read_text().strip(), HF_HOME=hf_home,
                   HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error")
        code = LOAD_AND_REFUSE % {"model": model, "revoked_model": revoked_model, "revoked_version": revoked_version}
        client = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    if client.returncode != 0 or not client.stdout.strip():
        tail = (client.stderr.strip().splitlines() or ["no output"])[-1]
        return ProxyDemoResult(False, f"model proxy: loading {model} through {url} failed: {tail}")
    outcome = json.loads(client.stdout.strip().splitlines()[-1])
    loaded, refused = outcome["loaded"], outcome["refused"]
    pulls = _pulls_by(CONSUMER, model)
    details = [
        f"from_pretrained({model!r}) via HF_ENDPOINT={url}: {loaded['type']} with {loaded['parameters']} parameters, "
        f"version {loaded['version']} (commit {loaded['commit'][:12]}), every file verified against model.sig",
        f"{model}: {pulls} pull record(s) by consumer {CONSUMER!r} in the registry index",
        f"{revoked_model}@{revoked_version} ({how}): "
        + (f"refused: {_shortened(refused)}" if refused else "SERVED (unexpected)"),
    ]
    ok = refused is not None and "revoked" in refused
    line = (f"model proxy: loaded {model}@{loaded['version']} with transformers; "
            f"{revoked_model}@{revoked_version} (revoked) " + ("refused" if ok else "NOT refused"))
    return ProxyDemoResult(ok, line, details)


def _shortened(text: str, limit: int = 400) -> str:
    """The client's refusal for the terminal: its head says why (the proxy's reason comes first)."""
    return text if len(text) <= limit else text[:limit] + " ..."


def main() -> int:
    result = run_proxy_demo()
    print(f"\n▶ {result.line}")
    for detail in result.details:
        print(f"  {detail}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
