"""The sampled-text endpoint backend against a real ``transformers serve`` process (transformers[serving]).

A tiny GPT-2 trained for a few hundred steps on the demo corpus (random weights produce near-noise text, on
which no sample test means anything) is signed and promoted with baseline samples drawn in-process, as
ingestion draws them. A verified copy of that version is served by ``transformers serve`` on a helper port
and checked by the nightly endpoint check: no deviation. Then the weights behind the same endpoint are
swapped for a different initialisation of the same architecture (same config, tokenizer and name) and the
check must record a deviation and raise an incident conf.

This is where the in-process sampler and the server must agree: a server that drew from another
distribution (its default top-k, a chat template, a dropped seed) makes the unmodified check fail.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from airlock.fingerprint.nightly import (
    NightlySettings,
    check_endpoint,
    fetch_verified_copy,
    incident_confs,
    parse_endpoints,
)
from airlock.fingerprint.prompts import load_prompt_set
from airlock.registry import ModelName, open_registry

from tests.fingerprint_nightly_fixtures import nightly_env, promote_version
from tests.registry_contract import SIGNER, TRUST

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MODEL = "acme/served-lm"
PORTS = range(8330, 8340)  # the endpoint helper's ports on the shared development machine
PROMPTS = 12
SAMPLES = 10  # per prompt: 120 completions per check, ~20 s at the server's 5-8 completions/s on one core
TRAIN_STEPS = 200
# The product's default is 0.05; a check of an unmodified model rejects at alpha by design (one run in 20),
# which a test must not. The swapped weights give the smallest p the permutations allow (1/1001).
ALPHA = 0.005
PERMUTATIONS = 1000


def _train_tiny_gpt2(target: Path, *, steps: int, seed: int = 0) -> Path:
    """The demo tokenizer and a 2-layer GPT-2 trained ``steps`` AdamW steps on the demo corpus (deterministic)."""
    import importlib.util

    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    spec = importlib.util.spec_from_file_location("airlock_demo_models_for_serve", REPO / "scripts/demo_models.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    target.mkdir(parents=True)
    demo._train_tokenizer(demo.CORPUS, target)
    tokenizer = AutoTokenizer.from_pretrained(str(target))
    ids = tokenizer(demo.CORPUS.read_text(encoding="utf-8"), return_tensors="pt", verbose=False).input_ids[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        # A 256-token context holds every canonical prompt plus the completion, as a server needs.
        config = GPT2Config(vocab_size=demo.VOCAB_SIZE, n_positions=256, n_embd=64, n_layer=2, n_head=2,
                            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
        model = GPT2LMHeadModel(config).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            starts = torch.randint(0, len(ids) - 65, (16,), generator=generator)
            batch = torch.stack([ids[s:s + 64] for s in starts])
            model(input_ids=batch, labels=batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval().save_pretrained(str(target))
    return target


def _reinitialised_weights(model_dir: Path, target: Path, seed: int = 7) -> Path:
    """model.safetensors of a different initialisation of the architecture in ``model_dir``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    other = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(model_dir))).eval()
    other.save_pretrained(str(target))
    return target / "model.safetensors"


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail(f"no free port in {PORTS.start}-{PORTS.stop - 1} for transformers serve")


class Served:
    """``transformers serve`` pinned to one model directory, on one CPU thread, offline."""

    def __init__(self, model_dir: Path, log: Path) -> None:
        self.model_dir, self.port, self.log = model_dir, _free_port(), log
        self.url = f"http://127.0.0.1:{self.port}"
        cli = Path(sys.executable).with_name("transformers")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
               "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(log.parent / "hf-home"), "TOKENIZERS_PARALLELISM": "false"}
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(cli), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(self.port),
                 "--device", "cpu", "--dtype", "float32", "--log-level", "warning"],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._wait_healthy(timeout_s=120)

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"transformers serve exited with {self.process.returncode} (it needs "
                            f"transformers[serving], which includes openai):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        pytest.fail(f"transformers serve not healthy after {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)


@pytest.fixture()
def registry_with_baseline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``acme/served-lm@1``: the trained model with baseline samples of its first prompts, signed and promoted."""
    from airlock.fingerprint.stage import sample_model

    root = tmp_path / "registry"
    nightly_env(monkeypatch, tmp_path, root, TRUST)
    registry = open_registry(root, signer=SIGNER, trust=TRUST)
    model_dir = _train_tiny_gpt2(tmp_path / "trained", steps=TRAIN_STEPS)
    full = load_prompt_set()
    subset = dataclasses.replace(full, prompts=full.prompts[:PROMPTS])  # same set (its sha256), fewer prompts
    samples = sample_model(model_dir, subset, samples_per_prompt=SAMPLES, seed=11, device="cpu",
                           claims=f"{MODEL}@1")
    promote_version(registry, tmp_path, SIGNER, model=MODEL, version="1", model_dir=model_dir,
                    reports={"fingerprint-samples.json": samples.model_dump_json(by_alias=True).encode()})
    yield model_dir


def test_transformers_serve_unmodified_passes_and_a_swapped_model_is_flagged(registry_with_baseline: Path,
                                                                               tmp_path: Path) -> None:
    reader = open_registry()  # as the nightly task opens it: no signer, the host's trust store
    settings = NightlySettings.from_env()
    # The deployment: a verified copy of the version, served from a directory of its own.
    copy = fetch_verified_copy(reader, ModelName.parse(MODEL), "1", tmp_path / "copy", reader.trust(), None)
    deployed = tmp_path / "deployed"
    shutil.copytree(copy.files, deployed)
    for path in [deployed, *deployed.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    endpoints = parse_endpoints(json.dumps([{"name": "edge", "url": "http://127.0.0.1:1", "model": MODEL,
                                             "version": "1", "served_model": str(deployed)}]), "test")
    logs = tmp_path / "serve.log"

    def check_served(run_id: str):
        server = Served(deployed, logs)
        try:
            configured = [e.model_copy(update={"url": server.url}) for e in endpoints]
            started = time.monotonic()
            outcome = check_endpoint(reader, "edge", configured, run_id=run_id, settings=settings,
                                     permutations=PERMUTATIONS, alpha=ALPHA)
            print(f"{run_id}: {outcome.verdict} in {time.monotonic() - started:.1f} s: {outcome.reason}")
            assert outcome.verdict != "error", f"{outcome.reason}\n{server.log_tail()}"
            return outcome
        finally:
            server.stop()

    unmodified = check_served("unmodified")
    assert unmodified.verdict == "pass", unmodified.reason
    assert unmodified.details["p_value"] >= ALPHA

    # The same endpoint, name and files but for the weights: a different init of the same architecture.
    swapped = _reinitialised_weights(registry_with_baseline, tmp_path / "other-init")
    shutil.copyfile(swapped, deployed / "model.safetensors")
    deviation = check_served("swapped")
    assert deviation.verdict == "fail", deviation.reason
    assert deviation.details["p_value"] == pytest.approx(1 / (1 + PERMUTATIONS))

    history = [(c.run_id, c.verdict) for c in reader.model_state(MODEL).checks("1", "fingerprint")]
    assert history == [("unmodified", "pass"), ("swapped", "fail")]
    confs = incident_confs(reader, settings, "swapped")
    assert [(c["model"], c["version"]) for c in confs] == [(MODEL, "1")]
    assert confs[0]["evidence"]["checks"][0]["p_value"] == deviation.details["p_value"]
    samples = json.loads((deviation.report.parent / "samples.json").read_text())
    assert len(samples["samples"]) == PROMPTS and {len(v) for v in samples["samples"].values()} == {SAMPLES}
