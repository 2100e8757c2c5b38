"""docker-compose.yaml (production) and `scripts/stack.py up --celery` (local) run the same Airflow shape:
the same components, the same queues and worker split, the same executor/broker/result backend kinds and the
same connections. A change to one without the other fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.celery_fixtures import stack_module

REPO = Path(__file__).resolve().parents[2]
CONTROL_PLANE_SERVICES = {"apiserver": "airflow-apiserver", "scheduler": "airflow-scheduler",
                          "dag-processor": "airflow-dag-processor", "triggerer": "airflow-triggerer"}
WORKER_SERVICES = {"worker-default": "airflow-worker", "worker-gpu": "airflow-worker-gpu"}


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())["services"]


@pytest.fixture(scope="module")
def celery(tmp_path_factory):
    stack = stack_module()
    shared = stack.State(tmp_path_factory.mktemp("state"))
    (shared.root / "secrets").mkdir()
    stack.write_secret(shared.secret("vault-approle.json"), json.dumps({"role_id": "r", "secret_id": "s"}))
    celery_root = shared.root / "celery"
    for sub in ("run", "logs", "secrets"):
        (celery_root / sub).mkdir(parents=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRLOCK_CELERY_STATE_DIR", str(celery_root))
    try:
        yield stack, stack.CeleryStack.from_env(shared)
    finally:
        mp.undo()


def _option(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def test_every_control_plane_component_is_a_compose_service(services, celery) -> None:
    stack, _ = celery
    local = stack.celery_control_plane_argv("airflow")
    assert set(local) == set(CONTROL_PLANE_SERVICES) == set(stack.CELERY_CONTROL_PLANE)
    for component, service in CONTROL_PLANE_SERVICES.items():
        assert services[service]["command"][:2] == local[component][:2], component


def test_the_workers_consume_the_same_queues_with_the_same_gpu_concurrency(services, celery) -> None:
    stack, stack_record = celery
    assert len(stack_record.workers) == len(WORKER_SERVICES) == 2
    for worker in stack_record.workers:
        compose_argv = services[WORKER_SERVICES[worker.name]]["command"]
        local_argv = stack.celery_worker_argv("airflow", worker)
        assert compose_argv[:3] == local_argv[:3] == ["airflow", "celery", "worker"]
        assert _option(compose_argv, "--queues") == _option(local_argv, "--queues") == ",".join(worker.queues)
    gpu = stack_record.worker("worker-gpu")
    assert gpu.queues == (stack.GPU_QUEUE,) and gpu.concurrency == 1
    assert _option(services["airflow-worker-gpu"]["command"], "--concurrency") == "1"
    assert stack.GPU_QUEUE not in stack_record.worker("worker-default").queues


def test_executor_broker_backend_and_default_queue_match(services, celery) -> None:
    stack, stack_record = celery
    compose_env = services["airflow-scheduler"]["environment"]
    local_env = stack.celery_airflow_env(stack_record, {})
    for key in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__OPERATORS__DEFAULT_QUEUE"):
        assert compose_env[key] == local_env[key], key
    for key, scheme in (("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg2://"),
                        ("AIRFLOW__CELERY__BROKER_URL", "redis://"),
                        ("AIRFLOW__CELERY__RESULT_BACKEND", "db+postgresql://")):
        assert compose_env[key].startswith(scheme) and local_env[key].startswith(scheme), key
    assert compose_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "false"
    assert local_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"


def test_airflow_init_creates_every_connection_the_local_stack_provisions(services, celery) -> None:
    stack, stack_record = celery
    init_script = "\n".join(services["airflow-init"]["command"])
    local = stack.airflow_connections(stack_record.shared, stack_record.address, stack_record.state)
    for conn_id, conn in local.items():
        assert f'conns["{conn_id}"]' in init_script or f'"{conn_id}": {{' in init_script, conn_id
        assert f'"conn_type": "{conn["conn_type"]}"' in init_script, conn_id
