"""The incident report: what was revoked and why, the window, and the deployments whose decisions need review.

Stored next to the version, never inside it (``models/<org>/<name>/<version>/``
is immutable; a report written there would be an object no plan covers, which
is exactly what the integrity watch reports as "added")::

    <registry root>/incidents/<org>/<name>/<version>/<incident-id>.json
    <registry root>/incidents/<org>/<name>/<version>/<incident-id>.md

both written with the store's put-if-absent (filesystem and S3 alike), so a
report is never rewritten: a re-run of the same incident finds its JSON there
and renders the Markdown from it.

Everything in the report comes from the registry's own records: the version's
plan and status from the index, the **window** from the version's ``checked``
history (the last check that passed and the first that failed after it, per
target: the registry copy and each deployed copy) and the **deployments** from
its ``pulled`` history (every host and path a verified copy went to). The
trigger's ``evidence`` is kept as it was given, labelled as such: it came from
run conf, which an operator can edit.

The Markdown escapes every string that came from storage, a trigger or a host
(:func:`md_escape`), so a model name, a reason or a path cannot inject links,
HTML or table cells into whatever renders it.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from airlock.errors import AirlockError

if TYPE_CHECKING:
    from airlock.registry import CheckedEvent, ModelName, ObjectStore, PulledEvent, Registry
    from airlock.registry.index import ModelState

INCIDENT_SCHEMA = "airlock.incident/v1"
INCIDENTS_ROOT = "incidents/"
_INCIDENT_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}\Z")
_MAX_EVIDENCE_BYTES = 64 * 1024


class IncidentError(AirlockError):
    """An incident could not be handled (bad parameters, an unreadable report); names what and why."""


# --------------------------------------------------------------------------- where reports live


def incident_prefix(model: ModelName, version: str | None = None) -> str:
    """``incidents/<org>/<name>/[<version>/]``: beside the model's versions, never inside one."""
    from airlock.registry.base import check_version

    base = f"{INCIDENTS_ROOT}{model.org}/{model.name}/"
    return base if version is None else f"{base}{check_version(version)}/"


def incident_id(run_id: str, opened_at: datetime) -> str:
    """Sortable by time and the same for every attempt of one run: ``YYYYMMDDTHHMMSSZ-<12 hex of the run id>``."""
    stamp = opened_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{hashlib.sha256(run_id.encode()).hexdigest()[:12]}"


def report_keys(model: ModelName, version: str, incident: str) -> tuple[str, str]:
    if not _INCIDENT_ID.fullmatch(incident):
        raise IncidentError(f"incident id {incident!r} is not YYYYMMDDTHHMMSSZ-<12 hex>")
    prefix = incident_prefix(model, version)
    return f"{prefix}{incident}.json", f"{prefix}{incident}.md"


# --------------------------------------------------------------------------- the report


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CheckRef(_Frozen):
    """One ``checked`` event, as the report cites it."""

    seq: int
    at: AwareDatetime
    check: str
    target: str
    verdict: str
    summary: str
    actor: str
    run_id: str | None = None

    @classmethod
    def of(cls, event: CheckedEvent) -> CheckRef:
        return cls(seq=event.seq, at=event.at, check=event.check, target=event.target, verdict=event.verdict,
                   summary=event.summary, actor=event.actor, run_id=event.run_id)


class Window(_Frozen):
    """Between the last check that passed and the first that failed after it (one check kind, one target)."""

    check: str
    target: str
    last_pass: CheckRef | None
    first_fail: CheckRef | None
    failures: int = Field(description="failed checks since the last pass")


class Deployment(_Frozen):
    """A verified copy placed by ``airlock pull``: where, by whom, and how its last integrity check went."""

    seq: int
    at: AwareDatetime
    actor: str
    host: str
    dest: str
    key_id: str
    root_digest: str
    last_check: CheckRef | None


class Revocation(_Frozen):
    outcome: Literal["revoked", "already-revoked", "failed"]
    at: AwareDatetime | None = None
    by: str | None = None
    reason: str | None = None
    event_seq: int | None = None
    error: str | None = None


