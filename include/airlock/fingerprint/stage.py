"""The ingest-time fingerprint baseline: one call per quarantine area (task ``fingerprint_baseline``).

:func:`baseline_quarantine` loads the quarantined model (only once its scan report allows it;
``trust_remote_code=False``, safetensors preferred, no hub access), calibrates its fingerprint in this
worker's runtime class and writes, beside the model::

    <area>/reports/fingerprint-baseline.json      Fingerprint (airlock.fingerprint/v1)
    <area>/reports/fingerprint-calibration.json   its noise floor (airlock.fingerprint-calibration/v1)
    <area>/reports/fingerprint-samples.json       optional: sampled completions for the endpoint backend
    <area>/stages/fingerprint.json                what the stage did (folded into the BOM's evaluate task)

The reports are promoted with the version (:func:`report_paths`) and pinned by the AI-BOM
(:func:`artifacts`); the nightly check (:mod:`airlock.fingerprint.nightly`) compares verified copies
against them. A baseline for another runtime class of the same version is written under a variant
name (``fingerprint-baseline.<variant>.json``), e.g. by a second task on the ``gpu`` queue.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airlock.errors import ConfigurationError
from airlock.fingerprint.model import DEFAULT_CALIBRATION_RUNS

if TYPE_CHECKING:
    from airlock.aibom import ArtifactRef
    from airlock.fingerprint.endpoint import SampleSet
    from airlock.fingerprint.prompts import PromptSet
    from airlock.quarantine import QuarantineArea

REPORTS_DIR = "reports"
BASELINE_REPORT = "reports/fingerprint-baseline.json"
CALIBRATION_REPORT = "reports/fingerprint-calibration.json"
SAMPLES_REPORT = "reports/fingerprint-samples.json"
STAGE = "fingerprint"
DEFAULT_SAMPLE_TOKENS = 32
# Sampled completions per canonical prompt written at ingest for the endpoint backend; 0 (the default) writes none,
# and endpoints claiming such a version are checked as errors. 30 with the 48 prompts is the budget measured
# in bench/detect_bench.py (power 1.0 against a model swapped behind the endpoint).
ENDPOINT_SAMPLES_ENV = "AIRLOCK_FINGERPRINT_ENDPOINT_SAMPLES"


def endpoint_samples_setting(env: dict[str, str] | None = None) -> int:
    """Samples per prompt for the endpoint baseline from AIRLOCK_FINGERPRINT_ENDPOINT_SAMPLES: 0 (none) or 2-1000."""
    raw = (os.environ if env is None else env).get(ENDPOINT_SAMPLES_ENV, "").strip() or "0"
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value != 0 and not 2 <= value <= 1000:
        raise ConfigurationError(f"{ENDPOINT_SAMPLES_ENV}={raw!r}: 0 (no endpoint baseline) or 2-1000 samples per "
                                 f"prompt (1 is degenerate)")
    return value
# A variant names a second runtime class's baseline of the same version: report file names allow no more.
_VARIANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
# reports/fingerprint-baseline[.<variant>].json, the shape the registry promotes (one flat reports/ folder).
BASELINE_KEY = re.compile(r"reports/fingerprint-baseline(?:\.(?P<variant>[a-z0-9][a-z0-9_-]{0,31}))?\.json")


def report_key(kind: str, variant: str | None = None) -> str:
    """``reports/fingerprint-<kind>[.<variant>].json`` (kind: baseline, calibration, samples)."""
    if variant is not None and not _VARIANT.fullmatch(variant):
        raise ConfigurationError(f"fingerprint variant {variant!r}: lower-case letters, digits, '_' and '-' only")
    return f"{REPORTS_DIR}/fingerprint-{kind}" + (f".{variant}" if variant else "") + ".json"


@contextlib.contextmanager
def offline_env() -> Iterator[None]:
    """HF hub/datasets/transformers offline for the duration (loading already passes ``local_files_only``)."""
    keys = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")
    before = {k: os.environ.get(k) for k in keys}
    os.environ.update(dict.fromkeys(keys, "1"))
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def scanned_model_ref(area: QuarantineArea, tier: str) -> dict[str, str]:
    """The model's identity from the run's manifest, after checking the stored scan report allows it.

    Raises :class:`airlock.ingest.ScanBlocked` when there is no report, it is for another tier or it
    does not allow the files: nothing is loaded from a quarantine the scan has not cleared.
    """
    from airlock.ingest import checked_scan, load_manifest

    _report, scan_sha256 = checked_scan(area, tier, rescan=False)
    manifest = load_manifest(area)
    return {"name": manifest.model.name, "source": manifest.model.source, "revision": manifest.model.revision or "",
            "root_digest": manifest.root_digest, "scan_report_sha256": scan_sha256}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write(path: Path, text: str) -> str:
    from airlock.fsutil import atomic_write

    data = text.encode("utf-8")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, data)
    return hashlib.sha256(data).hexdigest()


def sample_model(model_dir: Path, prompt_set: PromptSet, *, samples_per_prompt: int,
                 max_tokens: int = DEFAULT_SAMPLE_TOKENS, seed: int = 0, device: str = "auto", dtype: str = "float32", source: str = "verified-copy",
                 claims: str = "") -> SampleSet:
    """Sampled completions of the local model the way an OpenAI-compatible server draws them (temperature 1,
    no top-k/top-p truncation, ``max_tokens`` new tokens): the baseline the endpoint backend tests against."""
    import torch
    from transformers import GenerationConfig

    from airlock.fingerprint.endpoint import SampleSet
    from airlock.fingerprint.model import load_model

    if samples_per_prompt < 2:
        raise ConfigurationError("endpoint baseline samples: at least 2 per prompt (1 is degenerate)")
    model, tokenizer, device = load_model(model_dir, device=device, dtype=dtype)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_tokens,
                              num_return_sequences=samples_per_prompt, pad_token_id=pad)
    # A prompt longer than the context leaves room for the completion by keeping its end (a server would
    # fail on it outright); only tiny test models have contexts that short.
    context = getattr(model.config, "max_position_embeddings", None)
    keep = max(1, context - max_tokens) if isinstance(context, int) else None
    samples: dict[str, list[str]] = {}
    with torch.inference_mode():
        for index, prompt in enumerate(prompt_set.prompts):
            torch.manual_seed(seed * 10_007 + index)
            ids = tokenizer(prompt.text, return_tensors="pt", verbose=False).input_ids
            ids = (ids[:, -keep:] if keep else ids).to(device)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
            samples[prompt.id] = tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
    return SampleSet(source=source, claims=claims, prompt_set_sha256=prompt_set.sha256, max_tokens=max_tokens,
                     seed_base=seed, samples=samples)


def baseline_quarantine(
    area: QuarantineArea,
    tier: str,
    *,
    device: str = "auto",
    dtype: str = "float32",
    runs: Sequence[tuple[int, int]] = DEFAULT_CALIBRATION_RUNS,
    variant: str | None = None,
    samples_per_prompt: int | None = None,
    sample_tokens: int = DEFAULT_SAMPLE_TOKENS,
    claims: str = "",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Calibrate the quarantined model's fingerprint in this runtime class and write the baseline reports.

    Returns a small summary for XCom (paths, sha256 of each report, floor, threshold, runtime class).
    A directory that is not a transformers model (no ``config.json`` with a ``model_type``) gets no baseline:
    the summary says ``skipped`` and the nightly check will list the version as not covered.
    ``samples_per_prompt`` > 0 also writes sampled completions for the endpoint backend (``claims``: the
    ``org/name@version`` they are of; default: the model's name); None takes AIRLOCK_FINGERPRINT_ENDPOINT_SAMPLES.
    Raises :class:`airlock.ingest.ScanBlocked` before loading anything the scan has not allowed, and
    :class:`~airlock.fingerprint.model.FingerprintError` / :class:`~airlock.fingerprint.compare.ComparisonRefused`
    when the model cannot be loaded or its calibration runs disagree on token ids.
    """
    from airlock.evaluate.stage import not_applicable
    from airlock.fingerprint.model import calibrate
    from airlock.fingerprint.prompts import load_prompt_set
    from airlock.ingest import record_stage

    log = log or (lambda _line: None)
    if samples_per_prompt is None:
        samples_per_prompt = endpoint_samples_setting()
    started, clock = _now(), datetime.now(UTC)
    model_ref = scanned_model_ref(area, tier)
    baseline_path = area.path / report_key("baseline", variant)
    calibration_path = area.path / report_key("calibration", variant)
    samples_path = area.path / report_key("samples", variant)
    unloadable = not_applicable(area)
    if unloadable is not None:
        reason = f"{unloadable}: no behavioural baseline"
        log(reason)
        summary = {"skipped": reason, "started_at": started, "ended_at": _now()}
        record_stage(area, STAGE, summary)
        return summary
    ref = {k: model_ref[k] for k in ("name", "source", "revision", "root_digest")}
    with offline_env():
        fingerprint, calibration = calibrate(area.files_dir, runs=runs, device=device, dtype=dtype, model_ref=ref)
        samples = None
        if samples_per_prompt:
            samples = sample_model(area.files_dir, load_prompt_set(fingerprint.prompt_set.id),
                                   samples_per_prompt=samples_per_prompt, max_tokens=sample_tokens, device=device,
                                   dtype=dtype, source="quarantine", claims=claims or str(ref["name"]))
    summary: dict[str, Any] = {
        "baseline": str(baseline_path),
        "baseline_sha256": _write(baseline_path, fingerprint.to_json()),
        "baseline_digest": fingerprint.digest(),
        "calibration": str(calibration_path),
        "calibration_sha256": _write(calibration_path, calibration.to_json()),
        "floor": calibration.floor,
        "threshold": calibration.threshold,
        "runtime_class": fingerprint.runtime.runtime_class.id,
        "prompt_set": fingerprint.prompt_set.id,
        "prompts": len(fingerprint.prompts),
        "root_digest": model_ref["root_digest"],
    }
    if samples is not None:
        summary["samples"] = str(samples_path)
        summary["samples_sha256"] = _write(samples_path, samples.model_dump_json(by_alias=True))
        summary["samples_per_prompt"] = samples_per_prompt
    summary.update(seconds=round((datetime.now(UTC) - clock).total_seconds(), 3), started_at=started,
                   ended_at=_now())
    if variant:
        summary["variant"] = variant
    record_stage(area, STAGE if not variant else f"{STAGE}.{variant}", summary)
    log(f"fingerprint baseline {fingerprint.digest()[:16]} in {summary['runtime_class']}: noise floor "
        f"{calibration.floor:.3g}, threshold {calibration.threshold:.3g} -> {baseline_path}")
    return summary


def report_paths(area: QuarantineArea) -> list[Path]:
    """The fingerprint reports present in ``area`` (every variant), for ``PromotionRequest.reports``."""
    reports = area.path / REPORTS_DIR
    if not reports.is_dir():
        return []
    pattern = re.compile(r"fingerprint-(?:baseline|calibration|samples)(?:\.[a-z0-9][a-z0-9_-]{0,31})?\.json")
    return sorted(p for p in reports.iterdir() if pattern.fullmatch(p.name) and p.is_file())


def artifacts(area: QuarantineArea) -> list[ArtifactRef]:
    """One AI-BOM artifact reference (kind ``fingerprint``) per fingerprint report in ``area``."""
    from airlock.aibom import ArtifactRef

    return [ArtifactRef.from_file("fingerprint", path, key=f"{REPORTS_DIR}/{path.name}") for path in report_paths(area)]


__all__ = [
    "BASELINE_KEY", "BASELINE_REPORT", "CALIBRATION_REPORT", "SAMPLES_REPORT", "artifacts",
    "baseline_quarantine", "offline_env", "report_key", "report_paths", "sample_model", "scanned_model_ref",
]
