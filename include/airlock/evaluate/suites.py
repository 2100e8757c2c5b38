"""Evaluation suites per risk tier: policy data, next to (not inside) :mod:`airlock.policy`.

A suite names lm-eval tasks (Airlock's offline ones under ``evaluate/tasks/``, or any task YAML a
deployment ships in its own directory with its data mirrored locally), how to run them, and the
rules a result must meet:

- an absolute **bound** (a floor for higher-is-better metrics, a ceiling for the others): a model on
  the wrong side of it is blocked, with the metric named;
- a **margin** against the previous approved version of the same model: a worse result beyond it
  requires a human's approval.

The suite's digest (its settings plus the bytes of every task file it resolves to) is written into
each EvalReport, so a gate can tell whether a report was produced by the suite it is judging with.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from airlock.errors import ConfigurationError
from airlock.policy import RiskTier

SHIPPED_TASKS_DIR = Path(__file__).resolve().parent / "tasks"


@dataclass(frozen=True)
class MetricRule:
    """What one metric of one task must satisfy. ``filter`` is lm-eval's filter name (``none`` by default)."""

    task: str
    metric: str
    higher_is_better: bool
    filter: str = "none"
    bound: float | None = None  # floor if higher_is_better else ceiling; outside it = block
    max_drop: float | None = None  # worse than the previous approved by more than this (metric units) = approval
    max_drop_relative: float | None = None  # ... or by more than this fraction of the previous value = approval

    @property
    def key(self) -> str:
        """The key lm-eval's ``results[task]`` uses for this metric."""
        return f"{self.metric},{self.filter}"


@dataclass(frozen=True)
class EvalSuite:
    name: str
    version: int
    tasks: tuple[str, ...]
    rules: tuple[MetricRule, ...] = ()
    num_fewshot: int = 0
    limit: int | None = None  # documents per task; None = all (only tests should set it)
    batch_size: int = 8
    # lm-eval bootstraps stderr for non-mean aggregations (perplexity); its default of 100000 iterations
    # costs seconds per metric on CPU and the third digit of a stderr does not change a decision.
    bootstrap_iters: int = 1000
    seed: int = 1234
    task_dirs: tuple[str, ...] = field(default=(str(SHIPPED_TASKS_DIR),))

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ConfigurationError(f"evaluation suite {self.name!r} names no tasks")
        unknown = sorted({rule.task for rule in self.rules} - set(self.tasks))
        if unknown:
            raise ConfigurationError(f"evaluation suite {self.name!r}: rules name tasks it does not run: {unknown}")

    def to_json_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> str:
        """sha256 over the suite's settings and the bytes of its task files (YAML and data)."""
        from airlock.evaluate.taskfiles import (
            resolve_task_files,  # local: keeps this module data-only
        )

        settings = {k: v for k, v in self.to_json_dict().items() if k != "task_dirs"}
        h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        for task in sorted(self.tasks):
            for role, path in resolve_task_files(task, self.task_dirs):
                h.update(f"\0{task}\0{role}\0".encode())
                h.update(hashlib.sha256(path.read_bytes()).digest())
        return h.hexdigest()


_MC_ACC = "acc"
_PPL = "word_perplexity"

# Margins: an mc accuracy 0.05 below the previous approved version, a held-out perplexity 10% higher or a
# generation exact-match 0.10 lower asks a human. With 40/8/30 items the stderr of acc is ~0.08, so these
# margins catch real regressions of a retrained or re-quantised model rather than item noise only when the
# drop is large; the report shows stderr beside every value for the reviewer.
_MARGINS = (
    MetricRule(task="airlock_mc", metric=_MC_ACC, higher_is_better=True, max_drop=0.05),
    MetricRule(task="airlock_heldout_ppl", metric=_PPL, higher_is_better=False, max_drop_relative=0.10),
    MetricRule(task="airlock_gen", metric="exact_match", filter="first_word", higher_is_better=True, max_drop=0.10),
)

BASIC = EvalSuite(
    name="airlock-basic",
    version=1,
    tasks=("airlock_mc", "airlock_heldout_ppl"),
    rules=_MARGINS[:2],
)
STANDARD = EvalSuite(
    name="airlock-standard",
    version=1,
    tasks=("airlock_mc", "airlock_heldout_ppl", "airlock_gen"),
    rules=_MARGINS,
)
# Critical tier: the margins plus absolute bounds. A 2-choice/4-choice mix puts chance near 0.45 on
# airlock_mc; a model that cannot beat it clearly, or whose held-out perplexity is that of noise
# (a random 512-token model sits in the hundreds), is not a working language model.
STRICT = EvalSuite(
    name="airlock-strict",
    version=1,
    tasks=("airlock_mc", "airlock_heldout_ppl", "airlock_gen"),
    rules=(
        MetricRule(task="airlock_mc", metric=_MC_ACC, higher_is_better=True, bound=0.6, max_drop=0.05),
        MetricRule(task="airlock_heldout_ppl", metric=_PPL, higher_is_better=False, bound=200.0,
                   max_drop_relative=0.10),
        _MARGINS[2],
    ),
)

SUITES_BY_TIER: dict[RiskTier, EvalSuite] = {
    RiskTier.LOW: BASIC,
    RiskTier.MEDIUM: STANDARD,
    RiskTier.HIGH: STANDARD,
    RiskTier.CRITICAL: STRICT,
}


def suite_for(tier: str | RiskTier) -> EvalSuite:
    """The evaluation suite of ``tier``; an unknown tier is a configuration error, never a default."""
    try:
        return SUITES_BY_TIER[RiskTier(tier)]
    except ValueError:
        allowed = ", ".join(t.value for t in RiskTier)
        raise ConfigurationError(f"risk tier {tier!r} is not one of: {allowed}") from None
