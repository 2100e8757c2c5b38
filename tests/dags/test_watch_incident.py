"""model_integrity_watch and model_incident end to end with dag.test(): one intact and one tampered version.

The watch records pass for the intact version and fail for the tampered one, and
triggers model_incident for the tampered one only; model_incident (its signing
registry replaced through the DAG's documented seam, `_registry`, by one signed
with a local test key) revokes it, writes the report beside it and posts the
notification to a webhook receiver this test runs on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from airlock.registry import FilesystemStore, Registry, Status
from tests.pull_fixtures import MODEL, promote_signed
from tests.registry_contract import SIGNER, TRUST

REPO = Path(__file__).resolve().parents[2]
# A file name an attacker chose: it reaches the incident's conf and report as text, never as a template.
PLANTED = "{{ 7 * 7 }}.py"


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
        length = int(self.headers.get("Content-Length", "0"))
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture()
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict]]:
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    monkeypatch.setenv("AIRFLOW_CONN_AIRLOCK_INCIDENT_WEBHOOK", json.dumps(
        {"conn_type": "http", "host": f"http://127.0.0.1:{server.server_port}/hooks/airlock"}))
    monkeypatch.delenv("AIRLOCK_INCIDENT_NOTIFY", raising=False)
    try:
        yield _Receiver.received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture()
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    registry = Registry(FilesystemStore(tmp_path / "registry"), signer=SIGNER, trust=TRUST)
    promote_signed(registry, tmp_path, SIGNER, version="1")
    promote_signed(registry, tmp_path, SIGNER, version="2")
    files = tmp_path / "registry" / "models" / "acme" / "tiny" / "2" / "files"
    os.chmod(files / "config.json", 0o644)
    (files / "config.json").write_text('{"model_type": "tampered"}')
    (files / PLANTED).write_text("import os")
    trust_file = tmp_path / "trust.pem"
    trust_file.write_text(TRUST.dumps())
    monkeypatch.setenv("AIRLOCK_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("AIRLOCK_TRUST_STORE", str(trust_file))
    monkeypatch.delenv("AIRLOCK_TRUST_STORE_SHA256", raising=False)
    monkeypatch.setenv("AIRLOCK_HOST_STATE", str(tmp_path / "host-state"))
    monkeypatch.delenv("AIRLOCK_WATCH_PATHS", raising=False)
    return registry


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags" / f"{dag_id}.py")).dags[dag_id]


def _states(dag_run) -> dict[str, list[str]]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    states: dict[str, list[str]] = {}
    with create_session() as session:
        for ti in session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_run.dag_id,
                                                             TaskInstance.run_id == dag_run.run_id)):
            states.setdefault(ti.task_id, []).append(str(getattr(ti.state, "value", ti.state)))
    return {task: sorted(values) for task, values in states.items()}


def _triggered_incidents(watch_run_id: str) -> list[tuple[str, dict]]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == "model_incident",
                                                    DagRun.run_id.like(f"integrity_watch__{watch_run_id}__%")))
        return [(run.run_id, dict(run.conf)) for run in runs]


def _asset_events(dag_run) -> list[tuple[str, dict]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(AssetModel.uri, AssetEvent.extra)
                               .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
                               .where(AssetEvent.source_dag_id == dag_run.dag_id,
                                      AssetEvent.source_run_id == dag_run.run_id))
        return [(uri, extra) for uri, extra in rows]


def test_the_watch_finds_the_tampered_version_and_the_incident_revokes_it(
    airflow_db, registry: Registry, receiver: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch_run = _dag("model_integrity_watch").test()
    states = _states(watch_run)
    assert states["plan"] == ["success"] and states["check"] == ["success", "success"], states
    assert states["trigger_incident"] == ["success"] and states["summary"] == ["failed"], states
    assert watch_run.state == "failed"  # a deviation shows in the grid

    checks = registry.model_state(MODEL).checks(check="integrity")  # mapped checks run in any order
    assert sorted((c.version, c.verdict, c.target, c.run_id) for c in checks) == [
        ("1", "pass", "registry", watch_run.run_id), ("2", "fail", "registry", watch_run.run_id)]
    [failed] = [c for c in checks if c.verdict == "fail"]
    assert "modified files/config.json" in failed.summary and PLANTED in failed.summary

    # Lineage: each check is an event on the registry model's Asset, with the version's digests and the run.
    watch_events = sorted(_asset_events(watch_run), key=lambda e: e[1]["version"])
    assert [(uri, e["kind"], e["version"], e["verdict"], e["check"]) for uri, e in watch_events] == [
        (f"airlock://registry/{MODEL}", "checked", "1", "pass", "integrity"),
        (f"airlock://registry/{MODEL}", "checked", "2", "fail", "integrity")]
    for _, extra in watch_events:
        assert extra["run_id"] == watch_run.run_id and extra["signature_sha256"] and extra["aibom_sha256"]
        assert extra["root_digest"] == registry.model_state(MODEL).version(extra["version"]).root_digest
    assert watch_events[1][1]["modified"] == 1

    [(triggered_id, conf)] = _triggered_incidents(watch_run.run_id)  # the tampered version only
    assert triggered_id == f"integrity_watch__{watch_run.run_id}__acme~tiny~2"
    assert (conf["model"], conf["version"], conf["source"]) == (MODEL, "2", "integrity_watch")
    assert PLANTED in conf["reason"] and "49" not in conf["reason"]  # data, not a template
    assert conf["evidence"]["checks"][0]["seq"] == failed.seq

    incident_dag = _dag("model_incident")
    signing = Registry(FilesystemStore(tmp_path / "registry"), signer=SIGNER, trust=TRUST)
    monkeypatch.setitem(incident_dag.get_task("revoke").python_callable.__globals__, "_registry", lambda: signing)
    incident_run = incident_dag.test(run_conf=conf)
    assert incident_run.state == "success", _states(incident_run)

    state = registry.model_state(MODEL, verified=True)
    assert state.version("2").status is Status.REVOKED and state.version("1").status is Status.APPROVED
    [(uri, revoked)] = _asset_events(incident_run)
    assert uri == f"airlock://registry/{MODEL}" and (revoked["kind"], revoked["version"]) == ("revoked", "2")
    assert revoked["run_id"] == incident_run.run_id and revoked["root_digest"] == state.version("2").root_digest
    assert revoked["incident_source"] == "integrity_watch" and PLANTED in revoked["reason"]
    assert state.version("2").updated_by == f"airflow:model_incident/{incident_run.run_id}"

    [json_key] = [k for k in registry.store.list_keys("incidents/acme/tiny/2/") if k.endswith(".json")]
    report = json.loads(registry.store.read(json_key))
    assert report["revocation"]["outcome"] == "revoked" and report["window"]["first_fail"]["seq"] == failed.seq
    assert report["window"]["last_pass"] is None  # the first watch already found it changed
    markdown = registry.store.read(json_key.replace(".json", ".md")).decode()
    assert "\\{\\{ 7 \\* 7 \\}\\}\\.py" in markdown

    [posted] = receiver
    assert (posted["event"], posted["model"], posted["version"]) == ("airlock.incident", MODEL, "2")
    assert posted["revocation"]["outcome"] == "revoked" and posted["report"]["json"].endswith(json_key)

    # Idempotent: the same incident run again changes nothing in the index and keeps its report.
    events = len(registry.model_state(MODEL).history)
    assert incident_dag.test(run_conf=conf).state == "success"
    assert len(registry.model_state(MODEL).history) == events

    # The next watch run leaves the revoked version alone, finds the rest intact, and succeeds.
    next_run = _dag("model_integrity_watch").test()
    assert next_run.state == "success", _states(next_run)
    assert _states(next_run)["trigger_incident"] == ["skipped"]
    latest = [c for c in registry.model_state(MODEL).checks() if c.run_id == next_run.run_id]
    assert [(c.version, c.verdict) for c in latest] == [("1", "pass")]
