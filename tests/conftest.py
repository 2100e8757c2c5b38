"""Shared test setup.

Integration tests talk to the local stack that `make stack-up` starts; its
addresses and the least-privilege tokens are in ``<state>/env``. Load that file
so `pytest` works the same from `make test` and from a developer's shell.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load_stack_env() -> None:
    env_file = Path(os.environ.get("AIRLOCK_STATE_DIR", REPO / ".airlock")) / "env"
    if not env_file.exists():
        return
    for line in env_file.read_text().splitlines():
        if not line.startswith("export "):
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        os.environ.setdefault(key, shlex.split(value)[0] if value else "")


_load_stack_env()


def _vault_connection_from_stack() -> None:
    """`airlock_vault` for in-process DAG runs: the same AppRole the stack gives `airflow standalone`."""
    approle = Path(os.environ.get("AIRLOCK_STATE_DIR", REPO / ".airlock")) / "secrets" / "vault-approle.json"
    addr = os.environ.get("AIRLOCK_VAULT_ADDR")
    if not approle.exists() or not addr or "AIRFLOW_CONN_AIRLOCK_VAULT" in os.environ:
        return
    from urllib.parse import urlsplit

    credentials = json.loads(approle.read_text())
    parts = urlsplit(addr)
    os.environ["AIRFLOW_CONN_AIRLOCK_VAULT"] = json.dumps({
        "conn_type": "vault", "host": parts.hostname, "port": parts.port, "schema": parts.scheme,
        "login": credentials["role_id"], "password": credentials["secret_id"], "extra": {"auth_type": "approle"},
    })


_vault_connection_from_stack()

# Tests get their own Airflow home and SQLite metadata DB, never the one the demo
# stack's `airflow standalone` is using. Set before anything imports airflow.
_TEST_AIRFLOW_HOME = Path(os.environ.get("AIRLOCK_STATE_DIR", REPO / ".airlock")) / "airflow-tests"
_TEST_AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
os.environ.update({
    "AIRFLOW_HOME": str(_TEST_AIRFLOW_HOME),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_TEST_AIRFLOW_HOME / 'airflow.db'}",
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__OPENLINEAGE__DISABLED": "True",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        if parts and parts[0] in {"integration", "e2e"}:
            item.add_marker(pytest.mark.integration)


def require_env(name: str) -> str:
    """The value of a stack variable; a missing one fails loudly rather than skipping the check."""
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: start the local stack with `make stack-up` (it writes .airlock/env)")
    return value


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated metadata DB in the tests' own AIRFLOW_HOME (see tests/conftest.py)."""
    from airflow.utils import db

    db.initdb()


@pytest.fixture(scope="session")
def stack():
    """scripts/stack.py as a module (scripts/ is not a package)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("airlock_stack", REPO / "scripts" / "stack.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["airlock_stack"] = module
    spec.loader.exec_module(module)
    return module
