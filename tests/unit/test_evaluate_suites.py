"""Evaluation suites as policy data, task YAML generation, EvalReport shape and the threshold judge."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from airlock.aibom import performance_metrics
from airlock.errors import ConfigurationError
from airlock.evaluate.report import (
    EvalReport,
    RuntimeInfo,
    SampleCount,
    Seeds,
    SuiteRef,
    TaskResult,
    judge,
    task_metrics,
)
from airlock.evaluate.suites import (
    SHIPPED_TASKS_DIR,
    SUITES_BY_TIER,
    EvalSuite,
    MetricRule,
    suite_for,
)
from airlock.evaluate.taskfiles import index_tasks, materialize
from airlock.policy import RiskTier

CORPUS = Path(__file__).resolve().parents[2] / "scripts" / "demo_data" / "corpus.txt"


# --------------------------------------------------------------------------- shipped tasks


def test_shipped_tasks_cover_the_three_output_types():
    tasks = index_tasks([SHIPPED_TASKS_DIR])
    kinds = {name: src.config["output_type"] for name, src in tasks.items()}
    assert kinds == {"airlock_mc": "multiple_choice", "airlock_heldout_ppl": "loglikelihood_rolling",
                     "airlock_gen": "generate_until"}
    gen = tasks["airlock_gen"].config
    assert [f["function"] for f in gen["filter_list"][0]["filter"]] == ["regex", "take_first"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_shipped_items_are_well_formed():
    tasks = index_tasks([SHIPPED_TASKS_DIR])
    mc = _rows(tasks["airlock_mc"].data_files["test"][0])
    assert len(mc) >= 40 and all(0 <= r["label"] < len(r["choices"]) for r in mc)
    assert len({r["id"] for r in mc}) == len(mc)
    gen = _rows(tasks["airlock_gen"].data_files["test"][0])
    assert len(gen) >= 30 and all(r["question"] and r["answer"] for r in gen)


def test_held_out_text_is_distinct_from_the_demo_corpus():
    tasks = index_tasks([SHIPPED_TASKS_DIR])
    corpus = " ".join(CORPUS.read_text().split())
    for row in _rows(tasks["airlock_heldout_ppl"].data_files["test"][0]):
        words = row["text"].split()
        # no run of 8 words from a held-out paragraph appears in the training corpus
        for i in range(len(words) - 7):
            assert " ".join(words[i:i + 8]) not in corpus, row["id"]


# --------------------------------------------------------------------------- YAML generation


def test_materialize_writes_absolute_paths_to_copies(tmp_path):
    out = materialize(["airlock_mc", "airlock_gen"], [SHIPPED_TASKS_DIR], tmp_path)
    assert sorted(p.name for p in (tmp_path / "tasks").iterdir()) == ["airlock_gen.yaml", "airlock_mc.yaml"]
    config = yaml.safe_load(out["airlock_mc"].yaml_path.read_text())
    data = Path(config["dataset_kwargs"]["data_files"]["test"])
    assert data.is_absolute() and data.is_file() and tmp_path.resolve() in data.parents
    assert data.read_bytes() == (SHIPPED_TASKS_DIR / "airlock_mc.jsonl").read_bytes()
    import hashlib

    assert out["airlock_mc"].data_sha256 == {"test/0": hashlib.sha256(data.read_bytes()).hexdigest()}
    assert config["doc_to_text"] == "{{context}}"  # jinja templates survive the YAML round trip


def _task_dir(tmp_path: Path, config: dict, data: str | None = "x.jsonl") -> Path:
    d = tmp_path / "tasks"
    d.mkdir(exist_ok=True)
    if data:
        (d / "x.jsonl").write_text('{"text": "a"}\n')
    (d / "t.yaml").write_text(yaml.safe_dump(config))
    return d


BASE = {"task": "t", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": "x.jsonl"}},
        "output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "{{text}}"}


@pytest.mark.parametrize(("change", "message"), [
    ({"dataset_kwargs": {"data_files": {"test": "../x.jsonl"}}}, "relative path inside the task directory"),
    ({"dataset_kwargs": {"data_files": {"test": "/etc/passwd"}}}, "relative path inside the task directory"),
    ({"dataset_kwargs": {"data_files": {"test": "missing.jsonl"}}}, "missing or not a regular file"),
    ({"dataset_kwargs": {"data_files": {"test": "x.jsonl"}, "revision": "main"}}, "exactly a data_files mapping"),
    ({"dataset_path": "EleutherAI/lambada_openai"}, "local files only"),
    ({"include": "other.yaml"}, "not allowed"),
    ({"unsafe_code": True}, "not allowed"),
])
def test_materialize_refuses_task_files_that_reach_outside(tmp_path, change, message):
    d = _task_dir(tmp_path, {**BASE, **change})
    with pytest.raises(ConfigurationError, match=message):
        index_tasks([d])


def test_function_tags_are_refused(tmp_path):
    d = _task_dir(tmp_path, BASE)
    (d / "t.yaml").write_text((d / "t.yaml").read_text() + "process_docs: !function utils.process\n")
    with pytest.raises(ConfigurationError, match="not plain YAML"):
        index_tasks([d])


def test_a_task_defined_twice_is_refused(tmp_path):
    d = _task_dir(tmp_path, BASE)
    shutil.copy(d / "t.yaml", d / "t2.yaml")
    with pytest.raises(ConfigurationError, match="defined twice"):
        index_tasks([d])


# --------------------------------------------------------------------------- suites


def test_every_tier_has_a_suite_and_unknown_tiers_fail():
    assert set(SUITES_BY_TIER) == set(RiskTier)
    assert suite_for("critical").name == "airlock-strict"
    with pytest.raises(ConfigurationError, match="risk tier 'bogus'"):
        suite_for("bogus")


def test_suite_rules_must_name_suite_tasks():
    with pytest.raises(ConfigurationError, match="rules name tasks it does not run"):
        EvalSuite(name="s", version=1, tasks=("airlock_mc",),
                  rules=(MetricRule(task="airlock_gen", metric="exact_match", higher_is_better=True),))


def test_suite_digest_covers_the_data_bytes(tmp_path):
    copy = tmp_path / "tasks"
    shutil.copytree(SHIPPED_TASKS_DIR, copy)
    suite = EvalSuite(name="s", version=1, tasks=("airlock_mc",), task_dirs=(str(copy),))
    before = suite.digest()
    assert suite.digest() == before
    with (copy / "airlock_mc.jsonl").open("a") as f:
        f.write('{"id": "extra", "context": "A", "choices": ["b", "c"], "label": 0}\n')
    assert suite.digest() != before


# --------------------------------------------------------------------------- reports and judge

SUITE = EvalSuite(
    name="test-suite", version=1, tasks=("airlock_mc", "airlock_heldout_ppl"),
    rules=(
        MetricRule(task="airlock_mc", metric="acc", higher_is_better=True, bound=0.6, max_drop=0.05),
        MetricRule(task="airlock_heldout_ppl", metric="word_perplexity", higher_is_better=False, bound=200.0,
                   max_drop_relative=0.10),
    ),
)
DIGEST = "d" * 64


def _report(acc: float | None = 0.8, ppl: float = 100.0, digest: str = DIGEST) -> EvalReport:
    mc = {"alias": "airlock_mc", "acc_norm,none": 0.5, "acc_norm_stderr,none": 0.08}
    if acc is not None:
        mc |= {"acc,none": acc, "acc_stderr,none": 0.06}
    results = {"airlock_mc": mc,
               "airlock_heldout_ppl": {"alias": "airlock_heldout_ppl", "word_perplexity,none": ppl,
                                       "word_perplexity_stderr,none": "N/A"}}
    hib = {"airlock_mc": {"acc": True, "acc_norm": True}, "airlock_heldout_ppl": {"word_perplexity": False}}
    tasks = [TaskResult(name=name, version="1.0", task_hash="h" * 64, n_samples=SampleCount(original=8, effective=8),
                        n_shot=0, data_sha256={"test/0": "0" * 64}, metrics=task_metrics(results[name], hib[name]))
             for name in results]
    return EvalReport(
        suite=SuiteRef(name=SUITE.name, version=SUITE.version, digest=digest), tasks=tasks, results=results,
        runtime=RuntimeInfo(device="cpu", device_requested="auto", device_name="cpu", dtype="float32",
                            dtype_requested="float32", threads=1, batch_size=8, use_safetensors=True),
        versions={"lm_eval": "0.4.13"}, seeds=Seeds(random=1, numpy=1, torch=1, fewshot=1), limit=None,
        bootstrap_iters=1000, total_seconds=1.0, started_at="2026-01-01T00:00:00+00:00",
    )


def _judge(report, previous=None):
    return judge(report, SUITE, previous, suite_digest=DIGEST)


def test_task_metrics_keep_stderr_and_drop_na():
    report = _report()
    acc = report.task("airlock_mc").metric("acc")
    assert (acc.value, acc.stderr, acc.higher_is_better) == (0.8, 0.06, True)
    assert report.task("airlock_heldout_ppl").metric("word_perplexity").stderr is None
    assert report.summary()["airlock_mc/acc"] == 0.8


def test_report_round_trips_and_feeds_the_aibom():
    report = _report()
    again = EvalReport.model_validate_json(json.dumps(report.to_json_dict()))
    assert again == report
    assert report.to_json_dict()["schema"] == "airlock.eval-report/v1"
    metrics = performance_metrics(report.to_json_dict())
    by_type = {(m.type, m.slice): m for m in metrics}
    assert by_type[("acc", "airlock_mc")].value == "0.8"
    assert by_type[("acc", "airlock_mc")].confidence_interval is not None
    assert by_type[("word_perplexity", "airlock_heldout_ppl")].confidence_interval is None


def test_pass_without_previous():
    verdict = _judge(_report())
    assert verdict.decision == "pass" and not verdict.findings and not verdict.previous_compared


def test_below_bound_blocks_naming_the_metric():
    verdict = _judge(_report(acc=0.55))
    assert verdict.decision == "block"
    assert verdict.reason == "airlock_mc/acc = 0.55 is below the tier's bound 0.6"


def test_perplexity_above_bound_blocks():
    verdict = _judge(_report(ppl=450.0))
    assert verdict.decision == "block" and verdict.findings[0].rule == "above_bound"
    assert "airlock_heldout_ppl/word_perplexity" in verdict.reason


def test_missing_metric_blocks():
    verdict = _judge(_report(acc=None))
    assert verdict.decision == "block"
    assert verdict.findings[0].rule == "missing_metric" and verdict.findings[0].metric == "acc,none"


def test_drop_against_previous_beyond_margin_requires_approval():
    verdict = _judge(_report(acc=0.72), previous=_report(acc=0.80))
    assert verdict.decision == "requires_approval" and verdict.previous_compared
    finding = verdict.findings[0]
    assert (finding.rule, finding.previous, finding.value) == ("worse_than_previous", 0.80, 0.72)


def test_drop_within_margin_passes_and_improvement_passes():
    assert _judge(_report(acc=0.77), previous=_report(acc=0.80)).decision == "pass"
    assert _judge(_report(acc=0.95, ppl=80.0), previous=_report(acc=0.80, ppl=100.0)).decision == "pass"


def test_relative_margin_on_lower_is_better_metric():
    assert _judge(_report(ppl=109.0), previous=_report(ppl=100.0)).decision == "pass"
    verdict = _judge(_report(ppl=111.0), previous=_report(ppl=100.0))
    assert verdict.decision == "requires_approval" and verdict.findings[0].limit == pytest.approx(10.0)


def test_block_dominates_approval():
    verdict = _judge(_report(acc=0.5, ppl=150.0), previous=_report(acc=0.9, ppl=100.0))
    assert verdict.decision == "block"
    assert {f.rule for f in verdict.findings} == {"below_bound", "worse_than_previous"}


def test_report_from_another_suite_is_blocked():
    verdict = _judge(_report(digest="e" * 64))
    assert verdict.decision == "block" and verdict.findings[0].rule == "suite_mismatch"


def test_previous_from_another_suite_cannot_vouch_for_no_drop():
    verdict = _judge(_report(), previous=_report(acc=0.99, digest="e" * 64))
    assert verdict.decision == "requires_approval"
    assert verdict.findings[0].rule == "previous_not_comparable" and not verdict.previous_compared


def test_judge_computes_the_digest_of_the_shipped_suite():
    suite = suite_for("high")
    report = _report().model_copy(update={"suite": SuiteRef(name=suite.name, version=suite.version,
                                                             digest=suite.digest())})
    # STANDARD has only margins: no bounds, and a missing airlock_gen metric blocks
    verdict = judge(report, suite)
    assert verdict.decision == "block" and verdict.findings[0].task == "airlock_gen"