class VersionRecord(_Frozen):
    status: str | None
    root_digest: str | None
    plan_sha256: str | None
    signature_sha256: str | None
    aibom_sha256: str | None
    owner: str | None
    risk_tier: str | None
    approver: str | None
    source: str | None
    promoted_at: AwareDatetime | None
    url: str
    objects: list[dict[str, Any]] = Field(default_factory=list)


class IncidentReport(_Frozen):
    schema_: Literal["airlock.incident/v1"] = Field(default=INCIDENT_SCHEMA, alias="schema")
    incident_id: str
    opened_at: AwareDatetime
    model: str
    version: str
    reason: str
    source: str
    actor: str
    run_id: str
    registry: str
    version_record: VersionRecord
    revocation: Revocation
    window: Window | None = Field(description="the earliest failing target's window; None when nothing failed")
    windows: list[Window]
    deviations: list[CheckRef] = Field(description="failed checks since each target's last pass")
    deployments: list[Deployment]
    index_problem: str | None = None
    evidence: Any = Field(default=None, description="as the trigger gave it (run conf): a claim, not a record")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def to_bytes(self) -> bytes:
        return (json.dumps(self.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True) + "\n").encode()


def check_windows(checks: list[CheckedEvent]) -> list[Window]:
    """Per (check kind, target), in index order: the last pass before the current failing streak, and the
    streak's first failure (None when the latest verdict is a pass). Errors (a check that could not run)
    neither open nor close a window."""
    by_target: dict[tuple[str, str], list[CheckedEvent]] = {}
    for event in sorted(checks, key=lambda e: e.seq):
        by_target.setdefault((event.check, event.target), []).append(event)
    windows = []
    for (check, target), events in sorted(by_target.items()):
        last_pass: CheckedEvent | None = None
        streak: list[CheckedEvent] = []
        for event in events:
            if event.verdict == "pass":
                last_pass, streak = event, []
            elif event.verdict == "fail":
                streak.append(event)
        windows.append(Window(check=check, target=target, last_pass=CheckRef.of(last_pass) if last_pass else None,
                              first_fail=CheckRef.of(streak[0]) if streak else None, failures=len(streak)))
    return windows


def build_report(registry: Registry, model: str | ModelName, version: str, *, incident: str, opened_at: datetime,
                 reason: str, source: str, actor: str, run_id: str, revocation: Revocation,
                 evidence: Any = None) -> IncidentReport:
    """The report of ``incident`` from the registry's records (see the module docstring)."""
    from airlock.registry import ModelName, RegistryError

    name = model if isinstance(model, ModelName) else ModelName.parse(model)
    state: ModelState | None = None
    index_problem = None
    try:
        state = registry.model_state(name)  # structure checked; history is what it is, even after a failed verify
    except RegistryError as exc:
        index_problem = f"the index of {name} cannot be read: {exc}"
    checks = state.checks(version) if state else []
    windows = check_windows(checks)
    failing = [w for w in windows if w.first_fail is not None]
    window = min(failing, key=lambda w: w.first_fail.seq) if failing else None  # type: ignore[union-attr]
    deviations = [CheckRef.of(e) for e in checks if e.verdict == "fail"
                  and any(w.first_fail is not None and w.check == e.check and w.target == e.target
                          and e.seq >= w.first_fail.seq for w in failing)]
    pulls = state.pulls(version) if state else []
    return IncidentReport(
        incident_id=incident, opened_at=opened_at, model=str(name), version=version, reason=reason, source=source,
        actor=actor, run_id=run_id, registry=registry.url, version_record=_version_record(registry, name, version,
                                                                                           state),
        revocation=revocation, window=window, windows=windows, deviations=deviations,
        deployments=[_deployment(p, checks) for p in pulls], index_problem=index_problem,
        evidence=_bounded(evidence),
    )


