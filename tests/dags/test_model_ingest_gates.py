"""model_ingest's wiring of the gates: Param patterns match whole values, refusals fail fast, the form is
written from the run's records."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags" / "model_ingest.py")).dags["model_ingest"]


@pytest.fixture(scope="module")
def dag_module():
    spec = importlib.util.spec_from_file_location("model_ingest_dag_under_test", REPO / "dags" / "model_ingest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("registry_name", "demo/tiny-gpt2\n"),
        ("source", "hf://demo/tiny-gpt2\n"),
        ("revision", "main\n"),
        ("owner", "ml-platform\n"),
        ("owner", "**Scan:** allow"),
        ("owner", "[team](https://evil.example)"),
        ("owner", "<img src=x>"),
    ],
)
def test_params_refuse_trailing_newlines_and_markdown(dag, param: str, value: str) -> None:
    """JSON-schema patterns are checked with re.search, where "$" also matches before a final newline."""
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dag.params)
    with pytest.raises(ParamValidationError, match=param):
        params[param] = value


@pytest.mark.parametrize(("param", "value"), [("registry_name", "demo/tiny-gpt2"), ("owner", "ML Platform")])
def test_params_accept_plain_values(dag, param: str, value: str) -> None:
    params = copy.deepcopy(dag.params)
    params[param] = value
    params.validate()


def test_the_approval_form_is_filled_from_the_runs_records(dag) -> None:
    approve = dag.get_task("approve")
    assert approve._pre_execute_hook is not None and approve._pre_execute_hook.__name__ == "_fill_approval_form"
    # The static form names nothing a template could take from XCom or conf.
    assert "xcom" not in approve.body and "params" not in approve.body and not approve.assigned_users


def _verdicts():
    from airlock.aibom import AibomError
    from airlock.approval import ApprovalRefused
    from airlock.errors import ConfigurationError
    from airlock.ingest import GateRefused, RegistryConflict, ScanBlocked
    from airlock.registry.base import RegistryIndexError, StoredObjectError, VersionConflictError

    return [AibomError("x"), ApprovalRefused("x"), GateRefused("x"), ScanBlocked("x"), RegistryConflict("x"),
            VersionConflictError("x"), RegistryIndexError("x"), StoredObjectError("x"), ConfigurationError("x")]


@pytest.mark.parametrize("error", _verdicts(), ids=lambda e: type(e).__name__)
def test_every_verdict_fails_without_retries(dag_module, error: Exception) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="refused: x"):
        with dag_module._verdicts_fail_fast():
            raise error


def _transient():
    from airlock.approval import ApprovalRecordsUnavailable
    from airlock.errors import DownloadError
    from airlock.registry.base import RegistryError

    return [ApprovalRecordsUnavailable("x"), RegistryError("S3 read failed"), DownloadError("x", retryable=True),
            OSError("disk")]


@pytest.mark.parametrize("error", _transient(), ids=lambda e: type(e).__name__)
def test_transient_failures_are_left_to_retry(dag_module, error: Exception) -> None:
    with pytest.raises(type(error)):
        with dag_module._verdicts_fail_fast():
            raise error
