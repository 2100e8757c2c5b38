"""``airlock evaluate MODEL_DIR --tier T --out FILE [--previous FILE]``: run the tier's lm-eval suite offline.

Exit 0 when the result passes the tier's rules, 1 when it is blocked or needs a human's approval (a
drop against ``--previous``, the latest approved version's EvalReport), 2 when it could not run.
The report (``airlock.eval-report/v1``) is written either way; the verdict's reason is the last line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from airlock.cli import EXIT_NEGATIVE, EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="evaluate a local model with the tier's offline lm-eval suite")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--tier", required=True, choices=("low", "medium", "high", "critical"))
    parser.add_argument("--out", type=Path, required=True, help="EvalReport JSON to write")
    parser.add_argument("--previous", type=Path, default=None,
                        help="EvalReport of the latest approved version of the same model (drop check)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="float32", help="torch dtype name or auto (the checkpoint's)")
    parser.set_defaults(handler=run)


def _read_report(path: Path):
    from pydantic import ValidationError

    from airlock.errors import AirlockError, first_validation_problem
    from airlock.evaluate.report import EvalReport

    try:
        return EvalReport.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise AirlockError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValidationError as exc:
        raise AirlockError(f"{path}: not a valid airlock.eval-report/v1 document "
                           f"({first_validation_problem(exc)})") from None


def run(args: argparse.Namespace) -> int:
    from airlock.evaluate import evaluate_model, judge, suite_for

    suite = suite_for(args.tier)
    previous = _read_report(args.previous) if args.previous else None
    report = evaluate_model(args.model_dir, suite, device=args.device, dtype=args.dtype)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report.to_json_dict(), indent=2) + "\n", encoding="utf-8")
    verdict = judge(report, suite, previous)
    summary = ", ".join(f"{k} {v:.4g}" for k, v in report.summary().items())
    print(f"{suite.name} v{suite.version} on {report.runtime.device} in {report.total_seconds:.1f} s: {summary}")
    print(f"{verdict.decision}: {verdict.reason}")
    return EXIT_OK if verdict.decision == "pass" else EXIT_NEGATIVE
