"""Incident response: revoke the version, write the report, tell people.

Revocation is a signed status change in the index (:meth:`Registry.revoke
<airlock.registry.Registry.revoke>`, with the pipeline's Vault key): from then
on ``airlock pull`` and verified loads refuse the version. It is idempotent: a
re-run of the same incident finds its own revocation recorded; a version
another incident or a person revoked first is left as it is ("already
revoked") and the incident carries on with its report and notification.

Notifications go through Airflow notifiers, configured by AIRLOCK_INCIDENT_NOTIFY,
a comma-separated list of channels (default ``webhook:airlock_incident_webhook``):

* ``webhook:<conn id>`` -- POST the report summary as JSON
  (:class:`~airflow.providers.http.notifications.http.HttpNotifier`; the URL is
  the HTTP connection's host, e.g. ``https://hooks.example/airlock``);
* ``slack:<conn id>`` -- a Slack incoming webhook (HTTP connection whose host is
  the webhook URL): POST ``{"text": ...}``;
* ``email:<conn id>:<to>[;<to>...]`` -- the SMTP connection
  (:class:`~airflow.providers.smtp.notifications.smtp.SmtpNotifier`); the sender
  is the connection's ``from_email``.

Every request has a timeout (AIRLOCK_INCIDENT_NOTIFY_TIMEOUT_S, default 10 s).
Notifiers are called through ``notify()``, never ``__call__``: the latter
renders the message as a Jinja template, and a reason or a path is untrusted
text (``{{ conn.airlock_vault.password }}`` must arrive as those characters).
When AIRLOCK_INCIDENT_NOTIFY is unset and the default connection does not
exist, the notification is skipped with a warning; a channel that was
configured and cannot be used fails the task.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from airlock.errors import ConfigurationError
from airlock.incident.report import IncidentError, IncidentReport, Revocation
from airlock.policy import END

if TYPE_CHECKING:
    from airlock.registry import ModelName, Registry
    from airlock.registry.index import ModelState

NOTIFY_ENV = "AIRLOCK_INCIDENT_NOTIFY"
TIMEOUT_ENV = "AIRLOCK_INCIDENT_NOTIFY_TIMEOUT_S"
DEFAULT_WEBHOOK_CONN_ID = "airlock_incident_webhook"
DEFAULT_TIMEOUT_S = 10.0
# Run parameters, as JSON-schema patterns the library re-checks with re.search (END: see airlock.policy).
# The ``source`` of an incident: who opened it (integrity_watch, fingerprint_nightly, manual, ...).
SOURCE_PATTERN = rf"^[a-z][a-z0-9_]{{0,63}}{END}"
VERSION_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._+-]{{0,127}}{END}"
MAX_REASON = 1000
_CONN_ID = re.compile(r"[A-Za-z0-9_.-]{1,250}\Z")
_EMAIL = re.compile(r"[^@\s;,]+@[^@\s;,]+\Z")


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class IncidentRequest:
    """What opened the incident: run conf / params, checked before anything is done with them."""

    model: ModelName
    version: str
    reason: str
    source: str
    evidence: Any = None

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> IncidentRequest:
        from airlock.registry import ModelName, RegistryError
        from airlock.registry.base import check_version

        try:
            model = ModelName.parse(str(params.get("model") or ""))
            version = check_version(str(params.get("version") or ""))
        except RegistryError as exc:
            raise IncidentError(f"incident parameters: {exc}") from None
        reason = str(params.get("reason") or "").strip()
        if not reason or len(reason) > MAX_REASON:
            raise IncidentError(f"incident parameters: reason must be 1 to {MAX_REASON} characters")
        source = str(params.get("source") or "manual")
        if not re.search(SOURCE_PATTERN, source):
            raise IncidentError(f"incident parameters: source {source!r} must match {SOURCE_PATTERN}")
        return cls(model, version, reason, source, params.get("evidence"))

    @property
    def reference(self) -> str:
        return f"{self.model}@{self.version}"

    def revocation_reason(self, incident: str) -> str:
        """The reason recorded in the index: the trigger's, plus which incident (so the two link up)."""
        return f"{self.reason} [incident {incident}, opened by {self.source}]"


