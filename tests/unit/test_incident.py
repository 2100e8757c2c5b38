"""Incident response on the filesystem registry: revocation, the report (window, deployments), its Markdown."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from airlock.cli import main
from airlock.errors import ConfigurationError
from airlock.incident import (
    IncidentError,
    IncidentRequest,
    Revocation,
    build_report,
    check_windows,
    incident_id,
    list_reports,
    md_escape,
    render_markdown,
    revoke_for_incident,
    store_report,
)
from airlock.incident.respond import build_notifier, incident_payload, incident_text, notification_channels
from airlock.pull import PullRefused, pull
from airlock.registry import CheckedEvent, FilesystemStore, Registry
from airlock.watch import check_version, record_result
from tests.pull_fixtures import MODEL, promote_signed
from tests.registry_contract import SIGNER, TRUST

OPENED = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
RUN_ID = "manual__2026-06-01T12:00:00+00:00"


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    registry = Registry(FilesystemStore(tmp_path / "registry"), signer=SIGNER, trust=TRUST)
    promote_signed(registry, tmp_path, SIGNER)
    return registry


def _request(**overrides) -> IncidentRequest:
    params = {"model": MODEL, "version": "1", "reason": "weights changed on disk", "source": "integrity_watch",
              "evidence": {"watch_run_id": "scheduled__x"}, **overrides}
    return IncidentRequest.from_params(params)


def _tamper(tmp_path: Path, relative: str = "files/config.json") -> None:
    path = tmp_path / "registry" / "models" / "acme" / "tiny" / "1" / relative
    os.chmod(path, 0o644)
    path.write_text('{"tampered": true}')


def _check(at: int, verdict: str, target: str = "registry", check: str = "integrity") -> CheckedEvent:
    return CheckedEvent(seq=at, model=MODEL, version="1", at=OPENED + timedelta(hours=at), actor="watch",
                        check=check, verdict=verdict, target=target, summary=f"{verdict} #{at}")


# --------------------------------------------------------------------------- the window


def test_the_window_is_the_last_pass_before_the_current_failing_streak() -> None:
    checks = [_check(1, "pass"), _check(2, "fail"), _check(3, "pass"), _check(4, "error"), _check(5, "fail"),
              _check(6, "fail"), _check(7, "pass", target="serving:/srv/m"), _check(8, "fail", check="fingerprint")]
    by_target = {(w.check, w.target): w for w in check_windows(checks)}
    registry_window = by_target[("integrity", "registry")]
    assert (registry_window.last_pass.seq, registry_window.first_fail.seq, registry_window.failures) == (3, 5, 2)
    copy = by_target[("integrity", "serving:/srv/m")]
    assert (copy.last_pass.seq, copy.first_fail) == (7, None)
    fingerprint = by_target[("fingerprint", "registry")]
    assert (fingerprint.last_pass, fingerprint.first_fail.seq) == (None, 8)


# --------------------------------------------------------------------------- revocation


def test_revocation_is_idempotent_and_respects_an_earlier_one(registry: Registry, tmp_path: Path) -> None:
    incident = incident_id(RUN_ID, OPENED)
    first = revoke_for_incident(registry, _request(), incident=incident, actor="airflow:model_incident/r1")
    again = revoke_for_incident(registry, _request(), incident=incident, actor="airflow:model_incident/r1")
    assert first.outcome == again.outcome == "revoked" and first.event_seq == again.event_seq
    assert first.reason == f"weights changed on disk [incident {incident}, opened by integrity_watch]"
    other = revoke_for_incident(registry, _request(reason="second report"), incident=incident_id("other", OPENED),
                                actor="airflow:model_incident/r2")
    assert (other.outcome, other.event_seq, other.by) == ("already-revoked", first.event_seq,
                                                           "airflow:model_incident/r1")
    assert [e.kind for e in registry.model_state(MODEL).history] == ["promoted", "revoked"]
    with pytest.raises(PullRefused, match="is revoked"):  # pulls refuse it from then on
        pull(registry, f"{MODEL}@1", tmp_path / "dest", trust=TRUST)


def test_an_unknown_version_is_not_revoked(registry: Registry) -> None:
    from airlock.registry import VersionNotFoundError

    with pytest.raises(VersionNotFoundError):
        revoke_for_incident(registry, _request(version="7"), incident=incident_id(RUN_ID, OPENED), actor="x")


@pytest.mark.parametrize(("field", "value"), [("model", "acme"), ("model", "acme/tiny\n"), ("version", "../1"),
                                               ("reason", " "), ("reason", "x" * 1001), ("source", "Integrity"),
                                               ("source", "manual\n")])
def test_incident_parameters_are_checked_again(field: str, value: str) -> None:
    with pytest.raises(IncidentError, match=field if field != "model" else "model name"):
        _request(**{field: value})


# --------------------------------------------------------------------------- the report


def test_the_report_has_digests_the_window_and_every_deployment(registry: Registry, tmp_path: Path) -> None:
    for name, host in (("copy-a", "serving-1"), ("copy-b", "serving-2")):
        pull(registry, f"{MODEL}@1", tmp_path / name, trust=TRUST, host=host, actor=f"ops@{host}")
    passed = record_result(registry, check_version(registry, f"{MODEL}@1", TRUST), actor="watch", run_id="w1")
    _tamper(tmp_path)
    failed = record_result(registry, check_version(registry, f"{MODEL}@1", TRUST), actor="watch", run_id="w2")
    record_result(registry, check_version(registry, f"{MODEL}@1", TRUST), actor="watch", run_id="w3")
    incident = incident_id(RUN_ID, OPENED)
    revocation = revoke_for_incident(registry, _request(), incident=incident, actor="airflow:model_incident/r")
    report = build_report(registry, MODEL, "1", incident=incident, opened_at=OPENED, reason="weights changed",
                          source="integrity_watch", actor="airflow:model_incident/r", run_id=RUN_ID,
                          revocation=revocation, evidence={"watch_run_id": "w2"})
    released = registry.released(MODEL, "1")
    record = report.version_record
    assert (record.status, record.root_digest, record.signature_sha256, record.aibom_sha256) == (
        "revoked", released.root_digest, released.object_sha256("model.sig"), released.object_sha256("aibom.cdx.json"))
    assert report.window is not None
    assert (report.window.last_pass.seq, report.window.first_fail.seq) == (passed.seq, failed.seq)
    assert report.window.first_fail.run_id == "w2" and "modified files/config.json" in report.window.first_fail.summary
    assert [d.seq for d in report.deviations] == [failed.seq, failed.seq + 1]
    assert [(d.host, d.dest, d.actor) for d in report.deployments] == [
        ("serving-1", str(tmp_path / "copy-a"), "ops@serving-1"), ("serving-2", str(tmp_path / "copy-b"),
                                                                   "ops@serving-2")]
    assert report.revocation.outcome == "revoked" and report.evidence == {"watch_run_id": "w2"}


def test_reports_are_stored_beside_the_version_never_rewritten(registry: Registry, tmp_path: Path) -> None:
    incident = incident_id(RUN_ID, OPENED)
    report = build_report(registry, MODEL, "1", incident=incident, opened_at=OPENED, reason="manual check",
                          source="manual", actor="alice", run_id=RUN_ID, revocation=Revocation(outcome="failed",
                                                                                               error="vault down"))
    stored, json_key, md_key = store_report(registry.store, report)
    assert (json_key, md_key) == (f"incidents/acme/tiny/1/{incident}.json", f"incidents/acme/tiny/1/{incident}.md")
    # A re-run with other content finds the first report and keeps it (put-if-absent, Markdown from the JSON).
    later = report.model_copy(update={"reason": "rewritten"})
    again, _, _ = store_report(registry.store, later)
    assert again.reason == "manual check" == stored.reason
    assert "rewritten" not in registry.store.read(md_key).decode()
    # The version directory is untouched: the watch still finds exactly the signed objects there.
    assert check_version(registry, f"{MODEL}@1", TRUST).verdict == "pass"
    [(key, listed)] = list_reports(registry.store)
    assert key == json_key and listed.incident_id == incident


def test_a_report_can_be_written_when_the_index_cannot_be_read(registry: Registry, tmp_path: Path) -> None:
    event = tmp_path / "registry" / "index" / "acme" / "tiny" / "events" / "0000000000.json"
    os.chmod(event, 0o644)
    event.write_text("{}")
    report = build_report(registry, MODEL, "1", incident=incident_id(RUN_ID, OPENED), opened_at=OPENED,
                          reason="index damaged", source="integrity_watch", actor="x", run_id=RUN_ID,
                          revocation=Revocation(outcome="failed", error="the index does not verify"))
    assert report.index_problem and "cannot be read" in report.index_problem
    # The version's own records are still read: the plan says what the version is.
    from airlock.registry import ModelName
    from airlock.registry.promotion import load_plan

    plan, _ = load_plan(registry.store, ModelName.parse(MODEL), "1")
    assert report.version_record.root_digest == plan.root_digest and report.version_record.status is None
    assert report.deployments == [] and report.window is None


def test_oversized_evidence_is_refused(registry: Registry) -> None:
    with pytest.raises(IncidentError, match="evidence is"):
        build_report(registry, MODEL, "1", incident=incident_id(RUN_ID, OPENED), opened_at=OPENED, reason="r",
                     source="manual", actor="x", run_id=RUN_ID, revocation=Revocation(outcome="failed"),
                     evidence={"blob": "x" * 70000})


# --------------------------------------------------------------------------- Markdown

HOSTILE = "[click](https://evil.example) <script>alert(1)</script> | cell | `code` **bold** {{ var }}\n# Heading &amp;"


def test_markdown_escapes_every_untrusted_string(registry: Registry, tmp_path: Path) -> None:
    from markdown_it import MarkdownIt

    pull(registry, f"{MODEL}@1", tmp_path / "copy", trust=TRUST, host="evil|host<img src=x>", actor=HOSTILE)
    report = build_report(registry, MODEL, "1", incident=incident_id(RUN_ID, OPENED), opened_at=OPENED,
                          reason=HOSTILE, source="manual", actor=HOSTILE, run_id=RUN_ID,
                          revocation=Revocation(outcome="failed", error=HOSTILE),
                          evidence={"note": "```\n# not a heading\n````"})
    markdown = render_markdown(report)
    html = MarkdownIt("commonmark").enable("table").render(markdown)
    assert "<script" not in html and "<img" not in html and "<a " not in html and "<strong>bold" not in html
    assert "<code>code</code>" not in html
    # Only the report's own headings: the hostile "# Heading" and the evidence's "# not a heading" stay text.
    assert html.count("<h1>") == 1 and "<h1>Heading" not in html and "<h1>not a heading" not in html
    # The deployments table keeps its columns: a "|" in a host name is not a cell boundary.
    assert "<td>evil|host&lt;img src=x&gt;</td>" in html
    assert "{{ var }}" in html  # literal text, never a template


def test_md_escape_keeps_text_and_shows_control_characters() -> None:
    assert md_escape("a_b*c") == "a\\_b\\*c"
    assert md_escape("line\nbreak\x1b[31m") == "line\\\\x0abreak\\\\x1b\\[31m"
    assert md_escape(None) == "-"


# --------------------------------------------------------------------------- notification


def test_notification_channels_are_parsed_strictly() -> None:
    assert notification_channels({}) == ([notification_channels({})[0][0]], False)
    channels, explicit = notification_channels(
        {"AIRLOCK_INCIDENT_NOTIFY": "webhook:hook_a, slack:team_slack, email:smtp_default:sec@x.org;ml@x.org"})
    assert explicit and [(c.kind, c.conn_id, c.to) for c in channels] == [
        ("webhook", "hook_a", ()), ("slack", "team_slack", ()), ("email", "smtp_default", ("sec@x.org", "ml@x.org"))]
    for bad in ("pager:x", "webhook:", "email:smtp", "email:smtp:not-an-address", "webhook:a:b@c.d"):
        with pytest.raises(ConfigurationError, match="AIRLOCK_INCIDENT_NOTIFY"):
            notification_channels({"AIRLOCK_INCIDENT_NOTIFY": bad})


def test_notifiers_carry_the_message_as_data(registry: Registry) -> None:
    report = build_report(registry, MODEL, "1", incident=incident_id(RUN_ID, OPENED), opened_at=OPENED,
                          reason="{{ conn.airlock_vault.password }}", source="manual", actor="x", run_id=RUN_ID,
                          revocation=Revocation(outcome="failed", error="e"))
    payload = incident_payload(report, json_url="file:///r.json", markdown_url="file:///r.md")
    assert json.loads(json.dumps(payload))["reason"] == "{{ conn.airlock_vault.password }}"
    text = incident_text(report, markdown_url="file:///r.md")
    assert "NOT REVOKED" in text and "\n" not in text.splitlines()[0]
    channels, _ = notification_channels({"AIRLOCK_INCIDENT_NOTIFY": "webhook:hook,slack:chat,email:smtp:a@b.c"})
    webhook, slack, email = (build_notifier(c, payload, text, 3.0) for c in channels)
    assert webhook.json == payload and webhook.extra_options["timeout"] == 3.0 and webhook.http_conn_id == "hook"
    assert slack.json == {"text": text}
    assert email.to == ["a@b.c"] and "&lt;" not in email.subject


# --------------------------------------------------------------------------- airlock registry incidents


def test_airlock_registry_incidents_lists_reports_escaped(registry: Registry, tmp_path: Path, capsys) -> None:
    for run_id, reason in ((RUN_ID, "weights changed"), ("manual__2", "evil\x1b[2J name")):
        report = build_report(registry, MODEL, "1", incident=incident_id(run_id, OPENED), opened_at=OPENED,
                              reason=reason, source="manual", actor="x", run_id=run_id,
                              revocation=Revocation(outcome="failed", error="e"))
        store_report(registry.store, report)
    root = str(tmp_path / "registry")
    assert main(["registry", "incidents", "--registry", root]) == 0
    out = capsys.readouterr().out
    assert "weights changed" in out and "\x1b" not in out and "evil\\x1b[2J name" in out
    assert main(["registry", "incidents", MODEL, "--registry", root, "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)["incidents"]
    assert len(listed) == 2 and {i["reason"] for i in listed} == {"weights changed", "evil\x1b[2J name"}
    assert main(["registry", "incidents", "other/model", "--registry", root]) == 0
    assert "no incident reports for other/model" in capsys.readouterr().out
