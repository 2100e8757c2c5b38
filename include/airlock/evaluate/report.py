"""EvalReport (``airlock.eval-report/v1``) and the threshold judge (``airlock.eval-verdict/v1``).

The report keeps lm-eval's own per-task ``results`` mapping verbatim under ``results`` (the shape
:func:`airlock.aibom.performance_metrics` reads: ``"<metric>,<filter>"`` and
``"<metric>_stderr,<filter>"`` keys) and a typed view of the same numbers under ``tasks`` for gates
and the approval form.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

EVAL_REPORT_SCHEMA = "airlock.eval-report/v1"
EVAL_VERDICT_SCHEMA = "airlock.eval-verdict/v1"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class MetricValue(_Model):
    name: str
    filter: str
    value: float
    stderr: float | None  # None when lm-eval could not estimate one ("N/A")
    higher_is_better: bool | None


class SampleCount(_Model):
    original: int
    effective: int


class TaskResult(_Model):
    name: str
    version: str | None
    task_hash: str  # lm-eval task_hashes: sha256 over every sample's doc, prompt and target hashes
    n_samples: SampleCount
    n_shot: int
    data_sha256: dict[str, str]  # the JSONL bytes evaluated, "<split>/<i>" -> sha256
    metrics: list[MetricValue]

    def metric(self, name: str, filter_name: str = "none") -> MetricValue | None:
        return next((m for m in self.metrics if m.name == name and m.filter == filter_name), None)


class SuiteRef(_Model):
    name: str
    version: int
    digest: str


class RuntimeInfo(_Model):
    device: str  # what the model ran on, e.g. "cpu", "cuda:0"
    device_requested: str
    device_name: str
    dtype: str  # the loaded model's dtype as torch names it
    dtype_requested: str
    threads: int
    batch_size: int
    use_safetensors: bool


class Seeds(_Model):
    random: int
    numpy: int
    torch: int
    fewshot: int


class EvalReport(_Model):
    schema_: Literal["airlock.eval-report/v1"] = Field(EVAL_REPORT_SCHEMA, alias="schema")
    suite: SuiteRef
    model: dict[str, str] = Field(default_factory=dict)  # caller's identity of the model (name, revision, digest)
    tasks: list[TaskResult]
    results: dict[str, dict[str, float | int | str | None]]  # lm-eval's results, verbatim
    runtime: RuntimeInfo
    versions: dict[str, str]  # lm_eval, torch, transformers, datasets, python
    seeds: Seeds
    limit: int | None
    bootstrap_iters: int
    total_seconds: float
    started_at: str  # ISO 8601 UTC

    def task(self, name: str) -> TaskResult | None:
        return next((t for t in self.tasks if t.name == name), None)

    def to_json_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)

    def summary(self) -> dict[str, float]:
        """``{"task/metric[,filter]": value}``: small enough for XCom and the approval form."""
        out: dict[str, float] = {}
        for task in self.tasks:
            for m in task.metrics:
                out[f"{task.name}/{m.name}" + ("" if m.filter == "none" else f",{m.filter}")] = m.value
        return out


# --------------------------------------------------------------------------- building from lm-eval output

_NON_METRIC_KEYS = {"alias", "name", "sample_len", "sample_count"}


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def task_metrics(task_results: dict, higher_is_better: dict) -> list[MetricValue]:
    """lm-eval's ``{"acc,none": v, "acc_stderr,none": s, ...}`` as typed metrics (non-finite values dropped)."""
    metrics = []
    for key in sorted(task_results):
        name, _, filter_name = key.partition(",")
        if name in _NON_METRIC_KEYS or name.endswith("_stderr") or not filter_name:
            continue
        value = _finite(task_results[key])
        if value is None:
            continue  # a rule on a metric that has no finite value fails closed in judge()
        hib = higher_is_better.get(name)
        metrics.append(MetricValue(
            name=name, filter=filter_name, value=value,
            stderr=_finite(task_results.get(f"{name}_stderr,{filter_name}")),
            higher_is_better=hib if isinstance(hib, bool) else None,
        ))
    return metrics


# --------------------------------------------------------------------------- judging


class Finding(_Model):
    rule: Literal["suite_mismatch", "missing_metric", "below_bound", "above_bound", "worse_than_previous",
                  "previous_not_comparable"]
    action: Literal["block", "requires_approval"]
    task: str | None = None
    metric: str | None = None
    value: float | None = None
    limit: float | None = None
    previous: float | None = None
    message: str


