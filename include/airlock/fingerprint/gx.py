"""Validate a fingerprint comparison with great-expectations and render its Data Docs.

The expectation suite is generated from the baseline's calibration: per-prompt distances must lie in
``[0, threshold]``, every row's token ids must be equal, and the table must hold exactly one row per
canonical prompt plus the tokenizer-text row (a truncated table never validates). The suite is
named after the baseline digest, so a check's Data Docs say which baseline they were judged against.

An ephemeral context (nothing written but the docs), ``GX_ANALYTICS_ENABLED=False`` set before the
import. Data Docs would fetch their CSS/JS from public CDNs and the navbar logo from the vendor's
bucket; :func:`airlock.fingerprint.docs_offline.make_offline` rewrites the built site to use local
copies (or no external asset at all), so the page renders without a network.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from airlock.errors import AirlockError
from airlock.fingerprint.schema import Comparison

# JSON validation results cannot hold inf; an infinite distance (token-id mismatch) is validated as this.
DISTANCE_CAP = 1e9


class ValidationFailed(AirlockError):
    """great-expectations could not run the validation (not a negative verdict: the check did not happen)."""


@dataclass(frozen=True)
class GXResult:
    success: bool
    failed_expectations: list[str]  # expectation types that failed
    unexpected_prompts: list[str]  # prompt ids outside the tolerance (from the distance expectation)
    docs_index: Path | None  # Data Docs index.html, when docs were built


def _frame(comparison: Comparison):
    import pandas as pd

    return pd.DataFrame({
        "prompt_id": [r.id for r in comparison.prompts],
        "max_abs_dlogprob": [min(r.max_abs_dlogprob, DISTANCE_CAP) if not math.isnan(r.max_abs_dlogprob)
                             else DISTANCE_CAP for r in comparison.prompts],
        "total_variation": [r.total_variation for r in comparison.prompts],
        "token_ids_equal": [r.token_ids_equal for r in comparison.prompts],
        "greedy_agreement": [r.greedy_agreement for r in comparison.prompts],
    })


def validate(comparison: Comparison, docs_dir: Path | None = None, *, expected_rows: int | None = None) -> GXResult:
    """Run the generated expectation suite on ``comparison``'s per-prompt table; build Data Docs in ``docs_dir``.

    ``expected_rows`` defaults to the number of rows of the comparison; a caller holding the baseline
    passes ``len(baseline.prompts) + 1`` so a comparison with rows missing fails.
    """
    os.environ["GX_ANALYTICS_ENABLED"] = "False"
    try:
        return _validate(comparison, docs_dir, expected_rows)
    except AirlockError:
        raise
    except Exception as exc:  # noqa: BLE001 - GX raises many unrelated types; any of them = no verdict
        raise ValidationFailed(f"great-expectations validation failed to run: {type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:300] if str(exc) else ''}") from None


def _validate(comparison: Comparison, docs_dir: Path | None, expected_rows: int | None) -> GXResult:
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # task logs, not terminal bars
    name = f"airlock-fingerprint-{comparison.baseline_digest[:16]}"
    if docs_dir is not None:
        docs_dir.mkdir(parents=True, exist_ok=True)
        context.add_data_docs_site(site_name="airlock", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    batch_definition = (context.data_sources.add_pandas("fingerprint")
                        .add_dataframe_asset("per_prompt_distances")
                        .add_batch_definition_whole_dataframe("comparison"))
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    distance = suite.add_expectation(gx.expectations.ExpectColumnValuesToBeBetween(
        column="max_abs_dlogprob", min_value=0.0, max_value=comparison.threshold,
        meta={"floor": comparison.floor, "calibrated": comparison.calibrated,
              "runtime_class": comparison.runtime_class.id},
    ))
    suite.add_expectation(gx.expectations.ExpectColumnValuesToBeInSet(column="token_ids_equal", value_set=[True]))
    suite.add_expectation(gx.expectations.ExpectTableRowCountToEqual(
        value=expected_rows if expected_rows is not None else len(comparison.prompts)))
    suite.add_expectation(gx.expectations.ExpectColumnValuesToBeUnique(column="prompt_id"))
    definition = context.validation_definitions.add(gx.ValidationDefinition(data=batch_definition, suite=suite,
                                                                             name=name))
    actions = [UpdateDataDocsAction(name="data_docs", site_names=["airlock"])] if docs_dir is not None else []
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name=name, validation_definitions=[definition], actions=actions, result_format="COMPLETE"))
    run = checkpoint.run(batch_parameters={"dataframe": _frame(comparison)})
    failed: list[str] = []
    unexpected: list[str] = []
    frame_ids = [r.id for r in comparison.prompts]
    for validation in run.run_results.values():
        for result in validation.results:
            if result.success:
                continue
            config = result.expectation_config
            failed.append(config.type)
            if config.id == distance.id:
                indexes = result.result.get("unexpected_index_list") or []
                unexpected.extend(frame_ids[i] if isinstance(i, int) else str(i) for i in indexes)
    docs_index = None
    if docs_dir is not None:
        context.build_data_docs(site_names=["airlock"])
        from airlock.fingerprint.docs_offline import make_offline

        make_offline(docs_dir)
        docs_index = docs_dir / "index.html"
    return GXResult(success=bool(run.success), failed_expectations=failed, unexpected_prompts=unexpected,
                    docs_index=docs_index)
