"""Build the proxy from settings and run it with uvicorn (``airlock proxy serve``)."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from airlock.proxy.app import Proxy, build_app
from airlock.proxy.auth import TokenStore
from airlock.proxy.config import ProxyFile, TrustSource, load_proxy_file
from airlock.proxy.objects import reader_for
from airlock.proxy.records import PullRecorder, TamperReporter
from airlock.proxy.verification import FileChecks, RegistryView
from airlock.registry import HostState, Registry


@dataclass(frozen=True)
class ProxyOptions:
    tokens: Path
    config: Path | None = None
    trust_store: Path | None = None
    trust_store_sha256: str | None = None
    name: str | None = None
    chunk_size: int = 4 << 20


def build_proxy(registry: Registry, options: ProxyOptions, *, host_state: HostState | None = None) -> Proxy:
    """The proxy over ``registry``; fails (an :class:`~airlock.errors.AirlockError`) on any unusable setting."""
    from airlock.pull import default_actor, default_host

    settings: ProxyFile = load_proxy_file(options.config)
    trust = TrustSource(options.trust_store, options.trust_store_sha256, registry)
    trust()  # no trust store: refuse to start rather than refuse every request
    tokens = TokenStore(options.tokens)
    host_state = host_state or registry.host_state or HostState.from_settings()
    name = options.name or settings.proxy.name or default_host()
    policies = settings.models
    from airlock.proxy.config import ModelPolicy

    default_policy = ModelPolicy()
    view = RegistryView(registry, trust, host_state, lambda model: policies.get(model, default_policy))
    return Proxy(view=view, tokens=tokens, objects=reader_for(registry.store), files=FileChecks(),
                 pulls=PullRecorder(registry, name, settings.proxy.pull_record_window_s),
                 tamper=TamperReporter(registry, f"airlock-proxy:{default_actor()}"),
                 chunk_size=options.chunk_size)


def serve(proxy: Proxy, host: str, port: int, *, forwarded_allow_ips: str | None = None, banner: str = "") -> None:
    """Run until interrupted. Client addresses come from the socket unless ``forwarded_allow_ips`` names the
    reverse proxies whose ``X-Forwarded-For`` is believed (a pull record's host must not be client-chosen)."""
    import socket

    import uvicorn

    from airlock.errors import ConfigurationError

    # Bound here, not by uvicorn: an address in use is one line and exit 2 from the CLI, not uvicorn's exit 1.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    if banner:
        print(banner, file=sys.stderr, flush=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(build_app(proxy), log_level="info", access_log=True,
                            proxy_headers=forwarded_allow_ips is not None,
                            forwarded_allow_ips=forwarded_allow_ips, server_header=False, timeout_keep_alive=30)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
