#!/usr/bin/env python3
"""Detection power of the behavioural fingerprint, measured rather than assumed.

In-process logprob fingerprint, by default on a tiny GPT-2 this script trains for ``--train-seconds`` on
the demo corpus with a fixed seed (``--model demo``: the demo model, ``demo/tiny-gpt2`` from
scripts/demo_models.py, random weights, whose logits are so flat that noise below 1e-4 x std stays
within the floor; the trained model is what a registry holds and is what reaches 1e-5):
- false alarms: ``--runs`` re-runs of the unmodified model with varied batch size and threads,
  compared with the baseline under its calibration (3 further runs);
- detection of: Gaussian noise of 1e-5 x std on one matrix, one SGD step and one AdamW step (lr 1e-3),
  fp16 and bf16 round trips, int8 fake quantisation, a re-initialised model, a single weight set to
  0.1, a tokenizer merge swap and a token-id remap;
- min_sigma: the smallest relative noise (1e-2 ... 1e-7) on that matrix that is still flagged;
- seconds per fingerprint (model loaded).

Sampled-text endpoint backend (MMD, character 3-gram kernel, permutation within prompt), on a tiny
GPT-2 this script trains for ``--train-seconds`` on the demo corpus with a fixed seed (random
weights produce near-noise text, which makes any sample test meaningless). Completions are drawn
in-process at temperature 1, top_k 0 -- what ``transformers serve`` returns for such requests --
so the numbers do not depend on a server. Power against a model swapped behind the endpoint (one
AdamW step at lr 1e-3, and a different init) and false alarms on the unmodified model, over
``--endpoint-trials`` trials, plus the power curve over prompts x samples per prompt.

The last line is exactly
``false_alarms=<n>/20 detected=<k>/<m> min_sigma=<x> endpoint_power=<p> endpoint_false_alarms=<q>/20``
(the denominators are ``--runs`` and ``--endpoint-trials``; 20 by default). The endpoint's power and false
alarms there are at the level the nightly check decides at (``EndpointConfig.alpha``, 0.01; ``--alpha``);
the power curve above it is at p<0.05 and the false alarms at both levels.
``--quick`` shrinks everything for a smoke run (the numbers are then not the targets' measurements).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "include"))
sys.path.insert(0, str(REPO / "scripts"))

from airlock.fingerprint.compare import compare, noise_floor
from airlock.fingerprint.endpoint import mmd_test
from airlock.fingerprint.model import compute_fingerprint, load_model
from airlock.fingerprint.nightly import EndpointConfig
from airlock.fingerprint.prompts import load_prompt_set
from airlock.fingerprint.schema import threshold_for

MATRIX = "transformer.h.0.attn.c_attn.weight"
SIGMAS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
RERUN_SHAPES = [(b, t) for t in (1, 2) for b in (1, 2, 3, 4, 5, 7, 8, 12, 16, 48)]


def _corpus_batch(tokenizer, length: int = 64, batch: int = 8, seed: int = 0):
    import torch

    ids = tokenizer((REPO / "scripts/demo_data/corpus.txt").read_text(), return_tensors="pt",
                    verbose=False).input_ids[0]
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - length - 1, (batch,), generator=g)
    return torch.stack([ids[s:s + length] for s in starts])


def _step(model, tokenizer, optimizer: str):
    import torch

    m = copy.deepcopy(model).train()
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.AdamW)(m.parameters(), lr=1e-3)
    x = _corpus_batch(tokenizer)
    m(input_ids=x, labels=x).loss.backward()
    opt.step()
    return m.eval()


def _map_weights(model, fn):
    import torch

    m = copy.deepcopy(model)
    with torch.no_grad():
        for _, p in m.named_parameters():
            p.copy_(fn(p))
    return m


def _fake_int8(p):
    import torch

    if p.ndim < 2:
        return p
    scale = p.abs().max() / 127
    return torch.round(p / scale).clamp(-127, 127) * scale


def _noise(model, sigma: float, seed: int = 1):
    import torch

    m = copy.deepcopy(model)
    w = dict(m.named_parameters())[MATRIX]
    with torch.no_grad():
        w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(seed)) * w.std() * sigma)
    return m


def _one_weight(model, value: float = 0.1):
    import torch

    m = copy.deepcopy(model)
    with torch.no_grad():
        dict(m.named_parameters())["transformer.h.1.mlp.c_fc.weight"][3, 5] = value
    return m


def _reinit(model, seed: int = 7):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(model.config).eval()


def _tampered_tokenizer(model_dir: Path, scratch: Path, how: str):
    """A tokenizer copy with two competing BPE merges swapped, or two vocabulary ids swapped."""
    from transformers import AutoTokenizer

    target = scratch / f"tok-{how}"
    target.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(model_dir / name, target / name)
    data = json.loads((target / "tokenizer.json").read_text(encoding="utf-8"))
    bpe = data["model"]
    if how == "merges":
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in bpe["merges"]]
        # the first pair of merges that compete for a shared symbol (a b)(b c): their order matters
        i, j = next((i, j) for i in range(len(merges)) for j in range(i + 1, len(merges))
                    if merges[i][1] == merges[j][0] or merges[j][1] == merges[i][0])
        raw = bpe["merges"]
        raw[i], raw[j] = raw[j], raw[i]
    else:
        vocab = bpe["vocab"]
        vocab["Ġthe"], vocab["Ġand"] = vocab["Ġand"], vocab["Ġthe"]
    (target / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return AutoTokenizer.from_pretrained(str(target))


def _train(model_dir: Path, seconds: float, seed: int):
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=tokenizer.vocab_size + len(tokenizer.get_added_vocab()), n_positions=128,
                        n_embd=64, n_layer=2, n_head=2, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    model = GPT2LMHeadModel(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    started, steps = time.monotonic(), 0
    while time.monotonic() - started < seconds:
        x = _corpus_batch(tokenizer, batch=16, seed=seed * 100_000 + steps)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        steps += 1
    return model.eval(), tokenizer, steps, loss.item()


def _sample_set(model, tokenizer, prompts, samples: int, seed: int, max_tokens: int = 32) -> dict[str, list[str]]:
    """What an endpoint returns for temperature 1, top_k 0: ``samples`` completions per prompt."""
    import torch
    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_tokens,
                              min_new_tokens=max_tokens, num_return_sequences=samples,
                              pad_token_id=tokenizer.eos_token_id, eos_token_id=None)
    out = {}
    with torch.inference_mode():
        for i, p in enumerate(prompts):
            torch.manual_seed(seed * 10_007 + i)
            ids = tokenizer(p.text, return_tensors="pt", verbose=False).input_ids[:, -64:]
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
            out[p.id] = tokenizer.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
    return out


def _subset(samples: dict[str, list[str]], prompts: int, per_prompt: int) -> dict[str, list[str]]:
    return {k: samples[k][:per_prompt] for k in sorted(samples)[:prompts]}


def main() -> int:
    parser = argparse.ArgumentParser(description="Fingerprint detection power")
    parser.add_argument("--runs", type=int, default=20, help="false-alarm re-runs (in-process)")
    parser.add_argument("--model", choices=("demo", "trained"), default="trained")
    parser.add_argument("--endpoint-trials", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--train-seconds", type=float, default=60.0)
    parser.add_argument("--permutations", type=int, default=500)
    parser.add_argument("--alpha", type=float, default=None,
                        help="the endpoint check's decision level (default: the nightly check's, EndpointConfig.alpha)")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer runs, prompts, samples, trials")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.endpoint_trials, args.prompts, args.samples = 4, 3, 12, 10
        args.train_seconds, args.permutations = min(args.train_seconds, 20.0), 200

    import demo_models
    import torch

    bench_started = time.monotonic()

    torch.set_num_threads(1)
    prompt_set = load_prompt_set()
    with tempfile.TemporaryDirectory(prefix="airlock-detect-bench-") as tmp:
        scratch = Path(tmp)
        model_dir = demo_models.build_tiny_gpt2(scratch / "models")
        model, tokenizer, device = load_model(model_dir, device="cpu")
        trained = None
        if args.model == "trained" or args.endpoint_trials:
            trained, _, steps, loss = _train(model_dir, args.train_seconds, args.seed)
            print(f"trained tiny GPT-2: {steps} AdamW steps in {args.train_seconds:.0f} s, loss {loss:.2f}")
        if args.model == "trained":
            model = trained

        def fp(m, tok=tokenizer, batch=16, threads=1):
            return compute_fingerprint(m, tok, device, prompt_set, batch_size=batch, threads=threads)

        # ---- baseline, calibration, false alarms
        started = time.monotonic()
        baseline = fp(model)
        per_fp = time.monotonic() - started
        floor, _, _ = noise_floor(baseline, [fp(model, batch=1), fp(model, batch=4), fp(model, batch=16, threads=2)])
        threshold = threshold_for(floor)
        print(f"\n[in-process, {args.model} model] floor {floor:.3g}, threshold {threshold:.3g}, "
              f"{per_fp:.2f} s per fingerprint (48 prompts, model loaded)")
        false_alarms, worst = 0, 0.0
        for batch, threads in RERUN_SHAPES[:args.runs]:
            d = compare(baseline, fp(model, batch=batch, threads=threads)).max_distance
            worst = max(worst, d)
            false_alarms += d > threshold
        print(f"{'re-runs':<28} {args.runs:>3} runs, max distance {worst:.3g}, false alarms {false_alarms}")

        # ---- perturbations
        cases = {
            "noise 1e-5 x std (1 matrix)": lambda: fp(_noise(model, 1e-5)),
            "one SGD step lr 1e-3": lambda: fp(_step(model, tokenizer, "sgd")),
            "one AdamW step lr 1e-3": lambda: fp(_step(model, tokenizer, "adamw")),
            "fp16 round trip": lambda: fp(_map_weights(model, lambda p: p.half().float())),
            "bf16 round trip": lambda: fp(_map_weights(model, lambda p: p.bfloat16().float())),
            "int8 fake quantisation": lambda: fp(_map_weights(model, _fake_int8)),
            "re-initialised model": lambda: fp(_reinit(model)),
            "single weight set to 0.1": lambda: fp(_one_weight(model)),
            "tokenizer merge swap": lambda: fp(model, tok=_tampered_tokenizer(model_dir, scratch, "merges")),
            "token-id remap": lambda: fp(model, tok=_tampered_tokenizer(model_dir, scratch, "remap")),
        }
        detected = 0
        for name, make in cases.items():
            result = compare(baseline, make())
            hit = result.max_distance > threshold
            detected += hit
            print(f"{name:<28} distance {result.max_distance:>10.3g}  greedy agreement "
                  f"{result.greedy_agreement:.2f}  {'DETECTED' if hit else 'missed'}")
        min_sigma = None
        for sigma in SIGMAS:
            d = compare(baseline, fp(_noise(model, sigma))).max_distance
            print(f"{'noise ' + format(sigma, '.0e') + ' x std':<28} distance {d:>10.3g}")
            if d > threshold:
                min_sigma = sigma
            else:
                break

        # ---- endpoint backend (sampled text)
        power, endpoint_false_alarms = float("nan"), 0
        alpha = args.alpha if args.alpha is not None else EndpointConfig.model_fields["alpha"].default
        if args.endpoint_trials and trained is not None:
            prompts = prompt_set.prompts[:args.prompts]
            swapped = {"one AdamW step lr 1e-3": _step(trained, tokenizer, "adamw"),
                       "different init": _reinit(trained, seed=args.seed + 1)}
            t0 = time.monotonic()
            base_sets = [_sample_set(trained, tokenizer, prompts, args.samples, 1000 + t)
                         for t in range(args.endpoint_trials)]
            seconds_per_set = (time.monotonic() - t0) / args.endpoint_trials
            same_sets = [_sample_set(trained, tokenizer, prompts, args.samples, 2000 + t)
                         for t in range(args.endpoint_trials)]
            print(f"\n[endpoint, sampled text] {args.prompts} prompts x {args.samples} samples x 32 tokens, "
                  f"{seconds_per_set:.1f} s per sample set, {args.permutations} permutations")
            null_p = [mmd_test(b, s, permutations=args.permutations, seed=t).p_value
                      for t, (b, s) in enumerate(zip(base_sets, same_sets, strict=True))]
            # An exact permutation test rejects a true null at rate alpha: at p<0.05, 20 trials see 2 or more
            # false alarms one time in four. The last line reports the level the nightly check decides at.
            endpoint_false_alarms = sum(p < alpha for p in null_p)
            print(f"{'unmodified':<28} false alarms {sum(p < 0.05 for p in null_p)}/{args.endpoint_trials} at p<0.05, "
                  f"{sum(p < 0.01 for p in null_p)}/{args.endpoint_trials} at p<0.01; "
                  f"p-values {' '.join(format(p, '.3f') for p in sorted(null_p))}")
            powers = {}
            for name, m in swapped.items():
                cand_sets = [_sample_set(m, tokenizer, prompts, args.samples, 3000 + t)
                             for t in range(args.endpoint_trials)]
                curve, full_p = [], []
                for n_prompts in sorted({max(2, args.prompts // 4), args.prompts // 2, args.prompts}):
                    for n_samples in sorted({max(2, args.samples // 3), args.samples // 2 or 2, args.samples}):
                        p_values = [mmd_test(_subset(b, n_prompts, n_samples), _subset(c, n_prompts, n_samples),
                                             permutations=args.permutations, seed=t).p_value
                                    for t, (b, c) in enumerate(zip(base_sets, cand_sets, strict=True))]
                        hits = sum(p < 0.05 for p in p_values)
                        curve.append(f"{n_prompts}x{n_samples}:{hits / args.endpoint_trials:.2f}")
                        if (n_prompts, n_samples) == (args.prompts, args.samples):
                            powers[name], full_p = hits / args.endpoint_trials, p_values
                print(f"{name:<28} power at p<0.05 by prompts x samples: {' '.join(curve)}")
                powers[name] = sum(p < alpha for p in full_p) / args.endpoint_trials
                print(f"{'':<28} at {args.prompts}x{args.samples}: largest p {max(full_p):.3g}, power at "
                      f"p<{alpha:g} {powers[name]:.2f}")
            power = min(powers.values())
            print(f"\nendpoint decision level (the nightly check's alpha): p<{alpha:g}")

    print(f"\nwall time {time.monotonic() - bench_started:.0f} s")
    min_sigma_text = "none" if min_sigma is None else format(min_sigma, "g")
    print(f"false_alarms={false_alarms}/{args.runs} detected={detected}/{len(cases)} min_sigma={min_sigma_text} "
          f"endpoint_power={power:.2f} endpoint_false_alarms={endpoint_false_alarms}/{args.endpoint_trials}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
