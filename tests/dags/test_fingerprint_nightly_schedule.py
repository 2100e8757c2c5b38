"""`model_fingerprint_nightly`'s wiring: daily and on registry-model releases (never quarantine events), routing, bounded parallelism, and the
scope an Asset-triggered run plans (fast: no model is run)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.fingerprint_nightly_fixtures import nightly_env
from tests.registry_contract import SIGNER, TRUST

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "model_fingerprint_nightly.py"))
    assert bag.import_errors == {}
    return bag.dags["model_fingerprint_nightly"]


def test_runs_daily_and_on_every_release_but_never_on_a_quarantine_event(dag) -> None:
    from airflow.sdk import AssetAlias, AssetOrTimeSchedule, CronTriggerTimetable
    from airlock.lineage import RELEASE_ALIAS, SOURCE_ALIAS

    timetable = dag.timetable
    assert isinstance(timetable, AssetOrTimeSchedule)
    assert isinstance(timetable.timetable, CronTriggerTimetable) and timetable.timetable.expression == "0 2 * * *"
    assert timetable.asset_condition == AssetAlias(RELEASE_ALIAS)
    assert dag.max_active_runs == 1 and not dag.catchup
    # The ingest DAG records quarantine events through another alias than its releases.
    from airflow.dag_processing.dagbag import DagBag

    ingest = DagBag(dag_folder=str(REPO / "dags" / "model_ingest.py")).dags["model_ingest"]
    assert [o.name for o in ingest.get_task("promote").outlets] == [RELEASE_ALIAS]
    assert [o.name for o in ingest.get_task("hash_manifest").outlets] == [SOURCE_ALIAS] != [RELEASE_ALIAS]


def test_checks_are_routed_by_runtime_class_with_bounded_parallelism(dag) -> None:
    from airlock.fingerprint.nightly import CHECK_ALIAS

    cpu, gpu, endpoint = (dag.get_task(t) for t in ("check_version", "check_version_gpu", "check_endpoint"))
    assert gpu.queue == "gpu" and cpu.queue != "gpu"
    for task in (cpu, gpu, endpoint):
        assert task.max_active_tis_per_dagrun == 2 and task.pool == "default_pool" and task.pool_slots == 1
        assert [o.name for o in task.outlets] == [CHECK_ALIAS]  # never the model alias the DAG is scheduled on
    assert dag.get_task("incidents").trigger_rule == "all_done"
    assert dag.get_task("raise_incident").upstream_task_ids == {"incidents"}
    assert {"check_version", "check_version_gpu", "check_endpoint"} <= dag.get_task("incidents").upstream_task_ids


@pytest.mark.parametrize(("run_type", "scope", "expected"), [
    ("asset_triggered", "auto", ["2"]), ("scheduled", "auto", ["1", "2"]), ("manual", "auto", ["1", "2"]),
    ("asset_triggered", "all", ["1", "2"]), ("scheduled", "new", ["2"]),
])
def test_an_asset_triggered_run_plans_only_what_was_never_checked(dag, tmp_path: Path, monkeypatch, run_type: str,
                                                                    scope: str, expected: list[str]) -> None:
    from airflow.utils.types import DagRunType
    from airlock.fingerprint.nightly import target_of
    from airlock.registry import open_registry

    from tests.fingerprint_nightly_fixtures import (
        OLD_CPU,
        promote_version,
        synthetic_fingerprint,
        synthetic_reports,
    )
    from tests.signing_fixtures import make_model

    root = tmp_path / "registry"
    nightly_env(monkeypatch, tmp_path, root, TRUST)
    endpoints = tmp_path / "endpoints.json"
    endpoints.write_text('{"endpoints": []}')
    monkeypatch.setenv("AIRLOCK_FINGERPRINT_ENDPOINTS", str(endpoints))
    registry = open_registry(root, signer=SIGNER, trust=TRUST)
    for version in ("1", "2"):
        promote_version(registry, tmp_path, SIGNER, model="acme/tiny", version=version,
                        model_dir=make_model(tmp_path / f"m{version}", with_safetensors=False),
                        reports=synthetic_reports(synthetic_fingerprint()))
    registry.record_check("acme/tiny", "1", check="fingerprint", verdict="pass", target=target_of(OLD_CPU.id),
                          summary="ok", actor="test")
    plan = dag.get_task("plan").python_callable
    planned = plan(params={"scope": scope}, dag_run=SimpleNamespace(run_type=DagRunType(run_type)))
    assert [c["version"] for c in planned["cpu"]] == expected


CONF = {"model": "acme/tiny", "version": "2", "source": "fingerprint_nightly",
        "reason": "fingerprint deviation: runtime:cpu: deviation: 3 prompt(s) above threshold 1e-05, worst p7 "
                  "|Δ logprob| 0.031", "evidence": {"checks": [{"max_distance": 0.031, "over_threshold": ["p7"]}]}}


def _raise_incident(dag, ti):
    from airflow.sdk.execution_time.context import set_current_context

    with set_current_context({"ti": ti}):
        dag.get_task("raise_incident").python_callable(conf=CONF, trigger_run_id="fingerprint__x", ti=ti)


def test_a_deviation_triggers_model_incident_with_its_conf(dag) -> None:
    from airflow.sdk.exceptions import DagRunTriggerException

    ti = SimpleNamespace(get_dag=lambda dag_id: SimpleNamespace(dag_id=dag_id))
    with pytest.raises(DagRunTriggerException) as raised:
        _raise_incident(dag, ti)
    trigger = raised.value
    assert (trigger.trigger_dag_id, trigger.dag_run_id, trigger.conf) == ("model_incident", "fingerprint__x", CONF)
    assert trigger.skip_when_already_exists and not trigger.wait_for_completion


def _api_error(status: int):
    from airflow.sdk.exceptions import AirflowRuntimeError, ErrorType
    from airflow.sdk.execution_time.comms import ErrorResponse

    def get_dag(dag_id: str):
        raise AirflowRuntimeError(ErrorResponse(error=ErrorType.API_SERVER_ERROR,
                                                detail={"status_code": status, "message": dag_id}))
    return SimpleNamespace(get_dag=get_dag)


def test_without_model_incident_the_task_fails_with_the_distances(dag) -> None:
    from airflow.sdk.exceptions import AirflowFailException, AirflowRuntimeError

    with pytest.raises(AirflowFailException, match=r"no DAG model_incident .*worst p7 \|Δ logprob\| 0.031.*p7"):
        _raise_incident(dag, _api_error(404))
    with pytest.raises(AirflowRuntimeError):  # an API server that could not answer is retried, not final
        _raise_incident(dag, _api_error(503))
