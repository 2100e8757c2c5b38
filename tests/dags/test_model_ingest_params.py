"""model_ingest's parameters accept every source kind the library resolves, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def params():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags" / "model_ingest.py")).dags["model_ingest"].params


@pytest.mark.parametrize(
    "source",
    [
        "hf://demo/tiny-gpt2",
        "hf://demo/tiny-gpt2@" + "a" * 40,
        "s3://vendor-drops/acme/model-x",
        "s3://vendor-drops/acme/model-x?version=sha256:" + "b" * 64,
        "file:///srv/drops/model-y",
    ],
)
def test_every_source_kind_is_accepted(params, source: str) -> None:
    params["source"] = source
    params["revision"] = "sha256:" + "c" * 64
    params.validate()


@pytest.mark.parametrize(
    "source", ["ftp://x/y", "s3://Bad_Bucket/x", "s3://bucket/x?version=main", "file://host/x", "https://hub/x"]
)
def test_other_sources_are_refused(params, source: str) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="source"):
        params["source"] = source
