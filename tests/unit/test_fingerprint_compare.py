"""The fingerprint comparison maths on synthetic fingerprints (no model, no torch)."""

from __future__ import annotations

import json
import math
import random

import pytest
from airlock.fingerprint.check import DocumentError, check, read_document
from airlock.fingerprint.compare import (
    TOKENIZER_TEXT_ROW,
    ComparisonRefused,
    compare,
    noise_floor,
    position_distance,
)
from airlock.fingerprint.prompts import load_prompt_set
from airlock.fingerprint.schema import (
    Calibration,
    CalibrationRun,
    Fingerprint,
    PromptOutput,
    PromptSetRef,
    Runtime,
    RuntimeClass,
    Settings,
    threshold_for,
)

K, N = 4, 3
CPU = RuntimeClass(device_type="cpu", device_name="cpu", dtype="float32", torch="2.13.0", transformers="5.24.0")


def _prompt(pid: str, rng: random.Random) -> PromptOutput:
    top_ids, top_lp = [], []
    for _ in range(N):
        ids = rng.sample(range(100), K)
        lps = sorted((math.log(rng.uniform(0.01, 0.3)) for _ in range(K)), reverse=True)
        top_ids.append(ids)
        top_lp.append(lps)
    return PromptOutput(id=pid, prompt_ids=[rng.randrange(100) for _ in range(5)], top_ids=top_ids,
                        top_logprobs=top_lp, greedy_ids=[1, 2, 3, 4])


def _fingerprint(seed: int = 0, prompts: int = 5, runtime_class: RuntimeClass = CPU, **changes) -> Fingerprint:
    rng = random.Random(seed)
    fp = Fingerprint(
        prompt_set=PromptSetRef(id="synthetic", sha256="a" * 64, text_sha256="b" * 64),
        settings=Settings(top_k=K, positions=N, greedy_tokens=4, bos_token_id=0),
        runtime=Runtime(runtime_class=runtime_class, threads=1, batch_size=16),
        prompts=[_prompt(f"p{i}", rng) for i in range(prompts)],
        text_token_ids=list(range(50)),
        created_at="2026-01-01T00:00:00+00:00",
        seconds=0.1,
    )
    return fp.model_copy(update=changes) if changes else fp


def _with_prompt(fp: Fingerprint, index: int, **changes) -> Fingerprint:
    prompts = list(fp.prompts)
    prompts[index] = prompts[index].model_copy(update=changes)
    return fp.model_copy(update={"prompts": prompts})


def _shift(fp: Fingerprint, index: int, delta: float) -> Fingerprint:
    """Add ``delta`` to every logprob of one prompt."""
    p = fp.prompts[index]
    return _with_prompt(fp, index, top_logprobs=[[v + delta for v in row] for row in p.top_logprobs])


def _calibration(fp: Fingerprint, floor: float) -> Calibration:
    return Calibration(baseline_digest=fp.digest(), prompt_set=fp.prompt_set, settings=fp.settings,
                       runtime_class=fp.runtime.runtime_class,
                       runs=[CalibrationRun(batch_size=1, threads=1, max_distance=floor)],
                       floor=floor, per_prompt_floor={p.id: floor for p in fp.prompts})


# --------------------------------------------------------------------------- position distance


def test_identical_top_k_has_zero_distance():
    assert position_distance([1, 2, 3], [-0.1, -1.0, -2.0], [1, 2, 3], [-0.1, -1.0, -2.0]) == (0.0, 0.0)


def test_rank_swap_at_the_edge_costs_only_the_noise():
    # Token 3 and 4 are nearly tied at rank k; noise swaps which one is in the top-k.
    base = ([1, 2, 3], [-0.5, -1.0, -3.0])
    cand = ([1, 2, 4], [-0.5, -1.0, -3.0 + 1e-7])
    d, _ = position_distance(*base, *cand)
    # 3 missing from cand -> cand's k-th (-3+1e-7); 4 missing from base -> base's k-th (-3.0)
    assert d == pytest.approx(1e-7, abs=1e-12)


def test_token_entering_the_top_k_costs_its_move_against_the_kth_value():
    base = ([1, 2, 3], [-0.5, -1.0, -3.0])
    cand = ([1, 9, 2], [-0.5, -0.8, -1.0])  # token 9 jumped in at -0.8, token 3 fell out
    d, tv = position_distance(*base, *cand)
    # token 9: cand -0.8 vs base fill -3.0 -> 2.2; token 3: base -3.0 vs cand fill -1.0 -> 2.0
    assert d == pytest.approx(2.2)
    expected_tv = 0.5 * (abs(math.exp(-3.0) - math.exp(-0.8)) + abs(math.exp(-3.0) - math.exp(-1.0)))
    assert tv == pytest.approx(expected_tv)


