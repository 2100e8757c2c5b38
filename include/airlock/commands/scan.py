"""``airlock scan PATH``: scan a model (directory or file) by content; exit 0 allowed, 1 blocked, 2 could not scan."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from airlock.cli import positive_seconds
from airlock.policy import RiskTier


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scan", help="scan a model by content (pickle allowlist, archives, safetensors, remote code) at a risk tier"
    )
    parser.add_argument("path", type=Path, help="model directory or file")
    parser.add_argument("--tier", choices=[t.value for t in RiskTier], default=RiskTier.MEDIUM.value)
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--time-budget", type=positive_seconds, default=None,
                        help="seconds, finite and above 0 (default: the tier's budget)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from airlock.redact import safe_text
    from airlock.scan import scan_model

    report = scan_model(args.path, args.tier, time_budget_s=args.time_budget)
    if args.format == "json":
        print(json.dumps(report.to_json_dict(), indent=2))
    else:
        for file in report.files:
            marks = {f.action for f in file.findings} & {"block", "flag"}
            state = "BLOCK" if "block" in marks else "FLAG" if "flag" in marks else "ok"
            # File names and findings come from the model under scan: escaped, so they cannot drive the terminal.
            print(f"  {state:<5} {safe_text(file.detected_format):<16} {safe_text(file.path)}")
        for line in report.summary_lines():
            print(safe_text(line, escape_backslash=False))
    return report.exit_code
