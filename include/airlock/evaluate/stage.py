"""The ingest-time evaluation: one call per quarantine area (task ``evaluate``, queue ``gpu``).

:func:`evaluate_quarantine` runs the tier's lm-eval suite on the quarantined model (only once its scan
report allows it; the child process loads with ``trust_remote_code=False``, safetensors preferred,
``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``), writes ``<area>/reports/eval.json`` (EvalReport) and
``<area>/stages/evaluate.json``, judges the report with the tier's rules against the previous approved
version's report, and raises :class:`EvaluationBlocked` when the verdict is ``block``.

Gates never take the verdict from XCom: :func:`checked_evaluation` re-reads the stored report and
judges it again. :func:`latest_approved_eval_report` finds the report to compare with in the
registry (bytes checked against the version's plan, which the signed index pins). For the AI-BOM:
:func:`artifacts`, :func:`eval_results` and :func:`evaluation_stage_record`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airlock.errors import AirlockError
from airlock.evaluate.report import EvalReport, EvalVerdict, judge
from airlock.evaluate.run import DEFAULT_TIMEOUT_S, evaluate_model
from airlock.evaluate.suites import EvalSuite, suite_for

if TYPE_CHECKING:
    from airlock.aibom import ArtifactRef
    from airlock.quarantine import QuarantineArea
    from airlock.registry import Registry
    from airlock.trust import TrustStore

EVAL_REPORT = "reports/eval.json"
STAGE = "evaluate"


class EvaluationBlocked(AirlockError):
    """The evaluation's verdict is ``block`` (a metric outside the tier's bound, a report of another suite),
    or the tier requires an evaluation the model cannot have. ``verdict`` is the judge's, when there is one."""

    def __init__(self, message: str, verdict: EvalVerdict | None = None) -> None:
        super().__init__(message)
        self.verdict = verdict


class EvalReportInvalid(AirlockError):
    """A stored EvalReport cannot be read, or is not about this model."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _has_bounds(suite: EvalSuite) -> bool:
    return any(rule.bound is not None for rule in suite.rules)


def read_eval_report(data: bytes, where: str) -> EvalReport:
    from pydantic import ValidationError

    from airlock.errors import first_validation_problem

    try:
        return EvalReport.model_validate_json(data)
    except ValidationError as exc:
        raise EvalReportInvalid(f"{where}: not a valid airlock.eval-report/v1 document "
                                f"({first_validation_problem(exc)})") from None


def _previous(previous_report: EvalReport | Path | str | None) -> EvalReport | None:
    if previous_report is None or isinstance(previous_report, EvalReport):
        return previous_report
    path = Path(previous_report)
    try:
        return read_eval_report(path.read_bytes(), str(path))
    except OSError as exc:
        raise EvalReportInvalid(f"{path}: cannot read ({exc.strerror or exc})") from None


def not_applicable(area: QuarantineArea) -> str | None:
    """Why the model in ``area`` is not one transformers can load (so neither lm-eval nor a fingerprint), or None.

    As ``AutoConfig`` decides: it needs ``config.json`` with a ``model_type`` (without one it would guess from the
    directory's name, and a quarantine directory is called ``files``). A ``model_type`` transformers does not know
    is not "not applicable": the model claims to be one, and its evaluation fails instead. A model that declares
    its own code (``auto_map``) cannot be loaded without running that code, which Airlock never does.
    """
    path = area.files_dir / "config.json"
    try:
        config = json.loads(path.read_bytes())
    except FileNotFoundError:
        return f"{area.files_dir}: no config.json (not a transformers model)"
    except (OSError, ValueError):
        return f"{path}: not readable JSON (not a transformers model)"
    if not (isinstance(config, dict) and isinstance(config.get("model_type"), str) and config["model_type"]):
        return f"{path}: no model_type (not a transformers model)"
    if "auto_map" in config:  # loading it would run the repository's own code: trust_remote_code stays False
        return f"{path}: declares its own modelling code (auto_map), which Airlock never runs"
    return None


def evaluate_quarantine(
    area: QuarantineArea,
    tier: str,
    previous_report: EvalReport | Path | str | None = None,
    *,
    device: str = "auto",
    dtype: str = "float32",
    threads: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    suite: EvalSuite | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate the quarantined model with ``tier``'s suite; write ``reports/eval.json``; return a summary.

    ``previous_report``: the latest approved version's EvalReport (or a path to it), for the drop check
    (:func:`latest_approved_eval_report`). The summary (for XCom and the approval form) has ``decision``
    (``pass`` | ``requires_approval``; ``skipped`` for a model lm-eval cannot load at a tier without
    absolute bounds), ``reason``, ``metrics``, ``report`` and ``report_sha256``.
    Raises :class:`airlock.ingest.ScanBlocked` before loading anything the scan has not allowed,
    :class:`EvaluationBlocked` for a ``block`` verdict (after writing the report, so it can be read),
    :class:`~airlock.evaluate.run.EvaluationError` when lm-eval could not run (fail closed: no verdict).
    """
    from airlock.fingerprint.stage import scanned_model_ref
    from airlock.fsutil import atomic_write
    from airlock.ingest import record_stage

    log = log or (lambda _line: None)
    started = _now()
    model_ref = scanned_model_ref(area, tier)
    suite = suite or suite_for(tier)
    digest = suite.digest()
    if (why := not_applicable(area)) is not None:
        if _has_bounds(suite):
            raise EvaluationBlocked(f"tier {tier} requires suite {suite.name} v{suite.version} to pass, and {why}")
        summary = {"decision": "skipped", "reason": f"not evaluated: {why}", "suite": suite.name,
                   "suite_version": suite.version, "suite_digest": digest, "started_at": started, "ended_at": _now()}
        record_stage(area, STAGE, summary)
        log(summary["reason"])
        return summary
    previous = _previous(previous_report)
    ref = {k: model_ref[k] for k in ("name", "source", "revision", "root_digest")}
    report = evaluate_model(area.files_dir, suite, device=device, dtype=dtype, threads=threads, model_ref=ref,
                            timeout_s=timeout_s)
    data = (json.dumps(report.to_json_dict(), indent=2, sort_keys=True) + "\n").encode()
    path = area.path / EVAL_REPORT
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, data)
    verdict = judge(report, suite, previous, suite_digest=digest)
    summary = {
        "decision": verdict.decision,
        "reason": verdict.reason,
        "findings": [f.message for f in verdict.findings],
        "previous_compared": verdict.previous_compared,
        "previous_root_digest": previous.model.get("root_digest") if previous else None,
        "suite": suite.name,
        "suite_version": suite.version,
        "suite_digest": digest,
        "metrics": report.summary(),
        "device": report.runtime.device,
        "dtype": report.runtime.dtype,
        "lm_eval": report.versions.get("lm_eval"),
        "report": str(path),
        "report_sha256": hashlib.sha256(data).hexdigest(),
        "seconds": report.total_seconds,
        "started_at": started,
        "ended_at": _now(),
    }
    record_stage(area, STAGE, summary)
    for key, value in summary["metrics"].items():
        log(f"{key} = {value:.4g}")
    log(f"{verdict.decision}: {verdict.reason}")
    if verdict.decision == "block":
        raise EvaluationBlocked(f"evaluation blocks at tier {tier}: {verdict.reason} (report {path})", verdict)
    return summary