def _version_record(registry: Registry, name: ModelName, version: str, state: ModelState | None) -> VersionRecord:
    from airlock.registry import RegistryError
    from airlock.registry.promotion import load_plan

    current = state.version(version) if state else None
    plan = None
    try:
        # The stored plan (not Registry.released, which also reads the index: the report is written even when
        # the index is damaged). Its digest against the signed index is in the plan_sha256 shown beside it.
        loaded = load_plan(registry.store, name, version)
        plan = loaded[0] if loaded else None
    except RegistryError:
        pass  # a damaged plan: the index's record still stands
    by_role = {o.role: o.sha256 for o in plan.objects} if plan else {}
    return VersionRecord(
        status=current.status.value if current else None,
        root_digest=current.root_digest if current else (plan.root_digest if plan else None),
        plan_sha256=current.plan_sha256 if current else None,
        signature_sha256=by_role.get("signature"), aibom_sha256=by_role.get("aibom"),
        owner=current.owner if current else None, risk_tier=current.risk_tier.value if current and current.risk_tier
        else None, approver=current.approver if current else None, source=current.source if current else None,
        promoted_at=current.promoted_at if current else None, url=registry.version_url(name, version),
        objects=[o.model_dump(mode="json") for o in plan.objects] if plan else [],
    )


def _deployment(pull: PulledEvent, checks: list[CheckedEvent]) -> Deployment:
    label = f"{pull.host}:{pull.dest}"
    mine = [c for c in checks if c.check == "integrity" and c.target == label and c.seq > pull.seq]
    return Deployment(seq=pull.seq, at=pull.at, actor=pull.actor, host=pull.host, dest=pull.dest, key_id=pull.key_id,
                      root_digest=pull.root_digest, last_check=CheckRef.of(mine[-1]) if mine else None)


