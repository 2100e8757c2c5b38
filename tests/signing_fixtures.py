"""Small models and keys for the signing, verification and load tests (no services needed)."""

from __future__ import annotations

import os
from pathlib import Path

from airlock.signing import LocalKeySigner
from airlock.trust import TrustedKey, TrustStore

# Paths chosen so model_signing's component-wise order differs from plain string order ("a-b/..." vs "a/...").
RANDOM_FILES = {
    "weights/a/shard-0.bin": 4096,
    "weights/a-b/shard-1.bin": 3000,
    "tokenizer.json": 300,
    "nested/deeper/blob.dat": 1,
}


def make_model(root: Path, *, with_safetensors: bool = True, seed_bytes: bytes | None = None) -> Path:
    """A model directory of random files (plus a small safetensors file and config.json)."""
    root.mkdir(parents=True, exist_ok=True)
    for relative, size in RANDOM_FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((seed_bytes or b"") + os.urandom(size))
    (root / "config.json").write_text('{"model_type": "tiny", "hidden_size": 4}')
    if with_safetensors:
        write_safetensors(root / "model.safetensors", {"embed.weight": (4, 4), "head.bias": (4,)})
    return root


def write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]]) -> dict:
    import torch
    from safetensors.torch import save_file

    tensors = {name: torch.randn(*shape) for name, shape in shapes.items()}
    save_file(tensors, str(path))
    return tensors


def trust_store_for(*signers: LocalKeySigner, revoked: dict[str, str] | None = None) -> TrustStore:
    """A trust store holding each signer's key under its key id (``name:vN``), some revoked."""
    revoked = revoked or {}
    keys = []
    for signer in signers:
        name, _, version = signer.key_id.rpartition(":v")
        reason = revoked.get(signer.key_id)
        keys.append(TrustedKey(name=name, version=int(version), public_key_pem=signer.public_key_pem,
                               revoked_at="2026-01-01T00:00:00Z" if reason else None, revoked_reason=reason))
    return TrustStore(tuple(keys), source="test trust store")
