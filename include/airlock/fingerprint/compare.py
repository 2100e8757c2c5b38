"""Compare two fingerprints of the same prompt set, settings and runtime class.

Distance of one prompt = the largest |Δ log-probability| over its scored positions, where each
position compares the union of both top-k sets and a token missing from one side's top-k takes that
side's k-th (smallest) value: a rank swap at the edge of the top-k caused by float noise then costs
only the noise, while a token that really moved in or out costs what it moved. Any token-id
difference (prompt ids, the broad tokenizer text, the number of positions) is an infinite distance.

The decision: deviation when any prompt's distance exceeds ``max(10 × floor, 1e-5)``, the floor being
the calibrated noise of the baseline's runtime class (0 without a calibration). Fingerprints from
different runtime classes, prompt sets or settings are not compared at all: their differences mean
nothing at this scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from airlock.errors import AirlockError
from airlock.fingerprint.schema import (
    Calibration,
    Comparison,
    Fingerprint,
    PromptDistance,
    PromptOutput,
    threshold_for,
)

TOKENIZER_TEXT_ROW = "__tokenizer_text__"
INF = math.inf


class ComparisonRefused(AirlockError):
    """The two fingerprints (or the calibration) cannot be compared: different prompt set, settings or runtime."""


def _abs_diff(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return INF  # fail closed: NaN never counts as "close"
    if a == b:  # also covers -inf == -inf, whose difference would be NaN
        return 0.0
    return abs(a - b)


def position_distance(base_ids: Sequence[int], base_lp: Sequence[float],
                      cand_ids: Sequence[int], cand_lp: Sequence[float]) -> tuple[float, float]:
    """(max |Δ logprob|, total variation) over the union of two top-k sets, with the k-th value fill rule."""
    if len(set(base_ids)) != len(base_ids) or len(set(cand_ids)) != len(cand_ids) or not base_ids or not cand_ids:
        return INF, 1.0  # a top-k with repeated or no ids was not produced by top-k: malformed
    base = dict(zip(base_ids, base_lp, strict=True))
    cand = dict(zip(cand_ids, cand_lp, strict=True))
    base_fill, cand_fill = min(base_lp), min(cand_lp)
    worst, tv = 0.0, 0.0
    for token in base.keys() | cand.keys():
        b, c = base.get(token, base_fill), cand.get(token, cand_fill)
        worst = max(worst, _abs_diff(b, c))
        tv += abs(math.exp(b) - math.exp(c)) if not (math.isnan(b) or math.isnan(c)) else 1.0
    return worst, min(0.5 * tv, 1.0)


def _greedy_agreement(a: Sequence[int], b: Sequence[int]) -> float:
    length = max(len(a), len(b))
    if length == 0:
        return 1.0
    same = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        same += 1
    return same / length


def prompt_distance(base: PromptOutput, cand: PromptOutput) -> PromptDistance:
    ids_equal = base.prompt_ids == cand.prompt_ids and len(base.top_ids) == len(cand.top_ids)
    if ids_equal:
        distances = [position_distance(bi, bl, ci, cl) for bi, bl, ci, cl in
                     zip(base.top_ids, base.top_logprobs, cand.top_ids, cand.top_logprobs, strict=True)]
        dlogprob = max((d for d, _ in distances), default=0.0)
        tv = max((t for _, t in distances), default=0.0)
    else:
        dlogprob, tv = INF, 1.0
    return PromptDistance(
        id=base.id, max_abs_dlogprob=dlogprob, total_variation=tv, token_ids_equal=ids_equal,
        greedy_equal=base.greedy_ids == cand.greedy_ids,
        greedy_agreement=_greedy_agreement(base.greedy_ids, cand.greedy_ids),
    )


def _check_comparable(baseline: Fingerprint, candidate: Fingerprint, calibration: Calibration | None) -> None:
    if baseline.prompt_set != candidate.prompt_set:
        raise ComparisonRefused(
            f"prompt sets differ: baseline {baseline.prompt_set.id} ({baseline.prompt_set.sha256[:12]}), "
            f"candidate {candidate.prompt_set.id} ({candidate.prompt_set.sha256[:12]})"
        )
    if baseline.settings != candidate.settings:
        raise ComparisonRefused(f"settings differ: baseline {baseline.settings.model_dump()}, "
                                f"candidate {candidate.settings.model_dump()}")
    base_class, cand_class = baseline.runtime.runtime_class, candidate.runtime.runtime_class
    if base_class != cand_class:
        raise ComparisonRefused(f"runtime classes differ: baseline {base_class.id}, candidate {cand_class.id}")
    base_ids = [p.id for p in baseline.prompts]
    if base_ids != [p.id for p in candidate.prompts]:
        raise ComparisonRefused("the fingerprints do not hold the same prompts in the same order")
    if calibration is None:
        return
    if calibration.baseline_digest != baseline.digest():
        raise ComparisonRefused("the calibration was measured around a different baseline")
    if (calibration.prompt_set, calibration.settings, calibration.runtime_class) != (
            baseline.prompt_set, baseline.settings, base_class):
        raise ComparisonRefused(f"the calibration belongs to another runtime class or prompt set "
                                f"({calibration.runtime_class.id})")
    if not math.isfinite(calibration.floor) or calibration.floor < 0:
        raise ComparisonRefused(f"the calibration's noise floor {calibration.floor!r} is not a finite number >= 0")


def compare(baseline: Fingerprint, candidate: Fingerprint, calibration: Calibration | None = None) -> Comparison:
    """Per-prompt distances and the decision; raises :class:`ComparisonRefused` when not comparable."""
    _check_comparable(baseline, candidate, calibration)
    floor = calibration.floor if calibration else 0.0
    threshold = threshold_for(floor)
    rows = [prompt_distance(b, c) for b, c in zip(baseline.prompts, candidate.prompts, strict=True)]
    text_equal = baseline.text_token_ids == candidate.text_token_ids
    # The tokenizer text is one more row, so every consumer of the per-prompt table (GX, Data Docs) sees it.
    rows.append(PromptDistance(
        id=TOKENIZER_TEXT_ROW, max_abs_dlogprob=0.0 if text_equal else INF, total_variation=0.0 if text_equal else 1.0,
        token_ids_equal=text_equal, greedy_equal=True, greedy_agreement=1.0,
    ))
    reasons = []
    if not text_equal:
        first = next((i for i, (a, b) in enumerate(zip(baseline.text_token_ids, candidate.text_token_ids,
                                                         strict=False)) if a != b),
                     min(len(baseline.text_token_ids), len(candidate.text_token_ids)))
        reasons.append(f"tokenizer text token ids differ (first at index {first})")
    mismatched = [r.id for r in rows[:-1] if not r.token_ids_equal]
    if mismatched:
        reasons.append(f"token ids differ for {len(mismatched)} prompt(s): {', '.join(mismatched[:5])}")
    over = [r for r in rows if r.token_ids_equal and r.max_abs_dlogprob > threshold]
    if over:
        worst = max(over, key=lambda r: r.max_abs_dlogprob)
        reasons.append(f"{len(over)} prompt(s) above threshold {threshold:.3g}, worst {worst.id} "
                       f"|Δ logprob| {worst.max_abs_dlogprob:.3g}")
    prompt_rows = rows[:-1]
    return Comparison(
        baseline_digest=baseline.digest(),
        candidate_digest=candidate.digest(),
        baseline_model=baseline.model,
        candidate_model=candidate.model,
        prompt_set=baseline.prompt_set,
        runtime_class=baseline.runtime.runtime_class,
        calibrated=calibration is not None,
        floor=floor,
        threshold=threshold,
        text_token_ids_equal=text_equal,
        prompts=rows,
        max_distance=max(r.max_abs_dlogprob for r in rows),
        greedy_agreement=sum(r.greedy_equal for r in prompt_rows) / len(prompt_rows) if prompt_rows else 1.0,
        verdict="deviation" if reasons else "match",
        reasons=reasons,
    )


def noise_floor(baseline: Fingerprint, runs: Sequence[Fingerprint]) -> tuple[float, dict[str, float], list[float]]:
    """(floor, per-prompt floor, per-run max) of ``runs`` around ``baseline``; token-id changes are refused.

    Calibration runs re-compute the same model on the same runtime class; a token-id difference among
    them means the inputs or tokenizer are not deterministic, and no floor can be trusted.
    """
    per_prompt = {p.id: 0.0 for p in baseline.prompts}
    per_run = []
    for run in runs:
        _check_comparable(baseline, run, None)
        if run.text_token_ids != baseline.text_token_ids:
            raise ComparisonRefused("calibration runs disagree on the tokenizer text's token ids")
        run_max = 0.0
        for b, c in zip(baseline.prompts, run.prompts, strict=True):
            d = prompt_distance(b, c)
            if not d.token_ids_equal or not math.isfinite(d.max_abs_dlogprob):
                raise ComparisonRefused(f"calibration runs disagree on token ids of prompt {b.id}")
            per_prompt[b.id] = max(per_prompt[b.id], d.max_abs_dlogprob)
            run_max = max(run_max, d.max_abs_dlogprob)
        per_run.append(run_max)
    return max(per_run, default=0.0), per_prompt, per_run