# --------------------------------------------------------------------------- revocation


def revoke_for_incident(registry: Registry, request: IncidentRequest, *, incident: str, actor: str) -> Revocation:
    """Revoke the version (signed), or find it revoked already; raises when it cannot be revoked.

    ``registry`` needs a signer (the index checkpoint) and the trust store that
    verifies the chain it extends.
    """
    from airlock.registry import RegistryIndexError, Status

    state = registry.model_state(request.model, verified=True)
    current = state.version(request.version) if state else None
    if current is not None and current.status is Status.REVOKED:
        return revocation_in(state, request.version, actor)
    try:
        event = registry.revoke(request.model, request.version, reason=request.revocation_reason(incident),
                                actor=actor)
    except RegistryIndexError:
        # Revoked by someone else between our read and our write: that is the outcome wanted.
        state = registry.model_state(request.model, verified=True)
        current = state.version(request.version) if state else None
        if current is not None and current.status is Status.REVOKED:
            return revocation_in(state, request.version, actor)
        raise
    return Revocation(outcome="revoked", at=event.at, by=event.actor, reason=event.reason, event_seq=event.seq)


def revocation_in(state: ModelState | None, version: str, actor: str, error: str | None = None) -> Revocation:
    """The version's revocation as the index records it ("revoked" when ``actor`` made it), else "failed"."""
    from airlock.registry import StatusEvent

    events = [e for e in (state.history if state else ()) if isinstance(e, StatusEvent)
              and e.version == version and e.kind == "revoked"]
    if not events:
        return Revocation(outcome="failed", error=error or f"{version} is not revoked in the index")
    event = events[-1]
    return Revocation(outcome="revoked" if event.actor == actor else "already-revoked", at=event.at, by=event.actor,
                      reason=event.reason, event_seq=event.seq)


# --------------------------------------------------------------------------- notification


@dataclass(frozen=True)
class Channel:
    kind: Literal["webhook", "slack", "email"]
    conn_id: str
    to: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        return f"{self.kind} via connection {self.conn_id}" + (f" to {', '.join(self.to)}" if self.to else "")


def notification_channels(env: dict[str, str] | None = None) -> tuple[list[Channel], bool]:
    """The configured channels, and whether they were configured explicitly (False: the default)."""
    env = dict(os.environ if env is None else env)
    raw = env.get(NOTIFY_ENV)
    if raw is None or not raw.strip():
        return [Channel("webhook", DEFAULT_WEBHOOK_CONN_ID)], False
    channels = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        kind, _, rest = item.partition(":")
        conn_id, _, to = rest.partition(":")
        if kind not in ("webhook", "slack", "email") or not _CONN_ID.fullmatch(conn_id):
            raise ConfigurationError(f"{NOTIFY_ENV}: {item!r} is not webhook:<conn id>, slack:<conn id> or "
                                     f"email:<conn id>:<to>[;<to>...]")
        recipients = tuple(r.strip() for r in to.split(";") if r.strip())
        if kind == "email" and (not recipients or not all(_EMAIL.fullmatch(r) for r in recipients)):
            raise ConfigurationError(f"{NOTIFY_ENV}: {item!r} needs recipients: email:<conn id>:a@x[;b@y]")
        if kind != "email" and to:
            raise ConfigurationError(f"{NOTIFY_ENV}: {item!r}: only email channels take recipients")
        channels.append(Channel(kind, conn_id, recipients))  # type: ignore[arg-type]
    return channels, True


def notify_timeout(env: dict[str, str] | None = None) -> float:
    env = dict(os.environ if env is None else env)
    raw = env.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if not 0 < value <= 300:
        raise ConfigurationError(f"{TIMEOUT_ENV}={raw!r} must be above 0 and at most 300 seconds")
    return value


