"""Runtime settings, read from the environment.

Every endpoint can be moved with one variable; secrets (tokens) are only ever
read from the environment or an Airflow connection and are excluded from
``repr`` so they cannot leak into logs.
"""

from __future__ import annotations

import json
import os
import re
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
DEFAULT_DOWNLOAD_WORKERS = 8
DEFAULT_DOWNLOAD_TIMEOUT_S = 3600.0
# Where a host keeps the trust store it verifies with when AIRLOCK_TRUST_STORE does not say (docs/serving.md).
DEFAULT_TRUST_STORE = Path("/etc/airlock/trust.pem")


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
    # Keep a run's quarantine directory when the run fails, for forensics. Not a
    # security override (nothing leaves quarantine because of it), so production may use it.
    quarantine_keep_on_failure: bool = False
    download_workers: int = DEFAULT_DOWNLOAD_WORKERS
    download_timeout_s: float = DEFAULT_DOWNLOAD_TIMEOUT_S
    # Directories file:// drops may come from. Empty: any absolute path in development,
    # none in production (a DAG parameter must not be able to copy arbitrary worker files).
    file_drop_roots: tuple[Path, ...] = ()
    # Who may answer the approval form (Airflow user ids), and per model owner the reviewers who may let a
    # version from another source repository into that owner's model. An owner without an entry is
    # represented by ``reviewers``. No reviewers configured: nothing that needs an approval can be signed.
    reviewers: tuple[str, ...] = ()
    owner_reviewers: tuple[tuple[str, tuple[str, ...]], ...] = ()
    vault_token: str | None = field(default=None, repr=False)
    hub_token: str | None = field(default=None, repr=False)
    # The host's trust store (signature verification never trusts one read from the registry it verifies):
    # AIRLOCK_TRUST_STORE, else DEFAULT_TRUST_STORE when that file exists.
    trust_store: Path | None = None
    # A pinned sha256 of the trust store (AIRLOCK_TRUST_STORE_SHA256): the only way a registry's published
    # copy (trust/trust.pem) may be used, and a check on whichever store is used.
    trust_store_sha256: str | None = None
    # What this host has verified of registry indexes (rollback protection): AIRLOCK_HOST_STATE.
    host_state_dir: Path = field(default_factory=lambda: _default_host_state())

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    def reviewers_for(self, owner: str) -> tuple[str, ...]:
        """The reviewers of ``owner``'s models: its own list, else the general reviewers."""
        return dict(self.owner_reviewers).get(owner) or self.reviewers


def _environment(raw: str | None) -> Environment:
    value = (raw or Environment.DEVELOPMENT.value).strip().lower()
    try:
        return Environment(value)
    except ValueError:
        allowed = ", ".join(e.value for e in Environment)
        raise ConfigurationError(f"AIRLOCK_ENV={raw!r} is not one of: {allowed}") from None


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(env: dict[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigurationError(f"{name}={env[name]!r} is not a boolean (use true or false)")


def _positive_number(env: dict[str, str], name: str, default: float, kind: type[int] | type[float]) -> int | float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        what = "whole number" if kind is int else "number"
        raise ConfigurationError(f"{name}={raw!r} is not a {what}") from None
    if value <= 0:
        raise ConfigurationError(f"{name}={raw!r} must be greater than zero")
    return value


def _default_host_state(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ if env is None else env)
    base = env.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
    return Path(base).expanduser() / "airlock"


def _sha256_pin(env: dict[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip().lower().removeprefix("sha256:")
    if not raw:
        return None
    if len(raw) != 64 or any(c not in "0123456789abcdef" for c in raw):
        raise ConfigurationError(f"{name}={env[name]!r} is not a sha256 (64 hex characters, optionally 'sha256:')")
    return raw


def _paths(raw: str | None) -> tuple[Path, ...]:
    return tuple(Path(p).expanduser().resolve() for p in (raw or "").split(os.pathsep) if p.strip())


# Airflow user ids as the auth managers write them (simple: the username; FAB: a number).
_USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}\Z")


def _user_ids(raw: str, name: str) -> tuple[str, ...]:
    users = tuple(u.strip() for u in raw.split(",") if u.strip())
    bad = [u for u in users if not _USER_ID.fullmatch(u)]
    if bad:
        raise ConfigurationError(f"{name}: {bad[0]!r} is not an Airflow user id (letters, digits, '._@+-')")
    return users


def _owner_reviewers(raw: str | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """AIRLOCK_OWNER_REVIEWERS: a JSON object ``{"owner": ["user-id", ...]}``."""
    if not raw or not raw.strip():
        return ()
    try:
        mapping = json.loads(raw)
    except ValueError:
        raise ConfigurationError("AIRLOCK_OWNER_REVIEWERS is not JSON ({\"owner\": [\"user\", ...]})") from None
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(u, str) for u in v) for k, v in mapping.items()
    ):
        raise ConfigurationError("AIRLOCK_OWNER_REVIEWERS must map each owner to a list of user ids")
    return tuple(sorted(
        (owner, _user_ids(",".join(users), f"AIRLOCK_OWNER_REVIEWERS[{owner!r}]")) for owner, users in mapping.items()
    ))


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
        # Absolute and symlink-free, so containment checks compare like with like.
        quarantine_root=Path(env.get("AIRLOCK_QUARANTINE_ROOT", str(state_dir / "quarantine"))).expanduser().resolve(),
        quarantine_keep_on_failure=_flag(env, "AIRLOCK_QUARANTINE_KEEP_ON_FAILURE"),
        download_workers=int(_positive_number(env, "AIRLOCK_DOWNLOAD_WORKERS", DEFAULT_DOWNLOAD_WORKERS, int)),
        download_timeout_s=float(
            _positive_number(env, "AIRLOCK_DOWNLOAD_TIMEOUT_S", DEFAULT_DOWNLOAD_TIMEOUT_S, float)
        ),
        file_drop_roots=_paths(env.get("AIRLOCK_FILE_DROP_ROOTS")),
        reviewers=_user_ids(env.get("AIRLOCK_REVIEWERS", ""), "AIRLOCK_REVIEWERS"),
        owner_reviewers=_owner_reviewers(env.get("AIRLOCK_OWNER_REVIEWERS")),
        vault_token=env.get("AIRLOCK_VAULT_TOKEN") or None,
        hub_token=env.get("AIRLOCK_HUB_TOKEN") or env.get("HF_TOKEN") or None,
        trust_store=Path(env["AIRLOCK_TRUST_STORE"]).expanduser() if env.get("AIRLOCK_TRUST_STORE", "").strip()
        else None,
        trust_store_sha256=_sha256_pin(env, "AIRLOCK_TRUST_STORE_SHA256"),
        host_state_dir=Path(env["AIRLOCK_HOST_STATE"]).expanduser() if env.get("AIRLOCK_HOST_STATE", "").strip()
        else _default_host_state(env),
    )
