"""The ``airlock`` command line.

Exit codes follow ARCHITECTURE.md: 0 success, 1 a negative verdict (blocked,
invalid), 2 the command could not do its job (bad input, unreachable service).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from airlock import __version__
from airlock.errors import AirlockError

EXIT_OK = 0
EXIT_NEGATIVE = 1
EXIT_ERROR = 2


def _cmd_resolve(args: argparse.Namespace) -> int:
    from airlock.connections import hub_access
    from airlock.sources import resolve

    hub = hub_access()
    resolved = resolve(args.source, args.revision, endpoint=args.endpoint or hub.endpoint, token=hub.token)
    if args.format == "json":
        print(json.dumps(resolved.to_json_dict(), indent=2))
        return EXIT_OK
    print(f"{resolved.uri}@{resolved.requested_revision} -> {resolved.revision}")
    for f in resolved.files:
        checksum = f"sha256:{f.lfs_sha256}" if f.lfs_sha256 else f"git-sha1:{f.git_sha1}"
        print(f"  {f.size:>12}  {checksum}  {f.path}")
    print(f"{len(resolved.files)} files, {resolved.total_size} bytes")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airlock", description="Model supply-chain checks and registry.")
    parser.add_argument("--version", action="version", version=f"airlock {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    resolve = sub.add_parser("resolve", help="pin a source to an immutable revision and list its published files")
    resolve.add_argument("source", help="hf://org/name[@revision]")
    resolve.add_argument("--revision", help="branch, tag or commit sha (default: the @revision, else main)")
    resolve.add_argument("--endpoint", help="hub endpoint (default: AIRLOCK_HUB_ENDPOINT)")
    resolve.add_argument("--format", choices=("text", "json"), default="text")
    resolve.set_defaults(handler=_cmd_resolve)
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
