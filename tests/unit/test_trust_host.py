"""Which trust store a host verifies with: its own configuration, a registry copy only when pinned."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from airlock.config import load_settings
from airlock.errors import ConfigurationError
from airlock.load import verified_from_pretrained
from airlock.registry import FilesystemStore, Registry
from airlock.registry.base import Layout
from airlock.signing import LocalKeySigner, sign_directory
from airlock.trust import TrustStoreError, host_trust_store
from tests.signing_fixtures import make_model, trust_store_for

REAL = LocalKeySigner.generate(key_name="airlock-model-signing", version=1)
ROGUE = LocalKeySigner.generate(key_name="airlock-model-signing", version=9)


@pytest.fixture(autouse=True)
def _no_host_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AIRLOCK_TRUST_STORE", "AIRLOCK_TRUST_STORE_SHA256"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("airlock.config.DEFAULT_TRUST_STORE", tmp_path / "etc" / "trust.pem")


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    """A registry whose storage carries a trust store (what the key admin, or an attacker, can publish there)."""
    root = tmp_path / "registry"
    (root / "trust").mkdir(parents=True)
    trust_store_for(REAL).write(root / Layout.TRUST_STORE)
    return Registry(FilesystemStore(root))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_nothing_configured_is_an_error_that_says_how(registry: Registry) -> None:
    with pytest.raises(TrustStoreError) as refused:
        host_trust_store(registry=registry)  # the registry holds one: it does not count
    message = str(refused.value)
    assert message.startswith("no trust store configured")
    for hint in ("--trust-store FILE", "AIRLOCK_TRUST_STORE=FILE", "etc/trust.pem", "AIRLOCK_TRUST_STORE_SHA256"):
        assert hint in message


def test_explicit_then_environment_then_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     registry: Registry) -> None:
    default = tmp_path / "etc" / "trust.pem"
    default.parent.mkdir()
    trust_store_for(REAL).write(default)
    assert host_trust_store(registry=registry).source == str(default)
    env_file = tmp_path / "env.pem"
    trust_store_for(REAL).write(env_file)
    monkeypatch.setenv("AIRLOCK_TRUST_STORE", str(env_file))
    assert host_trust_store(registry=registry).source == str(env_file)
    explicit = tmp_path / "explicit.pem"
    trust_store_for(REAL).write(explicit)
    assert host_trust_store(explicit, registry=registry).source == str(explicit)


def test_a_pinned_registry_copy_is_used(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    pin = _sha256(Path(registry.store.root) / Layout.TRUST_STORE)
    store = host_trust_store(pinned_sha256=f"sha256:{pin}", registry=registry)
    assert [k.key_id for k in store.keys] == [REAL.key_id]
    assert store.source.endswith("trust/trust.pem")
    monkeypatch.setenv("AIRLOCK_TRUST_STORE_SHA256", pin.upper())
    assert host_trust_store(registry=registry).keys == store.keys


def test_a_swapped_registry_copy_is_refused(registry: Registry, tmp_path: Path) -> None:
    path = Path(registry.store.root) / Layout.TRUST_STORE
    pin = _sha256(path)
    trust_store_for(REAL, ROGUE).write(path)  # the attacker adds their key
    with pytest.raises(TrustStoreError, match=f"but this host pins sha256:{pin}; refusing"):
        host_trust_store(pinned_sha256=pin, registry=registry)
    path.unlink()
    with pytest.raises(TrustStoreError, match="pins one, but .* does not exist"):
        host_trust_store(pinned_sha256=pin, registry=registry)


def test_a_pin_checks_the_host_file_too(tmp_path: Path) -> None:
    path = tmp_path / "trust.pem"
    trust_store_for(REAL).write(path)
    assert host_trust_store(path, pinned_sha256=_sha256(path)).keys[0].key_id == REAL.key_id
    with pytest.raises(TrustStoreError, match="but this host pins"):
        host_trust_store(path, pinned_sha256="0" * 64)
    with pytest.raises(TrustStoreError, match="is not a sha256"):
        host_trust_store(path, pinned_sha256="abc")


def test_settings_read_the_trust_and_host_state_variables(tmp_path: Path) -> None:
    settings = load_settings({"AIRLOCK_TRUST_STORE": str(tmp_path / "t.pem"), "AIRLOCK_TRUST_STORE_SHA256": "A" * 64,
                              "AIRLOCK_HOST_STATE": str(tmp_path / "state")})
    assert (settings.trust_store, settings.trust_store_sha256, settings.host_state_dir) == (
        tmp_path / "t.pem", "a" * 64, tmp_path / "state")
    defaults = load_settings({"XDG_STATE_HOME": str(tmp_path / "xdg")})
    assert (defaults.trust_store, defaults.trust_store_sha256) == (None, None)
    assert defaults.host_state_dir == tmp_path / "xdg" / "airlock"
    with pytest.raises(ConfigurationError, match="AIRLOCK_TRUST_STORE_SHA256"):
        load_settings({"AIRLOCK_TRUST_STORE_SHA256": "not-a-digest"})


def test_load_verifies_with_the_host_trust_store_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model(tmp_path / "m", with_safetensors=True)
    sign_directory(model, ROGUE, output=tmp_path / "model.sig")
    # A trust store shipped next to the model is nobody's authority; the host's is.
    trust_store_for(ROGUE).write(model.parent / "trust.pem")
    host = tmp_path / "host.pem"
    trust_store_for(REAL).write(host)
    monkeypatch.setenv("AIRLOCK_TRUST_STORE", str(host))
    from airlock.verify import VerificationError

    with pytest.raises(VerificationError, match="unknown key"):
        verified_from_pretrained(model, tmp_path / "model.sig", load_tensors=False)
    monkeypatch.delenv("AIRLOCK_TRUST_STORE")
    with pytest.raises(TrustStoreError, match="no trust store configured"):
        verified_from_pretrained(model, tmp_path / "model.sig", load_tensors=False)
    trust_store_for(ROGUE).write(host)
    monkeypatch.setenv("AIRLOCK_TRUST_STORE", str(host))
    assert verified_from_pretrained(model, tmp_path / "model.sig", load_tensors=False).key_id == ROGUE.key_id
