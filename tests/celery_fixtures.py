"""The Celery-mode Airflow (``scripts/stack.py up --celery``) for tests and the load bench.

Each use starts its own instance beside the shared standalone stack: its own state directory (AIRFLOW_HOME,
PID files, logs, the workers' directories), a fresh uniquely named PostgreSQL database, its own Redis database
number, its own API port, its own registry and quarantine; Vault, S3 and the demo hub are the shared stack's.
Everything is stopped and the database dropped afterwards, also when the test fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parent.parent
CELERY_TEST_PORT = 8310
CELERY_TEST_REDIS_DB = 11
DAG_ID = "model_ingest"
GPU_TASKS = frozenset({"evaluate", "fingerprint_baseline"})


def stack_module() -> ModuleType:
    """scripts/stack.py as a module (scripts/ is not a package); one instance per process."""
    if "airlock_stack" in sys.modules:
        return sys.modules["airlock_stack"]
    spec = importlib.util.spec_from_file_location("airlock_stack", REPO / "scripts" / "stack.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["airlock_stack"] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class CeleryAirflow:
    """A running Celery-mode Airflow: its stack record, the environment its components got, where it writes."""

    stack: ModuleType
    celery: Any  # stack.CeleryStack
    env: dict[str, str]  # what every component runs with (celery_airflow_env)
    registry: Path
    quarantine: Path

    @property
    def url(self) -> str:
        return self.celery.address.url

    def client(self, user: str = "admin"):
        from airlock.airflow_client import AirflowClient

        passwords = json.loads(self.celery.state.secret("airflow-passwords.json").read_text())
        return AirflowClient(self.url, user, passwords[user], timeout=120)

    def worker_hostname(self, name: str) -> str:
        return self.celery.worker(name).hostname

    def pid(self, name: str) -> int | None:
        return self.stack.running_pid(self.celery.state, name)


@contextmanager
def celery_airflow(root: Path, *, port: int = CELERY_TEST_PORT, redis_db: int = CELERY_TEST_REDIS_DB,
                   extra_env: dict[str, str] | None = None) -> Iterator[CeleryAirflow]:
    """Start a Celery-mode Airflow under ``root`` on ``port``; stop it and drop its database on exit."""
    stack = stack_module()
    registry, quarantine = root / "registry", root / "quarantine"
    overrides = {
        "AIRLOCK_CELERY_STATE_DIR": str(root / "state"),
        "AIRLOCK_CELERY_AIRFLOW_URL": f"http://127.0.0.1:{port}",
        "AIRLOCK_CELERY_DB": f"airlock_airflow_test_{uuid.uuid4().hex[:12]}",
        "AIRLOCK_CELERY_REDIS_DB": str(redis_db),
        "AIRLOCK_REGISTRY": str(registry),
        "AIRLOCK_QUARANTINE_ROOT": str(quarantine),
    }
    with mock.patch.dict(os.environ, overrides):
        shared = stack.State.from_env()
        celery = stack.CeleryStack.from_env(shared)
        stack_env = {**stack.stack_environment(shared), **(extra_env or {})}
    stack.flush_broker(celery)  # nothing another run left queued on this database number
    try:
        stack.start_celery_airflow(celery, stack_env)
        yield CeleryAirflow(stack, celery, stack.celery_airflow_env(celery, stack_env), registry, quarantine)
    finally:
        stack.stop_celery_airflow(celery, drop=True)


# One instance per test session, however many modules use the fixture (each module imports it, and pytest would
# otherwise make one fixture definition, and one Airflow, per module).
_SESSION: dict[str, CeleryAirflow] = {}


@pytest.fixture(scope="session")
def celery_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryAirflow]:
    if "stack" in _SESSION:
        yield _SESSION["stack"]
        return
    # Short task-heartbeat timeout: a worker killed in a fault test is noticed in seconds, not five minutes.
    with celery_airflow(tmp_path_factory.mktemp("celery"), extra_env={
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    }) as running:
        _SESSION["stack"] = running
        try:
            yield running
        finally:
            _SESSION.pop("stack", None)


# --------------------------------------------------------------------------- registry invariants


def registry_problems(registry_spec: str, expected: dict[str, set[str]], *, s3_client: Any = None,
                      exhaustive: bool = True) -> list[str]:
    """Every way the registry breaks the pipeline's promises for ``expected`` ({model: {versions}}); [] if none.

    Each expected version is released exactly once and nothing else is; every released version verifies (index
    chain, plan, stored objects, and its signature with the host's trust store); the index holds exactly one
    promotion event per version; no ``.airlock-partial.*`` object is left. ``exhaustive=False``: other models
    may be in the registry too (only the expected ones are checked).
    """
    import tempfile

    from airlock.registry import open_registry
    from airlock.registry.base import ModelName
    from airlock.registry.index import PromotedEvent
    from airlock.trust import host_trust_store
    from airlock.verify import verify_model

    trust = host_trust_store()
    registry = open_registry(registry_spec, s3_client=s3_client, trust=trust)
    problems: list[str] = []
    indexed = {str(m) for m in registry.models()}
    for model in sorted(indexed - set(expected)) if exhaustive else ():
        problems.append(f"{model}: in the index, not expected")
    for model, versions in sorted(expected.items()):
        released = registry.released_versions(model)
        if sorted(released) != sorted(versions):
            problems.append(f"{model}: released {sorted(released)}, expected {sorted(versions)}")
        promoted = [e.version for e in registry.index.events(ModelName.parse(model)) if isinstance(e, PromotedEvent)]
        for version in sorted(set(versions) | set(promoted)):
            if promoted.count(version) != 1:
                problems.append(f"{model}@{version}: {promoted.count(version)} promotion events in the index")
        for version in released:
            try:
                registry.verify_version(model, version)
            except Exception as exc:  # noqa: BLE001 - every failure is a finding here
                problems.append(f"{model}@{version}: does not verify: {type(exc).__name__}: {exc}")
                continue
            with tempfile.TemporaryDirectory() as tmp:
                files, signature = _local_copy(registry, model, version, Path(tmp))
                result = verify_model(files, signature, trust, expected_model_name=f"{model}@{version}")
                if not result.ok:
                    problems.append(f"{model}@{version}: signature does not verify: {result.reason}")
    problems += [f"leftover partial: {leftover}" for leftover in _partials(registry_spec, s3_client)]
    return problems


def _local_copy(registry, model: str, version: str, dest: Path) -> tuple[Path, Path]:
    """The version's files and model.sig as local paths (a filesystem registry's own; an S3 one's downloaded)."""
    from airlock.registry.base import Layout, ModelName

    name = ModelName.parse(model)
    prefix = Layout.version_prefix(name, version)
    for key in registry.store.list_keys(prefix):
        relative = key[len(prefix):]
        if relative.startswith("files/") or relative == "model.sig":
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with registry.store.open_object(key) as source, target.open("wb") as out:
                out.write(source.read())
    return dest / "files", dest / "model.sig"


def _partials(registry_spec: str, s3_client: Any) -> list[str]:
    """What a dead promotion leaves: ``.airlock-partial.*`` files (filesystem; listings hide them) or unfinished
    multipart uploads and partial-prefixed keys (S3)."""
    from urllib.parse import urlsplit

    from airlock.registry.base import PARTIAL_PREFIX

    if not registry_spec.startswith("s3://"):
        root = Path(registry_spec)
        return [str(p) for p in sorted(root.rglob(f"{PARTIAL_PREFIX}*"))] if root.exists() else []
    bucket = urlsplit(registry_spec).netloc
    uploads = s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    keys = [o["Key"] for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", []) if PARTIAL_PREFIX in o["Key"]]
    return [f"multipart upload of {u['Key']}" for u in uploads] + keys