def _bounded(evidence: Any) -> Any:
    """The trigger's evidence as JSON data, refused when it is not JSON or too large to be a summary."""
    if evidence is None:
        return None
    try:
        data = json.dumps(evidence, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise IncidentError(f"evidence is not JSON data ({exc})") from None
    if len(data.encode()) > _MAX_EVIDENCE_BYTES:
        raise IncidentError(f"evidence is {len(data.encode())} bytes; at most {_MAX_EVIDENCE_BYTES} (link to the "
                            f"full record instead)")
    return json.loads(data)


# --------------------------------------------------------------------------- storing and listing


def store_report(store: ObjectStore, report: IncidentReport) -> tuple[IncidentReport, str, str]:
    """Write the report's JSON and Markdown, put-if-absent; returns the stored report (an earlier attempt's, if
    one exists) and both keys. The Markdown is always rendered from the stored JSON."""
    from airlock.registry import ModelName

    json_key, md_key = report_keys(ModelName.parse(report.model), report.version, report.incident_id)
    data = report.to_bytes()
    if not store.put_if_absent(json_key, data, len(data), hashlib.sha256(data).hexdigest()):
        report = read_report(store, json_key)
    markdown = render_markdown(report).encode()
    store.put_if_absent(md_key, markdown, len(markdown), hashlib.sha256(markdown).hexdigest())
    return report, json_key, md_key


def read_report(store: ObjectStore, key: str) -> IncidentReport:
    data = store.read(key)
    if data is None:
        raise IncidentError(f"{store.object_url(key)}: no such incident report")
    try:
        return IncidentReport.model_validate_json(data)
    except ValueError as exc:
        raise IncidentError(f"{store.object_url(key)}: not an incident report ({_first_line(exc)})") from None


def list_reports(store: ObjectStore, model: ModelName | None = None) -> list[tuple[str, IncidentReport | str]]:
    """Every stored report (key, report), oldest first; one that does not parse is listed with the problem."""
    prefix = incident_prefix(model) if model is not None else INCIDENTS_ROOT
    found: list[tuple[str, IncidentReport | str]] = []
    for key in store.list_keys(prefix):
        if not key.endswith(".json"):
            continue
        try:
            found.append((key, read_report(store, key)))
        except (IncidentError, ValueError) as exc:
            found.append((key, str(exc)))
    return sorted(found, key=lambda item: (item[0].rsplit("/", 1)[-1], item[0]))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- Markdown

# Every ASCII punctuation character may be backslash-escaped in CommonMark, and an escaped one is always literal:
# no emphasis, link, image, HTML, entity, code span, heading, list or table cell can start from untrusted text.
_MD_PUNCTUATION = re.compile(r"([!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])")


def md_escape(value: Any) -> str:
    """``value`` as literal Markdown text on one line: control characters shown as escapes, punctuation escaped."""
    from airlock.redact import safe_text

    if value is None or value == "":
        return "-"
    return _MD_PUNCTUATION.sub(r"\\\1", safe_text(value, escape_backslash=False))


def _code_block(text: str) -> str:
    """A fenced block that the text cannot close: the fence is longer than any backtick run inside it."""
    from airlock.redact import safe_text

    lines = [safe_text(line, escape_backslash=False) for line in text.splitlines()]
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return "\n".join([fence + "json", *lines, fence])


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def _check(ref: CheckRef | None) -> str:
    if ref is None:
        return "-"
    return f"\\#{ref.seq} {md_escape(_when(ref.at))} {md_escape(ref.verdict)} by {md_escape(ref.actor)}"


def render_markdown(report: IncidentReport) -> str:
    e = md_escape
    record = report.version_record
    revocation = report.revocation
    lines = [
        f"# Incident {e(report.incident_id)}: {e(report.model)}@{e(report.version)}",
        "",
        f"- **Opened:** {e(_when(report.opened_at))} by {e(report.actor)} (run {e(report.run_id)})",
        f"- **Source:** {e(report.source)}",
        f"- **Reason:** {e(report.reason)}",
        f"- **Registry:** {e(report.registry)}",
        "",
        "## Revocation",
        "",
    ]
    if revocation.outcome == "failed":
        lines.append(f"**NOT REVOKED**: {e(revocation.error)}")
    else:
        what = "Revoked" if revocation.outcome == "revoked" else "Already revoked"
        event = "" if revocation.event_seq is None else f" (index event \\#{revocation.event_seq})"
        lines.append(f"{what} at {e(_when(revocation.at))} by {e(revocation.by)}{event}: {e(revocation.reason)}")
    lines += ["", "## Version", "", "| field | value |", "|---|---|"]
    for field_name, value in (("status", record.status), ("root digest", record.root_digest),
                              ("plan sha256", record.plan_sha256), ("model.sig sha256", record.signature_sha256),
                              ("AI-BOM sha256", record.aibom_sha256), ("owner", record.owner),
                              ("risk tier", record.risk_tier), ("approver", record.approver),
                              ("source", record.source), ("promoted", _when(record.promoted_at) if record.promoted_at
                                                          else None), ("location", record.url)):
        lines.append(f"| {e(field_name)} | {e(value)} |")
    if report.index_problem:
        lines += ["", f"**Index:** {e(report.index_problem)}"]
    lines += ["", "## Window", ""]
    if report.window is None:
        lines.append("No check of this version has failed; the incident was opened on the reason above.")
    else:
        lines += [f"- **Last check that passed:** {_check(report.window.last_pass)}",
                  f"- **First check that failed:** {_check(report.window.first_fail)} "
                  f"on {e(report.window.target)}"]
        if report.window.last_pass is None:
            lines.append("- No earlier passing check is recorded: the deviation may predate every check.")
    if report.windows:
        lines += ["", "| check | target | last pass | first fail | failures |", "|---|---|---|---|---|"]
        for window in report.windows:
            lines.append(f"| {e(window.check)} | {e(window.target)} | {_check(window.last_pass)} | "
                         f"{_check(window.first_fail)} | {window.failures} |")
    lines += ["", "## What deviated", ""]
    if report.deviations:
        lines += [f"- {_check(ref)} on {e(ref.target)}: {e(ref.summary)}" for ref in report.deviations]
    else:
        lines.append("No failed check is recorded.")
    lines += ["", "## Deployments whose decisions need review", ""]
    if report.deployments:
        lines += ["| pulled | by | host | path | key | last integrity check |", "|---|---|---|---|---|---|"]
        for d in report.deployments:
            last = f"{_check(d.last_check)}" if d.last_check else "never checked"
            lines.append(f"| {e(_when(d.at))} | {e(d.actor)} | {e(d.host)} | {e(d.dest)} | {e(d.key_id)} | {last} |")
    else:
        lines.append("No pull of this version is recorded.")
    if report.evidence is not None:
        lines += ["", "## Evidence given by the trigger (run conf; not a registry record)", "",
                  _code_block(json.dumps(report.evidence, indent=2, sort_keys=True))]
    return "\n".join(lines) + "\n"
