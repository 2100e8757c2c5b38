"""model_ingest on the CeleryExecutor: real PostgreSQL, real Redis, a default worker and a `gpu` worker.

The stack is `scripts/stack.py up --celery`, started here with its own state, database, broker database and
port (tests/celery_fixtures.py). The gpu stages (evaluate, fingerprint_baseline) must run on the gpu worker
only, everything else on the default worker; each worker is told apart by the host name Airflow records for the
task instance (each worker runs under a host name of its own, as in a container).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.celery_fixtures import DAG_ID, GPU_TASKS, celery_stack, registry_problems  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_celery_stack_is_postgres_redis_and_two_separate_workers(celery_stack) -> None:  # noqa: F811
    stack, celery = celery_stack.stack, celery_stack.celery
    env = celery_stack.env
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith(f"/{celery.database}")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert not [name for name in env if name.startswith("AIRFLOW_CONN_")], "connections come from the metastore"
    with stack.postgres_connect(celery.postgres_admin_url) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (celery.database,)).fetchone()
    health = celery_stack.client().request("GET", "/monitor/health")
    assert {health[c]["status"] for c in ("metadatabase", "scheduler", "triggerer", "dag_processor")} == {"healthy"}

    pids = {w.name: celery_stack.pid(w.name) for w in celery.workers}
    assert all(pids.values()), pids
    assert len(set(pids.values())) == 2
    # Each worker: its own process group, working directory and AIRFLOW_HOME; nothing of the other's.
    cwds = {name: Path(os.readlink(f"/proc/{pid}/cwd")) for name, pid in pids.items()}
    assert cwds == {w.name: celery.worker_dir(w) for w in celery.workers}
    assert os.getpgid(pids["worker-default"]) != os.getpgid(pids["worker-gpu"])


def test_model_ingest_runs_on_celery_with_gpu_stages_on_the_gpu_worker_only(celery_stack) -> None:  # noqa: F811
    client, reviewer = celery_stack.client(), celery_stack.client("reviewer")
    client.wait_for_dag(DAG_ID)
    client.unpause(DAG_ID)
    # Two runs at once: one needs a human (tier high: the approval defers to the triggerer), one is blocked.
    approved = client.trigger(DAG_ID, {"source": "hf://demo/tiny-gpt2", "owner": "ml-platform", "risk_tier": "high"})
    blocked = client.trigger(DAG_ID, {"source": "hf://demo/evil-pickle", "owner": "ml-platform",
                                      "risk_tier": "medium"})
    client.wait_for_task(DAG_ID, approved, "approve", {"awaiting_input", "deferred"}, timeout=300)
    reviewer.respond(DAG_ID, approved, "approve", ["Approve"])
    assert client.wait_for_run(DAG_ID, approved, timeout=300, poll=3)["state"] == "success", \
        client.task_instances(DAG_ID, approved)
    assert client.wait_for_run(DAG_ID, blocked, timeout=120, poll=3)["state"] == "failed"

    cpu, gpu = celery_stack.worker_hostname("worker-default"), celery_stack.worker_hostname("worker-gpu")
    assert cpu != gpu
    ran = {ti["task_id"]: ti for ti in client.task_instances(DAG_ID, approved) if ti["state"] in {"success", "failed"}}
    assert GPU_TASKS <= set(ran) and {"download_to_quarantine", "sign_model", "promote"} <= set(ran)
    where = {task_id: (ti["queue"], ti["hostname"]) for task_id, ti in ran.items()}
    expected = {task_id: ("gpu", gpu) if task_id in GPU_TASKS else ("default", cpu) for task_id in ran
                if task_id != "approve"}  # the approval's last step runs wherever the triggerer hands it back
    assert {t: w for t, w in where.items() if t != "approve"} == expected

    blocked_states = {ti["task_id"]: ti for ti in client.task_instances(DAG_ID, blocked)}
    assert blocked_states["scan_model"]["state"] == "failed" and blocked_states["scan_model"]["hostname"] == cpu
    # Nothing of a blocked model reaches the gpu worker.
    assert {blocked_states[t]["state"] for t in GPU_TASKS} == {"upstream_failed"}
    assert blocked_states["remove_quarantine"]["state"] == "success"

    promoted = client.xcom(DAG_ID, approved, "promote")
    assert promoted["model"] == "demo/tiny-gpt2" and promoted["created"] is True
    assert registry_problems(str(celery_stack.registry), {"demo/tiny-gpt2": {promoted["version"]}}) == []
    leftovers = [p for p in celery_stack.quarantine.rglob("*") if p.is_file() and p.parent.name != ".reservations"]
    assert leftovers == [], leftovers
