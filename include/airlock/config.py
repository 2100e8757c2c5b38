"""Runtime settings, read from the environment.

Every endpoint can be moved with one variable; secrets (tokens) are only ever
read from the environment or an Airflow connection and are excluded from
``repr`` so they cannot leak into logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from airlock.errors import ConfigurationError

DEFAULT_VAULT_ADDR = "http://127.0.0.1:8200"
DEFAULT_S3_ENDPOINT = "http://127.0.0.1:9000"
DEFAULT_HUB_ENDPOINT = "http://127.0.0.1:8090"
DEFAULT_AIRFLOW_URL = "http://127.0.0.1:8080"
DEFAULT_TRANSIT_MOUNT = "transit"
DEFAULT_SIGNING_KEY = "airlock-model-signing"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


@dataclass(frozen=True)
class Settings:
    """Where Airlock's collaborators live. Built by :func:`load_settings`."""

    environment: Environment
    state_dir: Path
    vault_addr: str
    transit_mount: str
    signing_key: str
    s3_endpoint: str
    hub_endpoint: str
    airflow_url: str
    registry: str
    quarantine_root: Path
    vault_token: str | None = field(default=None, repr=False)
    hub_token: str | None = field(default=None, repr=False)

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION


def _environment(raw: str | None) -> Environment:
    value = (raw or Environment.DEVELOPMENT.value).strip().lower()
    try:
        return Environment(value)
    except ValueError:
        allowed = ", ".join(e.value for e in Environment)
        raise ConfigurationError(f"AIRLOCK_ENV={raw!r} is not one of: {allowed}") from None


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read settings from ``env`` (defaults to ``os.environ``)."""
    env = dict(os.environ if env is None else env)
    state_dir = Path(env.get("AIRLOCK_STATE_DIR", ".airlock")).expanduser().resolve()
    return Settings(
        environment=_environment(env.get("AIRLOCK_ENV")),
        state_dir=state_dir,
        vault_addr=env.get("AIRLOCK_VAULT_ADDR", DEFAULT_VAULT_ADDR),
        transit_mount=env.get("AIRLOCK_VAULT_TRANSIT_MOUNT", DEFAULT_TRANSIT_MOUNT),
        signing_key=env.get("AIRLOCK_VAULT_KEY", DEFAULT_SIGNING_KEY),
        s3_endpoint=env.get("AIRLOCK_S3_ENDPOINT", DEFAULT_S3_ENDPOINT),
        hub_endpoint=env.get("AIRLOCK_HUB_ENDPOINT", DEFAULT_HUB_ENDPOINT),
        airflow_url=env.get("AIRLOCK_AIRFLOW_URL", DEFAULT_AIRFLOW_URL),
        registry=env.get("AIRLOCK_REGISTRY", str(state_dir / "registry")),
        quarantine_root=Path(env.get("AIRLOCK_QUARANTINE_ROOT", str(state_dir / "quarantine"))),
        vault_token=env.get("AIRLOCK_VAULT_TOKEN") or None,
        hub_token=env.get("AIRLOCK_HUB_TOKEN") or env.get("HF_TOKEN") or None,
    )
