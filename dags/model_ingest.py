"""
### model_ingest

Takes one model from outside the trust boundary towards the registry.

Trigger it with a **source** (`hf://org/name`, optionally `@revision`), the
**revision** to pin (branch, tag or commit sha; empty means `main`), the
**owner** accountable for the model, and its **risk tier**, which decides how
strict scanning and approval are.

The first task pins the source to an immutable revision (the commit sha) and
records the published file listing with its checksums; every later task uses
that revision, never a branch name.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

RISK_TIERS = ["low", "medium", "high", "critical"]
HF_SOURCE_PATTERN = r"^hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._/-]+)?$"


@dag(
    dag_id="model_ingest",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    tags=["airlock", "ingest"],
    doc_md=__doc__,
    default_args={
        "owner": "airlock",
        "retries": 2,
        "retry_delay": timedelta(seconds=10),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(minutes=30),
    },
    params={
        "source": Param(
            "hf://demo/tiny-gpt2",
            type="string",
            pattern=HF_SOURCE_PATTERN,
            title="Source",
            description="Where the model comes from, e.g. hf://org/name or hf://org/name@revision.",
        ),
        "revision": Param(
            None,
            type=["null", "string"],
            pattern=r"^[A-Za-z0-9._/-]{1,255}$",
            title="Revision",
            description="Branch, tag or commit sha to pin. Empty: the @revision in the source, else main.",
        ),
        "owner": Param(
            "ml-platform",
            type="string",
            minLength=1,
            maxLength=128,
            title="Owner",
            description="Team or person accountable for this model in the registry.",
        ),
        "risk_tier": Param(
            "high",
            type="string",
            enum=RISK_TIERS,
            title="Risk tier",
            description="low | medium | high | critical: decides scan strictness and whether approval is required.",
        ),
    },
)
def model_ingest():
    @task(task_id="resolve_source")
    def resolve_source(params: dict | None = None) -> dict:
        """Pin the source to its commit sha and record the published listing (paths, sizes, checksums)."""
        import logging

        from airflow.sdk.exceptions import AirflowFailException

        from airlock.connections import hub_access
        from airlock.errors import SourceError
        from airlock.sources import parse_source_uri, resolve_hf

        log = logging.getLogger("airlock.model_ingest")
        assert params is not None
        try:
            ref = parse_source_uri(params["source"], params.get("revision"))
        except SourceError as exc:  # bad input: retrying cannot help
            raise AirflowFailException(str(exc)) from None
        hub = hub_access()
        log.info("resolving %s@%s via %s (%s)", ref.uri, ref.requested_revision, hub.endpoint, hub.origin)
        resolved = resolve_hf(ref, endpoint=hub.endpoint, token=hub.token)
        log.info(
            "pinned %s@%s to commit %s: %d files, %d bytes",
            ref.uri, ref.requested_revision, resolved.revision, len(resolved.files), resolved.total_size,
        )
        return resolved.to_json_dict()

    resolve_source()


model_ingest()