def incident_payload(report: IncidentReport, *, json_url: str | None, markdown_url: str | None) -> dict[str, Any]:
    """The webhook body: enough to act on without opening the report (JSON, so no escaping is needed here)."""
    window = report.window
    return {
        "event": "airlock.incident",
        "incident_id": report.incident_id,
        "model": report.model,
        "version": report.version,
        "reason": report.reason,
        "source": report.source,
        "opened_at": report.opened_at.isoformat(),
        "revocation": report.revocation.model_dump(mode="json"),
        "root_digest": report.version_record.root_digest,
        "window": None if window is None else {
            "target": window.target,
            "last_pass_at": window.last_pass.at.isoformat() if window.last_pass else None,
            "first_fail_at": window.first_fail.at.isoformat() if window.first_fail else None,
        },
        "deviations": [ref.summary for ref in report.deviations][:20],
        "deployments": [{"host": d.host, "dest": d.dest, "pulled_at": d.at.isoformat(), "actor": d.actor}
                        for d in report.deployments],
        "report": {"json": json_url, "markdown": markdown_url},
        "run_id": report.run_id,
    }


def incident_text(report: IncidentReport, *, markdown_url: str | None) -> str:
    """Plain text for chat and mail, every untrusted value escaped for one line each."""
    from airlock.redact import safe_text as s

    revocation = report.revocation
    state = {"revoked": "REVOKED", "already-revoked": "was already revoked",
             "failed": f"NOT REVOKED ({s(revocation.error or '')})"}[revocation.outcome]
    lines = [f"Airlock incident {s(report.incident_id)}: {s(report.model)}@{s(report.version)} {state}",
             f"Reason: {s(report.reason)} (opened by {s(report.source)})"]
    if report.window is not None:
        last = report.window.last_pass.at.isoformat() if report.window.last_pass else "never"
        first = report.window.first_fail.at.isoformat() if report.window.first_fail else "-"
        lines.append(f"Window: last pass {last}, first failure {first} ({s(report.window.target)})")
    lines.append(f"Deployments to review: {len(report.deployments)}")
    lines += [f"  {s(d.host)}:{s(d.dest)} (pulled {d.at.isoformat()} by {s(d.actor)})" for d in report.deployments]
    if markdown_url:
        lines.append(f"Report: {s(markdown_url)}")
    return "\n".join(lines)


def build_notifier(channel: Channel, payload: dict[str, Any], text: str, timeout_s: float):
    """The Airflow notifier for ``channel`` (imports Airflow; call its ``notify(context)``, see the module doc)."""
    options = {"timeout": timeout_s, "check_response": True}
    headers = {"Content-Type": "application/json"}
    if channel.kind == "email":
        from html import escape

        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        subject = text.splitlines()[0]
        return SmtpNotifier(to=list(channel.to), smtp_conn_id=channel.conn_id, subject=subject,
                            html_content=f"<pre>{escape(text)}</pre>")
    from airflow.providers.http.notifications.http import HttpNotifier

    body = payload if channel.kind == "webhook" else {"text": text}
    return HttpNotifier(http_conn_id=channel.conn_id, method="POST", json=body, headers=headers,
                        extra_options=options)


def send_notifications(report: IncidentReport, context: Any, *, json_url: str | None, markdown_url: str | None,
                       env: dict[str, str] | None = None, log=None) -> list[str]:
    """Notify every configured channel; returns what was sent. A configured channel that fails raises."""
    import logging

    log = log or logging.getLogger("airlock.incident")
    channels, explicit = notification_channels(env)
    timeout_s = notify_timeout(env)
    payload = incident_payload(report, json_url=json_url, markdown_url=markdown_url)
    text = incident_text(report, markdown_url=markdown_url)
    sent = []
    for channel in channels:
        if not explicit and not _connection_exists(channel.conn_id):
            log.warning("incident %s: no notification sent: connection %s is not defined (define it, or set %s "
                        "to the channels to use)", report.incident_id, channel.conn_id, NOTIFY_ENV)
            continue
        build_notifier(channel, payload, text, timeout_s).notify(context)
        log.info("incident %s: notified %s", report.incident_id, channel.describe())
        sent.append(channel.describe())
    return sent


def _connection_exists(conn_id: str) -> bool:
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException, AirflowRuntimeError

    try:
        Connection.get(conn_id)
    except (AirflowNotFoundException, AirflowRuntimeError):
        return False
    return True
