from __future__ import annotations

from pathlib import Path

import pytest

from airlock.config import Environment, load_settings
from airlock.errors import ConfigurationError


def test_defaults_point_at_the_local_stack(tmp_path: Path) -> None:
    settings = load_settings({"AIRLOCK_STATE_DIR": str(tmp_path)})
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.vault_addr == "http://127.0.0.1:8200"
    assert settings.hub_endpoint == "http://127.0.0.1:8090"
    assert settings.registry == str(tmp_path / "registry")
    assert settings.signing_key == "airlock-model-signing"


def test_every_endpoint_moves_with_one_variable() -> None:
    settings = load_settings({
        "AIRLOCK_VAULT_ADDR": "https://vault.example:8200",
        "AIRLOCK_S3_ENDPOINT": "https://minio.example",
        "AIRLOCK_HUB_ENDPOINT": "https://hub.example",
        "AIRLOCK_REGISTRY": "s3://registry/prefix",
    })
    assert settings.vault_addr == "https://vault.example:8200"
    assert settings.s3_endpoint == "https://minio.example"
    assert settings.hub_endpoint == "https://hub.example"
    assert settings.registry == "s3://registry/prefix"


def test_tokens_never_appear_in_repr() -> None:
    settings = load_settings({"AIRLOCK_VAULT_TOKEN": "hvs.super-secret", "HF_TOKEN": "hf_secret"})
    assert settings.vault_token == "hvs.super-secret"
    assert "super-secret" not in repr(settings) and "hf_secret" not in repr(settings)


def test_production_mode_is_recognised_and_unknown_modes_rejected() -> None:
    assert load_settings({"AIRLOCK_ENV": "production"}).is_production
    with pytest.raises(ConfigurationError, match="AIRLOCK_ENV='staging'"):
        load_settings({"AIRLOCK_ENV": "staging"})


def test_quarantine_settings(tmp_path: Path) -> None:
    settings = load_settings({"AIRLOCK_STATE_DIR": str(tmp_path)})
    assert settings.quarantine_root == tmp_path.resolve() / "quarantine"
    assert settings.quarantine_keep_on_failure is False
    assert (settings.download_workers, settings.download_timeout_s, settings.file_drop_roots) == (8, 3600.0, ())
    settings = load_settings({
        "AIRLOCK_QUARANTINE_ROOT": "relative/q",
        "AIRLOCK_QUARANTINE_KEEP_ON_FAILURE": "true",
        "AIRLOCK_DOWNLOAD_WORKERS": "3",
        "AIRLOCK_DOWNLOAD_TIMEOUT_S": "90",
        "AIRLOCK_FILE_DROP_ROOTS": f"{tmp_path / 'a'}:{tmp_path / 'b'}",
    })
    assert settings.quarantine_root.is_absolute()  # containment checks compare resolved paths
    assert settings.quarantine_keep_on_failure is True
    assert (settings.download_workers, settings.download_timeout_s) == (3, 90.0)
    assert settings.file_drop_roots == ((tmp_path / "a").resolve(), (tmp_path / "b").resolve())


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("AIRLOCK_QUARANTINE_KEEP_ON_FAILURE", "maybe", "is not a boolean"),
        ("AIRLOCK_DOWNLOAD_WORKERS", "many", "is not a whole number"),
        ("AIRLOCK_DOWNLOAD_TIMEOUT_S", "0", "must be greater than zero"),
    ],
)
def test_invalid_quarantine_settings_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{name}={value!r} {message}"):
        load_settings({name: value})
