"""Signing through OpenBao Transit with the least-privilege identity; verifying offline; rotation; interop.

Uses the local stack (`make stack-up`). The shared key ``airlock-model-signing``
is only signed with and read here. Rotation runs on a throwaway transit key
whose signer and key-admin policies are the repository's HCL files with only
the key name changed, so rotating never disturbs anyone else using the stack.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import hvac.exceptions
import pytest

from airlock.cli import EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, main
from airlock.signing import VaultTransitSigner, sign_files
from airlock.trust import TrustedKey, TrustStore
from airlock.vault import (
    RetryPolicy,
    VaultPermissionDeniedError,
    VaultSealedError,
    VaultUnreachableError,
    admin_session_from_env,
    signer_session_from_env,
    transit_public_keys,
    transit_rotate,
)
from tests.conftest import REPO, require_env
from tests.signing_fixtures import make_model

SHARED_KEY = "airlock-model-signing"
VAULT_POLICIES = REPO / "include" / "vault"
BIN = Path(sys.executable).parent
FAST_RETRY = RetryPolicy(attempts=3, initial_delay_s=0.05, max_delay_s=0.1)


def _root_client() -> hvac.Client:
    token_file = Path(require_env("AIRLOCK_STATE_DIR")) / "secrets" / "vault-root-token"
    return hvac.Client(url=require_env("AIRLOCK_VAULT_ADDR"), token=token_file.read_text().strip())


def _last_line(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def _pem_for(trust_file: Path, key_id: str, out: Path) -> Path:
    key = next(k for k in TrustStore.read(trust_file).keys if k.key_id == key_id)
    out.write_text(key.public_key_pem)
    return out


def _signed_key_id(bundle: Path) -> str:
    return json.loads(bundle.read_text())["dsseEnvelope"]["signatures"][0]["keyid"]


# --------------------------------------------------------------------------- the shared key, signer token


def test_sign_with_the_signer_token_then_verify_offline(tmp_path: Path, monkeypatch, capsys) -> None:
    require_env("AIRLOCK_VAULT_TOKEN")
    model = make_model(tmp_path / "tiny")
    assert main(["sign", str(model), "--output", str(tmp_path / "model.sig"), "--model-name", "demo/tiny"]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"key:    {SHARED_KEY}:v" in out and "root sha256:" in out
    assert main(["keys", "export", "--output", str(tmp_path / "trust.pem")]) == EXIT_OK
    capsys.readouterr()

    # Offline: no Vault address that answers, no token. Verification must not need either.
    monkeypatch.setenv("AIRLOCK_VAULT_ADDR", "http://127.0.0.1:9")
    monkeypatch.delenv("AIRLOCK_VAULT_TOKEN")
    args = ["verify", str(model), "--signature", str(tmp_path / "model.sig")]
    assert main([*args, "--trust-store", str(tmp_path / "trust.pem")]) == EXIT_OK
    assert _last_line(capsys).startswith("valid: 6 files of 'demo/tiny'")
    pem = _pem_for(tmp_path / "trust.pem", _signed_key_id(tmp_path / "model.sig"), tmp_path / "pub.pem")
    assert main([*args, "--public-key", str(pem)]) == EXIT_OK
    capsys.readouterr()

    (model / "weights" / "a" / "shard-0.bin").write_bytes(b"poisoned")
    assert main([*args, "--trust-store", str(tmp_path / "trust.pem")]) == EXIT_NEGATIVE
    assert _last_line(capsys).startswith("invalid (file-changed): file changed: 'weights/a/shard-0.bin'")


@pytest.mark.parametrize("inside", [True, False], ids=["bundle-in-model-dir", "bundle-beside-model-dir"])
def test_upstream_model_signing_cli_verifies_our_vault_bundle(tmp_path: Path, capsys, inside: bool) -> None:
    model = make_model(tmp_path / "tiny")
    bundle = model / "model.sig" if inside else tmp_path / "model.sig"
    assert main(["sign", str(model), "--output", str(bundle)]) == EXIT_OK
    assert main(["keys", "export", "--output", str(tmp_path / "trust.pem")]) == EXIT_OK
    pem = _pem_for(tmp_path / "trust.pem", _signed_key_id(bundle), tmp_path / "pub.pem")
    upstream = subprocess.run(
        [str(BIN / "model_signing"), "verify", "key", str(model), "--signature", str(bundle),
         "--public_key", str(pem)],
        capture_output=True, text=True, timeout=120,
    )
    assert upstream.returncode == 0, upstream.stdout + upstream.stderr
    assert "Verification succeeded" in upstream.stdout
    (model / "config.json").write_text("{}")
    upstream = subprocess.run(
        [str(BIN / "model_signing"), "verify", "key", str(model), "--signature", str(bundle),
         "--public_key", str(pem)],
        capture_output=True, text=True, timeout=120,
    )
    assert upstream.returncode == 1 and "config.json" in upstream.stderr


def test_an_upstream_signed_vendor_bundle_verifies_in_airlock(tmp_path: Path, capsys) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    vendor_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "vendor.key").write_bytes(vendor_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    public_pem = vendor_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "vendor.pub").write_bytes(public_pem)
    model = make_model(tmp_path / "vendor-model")
    signed = subprocess.run(
        [str(BIN / "model_signing"), "sign", "key", str(model), "--signature", str(model / "model.sig"),
         "--private_key", str(tmp_path / "vendor.key")],
        capture_output=True, text=True, timeout=120,
    )
    assert signed.returncode == 0, signed.stdout + signed.stderr

    args = ["verify", str(model), "--signature", str(model / "model.sig")]
    assert main([*args, "--public-key", str(tmp_path / "vendor.pub")]) == EXIT_OK
    assert _last_line(capsys).startswith("valid: 6 files of 'vendor-model'")
    TrustStore((TrustedKey("vendor-acme", 1, public_pem.decode()),)).write(tmp_path / "vendors.pem")
    assert main([*args, "--trust-store", str(tmp_path / "vendors.pem")]) == EXIT_OK
    assert _last_line(capsys).endswith("signed by vendor-acme:v1")

    (model / "extra.bin").write_bytes(b"x")
    assert main([*args, "--public-key", str(tmp_path / "vendor.pub")]) == EXIT_NEGATIVE
    assert "unexpected file" in _last_line(capsys)


def test_the_signer_token_cannot_rotate(monkeypatch, tmp_path: Path, capsys) -> None:
    with pytest.raises(VaultPermissionDeniedError, match=f"denied rotating transit key transit/{SHARED_KEY}"):
        transit_rotate(signer_session_from_env())
    # Handing the signer token to `keys rotate` as if it were an admin token does not help either.
    monkeypatch.setenv("AIRLOCK_VAULT_ADMIN_TOKEN", require_env("AIRLOCK_VAULT_TOKEN"))
    assert main(["keys", "rotate", "--trust-store", str(tmp_path / "trust.pem")]) == EXIT_ERROR
    assert "denied rotating" in capsys.readouterr().err
    monkeypatch.delenv("AIRLOCK_VAULT_ADMIN_TOKEN")
    assert main(["keys", "rotate", "--trust-store", str(tmp_path / "trust.pem")]) == EXIT_ERROR
    assert "AIRLOCK_VAULT_ADMIN_TOKEN is not set" in capsys.readouterr().err


def test_signing_with_a_key_outside_the_policy_is_denied(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setenv("AIRLOCK_VAULT_KEY", "some-other-key")
    model = make_model(tmp_path / "m")
    assert main(["sign", str(model)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "denied signing with transit key transit/some-other-key" in err and "AIRLOCK_VAULT_TOKEN" in err
    assert not (model / "model.sig").exists()


def test_approle_from_the_environment_signs(monkeypatch) -> None:
    approle = json.loads((Path(require_env("AIRLOCK_STATE_DIR")) / "secrets" / "vault-approle.json").read_text())
    monkeypatch.delenv("AIRLOCK_VAULT_TOKEN")
    monkeypatch.setenv("AIRLOCK_VAULT_ROLE_ID", approle["role_id"])
    monkeypatch.setenv("AIRLOCK_VAULT_SECRET_ID", approle["secret_id"])
    result = sign_files([("w.bin", "ab" * 32)], "approle-model", VaultTransitSigner.from_env())
    assert result.key_id.startswith(f"{SHARED_KEY}:v")


def test_the_airflow_connection_signs(monkeypatch) -> None:
    addr = require_env("AIRLOCK_VAULT_ADDR")
    approle = json.loads((Path(require_env("AIRLOCK_STATE_DIR")) / "secrets" / "vault-approle.json").read_text())
    host, port = addr.removeprefix("http://").split(":")
    monkeypatch.setenv("AIRFLOW_CONN_AIRLOCK_VAULT", json.dumps({
        "conn_type": "vault", "host": host, "port": int(port), "schema": "http",
        "login": approle["role_id"], "password": approle["secret_id"],
        "extra": {"auth_type": "approle", "transit_mount": "transit", "signing_key": SHARED_KEY},
    }))
    signer = VaultTransitSigner.from_airflow_connection("airlock_vault")
    assert signer.session.target.identity == "approle from Airflow connection airlock_vault"
    result = sign_files([("w.bin", "cd" * 32)], "airflow-model", signer)
    assert result.key_id.startswith(f"{SHARED_KEY}:v")


# --------------------------------------------------------------------------- Vault unreachable / sealed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_vault_is_retried_then_named(monkeypatch) -> None:
    port = _free_port()
    monkeypatch.setenv("AIRLOCK_VAULT_ADDR", f"http://127.0.0.1:{port}")
    signer = VaultTransitSigner.from_env(retry=FAST_RETRY)
    with pytest.raises(VaultUnreachableError, match=f"127.0.0.1:{port} is unreachable: signing .* after 3 attempts"):
        sign_files([("w.bin", "ab" * 32)], "m", signer)


@pytest.fixture()
def sealed_vault(tmp_path: Path) -> Iterator[str]:
    """A throwaway OpenBao dev server with a transit key, then sealed. Stopped (by its PID) afterwards."""
    port, token = _free_port(), "throwaway-" + secrets.token_hex(8)
    env = {**os.environ, "BAO_DEV_ROOT_TOKEN_ID": token, "VAULT_DEV_ROOT_TOKEN_ID": token}
    with open(tmp_path / "bao.log", "wb") as log:
        process = subprocess.Popen(
            [str(BIN / "bao"), "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}", "-dev-no-store-token"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    addr = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=1)  # noqa: S310 - loopback
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail(f"throwaway OpenBao did not start: {(tmp_path / 'bao.log').read_text()[-2000:]}")
                time.sleep(0.2)
        root = hvac.Client(url=addr, token=token)
        root.sys.enable_secrets_engine("transit")
        root.secrets.transit.create_key(SHARED_KEY, key_type="ecdsa-p256")
        root.sys.seal()
        yield addr
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_sealed_vault_is_retried_then_named(sealed_vault: str, monkeypatch) -> None:
    monkeypatch.setenv("AIRLOCK_VAULT_ADDR", sealed_vault)
    signer = VaultTransitSigner.from_env(retry=FAST_RETRY)
    with pytest.raises(VaultSealedError, match="is sealed: signing .* after 3 attempts"):
        sign_files([("w.bin", "ab" * 32)], "m", signer)


# --------------------------------------------------------------------------- rotation (throwaway key)


@dataclass(frozen=True)
class IsolatedKey:
    name: str
    signer_token: str
    admin_token: str


def _policy_for(policy_file: str, key: str) -> str:
    text = (VAULT_POLICIES / policy_file).read_text()
    assert SHARED_KEY in text
    return text.replace(SHARED_KEY, key)


@pytest.fixture(scope="module")
def isolated_key() -> Iterator[IsolatedKey]:
    """A fresh transit key plus a signer token and a key-admin token minted with the repository's policies."""
    root = _root_client()
    name = f"airlock-it-{secrets.token_hex(4)}"
    signer_policy, admin_policy = f"{name}-signer", f"{name}-key-admin"
    root.secrets.transit.create_key(name, key_type="ecdsa-p256", exportable=False, mount_point="transit")
    root.sys.create_or_update_policy(signer_policy, _policy_for("airlock-signer.hcl", name))
    root.sys.create_or_update_policy(admin_policy, _policy_for("airlock-key-admin.hcl", name))
    tokens = [
        root.auth.token.create(policies=[policy], no_default_policy=True, ttl="30m", renewable=False)["auth"]
        ["client_token"]
        for policy in (signer_policy, admin_policy)
    ]
    try:
        yield IsolatedKey(name, *tokens)
    finally:
        for token in tokens:
            root.auth.token.revoke(token)
        root.sys.delete_policy(signer_policy)
        root.sys.delete_policy(admin_policy)
        root.secrets.transit.update_key_configuration(name, deletion_allowed=True, mount_point="transit")
        root.secrets.transit.delete_key(name, mount_point="transit")


