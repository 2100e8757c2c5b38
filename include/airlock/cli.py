"""The ``airlock`` command line.

Exit codes follow ARCHITECTURE.md: 0 success, 1 a negative verdict (blocked,
invalid), 2 the command could not do its job (bad input, unreachable service).
Each verb lives in :mod:`airlock.commands`; this module only dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from airlock import __version__
from airlock.errors import AirlockError

EXIT_OK = 0
EXIT_NEGATIVE = 1
EXIT_ERROR = 2

# Verb modules under airlock.commands, in the order `airlock --help` lists them.
VERBS = ("resolve", "scan", "hash", "sign", "verify", "pull", "keys", "registry")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airlock", description="Model supply-chain checks and registry.")
    parser.add_argument("--version", action="version", version=f"airlock {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for verb in VERBS:
        importlib.import_module(f"airlock.commands.{verb}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except AirlockError as exc:
        print(f"airlock {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
