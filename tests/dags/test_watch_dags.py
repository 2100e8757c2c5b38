"""model_integrity_watch and model_incident: wiring, parameters, and parse time."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_IDS = ("model_integrity_watch", "model_incident")


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags" / f"{dag_id}.py")).dags[dag_id]


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_each_dag_parses_in_under_a_second(dag_id: str) -> None:
    from airflow.dag_processing.dagbag import DagBag

    DagBag(dag_folder=str(REPO / "dags" / "model_ingest.py"))  # Airflow itself imported and warm
    started = time.perf_counter()
    bag = DagBag(dag_folder=str(REPO / "dags" / f"{dag_id}.py"))
    elapsed = time.perf_counter() - started
    assert bag.import_errors == {} and dag_id in bag.dag_ids
    assert elapsed < 1.0, f"{dag_id} took {elapsed:.2f}s to parse"


def test_the_watch_is_hourly_mapped_and_bounded_by_its_pool() -> None:
    dag = _dag("model_integrity_watch")
    assert dag.schedule == "@hourly" and dag.max_active_runs == 1
    check = dag.get_task("check")
    assert (check.partial_kwargs["pool"], check.partial_kwargs["pool_slots"]) == ("integrity_watch", 1)
    assert dag.get_task("trigger_incident").partial_kwargs["trigger_dag_id"] == "model_incident"
    assert set(dag.get_task("plan").downstream_task_ids) == {"check"}
    assert dag.get_task("incidents").trigger_rule == "all_done"
    # The stack creates the pool the DAG names (a task in a missing pool is never scheduled).
    assert '"pools", "set", "integrity_watch"' in (REPO / "scripts" / "stack.py").read_text()


def test_the_incident_reports_and_notifies_even_when_revocation_fails() -> None:
    dag = _dag("model_incident")
    order = ["revoke", "write_report", "notify", "confirm_revoked"]
    for upstream, downstream in zip(order, order[1:]):
        assert dag.get_task(upstream).downstream_task_ids == {downstream}
    assert [dag.get_task(t).trigger_rule for t in order[1:]] == ["all_done"] * 3


@pytest.mark.parametrize(("param", "value"), [("model", "acme/tiny\n"), ("model", "acme"), ("version", "1\n"),
                                               ("version", "../1"), ("source", "Manual"), ("reason", ""),
                                               ("reason", "x" * 1001)])
def test_incident_params_refuse_bad_values(param: str, value: str) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(_dag("model_incident").params)
    with pytest.raises(ParamValidationError, match=param):
        params[param] = value


def test_incident_params_accept_a_manual_incident() -> None:
    params = copy.deepcopy(_dag("model_incident").params)
    for name, value in {"model": "demo/tiny-gpt2", "version": "rev-0123456789ab", "reason": "CVE in tokenizer",
                        "evidence": {"ticket": "SEC-1"}}.items():
        params[name] = value
    params.validate()
