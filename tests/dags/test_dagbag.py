"""Every DAG file imports cleanly, fast, and without heavy ML libraries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
EXPECTED_DAG_IDS = {"model_ingest", "model_fingerprint_nightly", "model_integrity_watch", "model_incident"}
HEAVY_MODULES = ("torch", "transformers", "lm_eval", "great_expectations")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}


def test_expected_dags_exist(dagbag) -> None:
    assert EXPECTED_DAG_IDS <= set(dagbag.dag_ids)


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_does_not_import_heavy_ml_libraries(dag_file: Path) -> None:
    probe = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        f"heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]; "
        "print('HEAVY=' + ','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(dag_file)], capture_output=True, text=True, check=True)
    heavy = result.stdout.strip().splitlines()[-1].removeprefix("HEAVY=")
    assert heavy == "", f"{dag_file.name} imports {heavy} at parse time"


@pytest.mark.parametrize(
    ("param", "value"),
    [("risk_tier", "extreme"), ("source", "ftp://demo/x"), ("source", "hf://demo"), ("owner", "")],
)
def test_model_ingest_rejects_invalid_params(dagbag, param: str, value: str) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = dagbag.dags["model_ingest"].params
    params.validate()  # the defaults are valid
    with pytest.raises(ParamValidationError, match=param):
        params[param] = value
