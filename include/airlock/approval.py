"""Human approval as evidence: read from Airflow's own records, checked by rule, rendered safely.

XCom, task states and run conf can be edited by anyone allowed to operate a
run, so none of them says whether a human approved. The answer comes from
Airflow's human-in-the-loop (HITL) record of this run's ``approve`` task, read
through the REST API with a read-only service user (the ``airlock_airflow``
connection): who responded, which option, when, and the form they saw. Every
try of the task is read, so an answer that was cleared away still counts.

The rules (:func:`check_approval`):

* a ``Reject`` anywhere in the run's history is final for the run;
* when an approval is required, the latest answer must be exactly ``Approve``,
  by a configured reviewer who was assigned to the form (Airflow also enforces
  the assignment when the answer is given), who is not the user who triggered
  the run (four eyes), and -- for a version from another source repository than
  the model's -- one of the model owner's reviewers;
* the form the reviewer answered must carry the binding of what is being signed
  (:func:`approval_binding`): an approval of other content, or of the same files
  under another name, is not an approval of this.

The form itself (:func:`render_form`) escapes every value it shows, so a
source, an owner or a derivation claim cannot restyle it (fake "Scan: allow"
lines, links, remote images) or break out of its line.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from airlock.errors import AirlockError, ConfigurationError

APPROVE_TASK = "approve"
APPROVE = "Approve"
REJECT = "Reject"
AIRFLOW_CONN_ID = "airlock_airflow"
BINDING_PREFIX = "airlock-approval/v1:sha256:"
MAX_LISTED = 50  # findings / changed files listed on the form; the rest are counted


class ApprovalRefused(AirlockError):
    """No valid human approval is on record for what is being signed: a verdict, never retried."""


class ApprovalRecordsUnavailable(AirlockError):
    """Airflow's records could not be read just now (API down, timeout): worth a retry."""


# --------------------------------------------------------------------------- escaping

# Every ASCII punctuation character may be backslash-escaped in CommonMark, and an escaped one is
# always literal text: no emphasis, link, image, autolink (``https\://``, ``www\.``), table cell
# break, raw HTML (``\<``) or entity (``\&``).
_ASCII_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def md(value: object) -> str:
    """``value`` as literal Markdown text on one line: punctuation escaped, line breaks and invisible characters shown.

    Control and formatting characters (newlines, bidi overrides, zero-width
    joiners) become visible ``<U+XXXX>`` markers, so a value can neither start
    a line of its own nor hide what it says.
    """
    out: list[str] = []
    for char in str(value):
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(f"\\<U+{ord(char):04X}\\>")
        elif char in _ASCII_PUNCTUATION:
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def plain(value: object, limit: int = 200) -> str:
    """``value`` for a one-line plain-text field (the form's subject): no control characters, bounded length."""
    text = "".join(
        f"<U+{ord(c):04X}>" if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") else c
        for c in str(value)
    )
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- Airflow's records


@dataclass(frozen=True)
class HitlUser:
    id: str
    name: str

    def __str__(self) -> str:
        return self.id if self.name in ("", self.id) else f"{self.name} ({self.id})"


