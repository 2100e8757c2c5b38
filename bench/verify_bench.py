#!/usr/bin/env python3
"""Verifying a 2 GiB model vs hashing it, and vs model_signing's own verify, in one run.

The synthetic model (4 x 512 MiB shards of random bytes plus small JSON files,
the layout of bench/hash_bench.py) is built once under
``<state>/bench/synthetic-2g`` and signed once with a local P-256 key (the
verify path is the same whatever signed the bundle; no Vault needed). Timings
are on page-cached data: one untimed warm-up pass, then RUNS rounds that
interleave the three measurements, median of each:

* hash     — the manifest stage's hashing of the directory (airlock.manifest.hash_tree)
* verify   — airlock.verify.verify_model (bundle, signature, re-hash, compare)
* upstream — model_signing.verifying (key verifier) on the same bundle and key

Target: verify <= 1.1x hash. The last line is exactly
``verify_vs_hash=<x.xx> verify_vs_model_signing=<x.xx>`` (time ratios, lower is better).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("AIRLOCK_STATE_DIR", REPO / ".airlock"))
BENCH_DIR = STATE / "bench"
MODEL_DIR = BENCH_DIR / "synthetic-2g"
SHARDS = 4
SHARD_BYTES = 512 << 20
RUNS = 5
TARGET = 1.1
SMALL_FILES = {
    "config.json": '{"architectures": ["SyntheticForCausalLM"], "hidden_size": 4096}\n',
    "generation_config.json": '{"do_sample": false}\n',
    "tokenizer_config.json": '{"model_max_length": 4096}\n',
}


def build_model() -> None:
    """Create the shards once (random bytes, written in 64 MiB pieces so memory stays flat)."""
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    for index in range(SHARDS):
        shard = MODEL_DIR / f"model-{index + 1:05d}-of-{SHARDS:05d}.safetensors"
        if shard.exists() and shard.stat().st_size == SHARD_BYTES:
            continue
        print(f"writing {shard} ({SHARD_BYTES >> 20} MiB)", flush=True)
        with open(shard, "wb") as handle:
            for _ in range(SHARD_BYTES // (64 << 20)):
                handle.write(os.urandom(64 << 20))
    for name, text in SMALL_FILES.items():
        path = MODEL_DIR / name
        if not path.exists():
            path.write_text(text)


def sign_model() -> tuple[Path, Path]:
    """A bundle and public key beside the model directory (the registry layout), made once per run."""
    from airlock.signing import LocalKeySigner, sign_directory

    signer = LocalKeySigner.generate(key_name="bench", version=1)
    bundle, public_key = BENCH_DIR / "synthetic-2g.sig", BENCH_DIR / "synthetic-2g.pub.pem"
    sign_directory(MODEL_DIR, signer, output=bundle)
    public_key.write_text(signer.public_key_pem)
    return bundle, public_key


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> int:
    import model_signing

    from airlock.manifest import hash_tree, usable_cores
    from airlock.trust import TrustStore
    from airlock.verify import verify_model

    build_model()
    bundle, public_key = sign_model()  # also the warm-up pass: reads every byte once
    trust = TrustStore.from_public_key_pem(public_key.read_bytes(), str(public_key))
    upstream = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key)

    def verify() -> None:
        result = verify_model(MODEL_DIR, bundle, trust)
        if not result.ok:
            raise SystemExit(f"verification failed: {result.reason}")

    measurements: dict[str, list[float]] = {"hash": [], "verify": [], "upstream": []}
    actions = {"hash": lambda: hash_tree(MODEL_DIR), "verify": verify,
               "upstream": lambda: upstream.verify(MODEL_DIR, bundle)}
    for _ in range(RUNS):
        for name, action in actions.items():
            measurements[name].append(timed(action))

    size = sum(p.stat().st_size for p in MODEL_DIR.iterdir())
    print(f"model: {MODEL_DIR} ({size / (1 << 30):.2f} GiB, {SHARDS} shards), {usable_cores()} usable cores, "
          f"median of {RUNS}")
    medians = {name: statistics.median(values) for name, values in measurements.items()}
    for name, seconds in medians.items():
        print(f"{name:<9} {seconds:7.3f} s  {size / seconds / (1 << 20):8.0f} MiB/s  "
              f"(runs: {', '.join(f'{v:.3f}' for v in measurements[name])})")
    verify_vs_hash = medians["verify"] / medians["hash"]
    verify_vs_upstream = medians["verify"] / medians["upstream"]
    print(f"target verify <= {TARGET}x hash: {'met' if verify_vs_hash <= TARGET else 'MISSED'}")
    print(f"verify_vs_hash={verify_vs_hash:.2f} verify_vs_model_signing={verify_vs_upstream:.2f}")
    return 0 if verify_vs_hash <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
