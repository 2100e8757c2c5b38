"""The ingest-time evaluation (`evaluate_quarantine`) and what gates and the AI-BOM read back from it.

Slow: one real lm-eval run on a tiny locally built GPT-2 (a small suite); the verdict paths reuse its report.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from airlock.evaluate.report import EvalReport, SuiteRef
from airlock.evaluate.stage import (
    EVAL_REPORT,
    EvaluationBlocked,
    artifacts,
    checked_evaluation,
    eval_results,
    evaluate_quarantine,
    evaluation_stage_record,
    latest_approved_eval_report,
    report_paths,
)
from airlock.evaluate.suites import EvalSuite, MetricRule
from airlock.registry.base import StoredObjectError

from tests.fingerprint_nightly_fixtures import (
    nightly_env,
    promote_version,
    scanned_area,
)
from tests.registry_contract import SIGNER, TRUST
from tests.signing_fixtures import make_model

pytestmark = pytest.mark.slow

SUITE = EvalSuite(name="stage-test", version=1, tasks=("airlock_mc",), limit=8, batch_size=8,
                  rules=(MetricRule(task="airlock_mc", metric="acc", higher_is_better=True, max_drop=0.05),))
BOUNDED = EvalSuite(name="stage-test-bounded", version=1, tasks=("airlock_mc",), limit=8,
                    rules=(MetricRule(task="airlock_mc", metric="acc", higher_is_better=True, bound=1.01),))


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from tests.unit.fingerprint_lm import build_tiny_lm

    return build_tiny_lm(tmp_path_factory.mktemp("eval-stage-lm") / "lm")


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, lm):
    """One real evaluation: (area, summary, report)."""
    area = scanned_area(tmp_path_factory.mktemp("eval-stage") / "quarantine", lm)
    lines: list[str] = []
    summary = evaluate_quarantine(area, "medium", device="cpu", threads=1, suite=SUITE, log=lines.append)
    assert lines[-1].startswith("pass:")
    return area, summary, EvalReport.model_validate_json((area.path / EVAL_REPORT).read_bytes())


def _better(report: EvalReport) -> EvalReport:
    """The same report with every accuracy at 1.0: a previous version the current one is far worse than."""
    return report.model_copy(update={"tasks": [
        t.model_copy(update={"metrics": [m.model_copy(update={"value": 1.0}) if m.name == "acc" else m
                                         for m in t.metrics]}) for t in report.tasks]})


def test_the_report_is_written_summarised_and_judged_again_from_the_stored_bytes(evaluated, tmp_path: Path) -> None:
    area, summary, report = evaluated
    data = (area.path / EVAL_REPORT).read_bytes()
    assert summary["decision"] == "pass" and summary["report_sha256"] == hashlib.sha256(data).hexdigest()
    assert report.model["root_digest"] == json.loads(area.manifest_file.read_text())["root_digest"]
    assert summary["metrics"] == report.summary() and "airlock_mc/acc" in summary["metrics"]
    assert checked_evaluation(area, "medium", suite=SUITE).decision == "pass"
    # The drop check against the previous approved version is re-derived too (not taken from XCom).
    previous = tmp_path / "previous.json"
    previous.write_text(json.dumps(_better(report).to_json_dict()))
    verdict = checked_evaluation(area, "medium", previous, suite=SUITE)
    assert verdict.decision == "requires_approval" and verdict.findings[0].rule == "worse_than_previous"


def test_what_the_ai_bom_wiring_gets(evaluated, tmp_path: Path) -> None:
    from airlock.aibom import (
        AibomInputs,
        ArtifactRef,
        StageRecord,
        performance_metrics,
        write_aibom,
    )
    from airlock.ingest import load_manifest

    area, summary, _report = evaluated
    assert report_paths(area) == [area.path / EVAL_REPORT]
    assert artifacts(area) == [ArtifactRef("eval-report", EVAL_REPORT, summary["report_sha256"])]
    results = eval_results(area)
    assert {m.type for m in performance_metrics(results)} >= {"acc"}
    record = evaluation_stage_record(area, "manual__test")
    assert record["parameters"]["eval_report_sha256"] == summary["report_sha256"]
    assert record["parameters"]["suite_digest"] == SUITE.digest()
    inputs = AibomInputs.from_manifest(
        load_manifest(area), model="acme/tiny-lm", version="1", timestamp=datetime(2026, 5, 1, tzinfo=UTC),
        version_url="file:///registry/models/acme/tiny-lm/1", artifacts=artifacts(area),
        stages=[StageRecord.model_validate(record)],
        run_id="manual__test", eval_results=results, model_dir=area.files_dir,
    )
    bom = json.loads(write_aibom(inputs, tmp_path / "aibom.cdx.json").path.read_text())
    assert bom["metadata"]["component"]["modelCard"]["quantitativeAnalysis"]["performanceMetrics"]
    refs = bom["metadata"]["component"]["externalReferences"]
    assert any(r["url"].endswith(EVAL_REPORT) and r["hashes"][0]["content"] == summary["report_sha256"] for r in refs)


def test_a_block_verdict_raises_after_the_report_is_written(lm, evaluated, tmp_path: Path, monkeypatch) -> None:
    from airlock.evaluate import stage

    _area, _summary, report = evaluated
    bounded = report.model_copy(update={"suite": SuiteRef(name=BOUNDED.name, version=1, digest=BOUNDED.digest())})
    monkeypatch.setattr(stage, "evaluate_model", lambda *args, **kwargs: bounded)
    area = scanned_area(tmp_path / "quarantine", lm)
    with pytest.raises(EvaluationBlocked, match="airlock_mc/acc = .* below the tier's bound 1.01") as raised:
        evaluate_quarantine(area, "medium", device="cpu", suite=BOUNDED)
    assert raised.value.verdict.decision == "block"
    assert (area.path / EVAL_REPORT).is_file()
    assert json.loads((area.path / "stages" / "evaluate.json").read_text())["decision"] == "block"
    with pytest.raises(EvaluationBlocked, match="below the tier's bound"):
        checked_evaluation(area, "medium", suite=BOUNDED)


def test_a_missing_report_or_one_about_other_files_is_refused(lm, evaluated, tmp_path: Path) -> None:
    _area, _summary, report = evaluated
    area = scanned_area(tmp_path / "quarantine", lm)
    with pytest.raises(EvaluationBlocked, match="no evaluation report"):
        checked_evaluation(area, "medium", suite=SUITE)
    other = report.model_copy(update={"model": {**report.model, "root_digest": "0" * 64}})
    (area.path / EVAL_REPORT).parent.mkdir(exist_ok=True)
    (area.path / EVAL_REPORT).write_text(json.dumps(other.to_json_dict()))
    with pytest.raises(EvaluationBlocked, match="evaluated root sha256:0000"):
        checked_evaluation(area, "medium", suite=SUITE)


def test_a_model_lm_eval_cannot_load_is_skipped_only_where_the_tier_sets_no_bounds(tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    model = tmp_path / "weights"
    model.mkdir()
    save_file({"w": np.zeros(4, dtype=np.float32)}, str(model / "weights.safetensors"))  # allowed at every tier
    area = scanned_area(tmp_path / "quarantine", model, tier="medium")
    summary = evaluate_quarantine(area, "medium")
    assert summary["decision"] == "skipped" and "no config.json" in summary["reason"]
    assert checked_evaluation(area, "medium") is None and report_paths(area) == []
    critical = scanned_area(tmp_path / "quarantine-critical", model, tier="critical")
    with pytest.raises(EvaluationBlocked, match="tier critical requires suite airlock-strict"):
        evaluate_quarantine(critical, "critical")
    with pytest.raises(EvaluationBlocked, match="no evaluation report"):
        checked_evaluation(critical, "critical")


@pytest.mark.parametrize(("config", "reason"), [
    (None, "no config.json"),
    (b"{not json", "not readable JSON"),
    (b"{}", "no model_type"),  # AutoConfig would guess from the directory name ("files"): it cannot load it
    (b'{"model_type": "gpt2", "auto_map": {"AutoModel": "modeling_x.X"}}', "never runs"),
    (b'{"model_type": "gpt2"}', None),
])
def test_what_transformers_cannot_load_is_not_evaluated(tmp_path: Path, config: bytes | None,
                                                         reason: str | None) -> None:
    from airlock.evaluate.stage import not_applicable
    from airlock.quarantine import QuarantineArea

    area = QuarantineArea.for_run(tmp_path, "model_ingest", "r", "hf://acme/x")
    area.create()
    if config is not None:
        (area.files_dir / "config.json").write_bytes(config)
    why = not_applicable(area)
    assert (why is None) if reason is None else (reason in why)


def test_the_previous_report_is_the_latest_approved_versions_checked_against_its_plan(
        evaluated, tmp_path: Path, monkeypatch) -> None:
    from airlock.registry import open_registry

    _area, _summary, report = evaluated
    root = tmp_path / "registry"
    nightly_env(monkeypatch, tmp_path, root, TRUST)
    registry = open_registry(root, signer=SIGNER, trust=TRUST)
    reports = {v: report.model_copy(update={"model": {**report.model, "revision": v}}) for v in "123"}
    for version in "123":
        model_dir = make_model(tmp_path / f"model-{version}", with_safetensors=False)
        promote_version(registry, tmp_path, SIGNER, model="acme/tiny-lm", version=version, model_dir=model_dir,
                        reports={"eval.json": json.dumps(reports[version].to_json_dict()).encode()})
    registry.revoke("acme/tiny-lm", "3", reason="bad", actor="test")
    reader = open_registry()

    assert latest_approved_eval_report(reader, "acme/tiny-lm").model["revision"] == "2"
    assert latest_approved_eval_report(reader, "acme/tiny-lm", exclude_version="2").model["revision"] == "1"
    assert latest_approved_eval_report(reader, "acme/other") is None
    stored = root / "models" / "acme" / "tiny-lm" / "2" / EVAL_REPORT
    stored.chmod(0o644)
    stored.write_text(json.dumps(reports["1"].to_json_dict()))
    with pytest.raises(StoredObjectError, match="does not match the released plan"):
        latest_approved_eval_report(reader, "acme/tiny-lm")
