"""``airlock keys export|rotate|revoke``: the trust store of model-signing public keys.

* ``export`` reads every key version's public key with the signer identity and
  merges it into the trust store (revocations are kept).
* ``rotate`` needs the key-admin token (AIRLOCK_VAULT_ADMIN_TOKEN): it rotates
  the transit key and refreshes the trust store so the new version verifies.
* ``revoke`` marks one key version revoked in the trust store; bundles signed
  by it stop verifying wherever that store is used. Vault is not involved.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from airlock.cli import EXIT_OK, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keys", help="export, rotate and revoke model-signing keys")
    verbs = parser.add_subparsers(dest="keys_command", required=True)

    export = verbs.add_parser("export", help="write (or refresh) the trust store from Vault's public keys")
    export.add_argument("--output", type=Path, required=True, help="trust store file (PEM bundle with key ids)")
    export.set_defaults(handler=run_export)

    rotate = verbs.add_parser("rotate", help="rotate the transit key (AIRLOCK_VAULT_ADMIN_TOKEN) and refresh "
                                             "the trust store")
    rotate.add_argument("--trust-store", type=Path, required=True, help="trust store file to refresh")
    rotate.set_defaults(handler=run_rotate)

    revoke = verbs.add_parser("revoke", help="mark a key version revoked in the trust store")
    revoke.add_argument("--trust-store", type=Path, required=True)
    revoke.add_argument("--version", type=positive_int, required=True, help="the key version to revoke (1 or more)")
    revoke.add_argument("--reason", required=True, help="why (recorded in the trust store)")
    revoke.add_argument("--key-name", help="transit key name (default: AIRLOCK_VAULT_KEY)")
    revoke.set_defaults(handler=run_revoke)


def _print_store(store) -> None:
    for key in sorted(store.keys, key=lambda k: (k.name, k.version)):
        status = f"revoked: {key.revoked_reason}" if key.revoked else "active"
        print(f"{key.key_id}  sha256:{key.fingerprint}  {status}")


def run_export(args: argparse.Namespace) -> int:
    from airlock.trust import refresh_trust_store
    from airlock.vault import signer_session_from_env

    store = refresh_trust_store(args.output, signer_session_from_env())
    _print_store(store)
    print(f"trust store written: {args.output}")
    return EXIT_OK


def run_rotate(args: argparse.Namespace) -> int:
    from airlock.trust import refresh_trust_store
    from airlock.vault import admin_session_from_env, transit_rotate

    session = admin_session_from_env()
    version = transit_rotate(session)
    store = refresh_trust_store(args.trust_store, session)
    _print_store(store)
    print(f"rotated {session.target.key_name} to v{version}; trust store refreshed: {args.trust_store}")
    return EXIT_OK


def run_revoke(args: argparse.Namespace) -> int:
    from airlock.config import load_settings
    from airlock.trust import TrustStore

    name = args.key_name or load_settings().signing_key
    store = TrustStore.read(args.trust_store)
    updated = store.revoked(name, args.version, args.reason)
    updated.write(args.trust_store)
    latest = updated.latest(name)
    if latest is not None and latest.version == args.version:
        print(f"warning: {name}:v{args.version} is the newest version in the trust store; rotate the key "
              f"(airlock keys rotate) or new signatures will not verify", file=sys.stderr)
    _print_store(updated)
    print(f"revoked {name}:v{args.version} in {args.trust_store}")
    return EXIT_OK