def checked_evaluation(area: QuarantineArea, tier: str, previous_report: EvalReport | Path | str | None = None,
                       *, suite: EvalSuite | None = None) -> EvalVerdict | None:
    """The verdict re-derived from the stored report (for gates): judged again with ``tier``'s suite.

    None when the model is not one lm-eval can load and the tier has no absolute bounds (the same rule
    as :func:`evaluate_quarantine`). Raises :class:`EvaluationBlocked` when there is no report although
    one is required, when the report is about other files than this run's manifest, or when the
    verdict is ``block``.
    """
    from airlock.ingest import load_manifest

    suite = suite or suite_for(tier)
    path = area.path / EVAL_REPORT
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not_applicable(area) is not None and not _has_bounds(suite):
            return None
        raise EvaluationBlocked(f"no evaluation report in quarantine ({path}): evaluate did not complete for "
                                f"this run") from None
    report = read_eval_report(data, str(path))
    root = load_manifest(area).root_digest
    if report.model.get("root_digest") != root:
        raise EvaluationBlocked(f"{path} evaluated root sha256:{report.model.get('root_digest')}, this run's "
                                f"manifest is sha256:{root}; refused")
    verdict = judge(report, suite, _previous(previous_report))
    if verdict.decision == "block":
        raise EvaluationBlocked(f"evaluation blocks at tier {tier}: {verdict.reason} ({path})", verdict)
    return verdict


