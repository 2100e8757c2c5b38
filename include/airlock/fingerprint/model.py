"""Compute a logprob fingerprint of a local transformers model, and calibrate its noise floor.

Recipe (measured on the demo models, see the issue): BOS prepended, the first N positions of every
canonical prompt scored teacher-forced in batched forward passes, log-softmax in float64, top-k ids
and values kept; the greedy continuation of the same prefix; the token ids of every prompt and of a
broad tokenizer text. The model directory must be one Airlock has scanned and allowed (or a verified
registry copy): ``trust_remote_code=False`` always, safetensors preferred when present.

torch and transformers are imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airlock.errors import AirlockError
from airlock.fingerprint.compare import noise_floor
from airlock.fingerprint.prompts import DEFAULT_PROMPT_SET, PromptSet, load_prompt_set
from airlock.fingerprint.schema import (
    Calibration,
    CalibrationRun,
    Fingerprint,
    PromptOutput,
    PromptSetRef,
    Runtime,
    RuntimeClass,
    Settings,
)

DEFAULT_TOP_K = 16
DEFAULT_POSITIONS = 16
DEFAULT_GREEDY_TOKENS = 8
DEFAULT_BATCH_SIZE = 16
# Batch size x threads: the variation a calibration covers (what a nightly check on the same class may use).
DEFAULT_CALIBRATION_RUNS: tuple[tuple[int, int], ...] = ((16, 1), (1, 1), (4, 1), (16, 2), (1, 2), (4, 2))


class FingerprintError(AirlockError):
    """The model could not be loaded or fingerprinted."""


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return device


def load_model(model_dir: str | Path, *, device: str = "auto", dtype: str = "float32") -> tuple[Any, Any, str]:
    """(model, tokenizer, device) for a scanned local directory: no remote code, no network, safetensors first."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FingerprintError(f"model directory {model_dir}: no config.json (not a transformers model directory)")
    device = _resolve_device(device)
    kwargs: dict[str, Any] = {"trust_remote_code": False, "local_files_only": True}
    if any(model_dir.glob("*.safetensors")):
        kwargs["use_safetensors"] = True
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise FingerprintError(f"dtype {dtype!r} is not a torch dtype name")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch_dtype, **kwargs)
    except Exception as exc:  # noqa: BLE001 - loaders raise many types (safetensors, tokenizers); all = cannot load
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FingerprintError(f"model directory {model_dir}: cannot load ({reason[:300]})") from None
    return model.to(device).eval(), tokenizer, device


@contextlib.contextmanager
def _threads(threads: int | None) -> Iterator[int]:
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _runtime_class(model: Any, device: str) -> RuntimeClass:
    import torch
    import transformers

    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
    return RuntimeClass(device_type=dev.type, device_name=name, dtype=str(model.dtype).removeprefix("torch."),
                        torch=torch.__version__, transformers=transformers.__version__)


def _bos(tokenizer: Any) -> int | None:
    for candidate in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if isinstance(candidate, int):
            return candidate
    return None


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def compute_fingerprint(
    model: Any, tokenizer: Any, device: str, prompt_set: PromptSet, *,
    top_k: int = DEFAULT_TOP_K, positions: int = DEFAULT_POSITIONS, greedy_tokens: int = DEFAULT_GREEDY_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE, threads: int | None = None, model_ref: dict[str, str] | None = None,
) -> Fingerprint:
    """Fingerprint an already loaded model (calibration re-uses one load for many runs)."""
    import torch

    started = time.monotonic()
    bos = _bos(tokenizer)
    prompt_ids = [tokenizer(p.text, add_special_tokens=False, verbose=False)["input_ids"] for p in prompt_set.prompts]
    prefixes = [([bos] if bos is not None else []) + ids for ids in prompt_ids]
    prefixes = [ids[:positions] for ids in prefixes]
    if any(not ids for ids in prefixes):
        raise FingerprintError("a canonical prompt tokenises to nothing and the tokenizer has no BOS/EOS")
    pad = bos if bos is not None else 0
    scored: list[tuple[list[list[int]], list[list[float]]]] = []
    with _threads(threads) as used_threads, torch.inference_mode():
        order = list(range(len(prefixes)))
        for batch in _batches(order, batch_size):
            width = max(len(prefixes[i]) for i in batch)
            # Right padding: with a causal mask, positions before the padding never see it.
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, :len(prefixes[i])] = torch.tensor(prefixes[i])
                mask[row, :len(prefixes[i])] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            logprobs = torch.log_softmax(logits.to(torch.float64), dim=-1)
            k = min(top_k, logprobs.shape[-1])
            values, indices = torch.topk(logprobs, k=k, dim=-1)
            values, indices = values.cpu(), indices.cpu()
            for row, i in enumerate(batch):
                n = len(prefixes[i])
                scored.append((indices[row, :n].tolist(), values[row, :n].tolist()))
        greedy = _greedy(model, prefixes, device, greedy_tokens, batch_size, pad)
        text_ids = tokenizer(prompt_set.text, add_special_tokens=False, verbose=False)["input_ids"]
    outputs = [
        PromptOutput(id=p.id, prompt_ids=list(ids), top_ids=top_ids, top_logprobs=top_lp, greedy_ids=g)
        for p, ids, (top_ids, top_lp), g in zip(prompt_set.prompts, prompt_ids, scored, greedy, strict=True)
    ]
    return Fingerprint(
        prompt_set=PromptSetRef(id=prompt_set.id, sha256=prompt_set.sha256, text_sha256=prompt_set.text_sha256),
        settings=Settings(top_k=min(top_k, len(scored[0][0][0])), positions=positions, greedy_tokens=greedy_tokens,
                          bos_token_id=bos),
        runtime=Runtime(runtime_class=_runtime_class(model, device), threads=used_threads, batch_size=batch_size,
                        attn_implementation=getattr(model.config, "_attn_implementation", None)),
        model=model_ref or {},
        prompts=outputs,
        text_token_ids=list(text_ids),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        seconds=round(time.monotonic() - started, 3),
    )


