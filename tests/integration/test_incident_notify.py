"""The incident notifiers against a real HTTP receiver this test runs on 127.0.0.1 (bounded in time)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from airlock.incident import Revocation, build_report, incident_id, send_notifications
from airlock.registry import FilesystemStore, Registry
from tests.pull_fixtures import MODEL, promote_signed
from tests.registry_contract import SIGNER, TRUST

OPENED = datetime(2026, 6, 1, 12, tzinfo=UTC)


class _Receiver(BaseHTTPRequestHandler):
    status = 204
    delay_s = 0.0
    received: list[tuple[str, str, dict]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).received.append((self.path, self.headers.get("Content-Type", ""), json.loads(body)))
        time.sleep(type(self).delay_s)
        try:
            self.send_response(type(self).status)
            self.end_headers()
        except OSError:
            pass  # the client gave up (timeout)

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture()
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Receiver]]:
    _Receiver.status, _Receiver.delay_s, _Receiver.received = 204, 0.0, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("AIRFLOW_CONN_AIRLOCK_TEST_HOOK", json.dumps({"conn_type": "http", "host": f"{base}/hook"}))
    monkeypatch.setenv("AIRFLOW_CONN_AIRLOCK_TEST_SLACK", json.dumps({"conn_type": "http", "host": f"{base}/slack"}))
    try:
        yield _Receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture()
def report(tmp_path: Path):
    registry = Registry(FilesystemStore(tmp_path / "registry"), signer=SIGNER, trust=TRUST)
    promote_signed(registry, tmp_path, SIGNER)
    return build_report(registry, MODEL, "1", incident=incident_id("manual__1", OPENED), opened_at=OPENED,
                        reason="weights changed {{ conn.airlock_vault.password }}", source="manual", actor="alice",
                        run_id="manual__1", revocation=Revocation(outcome="revoked", at=OPENED, by="alice",
                                                                  reason="weights changed", event_seq=1))


ENV = {"AIRLOCK_INCIDENT_NOTIFY": "webhook:airlock_test_hook,slack:airlock_test_slack",
       "AIRLOCK_INCIDENT_NOTIFY_TIMEOUT_S": "2"}


def test_the_webhook_and_slack_notifiers_post_the_incident(receiver, report) -> None:
    sent = send_notifications(report, {}, json_url="file:///r.json", markdown_url="file:///r.md", env=ENV)
    assert sent == ["webhook via connection airlock_test_hook", "slack via connection airlock_test_slack"]
    (hook_path, hook_type, hook), (slack_path, _, slack) = receiver.received
    assert (hook_path, hook_type) == ("/hook", "application/json")
    assert (hook["event"], hook["model"], hook["version"], hook["incident_id"]) == (
        "airlock.incident", MODEL, "1", report.incident_id)
    assert hook["revocation"]["outcome"] == "revoked" and hook["report"]["markdown"] == "file:///r.md"
    assert hook["reason"] == "weights changed {{ conn.airlock_vault.password }}"  # data, never a template
    assert slack_path == "/slack" and slack["text"].startswith(f"Airlock incident {report.incident_id}: acme/tiny@1")


def test_a_receiver_that_refuses_fails_the_notification(receiver, report) -> None:
    receiver.status = 500
    with pytest.raises(Exception, match="500"):
        send_notifications(report, {}, json_url=None, markdown_url=None, env=ENV)


def test_a_receiver_that_never_answers_is_given_up_on_within_the_timeout(receiver, report) -> None:
    receiver.delay_s = 8.0
    started = time.monotonic()
    with pytest.raises(Exception, match="(?i)timed? ?out"):
        send_notifications(report, {}, json_url=None, markdown_url=None,
                           env={"AIRLOCK_INCIDENT_NOTIFY": "webhook:airlock_test_hook",
                                "AIRLOCK_INCIDENT_NOTIFY_TIMEOUT_S": "1"})
    assert time.monotonic() - started < 6


def test_without_configuration_or_the_default_connection_nothing_is_sent(receiver, report,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         caplog) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_AIRLOCK_INCIDENT_WEBHOOK", raising=False)
    assert send_notifications(report, {}, json_url=None, markdown_url=None, env={}) == []
    assert "connection airlock_incident_webhook is not defined" in caplog.text and receiver.received == []