@dataclass(frozen=True)
class HitlRecord:
    """One try's human-in-the-loop record of the ``approve`` task, as Airflow stores it."""

    # Which try of which task the record belongs to: one record per try, so this names it in Airflow.
    dag_id: str
    run_id: str
    task_id: str
    try_number: int
    subject: str
    body: str
    assigned_users: tuple[HitlUser, ...]
    responded_by: HitlUser | None = None
    responded_at: str | None = None
    chosen_options: tuple[str, ...] = ()

    @property
    def record_id(self) -> str:
        return f"hitl:{self.dag_id}/{self.run_id}/{self.task_id}/try-{self.try_number}"

    @property
    def answered(self) -> bool:
        return self.responded_by is not None and bool(self.chosen_options)

    @classmethod
    def from_api(cls, payload: Mapping[str, Any]) -> HitlRecord:
        """From ``GET .../hitlDetails`` (or ``.../hitlDetails/tries/{n}``); malformed is refused, not guessed."""
        try:
            ti = payload["task_instance"]
            responder = payload.get("responded_by_user")
            return cls(
                dag_id=str(ti["dag_id"]),
                run_id=str(ti["dag_run_id"]),
                task_id=str(ti["task_id"]),
                try_number=int(ti["try_number"]),
                subject=str(payload.get("subject") or ""),
                body=str(payload.get("body") or ""),
                assigned_users=tuple(HitlUser(str(u["id"]), str(u.get("name") or u["id"]))
                                     for u in payload.get("assigned_users") or ()),
                responded_by=HitlUser(str(responder["id"]), str(responder.get("name") or responder["id"]))
                if responder else None,
                responded_at=payload.get("responded_at"),
                chosen_options=tuple(str(o) for o in payload.get("chosen_options") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ApprovalRefused(f"Airflow's HITL record is not in the expected form ({exc!r}); refused") from None


class RunRecords(Protocol):
    """What Airflow itself recorded about one run (never XCom)."""

    def triggering_user(self) -> str | None:
        """The user who triggered the run, from the DagRun record (None: not recorded)."""

    def approval_records(self) -> list[HitlRecord]:
        """The ``approve`` task's HITL record of every try, oldest first (empty: it never asked)."""


@dataclass
class AirflowRunRecords:
    """:class:`RunRecords` through Airflow's REST API (a read-only user suffices)."""

    client: Any  # airlock.airflow_client.AirflowClient
    dag_id: str
    run_id: str
    task_id: str = APPROVE_TASK

    def _get(self, path: str, *, missing_ok: bool = False) -> Any:
        from airlock.airflow_client import AirflowApiError

        try:
            return self.client.request("GET", path)
        except AirflowApiError as exc:
            if missing_ok and exc.status == 404:
                return None
            if exc.status is None or exc.status >= 500 or exc.status == 429:
                raise ApprovalRecordsUnavailable(f"reading Airflow's records of run {self.run_id}: {exc}") from None
            # 401/403: the service user cannot read them; 404 for the run itself: not a run of this Airflow.
            raise ConfigurationError(f"reading Airflow's records of run {self.run_id}: {exc}") from None

    def _run_path(self) -> str:
        from urllib.parse import quote

        return f"/dags/{quote(self.dag_id, safe='')}/dagRuns/{quote(self.run_id, safe='')}"

    def triggering_user(self) -> str | None:
        run = self._get(self._run_path())
        return run.get("triggering_user_name") or None

    def approval_records(self) -> list[HitlRecord]:
        tries = self._get(f"{self._run_path()}/taskInstances/{self.task_id}/tries", missing_ok=True)
        numbers = sorted({int(t["try_number"]) for t in (tries or {}).get("task_instances", [])})
        records = []
        for number in numbers:
            payload = self._get(f"{self._run_path()}/taskInstances/{self.task_id}/-1/hitlDetails/tries/{number}",
                                missing_ok=True)
            if payload is not None:  # a try that never asked (skipped, marked by hand) has no record
                records.append(HitlRecord.from_api(payload))
        return records


def airflow_run_records(dag_id: str, run_id: str, conn_id: str = AIRFLOW_CONN_ID) -> AirflowRunRecords | None:
    """Records of ``run_id`` through the API the ``conn_id`` connection names; None when it is not configured.

    The connection (type http: host, port, schema, login, password) belongs to a
    read-only Airflow user; operators of runs cannot read connections.
    """
    from airlock.airflow_client import client_from_connection

    client = client_from_connection(conn_id)
    return AirflowRunRecords(client, dag_id, run_id) if client is not None else None


# --------------------------------------------------------------------------- the rule


@dataclass(frozen=True)
class ApprovalNeed:
    """Why this ingestion needs a human, and who may give it."""

    reasons: tuple[str, ...]  # empty: the policy lets it in without one
    reviewers: tuple[str, ...]  # user ids allowed to approve (already narrowed to the owner's when owner_review)
    owner_review: bool = False  # a version from another source repository: the model owner's reviewers only
    binding: str = ""  # approval_binding() of what is signed

    @property
    def required(self) -> bool:
        return bool(self.reasons)


@dataclass(frozen=True)
class Approval:
    """A verified approval (or the policy that needed none), as recorded in the index and the BOM."""

    approver: str  # "name (id)", or "policy:<tier>:no-approval-required"
    record_id: str | None = None  # Airflow's HITL record: task instance id and try
    responder_id: str | None = None
    responded_at: str | None = None
    triggered_by: str | None = None
    reasons: tuple[str, ...] = field(default=())

    def to_json_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reasons": list(self.reasons)}

    def stage_parameters(self) -> dict[str, str]:
        """The BOM's ``review`` stage parameters (scalars only)."""
        params = {"approver": self.approver, "hitl_record": self.record_id or "none",
                  "triggered_by": self.triggered_by or "unknown"}
        if self.responded_at:
            params["responded_at"] = str(self.responded_at)
        if self.reasons:
            params["required_because"] = "; ".join(self.reasons)[:1000]
        return params


def approval_binding(facts: Mapping[str, str]) -> str:
    """A digest of what an approval is for (name, version, source, revision, root digest, scan report, claim ...)."""
    canonical = json.dumps(dict(sorted(facts.items())), sort_keys=True, separators=(",", ":"))
    return BINDING_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()


def refuse_if_rejected(records: Iterable[HitlRecord]) -> None:
    """A rejection in any try of the run is final, whatever happened (or was marked) after it."""
    for record in records:
        if record.answered and record.chosen_options != (APPROVE,):
            raise ApprovalRefused(
                f"rejected by {record.responded_by} at {record.responded_at} ({record.record_id}): "
                f"a rejection is final for this run"
            )


def check_approval(
    need: ApprovalNeed, records: Sequence[HitlRecord], *, triggered_by: str | None, policy_label: str
) -> Approval:
    """The approval this run's records hold for ``need``, or :class:`ApprovalRefused` naming the rule broken."""
    refuse_if_rejected(records)
    if not need.required:
        return Approval(approver=policy_label, triggered_by=triggered_by)
    why = "; ".join(need.reasons)
    answered = [r for r in records if r.answered]
    if not answered:
        raise ApprovalRefused(f"a human approval is required ({why}) and Airflow holds none for this run's "
                              f"{APPROVE_TASK} task")
    latest = answered[-1]
    who = latest.responded_by
    assert who is not None
    if not need.reviewers:
        raise ApprovalRefused("no reviewers are configured (AIRLOCK_REVIEWERS): nothing needing approval is signed")
    if who.id not in need.reviewers:
        group = "the model owner's reviewers" if need.owner_review else "the configured reviewers"
        raise ApprovalRefused(f"approved by {who}, who is not one of {group} ({', '.join(need.reviewers)}); "
                              f"{latest.record_id}")
    if triggered_by is None:
        raise ApprovalRefused("Airflow does not record who triggered this run, so four eyes cannot be checked")
    if triggered_by in (who.id, who.name):
        raise ApprovalRefused(f"self-approval: {who} triggered this run and approved it ({latest.record_id}); "
                              f"four eyes require another reviewer")
    if not latest.assigned_users or who.id not in {u.id for u in latest.assigned_users}:
        raise ApprovalRefused(f"approved by {who}, who was not assigned to the form ({latest.record_id})")
    if not need.binding or latest.body.rsplit("\n", 1)[-1] != binding_line(need.binding):
        raise ApprovalRefused(f"the form {who} approved ({latest.record_id}) was not for this content and name "
                              f"(expected binding {need.binding})")
    return Approval(approver=str(who), record_id=latest.record_id, responder_id=who.id,
                    responded_at=str(latest.responded_at), triggered_by=triggered_by, reasons=need.reasons)


def assigned_users(need: ApprovalNeed, triggered_by: str | None) -> list[dict[str, str]]:
    """HITL ``assigned_users`` for the form: the eligible reviewers minus whoever triggered the run.

    Never empty: Airflow lets *anyone* with access answer a form without assignees.
    """
    eligible = [u for u in need.reviewers if u != triggered_by]
    if not eligible:
        configured = ", ".join(need.reviewers) or "none"
        raise ApprovalRefused(f"no reviewer other than the user who triggered the run can approve it "
                              f"(reviewers: {configured})")
    return [{"id": u, "name": u} for u in eligible]


# --------------------------------------------------------------------------- the form


@dataclass(frozen=True)
class FileChange:
    path: str
    change: str  # added | removed | changed


@dataclass(frozen=True)
class FormFacts:
    """Everything the reviewer sees, each from an authoritative record (quarantine, registry, Airflow)."""

    registry_name: str
    version: str
    own_name: str | None  # the source's own ORG/NAME (None: a drop without one)
    source: str
    revision: str
    owner: str
    tier: str
    triggered_by: str | None
    root_digest: str
    files: int
    total_bytes: int
    scan_verdict: str
    scan_report_sha256: str
    findings: tuple[tuple[str, str, str, str], ...]  # (action, rule, file, reason) of flagged/blocking findings
    reasons: tuple[str, ...]
    binding: str
    model_owner: str | None = None  # the existing model's record
    model_min_tier: str | None = None
    model_source: str | None = None
    derivation: tuple[str, ...] = ()  # lines describing the claim; empty: none
    previous_version: str | None = None
    changes: tuple[FileChange, ...] = ()
    evaluation: tuple[str, ...] = ()  # verdict, then metrics against the latest approved version; empty: none


def render_form(facts: FormFacts) -> tuple[str, str]:
    """The approval form's subject (plain text) and body (Markdown); every value escaped."""
    subject = plain(f"Approve {facts.registry_name}@{facts.version} from {facts.source} (tier {facts.tier})?")
    lines: list[str] = [f"### {md(facts.registry_name)}@{md(facts.version)}", ""]
    if facts.own_name != facts.registry_name:
        own = f"its own name is **{md(facts.own_name)}**" if facts.own_name else "it has no ORG/NAME of its own"
        lines += [f"> **⚠ Registry name differs from the source:** {own}; approving publishes it as "
                  f"**{md(facts.registry_name)}**.", ""]
    if facts.model_source is not None and facts.model_source != facts.source:
        lines += [f"> **⚠ Another source repository:** {md(facts.registry_name)} comes from "
                  f"{md(facts.model_source)} (owner {md(facts.model_owner)}); only that owner's reviewers may "
                  f"approve this version.", ""]
    rows = [
        ("Source", f"{md(facts.source)} at revision {md(facts.revision)}"),
        ("Registry name", md(facts.registry_name)),
        ("Owner", md(facts.owner) + (f" (model record: {md(facts.model_owner)})" if facts.model_owner else "")),
        ("Risk tier", md(facts.tier) + (f" (model minimum: {md(facts.model_min_tier)})"
                                          if facts.model_min_tier else "")),
        ("Triggered by", md(facts.triggered_by or "unknown")),
        ("Root digest", f"sha256:{md(facts.root_digest)}"),
        ("Files", f"{facts.files} ({facts.total_bytes} bytes)"),
        ("Scan", f"{md(facts.scan_verdict)}, {len(facts.findings)} flagged finding(s); report "
                 f"sha256:{md(facts.scan_report_sha256)}"),
    ]
    lines += ["| | |", "|---|---|"] + [f"| {name} | {value} |" for name, value in rows] + [""]
    lines += ["**Approval is required because:**", ""] + [f"- {md(r)}" for r in facts.reasons] + [""]
    if facts.findings:
        lines += ["**Scan findings:**", ""]
        lines += [f"- {md(action)} {md(rule)} in {md(path)}: {md(reason)}"
                  for action, rule, path, reason in facts.findings[:MAX_LISTED]]
        if len(facts.findings) > MAX_LISTED:
            lines.append(f"- and {len(facts.findings) - MAX_LISTED} more (see the scan report)")
        lines.append("")
    if facts.evaluation:
        lines += ["**Evaluation (lm-eval, this tier's suite):**", ""] + [f"- {md(line)}" for line in facts.evaluation]
        lines.append("")
    if facts.derivation:
        lines += ["**Derivation claim (verified against the registry and this model's digest):**", ""]
        lines += [f"- {md(line)}" for line in facts.derivation] + [""]
    if facts.previous_version:
        lines += [f"**Files compared with {md(facts.registry_name)}@{md(facts.previous_version)} "
                  f"(latest approved):** " + (f"{len(facts.changes)} changed" if facts.changes else "identical"), ""]
        lines += [f"- {md(c.change)}: {md(c.path)}" for c in facts.changes[:MAX_LISTED]]
        if len(facts.changes) > MAX_LISTED:
            lines.append(f"- and {len(facts.changes) - MAX_LISTED} more")
        lines.append("")
    elif facts.model_owner is None:
        lines += [f"**New model:** {md(facts.registry_name)} is not in the registry yet; owner and minimum tier "
                  f"are fixed by this release.", ""]
    lines += ["Approving lets Airlock sign this model and promote it; rejecting fails the run for good.", "",
              binding_line(facts.binding)]
    return subject, "\n".join(lines)


def binding_line(binding: str) -> str:
    """The form's last line: values cannot add lines (they are escaped), so only the form itself writes it."""
    return f"Binding: {md(binding)}"


def file_changes(previous: Mapping[str, str], current: Mapping[str, str]) -> tuple[FileChange, ...]:
    """Per-path differences between two ``{path: sha256}`` listings, sorted by path."""
    changes = []
    for path in sorted(previous.keys() | current.keys()):
        if path not in previous:
            changes.append(FileChange(path, "added"))
        elif path not in current:
            changes.append(FileChange(path, "removed"))
        elif previous[path] != current[path]:
            changes.append(FileChange(path, "changed"))
    return tuple(changes)


