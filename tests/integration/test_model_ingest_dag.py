"""`model_ingest` against the real demo hub: dag.test() in-process, and a real run through the API."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import require_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_ingest(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags" / "model_ingest.py")).dags["model_ingest"]


@pytest.fixture(scope="module")
def hub_commit() -> str:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=require_env("AIRLOCK_HUB_ENDPOINT"), token=False)
    return api.model_info("demo/tiny-gpt2", revision="main").sha


def _xcom(dag_run, task_id: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id, key="return_value")
        ).first()
        return XComModel.deserialize_value(row)


def test_dag_test_pins_the_demo_model_to_its_commit(model_ingest, hub_commit: str) -> None:
    dag_run = model_ingest.test(
        run_conf={"source": "hf://demo/tiny-gpt2", "revision": None, "owner": "tests", "risk_tier": "low"}
    )
    assert dag_run.state == "success"
    resolved = _xcom(dag_run, "resolve_source")
    assert resolved["revision"] == hub_commit
    assert resolved["requested_revision"] == "main"
    files = {f["path"]: f for f in resolved["files"]}
    assert files["model.safetensors"]["lfs_sha256"] and len(files["model.safetensors"]["lfs_sha256"]) == 64
    assert files["config.json"]["lfs_sha256"] is None and len(files["config.json"]["git_sha1"]) == 40


def test_dag_test_fails_for_a_missing_repository(model_ingest) -> None:
    dag_run = model_ingest.test(
        run_conf={"source": "hf://demo/does-not-exist", "revision": "main", "owner": "tests", "risk_tier": "low"}
    )
    assert dag_run.state == "failed"


@pytest.mark.slow
def test_a_real_run_through_the_airflow_api() -> None:
    """The running `airflow standalone` parses the DAG, runs it on its LocalExecutor, and exposes the revision."""
    from airlock.airflow_client import AirflowClient

    client = AirflowClient(
        require_env("AIRLOCK_AIRFLOW_URL"), "admin", os.environ.get("AIRLOCK_AIRFLOW_ADMIN_PASSWORD", "airlock")
    )
    assert client.import_errors() == []
    client.wait_for_dag("model_ingest")
    client.unpause("model_ingest")
    run_id = client.trigger(
        "model_ingest", {"source": "hf://demo/tiny-gpt2@main", "owner": "tests", "risk_tier": "medium"}
    )
    run = client.wait_for_run("model_ingest", run_id, timeout=300)
    assert run["state"] == "success", client.task_instances("model_ingest", run_id)
    resolved = client.xcom("model_ingest", run_id, "resolve_source")
    assert len(resolved["revision"]) == 40
