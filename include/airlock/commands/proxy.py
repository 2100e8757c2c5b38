"""``airlock proxy serve | token add|list|remove``: the model proxy and its consumers' tokens.

``serve`` runs the proxy in the foreground until interrupted (exit 2 when it
cannot start: no trust store, unreadable token file, address in use). ``token
add NAME`` prints a new token for consumer NAME once (the file keeps only its
sha256); give it to the consumer as ``HF_TOKEN``. See docs/proxy.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from airlock.cli import EXIT_NEGATIVE, EXIT_OK, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "proxy", help="serve released registry versions over the Hugging Face Hub API (HF_ENDPOINT)",
        description="A Hub-compatible endpoint that serves only released, signed, unrevoked registry versions, "
                    "verifies every file before sending it and records every download as a pull.",
    )
    verbs = parser.add_subparsers(dest="proxy_command", required=True)

    serve = verbs.add_parser("serve", help="run the proxy (foreground)")
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help="address to listen on (default: AIRLOCK_PROXY_ADDR, else 127.0.0.1:8300)")
    serve.add_argument("--registry", help="registry root (default: AIRLOCK_REGISTRY)")
    _tokens_option(serve)
    serve.add_argument("--config", type=Path, help="TOML policy file (default: AIRLOCK_PROXY_CONFIG)")
    serve.add_argument("--trust-store", type=Path,
                       help="trust store file (default: AIRLOCK_TRUST_STORE, else /etc/airlock/trust.pem)")
    serve.add_argument("--trust-store-sha256", metavar="SHA256", help="pin the trust store's sha256")
    serve.add_argument("--name", help="this proxy's name in pull records (default: config, else the host name)")
    serve.add_argument("--forwarded-allow-ips", metavar="IPS",
                       help="reverse proxies whose X-Forwarded-For names the client (default: none; the socket "
                            "address is recorded)")
    serve.add_argument("--chunk-mib", type=lambda t: positive_int(t, maximum=64), default=4,
                       help="streaming chunk size in MiB (default 4)")
    serve.set_defaults(handler=run_serve)

    token = verbs.add_parser("token", help="manage consumers' bearer tokens")
    token_verbs = token.add_subparsers(dest="token_command", required=True)
    add = token_verbs.add_parser("add", help="add a consumer and print its new token (once)")
    add.add_argument("name")
    _tokens_option(add)
    add.set_defaults(handler=run_token_add)
    listing = token_verbs.add_parser("list", help="list consumers (never tokens)")
    _tokens_option(listing)
    listing.add_argument("--format", choices=("text", "json"), default="text")
    listing.set_defaults(handler=run_token_list)
    remove = token_verbs.add_parser("remove", help="remove a consumer (its token stops working at once)")
    remove.add_argument("name")
    _tokens_option(remove)
    remove.set_defaults(handler=run_token_remove)


def _tokens_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokens", type=Path,
                        help="token file (default: AIRLOCK_PROXY_TOKENS, else <state>/secrets/proxy-tokens.json)")


def _tokens(args: argparse.Namespace) -> Path:
    from airlock.proxy.config import default_tokens_path

    return args.tokens or default_tokens_path()


def run_serve(args: argparse.Namespace) -> int:
    import os

    from airlock.proxy.config import ADDR_ENV, CONFIG_ENV, DEFAULT_ADDR, parse_addr
    from airlock.proxy.server import ProxyOptions, build_proxy, serve
    from airlock.registry import HostState, open_registry

    host, port = parse_addr(args.listen or os.environ.get(ADDR_ENV) or DEFAULT_ADDR)
    config = args.config or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    registry = open_registry(args.registry, host_state=HostState.from_settings())
    options = ProxyOptions(tokens=_tokens(args), config=config, trust_store=args.trust_store,
                           trust_store_sha256=args.trust_store_sha256, name=args.name, chunk_size=args.chunk_mib << 20)
    proxy = build_proxy(registry, options)
    serve(proxy, host, port, forwarded_allow_ips=args.forwarded_allow_ips,
          banner=f"airlock proxy: serving {registry.url} at http://{host}:{port} (consumers: {options.tokens})")
    return EXIT_OK


def run_token_add(args: argparse.Namespace) -> int:
    from airlock.proxy.auth import add_consumer

    path = _tokens(args)
    token = add_consumer(path, args.name)
    print(token)
    print(f"consumer {args.name!r} added to {path}; the token is shown only now (set it as HF_TOKEN)",
          file=sys.stderr)
    return EXIT_OK


def run_token_list(args: argparse.Namespace) -> int:
    from airlock.proxy.auth import read_token_file
    from airlock.redact import safe_text

    consumers = read_token_file(_tokens(args)).consumers
    if args.format == "json":
        print(json.dumps([{"name": c.name, "created_at": c.created_at} for c in consumers], indent=2))
    else:
        for consumer in consumers:
            print(f"{safe_text(consumer.name)}  created {consumer.created_at or '-'}")
    return EXIT_OK


def run_token_remove(args: argparse.Namespace) -> int:
    from airlock.proxy.auth import remove_consumer

    if not remove_consumer(_tokens(args), args.name):
        print(f"no consumer {args.name!r} in {_tokens(args)}")
        return EXIT_NEGATIVE
    print(f"consumer {args.name!r} removed")
    return EXIT_OK
