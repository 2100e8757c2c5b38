"""``airlock registry list | show | revoke | deprecate``: read the registry and change a version's status.

``show ORG/NAME@VERSION`` also lists the recorded pulls of that version (who,
host, path, key), and ``show ORG/NAME`` has them in its history.

The registry is AIRLOCK_REGISTRY (a directory, or ``s3://bucket/prefix`` with
AIRLOCK_S3_ENDPOINT) unless ``--registry`` says otherwise. Text output is a
table for people; ``--format json`` is for machines and is stable.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from airlock.cli import EXIT_OK

_LIST_COLUMNS = ("MODEL", "VERSION", "STATUS", "TIER", "OWNER", "APPROVER", "PROMOTED", "UPDATED", "REASON")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("registry", help="list and show registry versions; revoke or deprecate one")
    verbs = parser.add_subparsers(dest="registry_command", required=True)

    listing = verbs.add_parser("list", help="every indexed version with its status")
    listing.add_argument("--model", help="only ORG/NAME")
    listing.add_argument("--status", choices=("approved", "deprecated", "revoked"), help="only this status")
    _common(listing)
    listing.set_defaults(handler=run_list)

    show = verbs.add_parser("show", help="a model (versions and history) or one version (objects, status)")
    show.add_argument("reference", metavar="ORG/NAME[@VERSION]")
    _common(show)
    show.set_defaults(handler=run_show)

    for verb, help_text in (("revoke", "mark a version revoked (final)"),
                            ("deprecate", "mark a version deprecated (it can still be revoked)")):
        change = verbs.add_parser(verb, help=help_text)
        change.add_argument("reference", metavar="ORG/NAME@VERSION")
        change.add_argument("--reason", required=True, help="why; recorded in the index history")
        change.add_argument("--by", dest="actor", help="who (default: AIRLOCK_ACTOR, else the login name)")
        _common(change)
        change.set_defaults(handler=run_change, change=verb)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", help="registry root (default: AIRLOCK_REGISTRY)")
    parser.add_argument("--format", choices=("text", "json"), default="text")


def _open(args: argparse.Namespace):
    from airlock.registry import open_registry

    return open_registry(args.registry)


# --------------------------------------------------------------------------- list


def run_list(args: argparse.Namespace) -> int:
    registry = _open(args)
    rows = registry.list(args.model)
    if args.status:
        rows = [r for r in rows if r.status == args.status]
    if args.format == "json":
        _print_json({"registry": registry.url, "versions": [r.model_dump(mode="json") for r in rows]})
        return EXIT_OK
    if not rows:
        print(f"no versions in {registry.url}")
        return EXIT_OK
    print(_table(_LIST_COLUMNS, [_version_row(r) for r in rows]))
    return EXIT_OK


def _version_row(state: Any) -> list[str]:  # state: airlock.registry.VersionState
    return [
        state.model, state.version, state.status.value, _text(state.risk_tier), _text(state.owner),
        _text(state.approver), _when(state.promoted_at), _when(state.updated_at), _text(state.reason),
    ]


# --------------------------------------------------------------------------- show


def run_show(args: argparse.Namespace) -> int:
    from airlock.registry import RegistryError, parse_reference

    registry = _open(args)
    model, version = parse_reference(args.reference, version_required=False)
    if version is not None:
        state = registry.model_state(model)
        return _show_version(registry.released(model, version), state.pulls(version) if state else [], args.format)
    state = registry.model_state(model)
    if state is None:
        raise RegistryError(f"{model} has no indexed versions in {registry.url}")
    if args.format == "json":
        _print_json({"registry": registry.url, **state.to_json_dict()})
        return EXIT_OK
    print(f"{state.model}  owner {_text(state.owner)}  tier {_text(state.risk_tier)}  registry {registry.url}")
    print()
    print(_table(_LIST_COLUMNS[1:], [_version_row(v)[1:] for v in state.versions]))
    print()
    print("history:")
    for event in state.history:
        print(f"  {_describe_event(event)}")
    return EXIT_OK


def _show_version(released: Any, pulls: Sequence[Any], output: str) -> int:  # ReleasedVersion, [PulledEvent]
    if output == "json":
        _print_json({**released.to_json_dict(), "pulls": [p.model_dump(mode="json", by_alias=True) for p in pulls]})
        return EXIT_OK
    state = released.state
    print(f"{released.model}@{released.version}  {released.status}"
          + (f" ({state.reason})" if state and state.reason else ""))
    fields = [
        ("url", released.url),
        ("root digest", f"sha256:{released.root_digest}"),
        ("released", f"{_when(released.released.released_at)} by {released.released.released_by}"),
        ("owner", _text(state.owner if state else None)),
        ("risk tier", _text(state.risk_tier if state else None)),
        ("approver", _text(state.approver if state else None)),
        ("updated", f"{_when(state.updated_at)} by {state.updated_by}" if state else "-"),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        print(f"  {name:<{width}}  {value}")
    print()
    print(_table(("OBJECT", "ROLE", "BYTES", "SHA256"),
                 [[o.key, o.role, str(o.size), o.sha256] for o in released.plan.objects]))
    print()
    # Where verified copies were deployed (airlock pull): what incident response needs after a revocation.
    print(_table(("PULLED", "BY", "HOST", "DEST", "KEY"),
                 [[_when(p.at), p.actor, p.host, p.dest, p.key_id] for p in pulls]) if pulls else "pulls: none recorded")
    return EXIT_OK


def _describe_event(event: Any) -> str:  # event: PromotedEvent | StatusEvent | PulledEvent
    head = f"#{event.seq} {_when(event.at)} {event.kind} {event.version} by {event.actor}"
    if event.kind == "promoted":
        return f"{head} (owner {event.owner}, tier {event.risk_tier}, approver {event.approver})"
    if event.kind == "pulled":
        return f"{head} to {event.host}:{event.dest} (root sha256:{event.root_digest}, key {event.key_id})"
    return f"{head}: {event.reason}"


# --------------------------------------------------------------------------- revoke / deprecate


def run_change(args: argparse.Namespace) -> int:
    from airlock.registry import parse_reference

    registry = _open(args)
    model, version = parse_reference(args.reference, version_required=True)
    assert version is not None
    actor = args.actor or os.environ.get("AIRLOCK_ACTOR") or getpass.getuser()
    change = registry.revoke if args.change == "revoke" else registry.deprecate
    event = change(model, version, reason=args.reason, actor=actor)
    if args.format == "json":
        _print_json(event.model_dump(mode="json", by_alias=True))
    else:
        print(f"{model}@{version} {event.kind} by {event.actor} at {_when(event.at)}: {event.reason}")
    return EXIT_OK


# --------------------------------------------------------------------------- formatting


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _when(value: Any) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value is not None else "-"


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))