def latest_approved_eval_report(registry: Registry, model: str, *, trust: TrustStore | None = None,
                                exclude_version: str | None = None) -> EvalReport | None:
    """The EvalReport of ``model``'s most recently promoted *approved* version that has one, or None.

    Status comes from the index chain verified with ``trust`` (default: the registry's, i.e. the host's);
    the report's bytes must have the sha256 the version's plan records (the plan is pinned by the signed
    promoted event), otherwise :class:`~airlock.registry.base.StoredObjectError`.
    """
    from airlock.registry.base import (
        Layout,
        ModelName,
        StoredObjectError,
        VersionNotFoundError,
    )
    from airlock.registry.index import Status

    name = ModelName.parse(model)
    chain = registry.index.verified(name, trust or registry.trust(), registry.host_state)
    if chain.state is None:
        return None
    approved = [v for v in chain.state.versions if v.status is Status.APPROVED and v.version != exclude_version]
    for state in sorted(approved, key=lambda v: (v.promoted_at is not None, v.promoted_at), reverse=True):
        try:
            released = registry.released(name, state.version)
        except VersionNotFoundError:
            continue
        if state.plan_sha256 != released.released.plan_sha256:
            raise StoredObjectError(f"{name}@{state.version}: RELEASED names another plan than the signed index")
        expected = released.object_sha256(EVAL_REPORT)
        if expected is None:
            continue
        key = Layout.key(name, state.version, EVAL_REPORT)
        data = registry.store.read(key)
        if data is None or hashlib.sha256(data).hexdigest() != expected:
            raise StoredObjectError(f"{registry.store.object_url(key)}: does not match the released plan "
                                    f"(sha256:{expected})")
        return read_eval_report(data, registry.store.object_url(key))
    return None


# --------------------------------------------------------------------------- for the AI-BOM


def artifacts(area: QuarantineArea) -> list[ArtifactRef]:
    """The eval report as an AI-BOM artifact (kind ``eval-report``), when the stage wrote one."""
    from airlock.aibom import ArtifactRef

    path = area.path / EVAL_REPORT
    return [ArtifactRef.from_file("eval-report", path, key=EVAL_REPORT)] if path.is_file() else []


def report_paths(area: QuarantineArea) -> list[Path]:
    """``[<area>/reports/eval.json]`` when present, for ``PromotionRequest.reports``."""
    path = area.path / EVAL_REPORT
    return [path] if path.is_file() else []


def eval_results(area: QuarantineArea) -> dict[str, Any] | None:
    """The stored report as ``AibomInputs.eval_results`` (its lm-eval ``results`` become performance metrics)."""
    path = area.path / EVAL_REPORT
    if not path.is_file():
        return None
    return read_eval_report(path.read_bytes(), str(path)).to_json_dict()


def _stage_file(area: QuarantineArea, name: str) -> dict[str, Any] | None:
    path = area.path / "stages" / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def evaluation_stage_record(area: QuarantineArea, run_id: str) -> dict[str, Any] | None:
    """One ``evaluate`` formulation task for the BOM (``airlock.aibom.StageRecord`` shape) covering both the
    lm-eval evaluation and the fingerprint baseline; None when neither stage ran.

    One task, not two: the BOM's formulation knows the stage name ``evaluate`` and the baseline is part of
    the same evaluation of the same files.
    """
    from airlock import __version__

    evaluated, fingerprinted = _stage_file(area, STAGE), _stage_file(area, "fingerprint")
    if evaluated is None and fingerprinted is None:
        return None
    parameters: dict[str, str | int | float | bool] = {}
    tools = []
    if evaluated is not None:
        tools.append(f"lm-eval {evaluated.get('lm_eval') or ''}".strip())
        parameters.update({
            "suite": f"{evaluated.get('suite')} v{evaluated.get('suite_version')}",
            "suite_digest": evaluated.get("suite_digest") or "",
            "decision": evaluated.get("decision") or "",
        })
        for key in ("report_sha256", "device", "dtype"):
            if evaluated.get(key):
                parameters[f"eval_{key}" if key == "report_sha256" else key] = evaluated[key]
    if fingerprinted is not None:
        tools.append("airlock-fingerprint")
        if fingerprinted.get("skipped"):
            parameters["fingerprint"] = "skipped"
        else:
            parameters.update({
                "fingerprint_baseline_sha256": fingerprinted["baseline_sha256"],
                "fingerprint_calibration_sha256": fingerprinted["calibration_sha256"],
                "fingerprint_runtime_class": fingerprinted["runtime_class"],
                "fingerprint_floor": fingerprinted["floor"],
                "fingerprint_threshold": fingerprinted["threshold"],
            })
    stages = [s for s in (evaluated, fingerprinted) if s is not None]
    ends = [s.get("ended_at") for s in stages]
    return {
        "stage": "evaluate",
        "tool": "airlock-evaluate (" + ", ".join(tools) + ")",
        "tool_version": __version__,
        "parameters": parameters,
        "started_at": min(s["started_at"] for s in stages),
        "ended_at": max(ends) if all(ends) else None,
        "run_id": run_id,
    }