def _greedy(model: Any, prefixes: list[list[int]], device: str, tokens: int, batch_size: int, pad: int
            ) -> list[list[int]]:
    """Greedy continuations, batched by prefix length so no padding is ever needed."""
    import torch
    from transformers import GenerationConfig

    out: list[list[int]] = [[] for _ in prefixes]
    if tokens == 0:
        return out
    # A fixed config, not the checkpoint's generation_config.json: sampling flags or a repetition penalty
    # in a model's own config would make the continuation depend on a file outside the weights.
    config = GenerationConfig(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, num_beams=1,
                              pad_token_id=pad, eos_token_id=None)
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(prefixes):
        by_length.setdefault(len(ids), []).append(i)
    for length, members in sorted(by_length.items()):
        for batch in _batches(members, batch_size):
            ids = torch.tensor([prefixes[i] for i in batch], dtype=torch.long, device=device)
            generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
            for row, i in enumerate(batch):
                out[i] = generated[row, length:].tolist()
    return out


def fingerprint_model(
    model_dir: str | Path, *, prompt_set: str = DEFAULT_PROMPT_SET, device: str = "auto", dtype: str = "float32",
    top_k: int = DEFAULT_TOP_K, positions: int = DEFAULT_POSITIONS, greedy_tokens: int = DEFAULT_GREEDY_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE, threads: int | None = None, model_ref: dict[str, str] | None = None,
) -> Fingerprint:
    """Load ``model_dir`` and fingerprint it on the canonical prompt set."""
    prompts = load_prompt_set(prompt_set)
    model, tokenizer, device = load_model(model_dir, device=device, dtype=dtype)
    return compute_fingerprint(model, tokenizer, device, prompts, top_k=top_k, positions=positions,
                               greedy_tokens=greedy_tokens, batch_size=batch_size, threads=threads,
                               model_ref=model_ref)


def calibrate(
    model_dir: str | Path, *, runs: Sequence[tuple[int, int]] = DEFAULT_CALIBRATION_RUNS,
    prompt_set: str = DEFAULT_PROMPT_SET, device: str = "auto", dtype: str = "float32",
    top_k: int = DEFAULT_TOP_K, positions: int = DEFAULT_POSITIONS, greedy_tokens: int = DEFAULT_GREEDY_TOKENS,
    model_ref: dict[str, str] | None = None,
) -> tuple[Fingerprint, Calibration]:
    """Baseline fingerprint (the first ``(batch_size, threads)`` of ``runs``) and its noise floor: the largest
    distance of the other runs from it. Run on the verified copy, once per runtime class."""
    if len(runs) < 2:
        raise FingerprintError("calibration needs at least two runs (batch size, threads)")
    prompts = load_prompt_set(prompt_set)
    model, tokenizer, device = load_model(model_dir, device=device, dtype=dtype)
    prints = [
        compute_fingerprint(model, tokenizer, device, prompts, top_k=top_k, positions=positions,
                            greedy_tokens=greedy_tokens, batch_size=batch, threads=threads, model_ref=model_ref)
        for batch, threads in runs
    ]
    baseline, others = prints[0], prints[1:]
    floor, per_prompt, per_run = noise_floor(baseline, others)
    calibration = Calibration(
        baseline_digest=baseline.digest(),
        prompt_set=baseline.prompt_set,
        settings=baseline.settings,
        runtime_class=baseline.runtime.runtime_class,
        runs=[CalibrationRun(batch_size=p.runtime.batch_size, threads=p.runtime.threads, max_distance=d)
              for p, d in zip(prints, [0.0, *per_run], strict=True)],
        floor=floor,
        per_prompt_floor=per_prompt,
    )
    return baseline, calibration
