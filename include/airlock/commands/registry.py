"""``airlock registry list | show | check | incidents | revoke | deprecate``: read, check, change a status.

``show ORG/NAME@VERSION`` also lists the recorded pulls of that version (who,
host, path, key), and ``show ORG/NAME`` has them in its history.

``incidents [ORG/NAME]`` lists the incident reports ``model_incident`` wrote
(:mod:`airlock.incident.report`).

``check`` lists leftovers of dead promotions and damaged versions (exit 1 when
it finds any, 0 when clean, 2 when it could not look): :mod:`airlock.registry.check`.

A registry location that is not a registry (a plain file, a directory that does
not exist, a missing bucket) is exit 2 for every verb here, never "no versions".
Names, owners and reasons come from registry storage: they are printed
escaped (:func:`airlock.redact.safe_text`), so they cannot drive the terminal.

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

from airlock.cli import EXIT_NEGATIVE, EXIT_OK

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

    check = verbs.add_parser(
        "check", help="find leftovers of dead promotions and damaged versions (exit 1 when any)",
        description="Lists partial files / unfinished multipart uploads that killed promotions left, and "
                    "released versions whose records do not match. Exit 0 clean, 1 problems found, 2 could not run.")
    check.add_argument("--model", help="only ORG/NAME")
    check.add_argument("--deep", action="store_true", help="also re-hash every stored object against its plan")
    check.add_argument("--clean", action="store_true",
                       help="remove leftovers no live promotion owns (never a stored key)")
    _common(check)
    check.set_defaults(handler=run_check)

    incidents = verbs.add_parser(
        "incidents", help="list incident reports (revocations by model_incident), oldest first",
        description="Reports live beside the versions at incidents/<org>/<name>/<version>/<id>.{json,md}.")
    incidents.add_argument("model", nargs="?", metavar="ORG/NAME", help="only this model")
    _common(incidents)
    incidents.set_defaults(handler=run_incidents)

    ownership = verbs.add_parser(
        "ownership", help="admin: change a model's owner, minimum risk tier or source repository (signed)",
        description="The model record (owner, minimum tier, source repository) is fixed at the model's first "
                    "release; this recorded, signed admin action is the only way to change it. Signs the index "
                    "checkpoint with the Vault key (AIRLOCK_VAULT_ADDR/AIRLOCK_VAULT_TOKEN).")
    ownership.add_argument("model", metavar="ORG/NAME")
    ownership.add_argument("--owner", help="the new owner")
    ownership.add_argument("--min-tier", choices=("low", "medium", "high", "critical"), help="the new minimum tier")
    ownership.add_argument("--source", help="the new source repository (e.g. hf://org/name)")
    ownership.add_argument("--reason", required=True, help="why; recorded in the index history")
    ownership.add_argument("--by", dest="actor", help="who (default: AIRLOCK_ACTOR, else the login name)")
    _common(ownership)
    ownership.set_defaults(handler=run_ownership)

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
    """The registry, refused (exit 2) when the location is not an existing registry."""
    from airlock.registry import open_registry

    registry = open_registry(args.registry)
    check_exists = getattr(registry.store, "check_exists", None)
    if check_exists is not None:
        check_exists()
    return registry


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
        print(f"no versions in {_text(registry.url)}")
        return EXIT_OK
    print(_table(_LIST_COLUMNS, [_version_row(r) for r in rows]))
    return EXIT_OK


def _version_row(state: Any) -> list[str]:  # state: airlock.registry.VersionState
    return [
        _text(state.model), _text(state.version), _text(state.status.value), _text(state.risk_tier), _text(state.owner),
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
    # Owner, minimum tier and source come from the model record (first release, admin changes), never from
    # the latest promotion.
    print(f"{_text(state.model)}  owner {_text(state.owner)}  min tier {_text(state.risk_tier)}  "
          f"source {_text(state.source)}  registry {_text(registry.url)}")
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
    print(f"{_text(released.model)}@{_text(released.version)}  {_text(released.status)}"
          + (f" ({_text(state.reason)})" if state and state.reason else ""))
    fields = [
        ("url", _text(released.url)),
        ("root digest", f"sha256:{_text(released.root_digest)}"),
        ("released", f"{_when(released.released.released_at)} by {_text(released.released.released_by)}"),
        ("owner", _text(state.owner if state else None)),
        ("risk tier", _text(state.risk_tier if state else None)),
        ("approver", _text(state.approver if state else None)),
        ("updated", f"{_when(state.updated_at)} by {_text(state.updated_by)}" if state else "-"),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        print(f"  {name:<{width}}  {value}")
    print()
    print(_table(("OBJECT", "ROLE", "BYTES", "SHA256"),
                 [[_text(o.key), _text(o.role), str(o.size), _text(o.sha256)] for o in released.plan.objects]))
    print()
    # Where verified copies were deployed (airlock pull): what incident response needs after a revocation.
    print(_table(("PULLED", "BY", "HOST", "DEST", "KEY"),
                 [[_when(p.at), _text(p.actor), _text(p.host), _text(p.dest), _text(p.key_id)] for p in pulls])
          if pulls else "pulls: none recorded")
    return EXIT_OK


def _describe_event(event: Any) -> str:  # event: PromotedEvent | StatusEvent | PulledEvent | OwnershipEvent
    if event.kind == "ownership":
        changes = ", ".join(f"{what} {_text(value)}" for what, value in
                            (("owner", event.owner), ("min tier", event.risk_tier), ("source", event.source))
                            if value is not None)
        return f"#{event.seq} {_when(event.at)} ownership by {_text(event.actor)} ({changes}): {_text(event.reason)}"
    head = f"#{event.seq} {_when(event.at)} {event.kind} {_text(event.version)} by {_text(event.actor)}"
    if event.kind == "promoted":
        return (f"{head} (owner {_text(event.owner)}, tier {_text(event.risk_tier)}, "
                f"approver {_text(event.approver)}, source {_text(event.source)})")
    if event.kind == "pulled":
        return (f"{head} to {_text(event.host)}:{_text(event.dest)} (root sha256:{_text(event.root_digest)}, "
                f"key {_text(event.key_id)})")
    if event.kind == "checked":
        return f"{head}: {_text(event.check)} {_text(event.verdict)} on {_text(event.target)}: {_text(event.summary)}"
    return f"{head}: {_text(event.reason)}"


# --------------------------------------------------------------------------- revoke / deprecate


def run_change(args: argparse.Namespace) -> int:
    from airlock.registry import parse_reference

    registry = _open(args)
    model, version = parse_reference(args.reference, version_required=True)
    assert version is not None
    registry.signer = _signer()
    actor = args.actor or os.environ.get("AIRLOCK_ACTOR") or getpass.getuser()
    change = registry.revoke if args.change == "revoke" else registry.deprecate
    event = change(model, version, reason=args.reason, actor=actor)
    if args.format == "json":
        _print_json(event.model_dump(mode="json", by_alias=True))
    else:
        print(f"{model}@{version} {event.kind} by {_text(event.actor)} at {_when(event.at)}: {_text(event.reason)}")
    return EXIT_OK


def _signer():
    """The index checkpoint signer: the Vault Transit key, as ``airlock sign`` reaches it (environment)."""
    from airlock.signing import VaultTransitSigner

    return VaultTransitSigner.from_env()


def run_ownership(args: argparse.Namespace) -> int:
    from airlock.registry import ModelName, RegistryError

    if args.owner is None and args.min_tier is None and args.source is None:
        raise RegistryError("give at least one of --owner, --min-tier, --source")
    registry = _open(args)
    model = ModelName.parse(args.model)
    registry.signer = _signer()
    actor = args.actor or os.environ.get("AIRLOCK_ACTOR") or getpass.getuser()
    event = registry.change_ownership(model, reason=args.reason, actor=actor, owner=args.owner,
                                      risk_tier=args.min_tier, source=args.source)
    if args.format == "json":
        _print_json(event.model_dump(mode="json", by_alias=True))
    else:
        print(_describe_event(event))
    return EXIT_OK


# --------------------------------------------------------------------------- check


def run_check(args: argparse.Namespace) -> int:
    from airlock.registry import ModelName
    from airlock.registry.check import check_registry
    from airlock.registry.leftovers import describe_age

    registry = _open(args)
    model = ModelName.parse(args.model) if args.model else None
    report = check_registry(registry, model, deep=args.deep, clean=args.clean)
    if args.format == "json":
        _print_json(report.to_json_dict())
        return EXIT_OK if report.ok else EXIT_NEGATIVE
    for item in report.removed:
        print(f"removed  {_text(item.key)}  ({item.kind}, {item.size} bytes, {describe_age(item.age_s)} old)")
    for note in report.notes:
        print(f"note     {_text(note)}")
    for problem in report.problems:
        print(f"PROBLEM  {_text(problem)}")
    scope = f"{model} in " if model else ""
    verdict = "clean" if report.ok else f"{len(report.problems)} problem(s)"
    print(f"{scope}{_text(registry.url)}: {report.versions_checked} released version(s) checked"
          f"{' (deep)' if args.deep else ''}, {len(report.removed)} leftover(s) removed: {verdict}")
    return EXIT_OK if report.ok else EXIT_NEGATIVE


# --------------------------------------------------------------------------- incidents


def run_incidents(args: argparse.Namespace) -> int:
    """Every stored incident report (airlock.incident.report); one that does not parse is listed as such."""
    from airlock.incident import list_reports
    from airlock.registry import ModelName

    registry = _open(args)
    model = ModelName.parse(args.model) if args.model else None
    found = list_reports(registry.store, model)
    if args.format == "json":
        _print_json({"registry": registry.url, "incidents": [
            {"key": key, **(item.model_dump(mode="json", by_alias=True) if not isinstance(item, str)
                            else {"problem": item})} for key, item in found]})
        return EXIT_OK
    if not found:
        print(f"no incident reports{f' for {model}' if model else ''} in {_text(registry.url)}")
        return EXIT_OK
    rows = []
    for key, item in found:
        if isinstance(item, str):
            rows.append(["-", _text(key), "-", "-", "-", "-", f"unreadable: {_text(item)}"])
            continue
        rows.append([_when(item.opened_at), _text(item.incident_id), f"{_text(item.model)}@{_text(item.version)}",
                     _text(item.revocation.outcome), _text(item.source), str(len(item.deployments)),
                     _text(item.reason)])
    print(_table(("OPENED", "INCIDENT", "VERSION", "REVOCATION", "SOURCE", "DEPLOYMENTS", "REASON"), rows))
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
    """A value from registry storage, printable: "-" when empty, control characters and bad bytes escaped."""
    from airlock.redact import safe_text

    return "-" if value is None or value == "" else safe_text(value)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))