def test_total_variation_of_a_shift():
    base = ([1, 2], [math.log(0.6), math.log(0.3)])
    cand = ([1, 2], [math.log(0.5), math.log(0.4)])
    _, tv = position_distance(*base, *cand)
    assert tv == pytest.approx(0.1)


def test_nan_is_never_close_and_equal_minus_inf_is():
    assert position_distance([1, 2], [-1.0, float("nan")], [1, 2], [-1.0, -2.0])[0] == math.inf
    assert position_distance([1, 2], [-1.0, -math.inf], [1, 2], [-1.0, -math.inf])[0] == 0.0


def test_repeated_ids_in_a_top_k_are_malformed():
    assert position_distance([1, 1], [-1.0, -2.0], [1, 2], [-1.0, -2.0])[0] == math.inf


# --------------------------------------------------------------------------- compare


def test_unmodified_rerun_matches_with_zero_distance():
    a = _fingerprint()
    result = compare(a, a.model_copy(update={"created_at": "later", "seconds": 9.0}))
    assert result.verdict == "match"
    assert result.max_distance == 0.0
    assert result.greedy_agreement == 1.0
    assert [r.id for r in result.prompts][-1] == TOKENIZER_TEXT_ROW


def test_threshold_is_ten_times_the_floor_with_an_absolute_minimum():
    assert threshold_for(0.0) == 1e-5
    assert threshold_for(2e-7) == 1e-5
    assert threshold_for(3e-6) == pytest.approx(3e-5)


@pytest.mark.parametrize(("delta", "floor", "verdict"), [
    (5e-6, 0.0, "match"),  # under the absolute minimum
    (2e-5, 0.0, "deviation"),  # above it, uncalibrated
    (2e-5, 3e-6, "match"),  # calibrated floor 3e-6 -> threshold 3e-5
    (4e-5, 3e-6, "deviation"),
])
def test_decision_uses_the_calibrated_floor(delta, floor, verdict):
    a = _fingerprint()
    b = _shift(a, 2, delta)
    result = compare(a, b, _calibration(a, floor) if floor else None)
    assert result.verdict == verdict
    assert result.prompts[2].max_abs_dlogprob == pytest.approx(delta, rel=1e-6)
    if verdict == "deviation":
        assert "p2" in result.reason


def test_token_id_mismatch_is_an_infinite_distance_and_survives_json():
    a = _fingerprint()
    b = _with_prompt(a, 1, prompt_ids=[*a.prompts[1].prompt_ids[:-1], 99])
    result = compare(a, b)
    assert result.verdict == "deviation"
    assert result.prompts[1].max_abs_dlogprob == math.inf and not result.prompts[1].token_ids_equal
    text = result.to_json()
    assert '"Infinity"' in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert type(result).model_validate_json(text).prompts[1].max_abs_dlogprob == math.inf


def test_fewer_positions_is_a_token_mismatch():
    a = _fingerprint()
    p = a.prompts[0]
    b = _with_prompt(a, 0, top_ids=p.top_ids[:-1], top_logprobs=p.top_logprobs[:-1])
    assert compare(a, b).prompts[0].max_abs_dlogprob == math.inf


def test_tokenizer_text_change_is_a_deviation_even_when_logprobs_match():
    a = _fingerprint()
    ids = list(a.text_token_ids)
    ids[17], ids[18] = ids[18], ids[17]
    result = compare(a, a.model_copy(update={"text_token_ids": ids}))
    assert result.verdict == "deviation"
    assert "tokenizer text token ids differ (first at index 17)" in result.reason
    assert result.prompts[-1].max_abs_dlogprob == math.inf


def test_greedy_disagreement_is_reported_not_decisive():
    a = _fingerprint()
    b = _with_prompt(a, 0, greedy_ids=[1, 2, 9, 9])
    result = compare(a, b)
    assert result.verdict == "match"
    assert result.prompts[0].greedy_agreement == 0.5 and not result.prompts[0].greedy_equal
    assert result.greedy_agreement == pytest.approx(4 / 5)


