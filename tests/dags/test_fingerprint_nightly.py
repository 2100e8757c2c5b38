"""`model_fingerprint_nightly` end to end with dag.test(): a filesystem registry of really signed versions of a
tiny language model, one of which no longer behaves like its baseline.

- acme/tiny-lm@1: the model and its own baseline (must match);
- acme/tiny-lm@2: a perturbed copy (1e-3 relative noise on one matrix), properly signed, carrying the
  *unperturbed* model's baseline: every signature verifies, the behaviour does not (must be flagged and
  raise an incident);
- acme/tiny-lm@3: revoked (never checked); acme/tiny-lm@4: no baseline (listed as not covered).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fingerprint_nightly_fixtures import nightly_env, promote_version
from tests.registry_contract import SIGNER, TRUST

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MODEL = "acme/tiny-lm"


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """The model, a perturbed copy, and the baseline reports the ingest stage writes for the model."""
    import torch
    from airlock.fingerprint.stage import baseline_quarantine, report_paths

    from tests.fingerprint_nightly_fixtures import scanned_area
    from tests.unit.fingerprint_lm import build_tiny_lm, perturbed_copy

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("nightly-lm")
    base = build_tiny_lm(root / "base")
    perturbed = perturbed_copy(base, root / "perturbed", tensor="transformer.h.0.attn.c_attn.weight",
                               relative_sigma=1e-3)
    area = scanned_area(root / "quarantine", base)
    baseline_quarantine(area, "medium", device="cpu", runs=((16, 1), (4, 1)))
    reports = {path.name: path.read_bytes() for path in report_paths(area)}
    assert sorted(reports) == ["fingerprint-baseline.json", "fingerprint-calibration.json"]
    return {"base": base, "perturbed": perturbed, "reports": reports}


def _task_states(dag_run) -> list[tuple[str, int, str]]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_run.dag_id,
                                                          TaskInstance.run_id == dag_run.run_id))
        return sorted((ti.task_id, ti.map_index, str(getattr(ti.state, "value", ti.state))) for ti in rows)


def _xcom(dag_run, task_id: str, map_index: int = -1):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id,
                                                 map_indexes=map_index, key="return_value")).first()
        return XComModel.deserialize_value(row)


def _check_events(dag_run) -> list[tuple[str, dict]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(AssetModel.uri, AssetEvent.extra)
                               .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
                               .where(AssetEvent.source_dag_id == dag_run.dag_id,
                                      AssetEvent.source_run_id == dag_run.run_id))
        return sorted(((uri, extra) for uri, extra in rows), key=lambda e: e[1]["version"])


def _incident_runs() -> list[dict]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return [run.conf for run in session.scalars(select(DagRun).where(DagRun.dag_id == "model_incident")
                                                    .order_by(DagRun.id))]  # oldest first: the slice below


def test_nightly_flags_the_version_whose_behaviour_left_its_baseline(airflow_db, lm, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airlock.registry import open_registry

    root = tmp_path / "registry"
    paths = nightly_env(monkeypatch, tmp_path, root, TRUST)
    registry = open_registry(root, signer=SIGNER, trust=TRUST)
    for version, files, reports in [("1", lm["base"], lm["reports"]), ("2", lm["perturbed"], lm["reports"]),
                                    ("3", lm["base"], lm["reports"]), ("4", lm["base"], None)]:
        promote_version(registry, tmp_path, SIGNER, model=MODEL, version=version, model_dir=files, reports=reports)
    registry.revoke(MODEL, "3", reason="superseded", actor="test")
    incidents_before = len(_incident_runs())

    dag = DagBag(dag_folder=str(REPO / "dags" / "model_fingerprint_nightly.py")).dags["model_fingerprint_nightly"]
    dag_run = dag.test()

    states = _task_states(dag_run)
    assert dag_run.state == "success", states
    assert ("check_version", 0, "success") in states and ("check_version", 1, "success") in states
    assert ("raise_incident", 0, "success") in states and ("summary", -1, "success") in states
    assert not [s for s in states if s[2] == "failed"], states
    planned = _xcom(dag_run, "plan")
    assert [(c["version"], c["device_type"]) for c in planned["cpu"]] == [("1", "cpu"), ("2", "cpu")]
    assert planned["revoked"] == [f"{MODEL}@3"] and planned["uncovered"] == [f"{MODEL}@4: no fingerprint baseline"]

    results = {r["version"]: r for r in (_xcom(dag_run, "check_version", i) for i in (0, 1))}
    assert results["1"]["verdict"] == "pass" and results["1"]["over_threshold"] == []
    assert results["2"]["verdict"] == "fail" and results["2"]["over_threshold"], results["2"]
    assert results["2"]["max_distance"] > results["2"]["threshold"] > 0
    assert "the baseline was recorded for files" in results["2"]["reason"]
    assert "baseline was recorded" not in results["1"]["reason"]

    # The verdicts are in the registry's check history, pointing at reports kept on this host.
    state = open_registry().model_state(MODEL)
    recorded = {v: [(c.verdict, c.run_id) for c in state.checks(v, "fingerprint")] for v in "1234"}
    assert recorded == {"1": [("pass", dag_run.run_id)], "2": [("fail", dag_run.run_id)], "3": [], "4": []}
    failed = state.checks("2", "fingerprint")[0]
    report_path = paths["checks"] / failed.report_key
    report = json.loads(report_path.read_text())
    assert report["verdict"] == "fail" and report["details"]["root_digest"] == state.version("2").root_digest
    assert (report_path.parent / report["files"]["docs"]).is_file()
    assert json.loads((report_path.parent / "comparison.json").read_text())["verdict"] == "deviation"
    assert not (root / "models" / "acme" / "tiny-lm" / "2" / "checks").exists()

    # Lineage: one event per check on the registry model's Asset (checks alias), verdict and digests in extra.
    events = _check_events(dag_run)
    assert [(uri, extra["version"], extra["verdict"]) for uri, extra in events] == [
        (f"airlock://registry/{MODEL}", "1", "pass"), (f"airlock://registry/{MODEL}", "2", "fail")]
    assert {extra["kind"] for _, extra in events} == {"checked"} and all(e["run_id"] == dag_run.run_id for _, e in events)
    assert events[1][1]["root_digest"] == state.version("2").root_digest and events[1][1]["signature_sha256"]
    assert events[1][1]["report_sha256"] == failed.report_sha256 and events[1][1]["baseline_sha256"]

    # One incident for the deviating version, with the distances as evidence.
    incidents = _incident_runs()[incidents_before:]
    assert [(c["model"], c["version"], c["source"]) for c in incidents] == [(MODEL, "2", "fingerprint_nightly")]
    evidence = incidents[0]["evidence"]["checks"][0]
    assert evidence["report_sha256"] == failed.report_sha256 and evidence["over_threshold"]
