"""The signed index end to end with the local OpenBao: Vault Transit signs models, BOMs and index checkpoints;
`airlock registry revoke` signs its checkpoint through the environment's signer identity; `airlock pull`
verifies everything with the host trust store that `airlock keys export` writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airlock.cli import EXIT_NEGATIVE, EXIT_OK, main
from airlock.registry import FilesystemStore, Registry
from airlock.registry.base import Layout, ModelName
from airlock.signing import VaultTransitSigner
from airlock.trust import TrustStore
from tests.conftest import require_env
from tests.pull_fixtures import MODEL, promote_signed


@pytest.fixture()
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A host whose trust store is the `airlock keys export` file, named by AIRLOCK_TRUST_STORE."""
    require_env("AIRLOCK_VAULT_TOKEN")
    trust = tmp_path / "trust.pem"
    assert main(["keys", "export", "--output", str(trust)]) == EXIT_OK
    monkeypatch.setenv("AIRLOCK_TRUST_STORE", str(trust))
    monkeypatch.delenv("AIRLOCK_TRUST_STORE_SHA256", raising=False)
    monkeypatch.setenv("AIRLOCK_HOST_STATE", str(tmp_path / "host-state"))
    monkeypatch.setenv("AIRLOCK_ACTOR", "security@ops")
    return trust


def test_vault_signed_index_revocation_and_pull(host: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    signer = VaultTransitSigner.from_env()
    root = tmp_path / "registry"
    registry = Registry(FilesystemStore(root), signer=signer, trust=TrustStore.read(host))
    promote_signed(registry, tmp_path / "v1", signer, version="1")
    promote_signed(registry, tmp_path / "v2", signer, version="2")
    heads = root / Layout.heads_prefix(ModelName.parse(MODEL))
    bundle = json.loads((heads / "0000000001.json").read_bytes())
    assert bundle["dsseEnvelope"]["signatures"][0]["keyid"].startswith("airlock-model-signing:v")

    # The CLI signs the revocation's checkpoint with the Vault key from the environment.
    assert main(["registry", "revoke", f"{MODEL}@1", "--reason", "backdoor in tokenizer",
                 "--registry", str(root)]) == EXIT_OK
    assert (heads / "0000000002.json").is_file()
    capsys.readouterr()

    assert main(["pull", f"{MODEL}@1", "--registry", str(root), "--dest", str(tmp_path / "one")]) == EXIT_NEGATIVE
    assert "is revoked: backdoor in tokenizer" in capsys.readouterr().out
    assert main(["pull", f"{MODEL}@2", "--registry", str(root), "--dest", str(tmp_path / "two")]) == EXIT_OK
    assert Registry(FilesystemStore(root)).verify_version(MODEL, "2").status == "approved"