def test_refuses_other_runtime_class():
    a = _fingerprint()
    cuda = CPU.model_copy(update={"device_type": "cuda", "device_name": "NVIDIA H200"})
    b = a.model_copy(update={"runtime": Runtime(runtime_class=cuda, threads=1, batch_size=16)})
    with pytest.raises(ComparisonRefused, match="runtime classes differ"):
        compare(a, b)


def test_batch_size_and_threads_are_not_part_of_the_class():
    a = _fingerprint()
    b = a.model_copy(update={"runtime": Runtime(runtime_class=CPU, threads=2, batch_size=1)})
    assert compare(a, b).verdict == "match"


def test_refuses_other_prompt_set_settings_or_prompts():
    a = _fingerprint()
    with pytest.raises(ComparisonRefused, match="prompt sets differ"):
        compare(a, a.model_copy(update={"prompt_set": a.prompt_set.model_copy(update={"sha256": "c" * 64})}))
    with pytest.raises(ComparisonRefused, match="settings differ"):
        compare(a, a.model_copy(update={"settings": a.settings.model_copy(update={"bos_token_id": 1})}))
    with pytest.raises(ComparisonRefused, match="same prompts"):
        compare(a, a.model_copy(update={"prompts": a.prompts[:-1]}))


def test_refuses_a_calibration_of_another_baseline_or_class():
    a = _fingerprint()
    other = _fingerprint(seed=1)
    with pytest.raises(ComparisonRefused, match="different baseline"):
        compare(a, a, _calibration(other, 1e-6))
    bad = _calibration(a, 1e-6).model_copy(update={"runtime_class": CPU.model_copy(update={"dtype": "float16"})})
    with pytest.raises(ComparisonRefused, match="another runtime class"):
        compare(a, a, bad)


def test_noise_floor_is_the_largest_run_distance():
    a = _fingerprint()
    floor, per_prompt, per_run = noise_floor(a, [_shift(a, 0, 1e-7), _shift(a, 3, 4e-7), a])
    assert floor == pytest.approx(4e-7)
    assert per_prompt["p0"] == pytest.approx(1e-7) and per_prompt["p3"] == pytest.approx(4e-7)
    assert per_prompt["p1"] == 0.0
    assert per_run == pytest.approx([1e-7, 4e-7, 0.0])


def test_noise_floor_refuses_runs_that_disagree_on_token_ids():
    a = _fingerprint()
    with pytest.raises(ComparisonRefused, match="token ids"):
        noise_floor(a, [_with_prompt(a, 0, prompt_ids=[0])])


# --------------------------------------------------------------------------- documents


def test_read_document_names_file_and_field(tmp_path):
    path = tmp_path / "fp.json"
    path.write_text('{"schema": "airlock.fingerprint/v1"}')
    with pytest.raises(DocumentError, match=r"fp.json: not a valid airlock.fingerprint/v1 document \(field "):
        read_document(path, Fingerprint)
    good = _fingerprint()
    path.write_text(good.to_json())
    assert read_document(path, Fingerprint) == good
    path.write_text(good.to_json().replace('"seconds":0.1', '"seconds":NaN'))
    with pytest.raises(DocumentError, match="non-standard JSON constant NaN"):
        read_document(path, Fingerprint)


def test_digest_ignores_nothing_that_matters():
    a = _fingerprint()
    assert a.digest() == _fingerprint().digest()
    assert _shift(a, 0, 1e-12).digest() != a.digest()


def test_shipped_prompt_set_is_48_unique_prompts_with_digests():
    ps = load_prompt_set()
    assert len(ps.prompts) == 48 and len({p.id for p in ps.prompts}) == 48
    assert len(ps.sha256) == 64 and len(ps.text_sha256) == 64
    assert "\r\n" in ps.text  # line endings are part of what is tokenised: read without translation


# --------------------------------------------------------------------------- great-expectations


def test_gx_validation_agrees_with_the_comparison(tmp_path):
    a = _fingerprint()
    ok = check(a, a)
    assert ok.verdict == "match" and ok.gx_success is True
    bad = check(a, _with_prompt(_shift(a, 2, 1e-3), 4, prompt_ids=[1]))
    assert bad.verdict == "deviation" and bad.gx_success is False


def test_gx_validation_catches_a_truncated_table():
    from airlock.fingerprint.gx import validate

    a = _fingerprint()
    comparison = compare(a, a)
    truncated = comparison.model_copy(update={"prompts": comparison.prompts[1:]})
    result = validate(truncated, None, expected_rows=len(a.prompts) + 1)
    assert not result.success
    assert "expect_table_row_count_to_equal" in result.failed_expectations
