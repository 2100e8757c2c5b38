#!/usr/bin/env python3
"""Scan cost: safetensors scan vs one read of the model; pickle scanning vs picklescan alone.

1. A synthetic 2 GiB safetensors model (4 valid shards with 512 MiB of random bf16 data in
   64 tensors each, plus an index and a config) under ``<state>/bench/scan-model`` (reused when
   present). ``scan_model(dir, "high")`` is timed against reading every byte once, both from
   storage: the files' pages are evicted from the page cache (``posix_fadvise(DONTNEED)``)
   before each timed run. The scan only reads headers, so the ratio is far under 1%
   (target: < 0.01). The same pair is also timed with everything page-cached (the strictest
   comparison: a read at memory speed) and printed, not used for the last line.
2. A large torch.save checkpoint (``--tensors`` tensors, ~``--checkpoint-mib`` MiB, zip format)
   under ``<state>/bench/scan-checkpoint.pt``: ``scan_model(file, "medium")`` (opcode walk with
   the allowlist, picklescan as second opinion, every zip member sniffed) vs picklescan's own
   ``scan_file_path``. Throughput is checkpoint bytes per second; the ratio is airlock's
   throughput divided by picklescan's (best of ``--runs`` each, alternating).

The last line is exactly ``scan_vs_read=<x.xxxx> pickle_vs_picklescan=<x.xx>``.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "include"))

from airlock.scan import scan_model  # noqa: E402

MiB = 1024**2
SHARDS = 4
SHARD_BYTES = 512 * MiB
TENSORS_PER_SHARD = 64
TENSOR_BYTES = SHARD_BYTES // TENSORS_PER_SHARD
WRITE_BLOCK = 32 * MiB


def state_dir() -> Path:
    return Path(os.environ.get("AIRLOCK_STATE_DIR", REPO / ".airlock")).expanduser().resolve()


# --------------------------------------------------------------------------- the safetensors model


def _shard_header(shard: int) -> bytes:
    """A header for TENSORS_PER_SHARD bf16 tensors of 8 MiB (512 MiB of data per shard).

    Padded with spaces to 8 bytes, as the safetensors library writes it.
    """
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    for i in range(TENSORS_PER_SHARD):
        header[f"model.layers.{shard}.{i}.weight"] = {
            "dtype": "BF16",
            "shape": [TENSOR_BYTES // 2 // 1024, 1024],
            "data_offsets": [i * TENSOR_BYTES, (i + 1) * TENSOR_BYTES],
        }
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def build_model(root: Path) -> Path:
    shards = [root / f"model-{i + 1:05d}-of-{SHARDS:05d}.safetensors" for i in range(SHARDS)]
    if all(p.is_file() and p.stat().st_size == len(_shard_header(i)) + SHARD_BYTES for i, p in enumerate(shards)):
        return root
    root.mkdir(parents=True, exist_ok=True)
    print(f"building the synthetic safetensors model in {root} ({SHARDS} x {SHARD_BYTES // MiB} MiB)", flush=True)
    weight_map = {}
    for index, shard in enumerate(shards):
        header = _shard_header(index)
        tmp = shard.with_suffix(".tmp")
        with tmp.open("wb") as handle:
            handle.write(header)
            remaining = SHARD_BYTES
            block = os.urandom(WRITE_BLOCK)
            while remaining:
                handle.write(block[: min(remaining, WRITE_BLOCK)])
                remaining -= min(remaining, WRITE_BLOCK)
        tmp.replace(shard)
        (n,) = struct.unpack("<Q", header[:8])
        for name in json.loads(header[8 : 8 + n]):
            if name != "__metadata__":
                weight_map[name] = shard.name
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}, indent=1))
    (root / "config.json").write_text(json.dumps({"model_type": "bench", "hidden_size": 1024}) + "\n")
    return root


def evict(root: Path) -> None:
    """Drop the model's pages from the page cache, so the next read comes from storage."""
    for path in root.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_once(root: Path) -> int:
    buffer = bytearray(8 * MiB)
    view = memoryview(buffer)
    total = 0
    for path in sorted(p for p in root.iterdir() if p.is_file()):
        with path.open("rb", buffering=0) as handle:
            while n := handle.readinto(view):
                total += n
    return total


