"""Faults injected into running ingestions on the Celery stack (real scheduler, workers, Postgres, Redis).

* OpenBao unreachable when `sign_model` runs: the task fails and is retried, nothing after it runs, nothing is in
  the registry; once Vault answers again a retry signs and the run completes.
* A Celery worker SIGKILLed in the middle of `download_to_quarantine`: the task is retried on a live worker and
  the download resumes from the partial file.
* The scheduler SIGKILLed and restarted mid-run: the run completes.

Every test ends with the same invariants: the version is released once, verifies (signature with the host's
trust store, index chain, stored objects), one promotion event, no partial objects; the run's quarantine is gone.
Vault is made unreachable through a forwarder the `airlock_vault` connection is pointed at (the shared OpenBao
itself is never stopped); the hub is slowed by a forwarder the `airlock_hub` connection is pointed at.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.celery_fixtures import DAG_ID, celery_stack, registry_problems  # noqa: F401
from tests.conftest import require_env
from tests.fault_fixtures import FaultyHub, forwarder

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VAULT_FORWARD_PORT = 8314
HUB_FAULT_PORT = 8313


@contextmanager
def connection_port(client, conn_id: str, port: int) -> Iterator[None]:
    """Point a connection of the running Airflow at ``port`` (workers read connections through the API)."""
    original = client.request("GET", f"/connections/{conn_id}")

    def patch(value: int) -> None:
        client.request("PATCH", f"/connections/{conn_id}", params={"update_mask": ["port"]},
                       json={"connection_id": conn_id, "conn_type": original["conn_type"], "port": value})

    patch(port)
    try:
        yield
    finally:
        patch(original["port"])


def _ready(celery_stack):  # noqa: F811
    client = celery_stack.client()
    client.wait_for_dag(DAG_ID)
    client.unpause(DAG_ID)
    return client


def _finish(celery_stack, run_id: str, timeout: float) -> dict:  # noqa: F811
    """Wait for the run to end, answering its approval form as a reviewer when it asks (tier high)."""
    client, reviewer = celery_stack.client(), celery_stack.client("reviewer")
    deadline = time.monotonic() + timeout
    answered = False
    while time.monotonic() < deadline:
        run = client.dag_run(DAG_ID, run_id)
        if run["state"] in {"success", "failed"}:
            return run
        if not answered:
            approve = client.request("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve")
            if approve["state"] in {"deferred", "awaiting_input"}:
                reviewer.respond(DAG_ID, run_id, "approve", ["Approve"])
                answered = True
        time.sleep(3)
    raise AssertionError(f"run {run_id} did not end within {timeout:.0f}s")


# demo/tiny-gpt2 is first released at tier high in this session (test_celery_stack.py): a model's minimum tier is
# fixed at its first release, so every later ingestion of it here is at tier high too (a reviewer approves).
TINY_GPT2_HIGH = {"source": "hf://demo/tiny-gpt2", "owner": "ml-platform", "risk_tier": "high"}


def _states(client, run_id: str) -> dict[str, dict]:
    return {ti["task_id"]: ti for ti in client.task_instances(DAG_ID, run_id)}


def _assert_released_once(celery_stack, client, run_id: str) -> dict:  # noqa: F811
    promoted = client.xcom(DAG_ID, run_id, "promote")
    problems = registry_problems(str(celery_stack.registry), {promoted["model"]: {promoted["version"]}},
                                 exhaustive=False)
    assert problems == [], problems
    from airlock.quarantine import run_directory

    assert not run_directory(celery_stack.quarantine, DAG_ID, run_id).exists(), "the run's quarantine is still there"
    return promoted


def test_vault_unreachable_at_signing_retries_signs_nothing_then_completes(celery_stack) -> None:  # noqa: F811
    client = _ready(celery_stack)
    vault = require_env("AIRLOCK_VAULT_ADDR")
    with forwarder(VAULT_FORWARD_PORT, vault) as vault_path, \
            connection_port(client, "airlock_vault", VAULT_FORWARD_PORT):
        vault_path.cut()  # Vault unreachable for this Airflow's tasks from now on
        run_id = client.trigger(DAG_ID, {"source": "hf://demo/tiny-gpt2-bin", "owner": "ml-platform",
                                         "risk_tier": "medium"})
        client.wait_for_task(DAG_ID, run_id, "sign_model", {"up_for_retry"}, timeout=420, poll=1)
        states = _states(client, run_id)
        # Nothing after signing ran, nothing reached the registry.
        assert {states[t]["state"] for t in ("build_aibom", "promote")} == {None}, states
        model_dir = celery_stack.registry / "models" / "demo" / "tiny-gpt2-bin"
        assert not model_dir.exists() or not any(model_dir.iterdir())
        first_try = client.task_log(DAG_ID, run_id, "sign_model", 1)
        assert "vault" in first_try.lower(), first_try[-2000:]
        vault_path.heal()
        run = client.wait_for_run(DAG_ID, run_id, timeout=420, poll=2)
    states = _states(client, run_id)
    assert run["state"] == "success", {t: s["state"] for t, s in states.items()}
    assert states["sign_model"]["try_number"] >= 2
    promoted = _assert_released_once(celery_stack, client, run_id)
    assert promoted["model"] == "demo/tiny-gpt2-bin" and promoted["created"] is True


def _kill_tree(pid: int) -> None:
    import psutil

    root = psutil.Process(pid)
    family = [root, *root.children(recursive=True)]
    for proc in family:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)


def test_a_worker_killed_mid_download_is_replaced_and_the_download_resumes(celery_stack) -> None:  # noqa: F811
    stack, celery = celery_stack.stack, celery_stack.celery
    client = _ready(celery_stack)
    spare = stack.CeleryWorker("worker-default-2", ("default",), 2, f"{celery.worker('worker-default').hostname}2")
    hub_url = require_env("AIRLOCK_HUB_ENDPOINT")
    killed = None
    try:
        stack.start_celery_worker(celery, spare, celery_stack.env)
        with FaultyHub(HUB_FAULT_PORT, hub_url, throttle="model.safetensors", throttle_bps=24 * 1024) as hub, \
                connection_port(client, "airlock_hub", HUB_FAULT_PORT):
            run_id = client.trigger(DAG_ID, TINY_GPT2_HIGH)
            client.wait_for_task(DAG_ID, run_id, "download_to_quarantine", {"running"}, timeout=300, poll=1)
            partial = _wait_for_partial(celery_stack, timeout=120)
            time.sleep(2)  # well inside the ~20 s the throttled hub takes for the weights
            ti = client.request("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/download_to_quarantine")
            killed = next(w for w in (celery.worker("worker-default"), spare) if w.hostname == ti["hostname"])
            _kill_tree(stack.running_pid(celery.state, killed.name))
            run = _finish(celery_stack, run_id, timeout=600)
        states = _states(client, run_id)
        assert run["state"] == "success", {t: s["state"] for t, s in states.items()}
        download = states["download_to_quarantine"]
        assert download["try_number"] >= 2
        assert download["hostname"] != killed.hostname, "retried on the killed worker's host"
        summary = client.xcom(DAG_ID, run_id, "download_to_quarantine")
        assert summary["resumed"] >= 1, (summary, hub.ranges, partial)  # the killed attempt's partial, picked up
        assert hub.requests["throttled"] >= 2  # the weights were asked for again, by the live worker
        _assert_released_once(celery_stack, client, run_id)
    finally:
        if killed is not None and stack.running_pid(celery.state, killed.name) is None:
            stack.start_celery_worker(celery, killed, celery_stack.env)
        stack.stop_process_tree(celery.state, spare.name)


def _wait_for_partial(celery_stack, timeout: float) -> Path:  # noqa: F811
    """Until a file is being downloaded into the quarantine (its partial exists), so the kill is mid-download.

    huggingface_hub's http_get hands bytes over in 10 MiB chunks, so a small file's partial stays empty until its
    last byte arrives: the kill lands while the throttled hub is still streaming, the retry picks the partial up.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in celery_stack.quarantine.rglob("*.part"):
            if path.parent.name == ".partial":
                return path
        time.sleep(0.2)
    raise AssertionError("no partial download appeared in the quarantine")


def test_the_scheduler_killed_and_restarted_mid_run_lets_the_run_complete(celery_stack) -> None:  # noqa: F811
    stack, celery = celery_stack.stack, celery_stack.celery
    client = _ready(celery_stack)
    run_id = client.trigger(DAG_ID, TINY_GPT2_HIGH)
    client.wait_for_task(DAG_ID, run_id, "verify_published_checksums", {"running", "success"}, timeout=300, poll=1)
    _kill_tree(stack.running_pid(celery.state, "scheduler"))
    before = {t: s["state"] for t, s in _states(client, run_id).items()}
    time.sleep(10)  # no scheduler at all for a while: tasks finish, nothing new is scheduled
    stack.start_celery_component(celery, "scheduler", celery_stack.env)
    run = _finish(celery_stack, run_id, timeout=600)
    states = {t: s["state"] for t, s in _states(client, run_id).items()}
    assert run["state"] == "success", (before, states)
    assert stack.running_pid(celery.state, "scheduler") is not None
    _assert_released_once(celery_stack, client, run_id)
