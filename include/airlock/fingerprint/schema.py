"""JSON contracts of the fingerprint stage.

- ``airlock.fingerprint/v1``: one model's outputs on the canonical prompt set, plus the runtime.
- ``airlock.fingerprint-calibration/v1``: the noise floor of one baseline in its runtime class.
- ``airlock.fingerprint-comparison/v1``: baseline vs candidate, per prompt, with the decision.

Non-finite floats (an infinite distance after a token-id mismatch, a -inf log-probability) are written
as the strings ``"Infinity"``/``"-Infinity"`` (pydantic's ``ser_json_inf_nan="strings"``) and read back
as floats, so files stay strict JSON.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FINGERPRINT_SCHEMA = "airlock.fingerprint/v1"
CALIBRATION_SCHEMA = "airlock.fingerprint-calibration/v1"
COMPARISON_SCHEMA = "airlock.fingerprint-comparison/v1"
# Below this, differences are indistinguishable from kernel noise in any runtime class measured
# (a 4-position fingerprint calibrated to a floor of 0 raised false alarms under eager attention).
MIN_THRESHOLD = 1e-5
FLOOR_MULTIPLIER = 10.0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, ser_json_inf_nan="strings")

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)

    def to_json_dict(self) -> dict:
        return json.loads(self.to_json())

    def digest(self) -> str:
        """sha256 of the canonical JSON (sorted keys, no whitespace)."""
        canonical = json.dumps(self.to_json_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class PromptSetRef(_Model):
    id: str
    sha256: str
    text_sha256: str


class Settings(_Model):
    top_k: int = Field(ge=1)
    positions: int = Field(ge=1)  # teacher-forced positions scored per prompt, BOS included
    greedy_tokens: int = Field(ge=0)
    bos_token_id: int | None  # prepended to every prompt; None when the tokenizer has neither BOS nor EOS


class RuntimeClass(_Model):
    """What a noise floor depends on and a comparison must hold fixed. Batch size and thread count are
    recorded in :class:`Runtime` but are not part of the class: calibration varies them on purpose."""

    device_type: str  # "cpu", "cuda", ...
    device_name: str  # "cpu" or the accelerator's name (kernels differ between GPU generations)
    dtype: str
    torch: str
    transformers: str

    @property
    def id(self) -> str:
        return f"{self.device_type}:{self.device_name}/{self.dtype}/torch-{self.torch}/transformers-{self.transformers}"


class Runtime(_Model):
    runtime_class: RuntimeClass = Field(alias="class")
    threads: int
    batch_size: int
    attn_implementation: str | None = None


class PromptOutput(_Model):
    id: str
    prompt_ids: list[int]  # the whole prompt's token ids (compared exactly)
    top_ids: list[list[int]]  # [position][rank]
    top_logprobs: list[list[float]]  # float64 log-softmax, same shape as top_ids
    greedy_ids: list[int]  # greedy continuation of the scored prefix

    @model_validator(mode="after")
    def _shapes(self) -> PromptOutput:
        if len(self.top_ids) != len(self.top_logprobs) or any(
            len(a) != len(b) for a, b in zip(self.top_ids, self.top_logprobs, strict=True)
        ):
            raise ValueError(f"prompt {self.id}: top_ids and top_logprobs differ in shape")
        return self


class Fingerprint(_Model):
    schema_: Literal["airlock.fingerprint/v1"] = Field(FINGERPRINT_SCHEMA, alias="schema")
    prompt_set: PromptSetRef
    settings: Settings
    runtime: Runtime
    model: dict[str, str] = Field(default_factory=dict)  # the caller's identity of the model
    prompts: list[PromptOutput]
    text_token_ids: list[int]
    created_at: str
    seconds: float

    @model_validator(mode="after")
    def _consistent(self) -> Fingerprint:
        if len({p.id for p in self.prompts}) != len(self.prompts):
            raise ValueError("prompt ids are not unique")
        k, n = self.settings.top_k, self.settings.positions
        for p in self.prompts:
            if len(p.top_ids) > n or any(len(row) != k for row in p.top_ids):
                raise ValueError(f"prompt {p.id}: expected at most {n} positions of top-{k}")
        return self

    def comparable_key(self) -> tuple:
        """What two fingerprints must share to be compared at all."""
        return (self.prompt_set, self.settings, self.runtime.runtime_class)


class CalibrationRun(_Model):
    batch_size: int
    threads: int
    max_distance: float  # against the baseline run


class Calibration(_Model):
    schema_: Literal["airlock.fingerprint-calibration/v1"] = Field(CALIBRATION_SCHEMA, alias="schema")
    baseline_digest: str  # the Fingerprint this floor was measured around
    prompt_set: PromptSetRef
    settings: Settings
    runtime_class: RuntimeClass
    runs: list[CalibrationRun]
    floor: float  # largest per-prompt distance between any calibration run and the baseline
    per_prompt_floor: dict[str, float]

    @property
    def threshold(self) -> float:
        return threshold_for(self.floor)


def threshold_for(floor: float) -> float:
    """The decision threshold for a class whose calibrated noise floor is ``floor``."""
    return max(FLOOR_MULTIPLIER * floor, MIN_THRESHOLD)


class PromptDistance(_Model):
    id: str
    max_abs_dlogprob: float  # inf on any token-id mismatch
    total_variation: float  # max over positions, over the top-k union (fill rule as for the logprobs)
    token_ids_equal: bool
    greedy_equal: bool
    greedy_agreement: float  # matching prefix length / continuation length


class Comparison(_Model):
    schema_: Literal["airlock.fingerprint-comparison/v1"] = Field(COMPARISON_SCHEMA, alias="schema")
    baseline_digest: str
    candidate_digest: str
    baseline_model: dict[str, str]
    candidate_model: dict[str, str]
    prompt_set: PromptSetRef
    runtime_class: RuntimeClass
    calibrated: bool  # False: no calibration given, the floor is taken as 0 (threshold = MIN_THRESHOLD)
    floor: float
    threshold: float
    text_token_ids_equal: bool
    prompts: list[PromptDistance]
    max_distance: float
    greedy_agreement: float  # fraction of prompts whose greedy continuation is identical
    verdict: Literal["match", "deviation"]
    reasons: list[str]

    @property
    def reason(self) -> str:
        if self.verdict == "match":
            return (f"match: max |Δ logprob| {self.max_distance:.3g} <= threshold {self.threshold:.3g} "
                    f"over {len(self.prompts)} prompts ({self.runtime_class.id})")
        return "deviation: " + "; ".join(self.reasons)
