"""``airlock resolve SOURCE``: pin a source to an immutable revision and list its published files."""

from __future__ import annotations

import argparse
import json

from airlock.cli import EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("resolve", help="pin a source to an immutable revision and list its files")
    parser.add_argument("source", help="hf://org/name[@revision], s3://bucket/prefix[?version=...] or file:///path")
    parser.add_argument(
        "--revision", help="hf: branch, tag or commit sha (default: the @revision, else main); drops: sha256:<hex>"
    )
    parser.add_argument("--endpoint", help="hub endpoint (default: AIRLOCK_HUB_ENDPOINT)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from airlock.connections import hub_access_from_env
    from airlock.redact import safe_text
    from airlock.sources import resolve

    hub = hub_access_from_env()
    resolved = resolve(args.source, args.revision, endpoint=args.endpoint or hub.endpoint, token=hub.token)
    if args.format == "json":
        print(json.dumps(resolved.to_json_dict(), indent=2))
        return EXIT_OK
    print(f"{resolved.uri}@{resolved.requested_revision or 'current'} -> {resolved.revision}")
    for f in (*resolved.files, *resolved.vendor_manifests):
        print(f"  {f.size:>12}  {safe_text(_pin(f))}  {safe_text(f.path)}")  # names and pins come from the server
    print(f"{len(resolved.files)} files, {resolved.total_size} bytes")
    return EXIT_OK


def _pin(f) -> str:  # f: airlock.sources.PublishedFile
    if f.lfs_sha256 or f.sha256:
        return f"sha256:{f.lfs_sha256 or f.sha256}"
    if f.git_sha1:
        return f"git-sha1:{f.git_sha1}"
    return f"etag:{f.etag} version:{f.version_id}"
