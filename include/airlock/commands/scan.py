"""``airlock scan PATH``: scan a model (directory or file) by content; exit 0 allowed, 1 blocked, 2 could not scan."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from airlock.policy import RiskTier


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scan", help="scan a model by content (pickle allowlist, archives, safetensors, remote code) at a risk tier"
    )
    parser.add_argument("path", type=Path, help="model directory or file")
    parser.add_argument("--tier", choices=[t.value for t in RiskTier], default=RiskTier.MEDIUM.value)
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--time-budget", type=float, default=None, help="seconds (default: the tier's budget)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from airlock.scan import scan_model

    report = scan_model(args.path, args.tier, time_budget_s=args.time_budget)
    if args.format == "json":
        print(json.dumps(report.to_json_dict(), indent=2))
    else:
        for file in report.files:
            marks = {f.action for f in file.findings} & {"block", "flag"}
            state = "BLOCK" if "block" in marks else "FLAG" if "flag" in marks else "ok"
            print(f"  {state:<5} {file.detected_format:<16} {file.path}")
        print("\n".join(report.summary_lines()))
    return report.exit_code
