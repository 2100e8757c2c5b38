"""Run an evaluation suite on a local model directory and return an :class:`EvalReport`.

The model must already have been scanned and allowed: this loads it (``trust_remote_code=False``
always, safetensors preferred). lm-eval runs in a child process with

- a scrubbed environment: no tokens, no Airlock/Vault/AWS variables, ``HF_HUB_OFFLINE=1``,
  ``HF_DATASETS_OFFLINE=1``, and a fresh ``HF_HOME``/``HF_DATASETS_CACHE`` (``datasets`` caches local
  files by path and mtime, so a shared cache could serve stale rows);
- a neutral working directory (lm-eval records ``git describe`` of the cwd);
- a time limit: past it the child is killed and the evaluation fails (fail closed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from airlock.errors import AirlockError
from airlock.evaluate.report import (
    EvalReport,
    RuntimeInfo,
    SampleCount,
    Seeds,
    SuiteRef,
    TaskResult,
    task_metrics,
)
from airlock.evaluate.suites import EvalSuite
from airlock.evaluate.taskfiles import materialize

DEFAULT_TIMEOUT_S = 4 * 3600
# Passed through to the child: what it needs to find Python, CUDA and a locale, nothing that is a secret.
_ENV_PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "TZ", "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "PYTHONPATH",
                    "NVIDIA_VISIBLE_DEVICES", "CUDA_HOME")


class EvaluationError(AirlockError):
    """The evaluation could not run to completion (bad model directory, lm-eval failure, timeout)."""


def _child_env(scratch: Path, threads: int | None) -> dict[str, str]:
    env = {k: os.environ[k] for k in _ENV_PASSTHROUGH if k in os.environ}
    env.update({
        "HOME": str(scratch / "home"),
        "HF_HOME": str(scratch / "hf-home"),
        "HF_DATASETS_CACHE": str(scratch / "hf-datasets-cache"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONNOUSERSITE": "1",
    })
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else "(no output)"


def evaluate_model(
    model_dir: str | Path,
    suite: EvalSuite,
    *,
    device: str = "auto",
    dtype: str = "float32",
    threads: int | None = None,
    model_ref: dict[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> EvalReport:
    """Evaluate the model in ``model_dir`` with ``suite``.

    ``device``: ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda[:N]``. ``dtype``: a torch dtype
    name or ``auto`` (the checkpoint's). ``model_ref`` (name, revision, manifest digest) is copied into
    the report so it says which artifact it is about; this function never hashes the weights itself.
    """
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "config.json").is_file():
        raise EvaluationError(f"model directory {model_dir}: no config.json (not a transformers model directory)")
    suite_digest = suite.digest()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="airlock-eval-") as tmp:
        scratch = Path(tmp)
        for sub in ("home", "hf-home", "hf-datasets-cache", "cwd", "tracker"):
            (scratch / sub).mkdir()
        materialized = materialize(suite.tasks, suite.task_dirs, scratch / "suite")
        spec = {
            "model_dir": str(model_dir),
            "include_path": str(scratch / "suite" / "tasks"),
            "tracker_dir": str(scratch / "tracker"),
            "tasks": list(suite.tasks),
            "device": device,
            "dtype": dtype,
            "threads": threads,
            "batch_size": suite.batch_size,
            "num_fewshot": suite.num_fewshot,
            "limit": suite.limit,
            "bootstrap_iters": suite.bootstrap_iters,
            "seed": suite.seed,
        }
        spec_path, out_path = scratch / "spec.json", scratch / "out.json"
        spec_path.write_text(json.dumps(spec))
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "airlock.evaluate._worker", str(spec_path), str(out_path)],
                cwd=scratch / "cwd", env=_child_env(scratch, threads), capture_output=True, text=True,
                timeout=timeout_s, check=False,
            )
        except subprocess.TimeoutExpired:
            raise EvaluationError(f"evaluation of {model_dir} exceeded {timeout_s:.0f} s and was stopped") from None
        if proc.returncode != 0 or not out_path.is_file():
            raise EvaluationError(
                f"evaluation of {model_dir} failed (exit {proc.returncode}): {_last_line(proc.stderr)}"
            )
        raw = json.loads(out_path.read_text())
    raw["seconds"] = time.monotonic() - started  # wall time, process start and model load included
    return _report(raw, suite, suite_digest, materialized, spec, model_ref or {}, started_at)


def _report(raw: dict, suite: EvalSuite, suite_digest: str, materialized: dict, spec: dict,
            model_ref: dict[str, str], started_at: str) -> EvalReport:
    tasks = []
    for name in suite.tasks:
        if name not in raw["results"]:
            raise EvaluationError(f"lm-eval returned no results for task {name!r}")
        counts = raw["n-samples"].get(name, {})
        task_hash = raw["task_hashes"].get(name)
        if not task_hash:
            raise EvaluationError(f"lm-eval returned no task hash for task {name!r}")
        version = raw["versions"].get(name)
        tasks.append(TaskResult(
            name=name,
            version=None if version is None else str(version),
            task_hash=task_hash,
            n_samples=SampleCount(original=counts.get("original", 0), effective=counts.get("effective", 0)),
            n_shot=int(raw["n-shot"].get(name, 0)),
            data_sha256=materialized[name].data_sha256,
            metrics=task_metrics(raw["results"][name], raw["higher_is_better"].get(name, {})),
        ))
    results = {
        name: {k: (v if v is None or isinstance(v, int | float | str) else str(v)) for k, v in metrics.items()}
        for name, metrics in raw["results"].items() if name in suite.tasks
    }
    seed = suite.seed
    return EvalReport(
        suite=SuiteRef(name=suite.name, version=suite.version, digest=suite_digest),
        model=model_ref,
        tasks=tasks,
        results=results,
        runtime=RuntimeInfo(
            device=raw["device"], device_requested=spec["device"], device_name=raw["device_name"],
            dtype=raw["model_dtype"], dtype_requested=spec["dtype"], threads=raw["threads"],
            batch_size=spec["batch_size"], use_safetensors=raw["use_safetensors"],
        ),
        versions={k: raw[f"{k}_version"] for k in ("lm_eval", "torch", "transformers", "datasets", "python")},
        seeds=Seeds(random=seed, numpy=seed, torch=seed, fewshot=seed),
        limit=suite.limit,
        bootstrap_iters=suite.bootstrap_iters,
        total_seconds=round(float(raw["seconds"]), 3),
        started_at=started_at,
    )
