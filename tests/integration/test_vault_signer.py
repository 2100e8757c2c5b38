"""The pipeline's Vault identity can sign with the transit key and do nothing else."""

from __future__ import annotations

import base64
import hashlib

import hvac
import hvac.exceptions
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from tests.conftest import require_env

KEY = "airlock-model-signing"
MOUNT = "transit"


@pytest.fixture(scope="module")
def signer() -> hvac.Client:
    return hvac.Client(url=require_env("AIRLOCK_VAULT_ADDR"), token=require_env("AIRLOCK_VAULT_TOKEN"))


def _sign(client: hvac.Client, digest: bytes, key: str = KEY) -> bytes:
    response = client.secrets.transit.sign_data(
        key,
        hash_input=base64.b64encode(digest).decode(),
        hash_algorithm="sha2-256",
        prehashed=True,
        marshaling_algorithm="asn1",
        mount_point=MOUNT,
    )
    prefix, version, signature = response["data"]["signature"].split(":")
    assert prefix == "vault" and version.startswith("v")
    return base64.b64decode(signature)


def test_signs_a_digest_that_verifies_with_the_exported_public_key(signer: hvac.Client) -> None:
    digest = hashlib.sha256(b"airlock foundation").digest()
    signature = _sign(signer, digest)
    key = signer.secrets.transit.read_key(KEY, mount_point=MOUNT)["data"]
    assert key["type"] == "ecdsa-p256"
    assert key["exportable"] is False
    pem = key["keys"][str(key["latest_version"])]["public_key"]
    public_key = serialization.load_pem_public_key(pem.encode())
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def test_signature_does_not_verify_for_other_data(signer: hvac.Client) -> None:
    from cryptography.exceptions import InvalidSignature

    signature = _sign(signer, hashlib.sha256(b"one").digest())
    key = signer.secrets.transit.read_key(KEY, mount_point=MOUNT)["data"]
    public_key = serialization.load_pem_public_key(key["keys"][str(key["latest_version"])]["public_key"].encode())
    with pytest.raises(InvalidSignature):
        public_key.verify(signature, hashlib.sha256(b"two").digest(), ec.ECDSA(utils.Prehashed(hashes.SHA256())))


@pytest.mark.parametrize(
    "attempt",
    [
        pytest.param(lambda c: c.secrets.kv.v2.read_secret_version(
                         path="anything", mount_point="secret", raise_on_deleted_version=True),
                     id="read-a-secret"),
        pytest.param(lambda c: c.secrets.transit.export_key(KEY, key_type="signing-key", mount_point=MOUNT),
                     id="export-the-key"),
        pytest.param(lambda c: c.secrets.transit.rotate_key(KEY, mount_point=MOUNT), id="rotate-the-key"),
        pytest.param(lambda c: c.secrets.transit.update_key_configuration(KEY, exportable=True, mount_point=MOUNT),
                     id="make-the-key-exportable"),
        pytest.param(lambda c: c.secrets.transit.create_key("attacker-key", key_type="ecdsa-p256", mount_point=MOUNT),
                     id="create-another-key"),
        pytest.param(lambda c: c.sys.create_or_update_policy("escalate", 'path "*" { capabilities = ["sudo"] }'),
                     id="write-a-policy"),
        pytest.param(lambda c: c.auth.token.create(policies=["root"]), id="mint-a-token"),
        pytest.param(lambda c: c.sys.list_mounted_secrets_engines(), id="list-mounts"),
    ],
)
def test_everything_else_is_refused(signer: hvac.Client, attempt) -> None:
    with pytest.raises(hvac.exceptions.Forbidden):
        attempt(signer)


def test_cannot_sign_with_another_transit_key(signer: hvac.Client) -> None:
    with pytest.raises(hvac.exceptions.Forbidden):
        _sign(signer, hashlib.sha256(b"x").digest(), key="some-other-key")


def test_airflow_vault_connection_logs_in_with_the_approle_and_signs(monkeypatch) -> None:
    """The `airlock_vault` connection shape the stack provisions works through the hashicorp provider."""
    import json
    from pathlib import Path

    from airflow.providers.hashicorp.hooks.vault import VaultHook

    addr = require_env("AIRLOCK_VAULT_ADDR")
    approle_file = Path(require_env("AIRLOCK_STATE_DIR")) / "secrets" / "vault-approle.json"
    approle = json.loads(approle_file.read_text())
    host, port = addr.removeprefix("http://").split(":")
    monkeypatch.setenv("AIRFLOW_CONN_AIRLOCK_VAULT", json.dumps({
        "conn_type": "vault", "host": host, "port": int(port), "schema": "http",
        "login": approle["role_id"], "password": approle["secret_id"], "extra": {"auth_type": "approle"},
    }))
    client = VaultHook(vault_conn_id="airlock_vault").get_conn()
    assert _sign(client, hashlib.sha256(b"via airflow").digest())
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.transit.export_key(KEY, key_type="signing-key", mount_point=MOUNT)
