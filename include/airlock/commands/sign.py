"""``airlock sign MODEL_DIR``: sign a model directory with the Vault Transit key, writing ``model.sig``."""

from __future__ import annotations

import argparse
from pathlib import Path

from airlock.cli import EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sign", help="sign a model directory with the Vault Transit key (OpenSSF model-signing bundle)",
        description="Vault address and identity come from AIRLOCK_VAULT_ADDR and AIRLOCK_VAULT_TOKEN "
                    "(or AIRLOCK_VAULT_ROLE_ID + AIRLOCK_VAULT_SECRET_ID); the key from AIRLOCK_VAULT_KEY.",
    )
    parser.add_argument("model_dir", type=Path, help="the model directory to sign")
    parser.add_argument("--output", type=Path, help="where to write the bundle (default: MODEL_DIR/model.sig)")
    parser.add_argument("--model-name", help="the statement's subject name (default: the directory's name)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from airlock.redact import safe_text
    from airlock.signing import VaultTransitSigner, sign_directory

    signed, output = sign_directory(args.model_dir, VaultTransitSigner.from_env(), output=args.output,
                                    model_name=args.model_name)
    print(f"model:  {safe_text(signed.model_name)} ({signed.file_count} files, root sha256:{signed.root_digest})")
    print(f"key:    {signed.key_id} (sha256:{signed.key_fingerprint})")
    print(f"bundle: {safe_text(output)} (sha256:{signed.bundle_sha256})")
    return EXIT_OK
