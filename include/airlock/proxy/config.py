"""The proxy's configuration: where it listens, which registry, whose tokens, and each model's revision policy.

Environment (the CLI's options win): ``AIRLOCK_PROXY_ADDR`` (``host:port``,
default ``127.0.0.1:8300``), ``AIRLOCK_PROXY_TOKENS`` (the token file, default
``<AIRLOCK_STATE_DIR or .airlock>/secrets/proxy-tokens.json``),
``AIRLOCK_PROXY_CONFIG`` (an optional TOML file), plus the registry and trust
settings every verb uses (AIRLOCK_REGISTRY, AIRLOCK_TRUST_STORE[_SHA256],
AIRLOCK_HOST_STATE). The TOML file::

    [proxy]
    name = "proxy-1"                 # how pull records name this proxy (default: the host name)
    pull_record_window_s = 3600      # one pull record per consumer, host, version and file in this window

    [models."demo/tiny-gpt2"]
    main = "latest"                  # 'main' = the newest approved version; or a version name; absent: no 'main'
    allow_deprecated = ["1"]         # deprecated versions this proxy still serves (revoked: never)

There is no setting that serves a revoked, unreleased or unverified version.
"""

from __future__ import annotations

import os
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airlock.errors import ConfigurationError, first_validation_problem

if TYPE_CHECKING:
    from airlock.trust import TrustStore

DEFAULT_ADDR = "127.0.0.1:8300"
ADDR_ENV = "AIRLOCK_PROXY_ADDR"
TOKENS_ENV = "AIRLOCK_PROXY_TOKENS"
CONFIG_ENV = "AIRLOCK_PROXY_CONFIG"
DEFAULT_PULL_WINDOW_S = 3600.0


class ModelPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    main: str | None = Field(default=None, description="'latest' (newest approved) or a version; None: no main")
    allow_deprecated: tuple[str, ...] = ()


class _ProxySection(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=128)
    pull_record_window_s: float = Field(default=DEFAULT_PULL_WINDOW_S, ge=0)


class ProxyFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    proxy: _ProxySection = _ProxySection()
    models: dict[str, ModelPolicy] = {}


def load_proxy_file(path: Path | None) -> ProxyFile:
    if path is None:
        return ProxyFile()
    try:
        raw = tomllib.loads(Path(path).read_text())
        parsed = ProxyFile.model_validate(raw)
    except OSError as exc:
        raise ConfigurationError(f"cannot read the proxy configuration {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not TOML ({exc})") from None
    except ValidationError as exc:
        raise ConfigurationError(f"{path}: {first_validation_problem(exc)}") from None
    from airlock.registry import ModelName

    for name in parsed.models:
        ModelName.parse(name)  # a typo in a model name must not silently configure nothing
    return parsed


def parse_addr(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8300`` for IPv6) -> (host, port)."""
    text = value.strip().removeprefix("http://")
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not host or not 0 < number < 65536:
        raise ConfigurationError(f"proxy address {value!r} must be HOST:PORT (e.g. {DEFAULT_ADDR})")
    return host, number


def default_tokens_path(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(TOKENS_ENV):
        return Path(env[TOKENS_ENV]).expanduser()
    return Path(env.get("AIRLOCK_STATE_DIR", ".airlock")).expanduser() / "secrets" / "proxy-tokens.json"


@dataclass
class TrustSource:
    """The host's trust store, re-read when its file changes (a key revoked on the host takes effect at once).

    ``generation`` changes with every reload, so caches keyed by it are dropped.
    """

    path: Path | None
    pinned_sha256: str | None
    registry: object | None = None
    _stamp: tuple[int, int, int] | None = None
    _store: TrustStore | None = None
    generation: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _file(self) -> Path | None:
        if self.path is not None:
            return self.path
        from airlock.config import DEFAULT_TRUST_STORE, load_settings

        chosen = load_settings().trust_store
        return chosen if chosen is not None else (DEFAULT_TRUST_STORE if DEFAULT_TRUST_STORE.is_file() else None)

    def __call__(self) -> TrustStore:
        from airlock.trust import host_trust_store

        file = self._file()
        try:
            info = os.stat(file) if file is not None else None
            stamp = (info.st_ino, info.st_size, info.st_mtime_ns) if info else None
        except OSError:
            stamp = None
        with self._lock:
            if self._store is not None and stamp == self._stamp:
                return self._store
            self._store = host_trust_store(self.path, pinned_sha256=self.pinned_sha256,
                                           registry=self.registry)  # type: ignore[arg-type]
            self._stamp = stamp
            self.generation += 1
            return self._store
