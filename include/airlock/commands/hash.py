"""``airlock hash PATH``: the manifest of a local model directory (root digest equals model_signing's)."""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

from airlock.cli import EXIT_OK, positive_int

# More threads than this only adds contention: hashing is bound by the disks and the cores long before.
MAX_WORKERS = 1024


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "hash", help="print the manifest of a model directory (sha256 per file, model_signing root digest)"
    )
    parser.add_argument("path", type=Path, help="the model directory")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--workers", type=functools.partial(positive_int, maximum=MAX_WORKERS), default=None,
                        help=f"hashing threads, 1 to {MAX_WORKERS} (default: usable cores)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from airlock.manifest import manifest_for_directory
    from airlock.redact import safe_text

    manifest = manifest_for_directory(args.path, workers=args.workers)
    if args.format == "json":
        print(json.dumps(manifest.to_json_dict(), indent=2))
        return EXIT_OK
    for f in manifest.files:
        print(f"{f.sha256}  {f.size:>12}  {safe_text(f.path)}")  # a file name is untrusted input
    ignored = ", ".join(manifest.serialization.ignore_paths)
    print(f"{len(manifest.files)} files, {manifest.total_size} bytes (ignored: {ignored})")
    print(f"root_digest {manifest.root_digest}")
    return EXIT_OK
