"""``airlock pull ORG/NAME@VERSION --dest DIR [--trust-store FILE]``: verify-on-pull for serving hosts.

The registry is AIRLOCK_REGISTRY (a directory, or ``s3://bucket/prefix`` with
AIRLOCK_S3_ENDPOINT) unless ``--registry`` says otherwise. The trust store is
the host's: ``--trust-store``, else AIRLOCK_TRUST_STORE, else
/etc/airlock/trust.pem. The registry's own ``trust/trust.pem`` is used only when
its sha256 is pinned on the host (``--trust-store-sha256`` or
AIRLOCK_TRUST_STORE_SHA256); with no trust store, nothing is pulled (exit 2,
with how to configure one). Exit 0 pulled, 1 refused (the reason is the last
line of output), 2 could not run. There is no option that skips or relaxes a check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from airlock.cli import EXIT_NEGATIVE, EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pull", help="copy a released registry version to DEST, only after verifying it (read-only result)",
        description="Checks RELEASED, the registry status (revoked: refused), model.sig and every digest, and "
                    "aibom.sig, then moves the verified copy into DEST atomically and records the pull.",
    )
    parser.add_argument("reference", metavar="ORG/NAME@VERSION")
    parser.add_argument("--dest", type=Path, required=True, help="directory to create (absent or empty)")
    parser.add_argument("--trust-store", type=Path,
                        help="trust store file (default: AIRLOCK_TRUST_STORE, else /etc/airlock/trust.pem)")
    parser.add_argument("--trust-store-sha256", metavar="SHA256",
                        help="pin the trust store's sha256 (default: AIRLOCK_TRUST_STORE_SHA256); with a pin and no "
                             "host trust store file, the registry's trust/trust.pem is used if it matches")
    parser.add_argument("--registry", help="registry root (default: AIRLOCK_REGISTRY)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from airlock.pull import PullRefused, pull
    from airlock.registry import open_registry
    from airlock.trust import host_trust_store

    registry = open_registry(args.registry)
    trust = host_trust_store(args.trust_store, pinned_sha256=args.trust_store_sha256, registry=registry)
    try:
        result = pull(registry, args.reference, args.dest, trust=trust)
    except PullRefused as exc:
        print(f"refused: {exc.reason}")
        return EXIT_NEGATIVE
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"pulled {result.model}@{result.version} ({result.status}) into {result.dest}: {result.file_count} files, "
          f"{result.total_bytes} bytes, root sha256:{result.root_digest}, signed by {result.key_id}; "
          f"recorded as index event #{result.event_seq}")
    return EXIT_OK
