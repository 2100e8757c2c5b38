"""One behavioural check: compare a candidate with its baseline, validate with great-expectations, keep docs.

This is what the nightly DAG and ``airlock fingerprint compare`` call. The verdict is ``match`` only
when the comparison and the great-expectations validation both say so; if they ever disagree the
check is a deviation (two readings of the same numbers = fail closed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ValidationError

from airlock.errors import AirlockError, first_validation_problem
from airlock.fingerprint.compare import compare
from airlock.fingerprint.schema import Calibration, Comparison, Fingerprint

M = TypeVar("M", bound=BaseModel)


class DocumentError(AirlockError):
    """A fingerprint, calibration or comparison file cannot be read as its schema."""


def read_document(path: str | Path, model: type[M]) -> M:
    """Parse ``path`` as ``model`` (strict JSON, schema field checked); one line naming file and field on error."""
    path = Path(path)
    schema = model.model_fields["schema_"].default
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        json.loads(raw, parse_constant=_refuse_constant)
        return model.model_validate_json(raw)
    except ValueError as exc:
        detail = first_validation_problem(exc) if isinstance(exc, ValidationError) else str(exc).splitlines()[0]
        raise DocumentError(f"{path}: not a valid {schema} document ({detail})") from None


def _refuse_constant(name: str) -> float:
    # Bare NaN/Infinity are not JSON; our writer emits the strings "Infinity"/"-Infinity" instead.
    raise ValueError(f"non-standard JSON constant {name}")


@dataclass(frozen=True)
class CheckResult:
    verdict: Literal["match", "deviation"]
    comparison: Comparison
    gx_success: bool | None  # None when great-expectations was not run
    docs_index: Path | None
    reason: str


def check(baseline: Fingerprint, candidate: Fingerprint, calibration: Calibration | None = None, *,
          docs_dir: Path | None = None, run_gx: bool = True) -> CheckResult:
    """Compare, then validate the per-prompt table with great-expectations (Data Docs into ``docs_dir``)."""
    comparison = compare(baseline, candidate, calibration)
    if not run_gx:
        return CheckResult(comparison.verdict, comparison, None, None, comparison.reason)
    from airlock.fingerprint.gx import validate

    gx = validate(comparison, docs_dir, expected_rows=len(baseline.prompts) + 1)
    if gx.success and comparison.verdict == "match":
        return CheckResult("match", comparison, True, gx.docs_index, comparison.reason)
    if not gx.success and comparison.verdict == "deviation":
        return CheckResult("deviation", comparison, False, gx.docs_index, comparison.reason)
    # The two disagree: never a match.
    reason = (f"deviation: great-expectations ({'passed' if gx.success else 'failed'}: "
              f"{', '.join(gx.failed_expectations) or 'no failures'}) disagrees with the comparison "
              f"({comparison.verdict})")
    return CheckResult("deviation", comparison, gx.success, gx.docs_index, reason)
