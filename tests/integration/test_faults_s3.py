"""S3 goes away in the middle of `promote` to an S3 registry (dag.test, a private moto server).

The registry's S3 endpoint is a forwarder to a private moto server; the forwarder is cut right when the third
object of the promotion is being written (the request never reaches S3), and stays cut until the `promote` task
has failed and waits for its retry. While S3 is unreachable, a reader of the bucket sees no released version;
after S3 is back, the retry promotes exactly once and the version verifies.
"""

from __future__ import annotations

import time
from pathlib import Path

import boto3
import pytest

from tests.celery_fixtures import registry_problems
from tests.fault_fixtures import forwarder, moto_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MOTO_PORT, S3_FORWARD_PORT = 8315, 8316
BUCKET = "airlock-fault-registry"
REGISTRY = f"s3://{BUCKET}/registry"
MODEL = "demo/tiny-gpt2"


@pytest.fixture()
def model_ingest(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags" / "model_ingest.py")).dags["model_ingest"]


def _task_state(dag_id: str, task_id: str) -> str | None:
    """The newest run's state of ``task_id`` in the tests' metadata DB (dag.test writes there)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.task_id == task_id)
                              .order_by(TaskInstance.start_date.desc().nulls_last())).first()
        return None if row is None or row.state is None else str(getattr(row.state, "value", row.state))


def test_s3_down_during_promote_shows_no_version_and_the_retry_promotes_once(
    model_ingest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airlock.registry import open_registry

    with moto_server(MOTO_PORT, tmp_path / "moto.log") as moto_url, forwarder(S3_FORWARD_PORT, moto_url) as s3_path:
        direct = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")  # a reader beside the outage
        direct.create_bucket(Bucket=BUCKET)
        monkeypatch.setenv("AIRLOCK_S3_ENDPOINT", s3_path.url)
        monkeypatch.setenv("AIRLOCK_REGISTRY", REGISTRY)
        monkeypatch.setenv("AIRLOCK_QUARANTINE_ROOT", str(tmp_path / "quarantine"))
        during_outage: dict = {}

        def observe_then_recover() -> None:
            reader = open_registry(REGISTRY, s3_client=direct)
            during_outage["objects_written"] = [o["Key"] for o in direct.list_objects_v2(Bucket=BUCKET)
                                                .get("Contents", [])]
            during_outage["released"] = reader.released_versions(MODEL)
            deadline = time.monotonic() + 240
            while _task_state("model_ingest", "promote") != "up_for_retry" and time.monotonic() < deadline:
                time.sleep(0.5)
            during_outage["promote_state"] = _task_state("model_ingest", "promote")
            during_outage["released_at_retry"] = reader.released_versions(MODEL)
            s3_path.heal()

        s3_path.cut_after_requests(b"PUT ", 3, then=observe_then_recover)
        dag_run = model_ingest.test(run_conf={"source": f"hf://{MODEL}", "owner": "tests", "risk_tier": "medium"})
        assert s3_path.cuts >= 1, "the outage never happened: promote wrote fewer than 3 objects?"
        assert during_outage["objects_written"], "the cut came before any object was written"
        assert during_outage["released"] == [] and during_outage["released_at_retry"] == []
        assert during_outage["promote_state"] == "up_for_retry", during_outage
        assert dag_run.state == "success"
        assert _task_state("model_ingest", "promote") == "success"
        reader = open_registry(REGISTRY, s3_client=direct)
        (version,) = reader.released_versions(MODEL)
        assert registry_problems(REGISTRY, {MODEL: {version}}, s3_client=direct) == []
