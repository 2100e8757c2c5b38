"""The trust store file: strict parsing, round trips, refresh that keeps revocations, revocation."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from airlock.signing import LocalKeySigner
from airlock.trust import RevokedKeyError, TrustedKey, TrustStore, TrustStoreError, UnknownKeyError
from tests.signing_fixtures import trust_store_for


@pytest.fixture(scope="module")
def v1() -> LocalKeySigner:
    return LocalKeySigner.generate(key_name="airlock-model-signing", version=1)


@pytest.fixture(scope="module")
def v2() -> LocalKeySigner:
    return LocalKeySigner.generate(key_name="airlock-model-signing", version=2)


def test_round_trip_through_the_pem_file(v1, v2, tmp_path: Path) -> None:
    store = trust_store_for(v1, v2).revoked("airlock-model-signing", 1, "lost laptop",
                                            at=datetime(2026, 5, 1, tzinfo=UTC))
    store.write(tmp_path / "trust.pem")
    text = (tmp_path / "trust.pem").read_text()
    assert "Key-Id: airlock-model-signing:v1" in text and "Status: revoked" in text
    assert "Revoked-Reason: lost laptop" in text and "Revoked-At: 2026-05-01T00:00:00Z" in text
    assert text.count("-----BEGIN PUBLIC KEY-----") == 2
    again = TrustStore.read(tmp_path / "trust.pem")
    assert [(k.key_id, k.fingerprint, k.revoked) for k in again.keys] == [
        (k.key_id, k.fingerprint, k.revoked) for k in sorted(store.keys, key=lambda k: k.version)]


def test_the_file_is_still_a_pem_bundle_for_other_tools(v1, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    trust_store_for(v1).write(tmp_path / "trust.pem")
    # Header lines are RFC 7468 explanatory text: standard PEM readers skip them.
    key = serialization.load_pem_public_key((tmp_path / "trust.pem").read_bytes())
    assert key.public_numbers() == serialization.load_pem_public_key(v1.public_key_pem.encode()).public_numbers()


def _text(store: TrustStore) -> str:
    return store.dumps()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("Key-Version: 1", "Key-Version: one"), "is not an integer"),
        (lambda t: t.replace("Status: active", "Status: maybe"), "neither active nor revoked"),
        (lambda t: t.replace("Status: active", "Status: revoked"), "Revoked-Reason exactly when revoked"),
        (lambda t: t.replace("Key-Name: airlock-model-signing", "Key-Name: airlock-model-signing\nColor: red"),
         "unexpected line 'Color: red'"),
        (lambda t: t.replace("Fingerprint: sha256:", "Fingerprint: sha256:00"), "does not match the PEM"),
        (lambda t: t.replace("Key-Id: airlock-model-signing:v1", "Key-Id: other:v1"), "Key-Id 'other:v1'"),
        (lambda t: t[: t.index("-----END PUBLIC KEY-----")], "truncated"),
        (lambda t: t.replace("Key-Name: airlock-model-signing\n", ""), "missing header Key-Name"),
        (lambda t: "# only a comment\n", "holds no keys"),
        (lambda t: t + t[t.index("Key-Id"):], "appears twice"),
    ],
    ids=["version", "status", "revoked-without-reason", "unknown-header", "fingerprint", "key-id", "truncated",
         "missing-name", "empty", "duplicate"],
)
def test_malformed_stores_are_refused_with_the_line(v1, edit, message: str) -> None:
    with pytest.raises(TrustStoreError, match=message):
        TrustStore.parse(edit(_text(trust_store_for(v1))), source="t.pem")


def test_unreadable_store(tmp_path: Path) -> None:
    with pytest.raises(TrustStoreError, match="cannot read trust store"):
        TrustStore.read(tmp_path / "absent.pem")


def test_a_non_ec_key_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(TrustStoreError, match="not an EC public key"):
        TrustedKey(name="rsa", version=1, public_key_pem=pem)


def test_resolve_by_hint_by_keyid_unknown_and_revoked(v1, v2) -> None:
    store = trust_store_for(v1, v2, revoked={"airlock-model-signing:v1": "compromised"})
    v2_key = store.keys[1]
    assert store.resolve(hint=v2_key.fingerprint, keyid="") is v2_key
    assert store.resolve(hint="", keyid="airlock-model-signing:v2") is v2_key
    with pytest.raises(RevokedKeyError, match="airlock-model-signing:v1 .* compromised"):
        store.resolve(hint=store.keys[0].fingerprint, keyid="airlock-model-signing:v1")
    with pytest.raises(UnknownKeyError, match="unknown key: hint sha256:ab"):
        store.resolve(hint="ab" * 32, keyid="")
    with pytest.raises(UnknownKeyError, match="the bundle names no key"):
        store.resolve(hint="", keyid="")


def test_refresh_adds_new_versions_and_keeps_revocations(v1, v2) -> None:
    current = trust_store_for(v1, revoked={"airlock-model-signing:v1": "rotated after incident"})
    from_vault = trust_store_for(v1, v2)  # Vault knows nothing of revocations
    merged = current.merged(from_vault.keys)
    assert [(k.key_id, k.revoked) for k in sorted(merged.keys, key=lambda k: k.version)] == [
        ("airlock-model-signing:v1", True), ("airlock-model-signing:v2", False)]


def test_refresh_refuses_a_changed_key_for_a_known_version(v1) -> None:
    impostor = LocalKeySigner.generate(key_name="airlock-model-signing", version=1)
    with pytest.raises(TrustStoreError, match="refusing to replace a trusted key"):
        trust_store_for(v1).merged(trust_store_for(impostor).keys)


def test_revoke_unknown_version_and_revoke_twice(v1) -> None:
    store = trust_store_for(v1)
    with pytest.raises(TrustStoreError, match="no key airlock-model-signing:v7"):
        store.revoked("airlock-model-signing", 7, "x")
    with pytest.raises(TrustStoreError, match="one-line reason"):
        store.revoked("airlock-model-signing", 1, " ")
    once = store.revoked("airlock-model-signing", 1, "first")
    assert once.revoked("airlock-model-signing", 1, "second").keys[0].revoked_reason == "first"


def test_cli_revoke_writes_the_store_and_warns_about_the_newest_version(v1, v2, tmp_path: Path, capsys) -> None:
    from airlock.cli import main

    trust_store_for(v1, v2).write(tmp_path / "trust.pem")
    assert main(["keys", "revoke", "--trust-store", str(tmp_path / "trust.pem"), "--version", "2",
                 "--reason", "test", "--key-name", "airlock-model-signing"]) == 0
    captured = capsys.readouterr()
    assert "newest version" in captured.err
    assert captured.out.strip().splitlines()[-1] == f"revoked airlock-model-signing:v2 in {tmp_path / 'trust.pem'}"
    store = TrustStore.read(tmp_path / "trust.pem")
    assert [k.revoked for k in sorted(store.keys, key=lambda k: k.version)] == [False, True]
