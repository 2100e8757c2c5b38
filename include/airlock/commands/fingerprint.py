"""``airlock fingerprint run|compare``: behavioural fingerprints of a local model and their comparison.

- ``run MODEL_DIR --out FILE [--calibration-out FILE]``: fingerprint a scanned/verified model directory;
  with ``--calibration-out`` the model is re-run with varied batch sizes and threads and the noise
  floor of its runtime class is written too (the fingerprint is then the calibration's baseline).
- ``compare BASELINE CANDIDATE [--calibration FILE] [--docs DIR] [--out FILE]``: exit 0 match,
  1 deviation, 2 could not compare (unreadable file, different runtime class or prompt set).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from airlock.cli import EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fingerprint", help="behavioural fingerprint of a model; compare two fingerprints")
    verbs = parser.add_subparsers(dest="fingerprint_command", required=True)

    run = verbs.add_parser("run", help="fingerprint a local model directory (canonical prompts, top-k logprobs)")
    run.add_argument("model_dir", type=Path)
    run.add_argument("--out", type=Path, required=True, help="fingerprint JSON to write")
    run.add_argument("--calibration-out", type=Path, default=None,
                     help="also calibrate (re-run with batch sizes 1/4/16 x 1/2 threads) and write the noise floor")
    run.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    run.add_argument("--dtype", default="float32", help="torch dtype to load the weights in (default float32)")
    run.add_argument("--batch-size", type=int, default=16)
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    run.set_defaults(handler=_guarded(_run))

    cmp = verbs.add_parser("compare", help="compare a candidate fingerprint with its baseline")
    cmp.add_argument("baseline", type=Path)
    cmp.add_argument("candidate", type=Path)
    cmp.add_argument("--calibration", type=Path, default=None,
                     help="the baseline's calibration (without it the noise floor is taken as 0)")
    cmp.add_argument("--docs", type=Path, default=None,
                     help="validate with great-expectations and write its Data Docs (offline HTML) here")
    cmp.add_argument("--out", type=Path, default=None, help="write the comparison JSON here")
    cmp.set_defaults(handler=_guarded(_compare))


def _guarded(handler):
    """Model loading and torch fail with many exception types; each is 'could not run', on one line."""
    def run(args: argparse.Namespace) -> int:
        from airlock.errors import AirlockError

        try:
            return handler(args)
        except AirlockError:
            raise  # cli.main prints it and exits 2
        except (OSError, RuntimeError, ValueError, MemoryError) as exc:
            message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            print(f"airlock fingerprint: {type(exc).__name__}: {message}", file=sys.stderr)
            return EXIT_ERROR
    return run


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _run(args: argparse.Namespace) -> int:
    from airlock.fingerprint.model import calibrate, fingerprint_model

    if args.calibration_out is not None:
        fingerprint, calibration = calibrate(args.model_dir, device=args.device, dtype=args.dtype)
        _write(args.calibration_out, calibration.to_json())
    else:
        fingerprint = fingerprint_model(args.model_dir, device=args.device, dtype=args.dtype,
                                        batch_size=args.batch_size, threads=args.threads)
        calibration = None
    _write(args.out, fingerprint.to_json())
    line = (f"fingerprint {fingerprint.digest()[:16]}: {len(fingerprint.prompts)} prompts, "
            f"{fingerprint.runtime.runtime_class.id} -> {args.out}")
    if calibration is not None:
        line += f"; noise floor {calibration.floor:.3g}, threshold {calibration.threshold:.3g} -> {args.calibration_out}"
    print(line)
    return EXIT_OK


def _compare(args: argparse.Namespace) -> int:
    from airlock.fingerprint.check import check, read_document
    from airlock.fingerprint.schema import Calibration, Fingerprint

    baseline = read_document(args.baseline, Fingerprint)
    candidate = read_document(args.candidate, Fingerprint)
    calibration = read_document(args.calibration, Calibration) if args.calibration else None
    result = check(baseline, candidate, calibration, docs_dir=args.docs, run_gx=args.docs is not None)
    if args.out is not None:
        _write(args.out, result.comparison.to_json())
    suffix = f" (Data Docs: {result.docs_index})" if result.docs_index else ""
    print(result.reason + suffix)
    return EXIT_OK if result.verdict == "match" else EXIT_NEGATIVE
