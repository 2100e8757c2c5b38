"""``airlock verify PATH --signature FILE (--public-key PEM | --trust-store FILE)``: offline, public keys only.

Exit 0 valid, 1 invalid; the reason (file, field or key) is the last line of
output. There is no option that relaxes any check. A model directory or bundle
that cannot be read at all is exit 2 (could not verify), never "invalid".
"""

from __future__ import annotations

import argparse
import os
import stat
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
    from airlock.redact import safe_text
    from airlock.trust import TrustStore
    from airlock.verify import verify_model

    # What the operator named must exist before anything is judged: a typo is not an invalid signature.
    _require(args.path, stat.S_ISDIR, "PATH", "a directory")
    _require(args.signature, stat.S_ISREG, "--signature", "a file")

    if args.public_key is not None:
        trust = TrustStore.from_public_key_pem(_read(args.public_key), str(args.public_key))
    else:
        trust = TrustStore.read(args.trust_store)
    result = verify_model(args.path, args.signature, trust)
    # The reason quotes names from the bundle and the directory (attacker-controlled): one escaped line.
    if result.ok:
        print(safe_text(result.reason, escape_backslash=False))
        return EXIT_OK
    print(safe_text(f"invalid ({result.failure}): {result.reason}", escape_backslash=False))
    return EXIT_NEGATIVE


def _require(path: Path, is_kind, option: str, kind: str) -> None:
    from airlock.errors import AirlockError
    from airlock.redact import safe_text

    try:
        info = os.stat(path)
    except OSError as exc:
        raise AirlockError(f"{option} {safe_text(path)}: cannot read it ({exc.strerror})") from None
    if not is_kind(info.st_mode):
        raise AirlockError(f"{option} {safe_text(path)}: not {kind}")


def _read(path: Path) -> bytes:
    from airlock.trust import TrustStoreError

    try:
        return path.read_bytes()
    except OSError as exc:
        raise TrustStoreError(f"cannot read public key {path}: {exc.strerror or exc}") from None
