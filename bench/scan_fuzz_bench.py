#!/usr/bin/env python3
"""The long run of the scanner-vs-loaders differential fuzz (the unit test runs a short one).

Mutates benign and malicious containers (tests/scan_fuzz.py), scans each mutant with
``airlock.scan.scan_model`` at tiers low and critical, runs torch/joblib/numpy/pickle on it in a
child process with a recording unpickler (tests/scan_oracle.py), and counts disagreements: a
loader reaching a global outside the pickle allowlist while the scanner allows the file.
One reproducer per disagreement class is kept under ``--repro-dir``.

Usage: .venv/bin/python bench/scan_fuzz_bench.py [--seconds 600] [--mutants 100000] [--seed 1]
       [--repro-dir /tmp/fuzz-repro] [--show 20]
Prints the counts, the disagreement classes, and as its last line ``mutants=<n> disagreements=<d>``.
Exit status: 0 if there were no disagreements, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "include"))
sys.path.insert(0, str(REPO / "tests"))

import scan_fuzz


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="time budget (default 600)")
    parser.add_argument("--mutants", type=int, default=1_000_000, help="stop after this many mutants")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2000, help="mutants per oracle child process")
    parser.add_argument("--repro-dir", type=Path, default=Path("/tmp/fuzz-repro"))
    parser.add_argument("--show", type=int, default=20, help="disagreements to print in full")
    args = parser.parse_args(argv)
    if not (args.seconds > 0 and args.mutants > 0 and args.batch > 0):
        parser.error("--seconds, --mutants and --batch must be positive")
    with tempfile.TemporaryDirectory(prefix="airlock-fuzz-") as tmp:
        stats, found = scan_fuzz.run_campaign(
            seed=args.seed,
            count=args.mutants,
            time_budget_s=args.seconds,
            workdir=Path(tmp),
            repro_dir=args.repro_dir,
            batch=args.batch,
        )
    for line in stats.lines():
        print(line)
    shown = set()
    for d in found:
        if d.klass in shown or len(shown) >= args.show:
            continue
        shown.add(d.klass)
        print(d.summary())
    if found:
        print(f"reproducers: {args.repro_dir}")
    print(f"mutants={stats.tried} disagreements={stats.disagreements}")
    return 1 if stats.disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
