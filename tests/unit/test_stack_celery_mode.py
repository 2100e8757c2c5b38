"""scripts/stack.py's Celery mode without services: names, URLs, the environment each component gets."""

from __future__ import annotations

import json

import pytest

from tests.celery_fixtures import stack_module


@pytest.fixture()
def stack(tmp_path, monkeypatch):
    module = stack_module()
    monkeypatch.setenv("AIRLOCK_STATE_DIR", str(tmp_path / "state"))
    for name in ("AIRLOCK_CELERY_STATE_DIR", "AIRLOCK_CELERY_DB", "AIRLOCK_CELERY_REDIS_DB", "AIRLOCK_REDIS_URL",
                 "AIRLOCK_POSTGRES_URL", "AIRLOCK_CELERY_AIRFLOW_URL"):
        monkeypatch.delenv(name, raising=False)
    return module


def test_defaults_keep_clear_of_the_standalone_stack(stack) -> None:
    celery = stack.CeleryStack.from_env(stack.State.from_env())
    assert celery.address.url == "http://127.0.0.1:8081" != stack.AIRFLOW.url
    assert celery.database == "airlock_airflow_celery"
    assert celery.database_url() == "postgresql+psycopg2://postgres@127.0.0.1:5432/airlock_airflow_celery"
    assert celery.broker_url == "redis://127.0.0.1:6379/5"
    assert celery.state.root == stack.State.from_env().root / "celery"
    assert [(w.name, w.queues, w.concurrency) for w in celery.workers] == [
        ("worker-default", ("default",), 4), ("worker-gpu", ("gpu",), 1)]
    assert len({w.hostname for w in celery.workers}) == 2


def test_the_address_is_fixed_when_the_stack_is_described(stack, monkeypatch) -> None:
    monkeypatch.setenv("AIRLOCK_CELERY_AIRFLOW_URL", "http://127.0.0.1:8399")
    celery = stack.CeleryStack.from_env(stack.State.from_env())
    monkeypatch.setenv("AIRLOCK_CELERY_AIRFLOW_URL", "http://127.0.0.1:8398")
    assert (celery.address.url, celery.address.port) == ("http://127.0.0.1:8399", 8399)


@pytest.mark.parametrize("name", ["Airflow", "a-b", "x; DROP DATABASE postgres", "1abc", "a" * 64])
def test_database_names_are_plain_identifiers(stack, monkeypatch, name: str) -> None:
    monkeypatch.setenv("AIRLOCK_CELERY_DB", name)
    with pytest.raises(stack.StackError, match="AIRLOCK_CELERY_DB"):
        stack.CeleryStack.from_env(stack.State.from_env())


def test_components_get_postgres_redis_shared_keys_and_no_environment_connections(stack, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AIRLOCK_VAULT", '{"conn_type": "vault"}')
    monkeypatch.setenv("AIRLOCK_VAULT_TOKEN", "s.not-for-tasks")
    celery = stack.CeleryStack.from_env(stack.State.from_env())
    env = stack.celery_airflow_env(celery, {"AIRLOCK_REGISTRY": "/r"})
    again = stack.celery_airflow_env(celery, {"AIRLOCK_REGISTRY": "/r"})
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql://postgres@127.0.0.1:5432/airlock_airflow_celery"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8081/execution/"
    # One Fernet key / JWT secret for every component (generated once, kept in the stack's secrets, mode 0600).
    for key in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
        assert env[key] and env[key] == again[key]
    keys_file = celery.state.secret("airflow-keys.json")
    assert keys_file.stat().st_mode & 0o077 == 0 and json.loads(keys_file.read_text())["fernet_key"]
    assert "AIRFLOW_CONN_AIRLOCK_VAULT" not in env and "AIRLOCK_VAULT_TOKEN" not in env
    assert env["AIRLOCK_REGISTRY"] == "/r"


def test_workers_run_supervised_under_their_own_host_name(stack, monkeypatch) -> None:
    celery = stack.CeleryStack.from_env(stack.State.from_env())
    gpu = celery.worker("worker-gpu")
    argv = stack.celery_worker_argv("airflow", gpu)
    assert argv[argv.index("--queues") + 1] == "gpu" and argv[argv.index("--concurrency") + 1] == "1"
    assert argv[argv.index("--celery-hostname") + 1] == gpu.node and "--skip-serve-logs" in argv
    monkeypatch.setattr(stack, "own_uts_namespace_available", lambda: True)
    wrapped = stack.supervised(argv, "marker-x", hostname=gpu.hostname)
    assert wrapped[:2] == ["unshare", "--uts"] and wrapped[-1] == "marker-x"
    assert f"hostname {gpu.hostname}" in wrapped[-2]
    monkeypatch.setattr(stack, "own_uts_namespace_available", lambda: False)
    assert stack.supervised(argv, "marker-x", hostname=gpu.hostname)[0] == "bash"


def test_urls_are_redacted_in_messages(stack) -> None:
    assert stack.redact_url("redis://:s3cret@127.0.0.1:6379/5") == "redis://:***@127.0.0.1:6379/5"
    assert stack.redact_url("postgresql://postgres@127.0.0.1:5432/x") == "postgresql://postgres@127.0.0.1:5432/x"