def test_rotate_then_old_and_new_signatures_verify_and_revocation_sticks(
    isolated_key: IsolatedKey, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("AIRLOCK_VAULT_KEY", isolated_key.name)
    monkeypatch.setenv("AIRLOCK_VAULT_TOKEN", isolated_key.signer_token)
    trust = tmp_path / "trust.pem"
    old_model, new_model = make_model(tmp_path / "old"), make_model(tmp_path / "new")

    assert main(["keys", "export", "--output", str(trust)]) == EXIT_OK
    assert main(["sign", str(old_model), "--output", str(tmp_path / "old.sig")]) == EXIT_OK
    assert _signed_key_id(tmp_path / "old.sig") == f"{isolated_key.name}:v1"

    # The signer cannot rotate its own key; the key admin can.
    with pytest.raises(VaultPermissionDeniedError):
        transit_rotate(signer_session_from_env())
    monkeypatch.setenv("AIRLOCK_VAULT_ADMIN_TOKEN", isolated_key.admin_token)
    capsys.readouterr()
    assert main(["keys", "rotate", "--trust-store", str(trust)]) == EXIT_OK
    assert _last_line(capsys) == f"rotated {isolated_key.name} to v2; trust store refreshed: {trust}"
    assert [k.key_id for k in TrustStore.read(trust).keys] == [f"{isolated_key.name}:v1", f"{isolated_key.name}:v2"]

    assert main(["sign", str(new_model), "--output", str(tmp_path / "new.sig")]) == EXIT_OK
    assert _signed_key_id(tmp_path / "new.sig") == f"{isolated_key.name}:v2"
    verify_old = ["verify", str(old_model), "--signature", str(tmp_path / "old.sig"), "--trust-store", str(trust)]
    verify_new = ["verify", str(new_model), "--signature", str(tmp_path / "new.sig"), "--trust-store", str(trust)]
    assert main(verify_old) == EXIT_OK
    assert main(verify_new) == EXIT_OK

    # Revoke v1 in the trust store: what it signed stops verifying, v2's signatures do not.
    assert main(["keys", "revoke", "--trust-store", str(trust), "--version", "1", "--reason", "test incident",
                 "--key-name", isolated_key.name]) == EXIT_OK
    capsys.readouterr()
    assert main(verify_old) == EXIT_NEGATIVE
    assert _last_line(capsys).startswith(f"invalid (revoked-key): key {isolated_key.name}:v1")
    assert main(verify_new) == EXIT_OK
    # A later refresh from Vault (which knows nothing of the revocation) keeps it.
    assert main(["keys", "export", "--output", str(trust)]) == EXIT_OK
    capsys.readouterr()
    assert main(verify_old) == EXIT_NEGATIVE


def test_the_key_admin_cannot_sign_or_export(isolated_key: IsolatedKey, monkeypatch) -> None:
    monkeypatch.setenv("AIRLOCK_VAULT_KEY", isolated_key.name)
    monkeypatch.setenv("AIRLOCK_VAULT_ADMIN_TOKEN", isolated_key.admin_token)
    admin = admin_session_from_env()
    with pytest.raises(VaultPermissionDeniedError, match="denied signing"):
        sign_files([("w.bin", "ab" * 32)], "m", VaultTransitSigner(admin))
    client = hvac.Client(url=require_env("AIRLOCK_VAULT_ADDR"), token=isolated_key.admin_token)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.transit.export_key(isolated_key.name, key_type="signing-key", mount_point="transit")
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.transit.update_key_configuration(isolated_key.name, exportable=True, mount_point="transit")


def test_vault_signature_is_over_the_dsse_pae(tmp_path: Path) -> None:
    """The Transit signature verifies as plain ECDSA-P256-SHA256 over the PAE bytes (what model_signing checks)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from airlock.bundle import load_bundle, pae

    signer = VaultTransitSigner.from_env()
    result = sign_files([("w.bin", hashlib.sha256(b"w").hexdigest())], "pae-model", signer)
    bundle = load_bundle(result.bundle_bytes)
    _, versions = transit_public_keys(signer.session)
    key = serialization.load_pem_public_key(versions[int(result.key_id.rpartition(":v")[2])].pem.encode())
    key.verify(bundle.signature_bytes, pae(bundle.dsseEnvelope.payloadType, bundle.payload_bytes),
               ec.ECDSA(hashes.SHA256()))


def test_a_missing_airflow_connection_is_named(monkeypatch) -> None:
    from airlock.errors import ConfigurationError

    monkeypatch.delenv("AIRFLOW_CONN_AIRLOCK_VAULT_MISSING", raising=False)
    with pytest.raises(ConfigurationError, match="Airflow connection 'airlock_vault_missing' is not defined"):
        VaultTransitSigner.from_airflow_connection("airlock_vault_missing")