# --------------------------------------------------------------------------- the torch checkpoint


def build_checkpoint(path: Path, tensors: int, total_mib: int) -> Path:
    marker = path.with_suffix(".params")
    params = f"{tensors}:{total_mib}"
    if path.is_file() and marker.is_file() and marker.read_text() == params:
        return path
    import torch

    print(f"building a torch.save checkpoint at {path} ({tensors} tensors, ~{total_mib} MiB)", flush=True)
    generator = torch.Generator().manual_seed(0)
    per_tensor = total_mib * MiB // tensors // 4
    state = {
        f"model.layers.{i // 8}.block.{i % 8}.weight": torch.randn(per_tensor, generator=generator)
        for i in range(tensors)
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    marker.write_text(params)
    return path


# --------------------------------------------------------------------------- timing


def best_of(runs: int, fn: Callable[[], object], before: Callable[[], object] | None = None) -> float:
    best = float("inf")
    for _ in range(runs):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tensors", type=int, default=4000)
    parser.add_argument("--checkpoint-mib", type=int, default=1024)
    args = parser.parse_args(argv)
    bench = state_dir() / "bench"

    model = build_model(bench / "scan-model")
    size = sum(p.stat().st_size for p in model.iterdir() if p.is_file())
    report = scan_model(model, "high")
    assert report.verdict == "allow", report.summary_lines()
    read_s = best_of(args.runs, lambda: read_once(model), before=lambda: evict(model))
    scan_s = best_of(args.runs, lambda: scan_model(model, "high"), before=lambda: evict(model))
    read_once(model)  # now everything page-cached
    warm_read_s = best_of(args.runs, lambda: read_once(model))
    warm_scan_s = best_of(args.runs * 4, lambda: scan_model(model, "high"))
    print(f"safetensors model: {size / MiB:.0f} MiB in {len(report.files)} files")
    print(f"  from storage: read once {read_s:.3f}s ({size / MiB / read_s:.0f} MiB/s), scan {scan_s * 1000:.2f}ms")
    print(
        f"  page-cached:  read once {warm_read_s:.3f}s ({size / MiB / warm_read_s:.0f} MiB/s), "
        f"scan {warm_scan_s * 1000:.2f}ms, ratio {warm_scan_s / warm_read_s:.4f}"
    )

    from picklescan.scanner import scan_file_path

    checkpoint = build_checkpoint(bench / "scan-checkpoint.pt", args.tensors, args.checkpoint_mib)
    ckpt_size = checkpoint.stat().st_size
    report = scan_model(checkpoint, "medium")
    assert report.verdict == "allow" and report.files[0].detected_format == "pytorch_zip", report.summary_lines()
    reference = scan_file_path(str(checkpoint))
    assert reference.issues_count == 0 and not reference.scan_err
    airlock_s = picklescan_s = float("inf")
    for _ in range(args.runs):  # alternate, so both see the same cache and machine state
        airlock_s = min(airlock_s, best_of(1, lambda: scan_model(checkpoint, "medium")))
        picklescan_s = min(picklescan_s, best_of(1, lambda: scan_file_path(str(checkpoint))))
    print(f"torch checkpoint: {ckpt_size / MiB:.0f} MiB, {args.tensors} tensors")
    print(
        f"  airlock: {airlock_s * 1000:.1f}ms ({ckpt_size / MiB / airlock_s:.0f} MiB/s); "
        f"picklescan: {picklescan_s * 1000:.1f}ms ({ckpt_size / MiB / picklescan_s:.0f} MiB/s)"
    )
    print(f"scan_vs_read={scan_s / read_s:.4f} pickle_vs_picklescan={picklescan_s / airlock_s:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
