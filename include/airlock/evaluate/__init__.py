"""Evaluation stage: Airlock's offline lm-eval suites, per-tier suite policy, EvalReport and its judge.

Importing this package is cheap (no torch, lm_eval or transformers): those load in the child process
:func:`evaluate_model` starts.
"""

from airlock.evaluate.report import (
    EVAL_REPORT_SCHEMA,
    EVAL_VERDICT_SCHEMA,
    EvalReport,
    EvalVerdict,
    judge,
)
from airlock.evaluate.run import EvaluationError, evaluate_model
from airlock.evaluate.suites import EvalSuite, MetricRule, suite_for

__all__ = [
    "EVAL_REPORT_SCHEMA", "EVAL_VERDICT_SCHEMA", "EvalReport", "EvalSuite", "EvalVerdict", "EvaluationError",
    "MetricRule", "evaluate_model", "judge", "suite_for",
]
