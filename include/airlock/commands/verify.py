"""``airlock verify PATH --signature FILE (--public-key PEM | --trust-store FILE)``: offline, public keys only.

Exit 0 valid, 1 invalid; the reason (file, field or key) is the last line of
output. There is no option that relaxes any check.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from airlock.cli import EXIT_NEGATIVE, EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("verify", help="verify a model directory against its signature bundle (offline)")
    parser.add_argument("path", type=Path, help="the model directory")
    parser.add_argument("--signature", type=Path, required=True, help="the bundle (model.sig)")
    keys = parser.add_mutually_exclusive_group(required=True)
    keys.add_argument("--public-key", type=Path, help="trust exactly this PEM public key")
    keys.add_argument("--trust-store", type=Path, help="trust the keys of this store (honours revocations)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from airlock.trust import TrustStore
    from airlock.verify import verify_model

    if args.public_key is not None:
        trust = TrustStore.from_public_key_pem(_read(args.public_key), str(args.public_key))
    else:
        trust = TrustStore.read(args.trust_store)
    result = verify_model(args.path, args.signature, trust)
    if result.ok:
        print(result.reason)
        return EXIT_OK
    print(f"invalid ({result.failure}): {result.reason}")
    return EXIT_NEGATIVE


def _read(path: Path) -> bytes:
    from airlock.trust import TrustStoreError

    try:
        return path.read_bytes()
    except OSError as exc:
        raise TrustStoreError(f"cannot read public key {path}: {exc.strerror or exc}") from None
