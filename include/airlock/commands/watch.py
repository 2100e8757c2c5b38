"""``airlock watch [--dest PATH]...``: re-hash this host's deployed copies against the registry's signatures.

What a serving host's cron (or agent) runs, for the copies ``airlock pull``
placed on it: the ``model_integrity_watch`` DAG reaches only copies on its own
worker or on storage mounted there, so every other host checks its own::

    # /etc/cron.d/airlock-watch
    17 * * * *  airlock  airlock watch --registry s3://models/registry >>/var/log/airlock-watch.log 2>&1

Without ``--dest``, every copy the index records as pulled to this host (the
newest pull per path) is checked; with ``--dest``, only those paths (each must
have a recorded pull). The reference is the registry's ``model.sig``, verified
with this host's trust store (``--trust-store``, AIRLOCK_TRUST_STORE, or
/etc/airlock/trust.pem; see ``airlock pull``), and the plan the signed index
pins; nothing in the copy itself is trusted. Each outcome is reported back by
appending a ``checked`` event (check ``integrity``, target ``host:path``) to the
version's index history, as the DAG's checks are, so incident response sees
one history per deployment.

Exit 0: every copy intact. 1: a copy deviates (modified, added or removed
files), or holds a version that has been revoked (stop serving it). 2: a check
could not run, or its outcome could not be recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from airlock.cli import EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "watch", help="re-hash this host's pulled copies against the registry's signatures; record the outcome",
        description="Checks every copy `airlock pull` placed on this host (or only --dest PATH) against the "
                    "registry's signed manifest and records each verdict in the registry index. Exit 0 intact, "
                    "1 deviation (or a revoked version), 2 could not run.")
    parser.add_argument("--dest", type=Path, action="append", default=[], metavar="PATH",
                        help="a pulled copy to check (repeatable); default: every copy pulled to this host")
    parser.add_argument("--trust-store", type=Path,
                        help="trust store file (default: AIRLOCK_TRUST_STORE, else /etc/airlock/trust.pem)")
    parser.add_argument("--trust-store-sha256", metavar="SHA256",
                        help="pin the trust store's sha256 (default: AIRLOCK_TRUST_STORE_SHA256)")
    parser.add_argument("--registry", help="registry root (default: AIRLOCK_REGISTRY)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from airlock.pull import default_actor, default_host
    from airlock.redact import safe_text
    from airlock.registry import HostState, RegistryError, open_registry
    from airlock.trust import host_trust_store

    # This host's memory of verified index heads, as `airlock pull` keeps it: a rolled-back index is a finding.
    registry = open_registry(args.registry, host_state=HostState.from_settings())
    check_exists = getattr(registry.store, "check_exists", None)
    if check_exists is not None:
        check_exists()
    trust = host_trust_store(args.trust_store, pinned_sha256=args.trust_store_sha256, registry=registry)
    host = default_host()
    actor = default_actor(host)
    copies, problems = _copies_on(registry, host)
    if args.dest:
        wanted = [_as_recorded(path) for path in args.dest]
        missing = [w for w in wanted if w not in copies]
        if missing:
            raise RegistryError(f"no pull to {host}:{missing[0]} is recorded in {registry.url}; `airlock watch` "
                                f"checks copies `airlock pull` placed")
        copies = {dest: copies[dest] for dest in wanted}
    rows, negative, failed = _check_all(registry, copies, trust, host, actor)
    for problem in problems:
        rows.append({"verdict": "error", "line": problem})
        failed = True
    if args.format == "json":
        print(json.dumps({"host": host, "registry": registry.url, "copies": [r.get("result", r) for r in rows]},
                         indent=2))
    elif not rows:
        print(f"no copies pulled to {safe_text(host)} are recorded in {safe_text(registry.url)}")
    else:
        for row in rows:
            print(safe_text(row["line"], escape_backslash=False))
    if negative:
        return EXIT_NEGATIVE
    return EXIT_ERROR if failed else EXIT_OK


def _as_recorded(path: Path) -> str:
    """``path`` as ``airlock pull`` records DEST: absolute, its parent's real path, its own name unresolved."""
    path = Path(path).expanduser()
    try:
        return str(path.absolute().parent.resolve(strict=True) / path.name)
    except (OSError, RuntimeError):
        return str(path.absolute())


def _copies_on(registry, host: str):
    """The newest pull per path on ``host`` across every model: {dest: PulledEvent}, and models not readable."""
    from airlock.registry import RegistryError

    newest: dict[str, object] = {}
    problems: list[str] = []
    for model in registry.models():
        try:
            state = registry.model_state(model)
        except RegistryError as exc:
            problems.append(f"ERROR     {model}: its index cannot be read, its copies cannot be found ({exc})")
            continue
        for pull in state.pulls() if state else []:
            if pull.host == host and (pull.dest not in newest or pull.at >= newest[pull.dest].at):  # type: ignore[attr-defined]
                newest[pull.dest] = pull
    return newest, problems


def _check_all(registry, copies: dict, trust, host: str, actor: str):
    from airlock.registry import RegistryError, Status
    from airlock.watch import WatchTarget, check_deployed_copy, load_reference, record_result

    references: dict[tuple[str, str], object] = {}
    rows: list[dict] = []
    negative = failed = False
    for dest, pull in sorted(copies.items()):
        key = (pull.model, pull.version)
        if key not in references:
            references[key] = load_reference(registry, pull.model, pull.version, trust)
        reference = references[key]
        current = reference.state.version(pull.version) if reference.state else None
        if current is not None and current.status is Status.REVOKED:
            negative = True
            rows.append({"verdict": "revoked", "line": f"REVOKED   {pull.model}@{pull.version} at {dest}: "
                         f"{current.reason} (by {current.updated_by}); stop serving it"})
            continue
        target = WatchTarget(kind="deployed", model=pull.model, version=pull.version, host=host, dest=dest, path=dest)
        result = check_deployed_copy(Path(dest), reference, target=target)
        label = {"pass": "intact   ", "fail": "DEVIATION", "error": "ERROR    "}[result.verdict]
        row = {"verdict": result.verdict, "result": result.to_json_dict(), "line": f"{label} {result.summary()}"}
        negative = negative or result.verdict == "fail"
        failed = failed or result.verdict == "error"
        try:
            event = record_result(registry, result, actor=actor)
            row["result"]["recorded_seq"] = event.seq
        except RegistryError as exc:
            from airlock.redact import one_line

            failed = True
            print(one_line(f"airlock watch: could not record the outcome for {dest} in {registry.url}: {exc}"),
                  file=sys.stderr)
        rows.append(row)
    return rows, negative, failed