class EvalVerdict(_Model):
    schema_: Literal["airlock.eval-verdict/v1"] = Field(EVAL_VERDICT_SCHEMA, alias="schema")
    decision: Literal["pass", "requires_approval", "block"]
    suite: SuiteRef
    previous_compared: bool
    findings: list[Finding]

    @property
    def reason(self) -> str:
        """One line for logs and CLI output."""
        if not self.findings:
            return f"evaluation passes suite {self.suite.name} v{self.suite.version}"
        return "; ".join(f.message for f in self.findings if f.action == self.decision) or self.findings[0].message

    def to_json_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


def _label(task: str, key: str) -> str:
    metric, _, filter_name = key.partition(",")
    return f"{task}/{metric}" + ("" if filter_name == "none" else f" (filter {filter_name})")


def judge(report: EvalReport, suite, previous: EvalReport | None = None, *, suite_digest: str | None = None
          ) -> EvalVerdict:
    """Apply ``suite``'s rules to ``report``: ``block`` outside an absolute bound (or when the report is
    not from this suite, or lacks a metric a rule names), ``requires_approval`` when a metric is worse
    than in ``previous`` (the latest approved version's report) by more than the rule's margin.

    ``suite_digest`` can be passed when the caller already computed ``suite.digest()``.
    """
    digest = suite_digest or suite.digest()
    ref = SuiteRef(name=suite.name, version=suite.version, digest=digest)
    findings: list[Finding] = []
    if report.suite != ref:
        findings.append(Finding(
            rule="suite_mismatch", action="block",
            message=f"report was produced by suite {report.suite.name} v{report.suite.version} "
                    f"({report.suite.digest[:12]}), not {suite.name} v{suite.version} ({digest[:12]})",
        ))
        return EvalVerdict(decision="block", suite=ref, previous_compared=False, findings=findings)

    comparable_previous = previous is not None and previous.suite == ref
    if previous is not None and not comparable_previous:
        findings.append(Finding(
            rule="previous_not_comparable", action="requires_approval",
            message=f"previous approved report used suite {previous.suite.name} v{previous.suite.version} "
                    f"({previous.suite.digest[:12]}): no drop check possible",
        ))

    for rule in suite.rules:
        label = _label(rule.task, rule.key)
        task = report.task(rule.task)
        metric = task.metric(rule.metric, rule.filter) if task else None
        if metric is None:
            findings.append(Finding(rule="missing_metric", action="block", task=rule.task, metric=rule.key,
                                    message=f"{label}: no finite value in the report"))
            continue
        value = metric.value
        if rule.bound is not None:
            bad = value < rule.bound if rule.higher_is_better else value > rule.bound
            if bad:
                side = "below" if rule.higher_is_better else "above"
                findings.append(Finding(
                    rule="below_bound" if rule.higher_is_better else "above_bound", action="block",
                    task=rule.task, metric=rule.key, value=value, limit=rule.bound,
                    message=f"{label} = {value:.4g} is {side} the tier's bound {rule.bound:.4g}",
                ))
        if not comparable_previous or (rule.max_drop is None and rule.max_drop_relative is None):
            continue
        prev_task = previous.task(rule.task)
        prev = prev_task.metric(rule.metric, rule.filter) if prev_task else None
        if prev is None:
            continue  # nothing to drop from: the previous version never had this metric
        worse_by = (prev.value - value) if rule.higher_is_better else (value - prev.value)
        limits = []
        if rule.max_drop is not None:
            limits.append(rule.max_drop)
        if rule.max_drop_relative is not None:
            limits.append(abs(prev.value) * rule.max_drop_relative)
        allowed = min(limits)
        if worse_by > allowed:
            findings.append(Finding(
                rule="worse_than_previous", action="requires_approval", task=rule.task, metric=rule.key,
                value=value, limit=allowed, previous=prev.value,
                message=f"{label} = {value:.4g} is worse than the previous approved {prev.value:.4g} "
                        f"by {worse_by:.4g} (margin {allowed:.4g})",
            ))

    actions = {f.action for f in findings}
    decision = "block" if "block" in actions else "requires_approval" if actions else "pass"
    return EvalVerdict(decision=decision, suite=ref, previous_compared=comparable_previous, findings=findings)
