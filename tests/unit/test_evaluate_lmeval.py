"""lm-eval end to end on a tiny locally built GPT-2, offline (slow: one lm-eval process is ~10 s on CPU)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from airlock.aibom import performance_metrics
from airlock.cli import main
from airlock.evaluate import (
    EvalReport,
    EvaluationError,
    evaluate_model,
    judge,
    suite_for,
)
from airlock.evaluate.suites import SHIPPED_TASKS_DIR, EvalSuite

from tests.unit.fingerprint_lm import build_tiny_lm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("eval-model") / "tiny")


def test_cli_evaluates_the_tier_suite_offline(tmp_path, model, capsys):
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(model), "--tier", "high", "--out", str(out), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("pass:")
    report = EvalReport.model_validate_json(out.read_bytes())
    suite = suite_for("high")
    assert report.suite.name == suite.name and report.suite.digest == suite.digest()
    assert [t.name for t in report.tasks] == list(suite.tasks)
    counts = {t.name: t.n_samples.effective for t in report.tasks}
    assert counts == {"airlock_mc": 40, "airlock_heldout_ppl": 8, "airlock_gen": 30}
    for task in report.tasks:
        assert len(task.task_hash) == 64 and task.version == "1.0" and task.n_shot == 0
    mc = report.task("airlock_mc").metric("acc")
    assert 0.0 <= mc.value <= 1.0 and mc.stderr is not None and mc.higher_is_better is True
    assert report.task("airlock_heldout_ppl").metric("word_perplexity").value > 1.0
    assert report.task("airlock_gen").metric("exact_match", "first_word") is not None
    assert (report.runtime.device, report.runtime.dtype, report.runtime.use_safetensors) == ("cpu", "float32", True)
    assert report.versions["lm_eval"] == "0.4.13" and report.seeds.fewshot == suite.seed
    assert report.total_seconds > 0
    # the AI-BOM reads the report as it is stored
    assert {m.type for m in performance_metrics(report.to_json_dict())} >= {"acc", "word_perplexity", "exact_match"}
    # a previous approved version that did much better: the same report now needs a human
    better = report.model_copy(update={"tasks": [
        t.model_copy(update={"metrics": [m.model_copy(update={"value": 1.0}) if m.name == "acc" else m
                                         for m in t.metrics]}) for t in report.tasks]})
    verdict = judge(report, suite, better)
    assert verdict.decision == "requires_approval" and verdict.findings[0].metric == "acc,none"


def test_rewritten_data_with_the_same_mtime_is_read_afresh(tmp_path, model):
    """`datasets` caches local files by path and mtime; each evaluation must see the bytes it hashes."""
    tasks = tmp_path / "tasks"
    shutil.copytree(SHIPPED_TASKS_DIR, tasks)
    suite = EvalSuite(name="mc-only", version=1, tasks=("airlock_mc",), task_dirs=(str(tasks),), batch_size=16)
    first = evaluate_model(model, suite, device="cpu", threads=1)
    data = tasks / "airlock_mc.jsonl"
    stat = data.stat()
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for row in rows:  # same length, different answers: choices reversed
        row["choices"] = row["choices"][::-1]
        row["label"] = len(row["choices"]) - 1 - row["label"]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = evaluate_model(model, suite, device="cpu", threads=1)
    assert first.suite.digest != second.suite.digest
    assert first.task("airlock_mc").task_hash != second.task("airlock_mc").task_hash
    assert first.task("airlock_mc").data_sha256 != second.task("airlock_mc").data_sha256


def test_a_directory_that_is_not_a_model_fails_cleanly(tmp_path):
    with pytest.raises(EvaluationError, match="no config.json"):
        evaluate_model(tmp_path, suite_for("low"), device="cpu")
