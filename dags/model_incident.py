"""
### model_incident

Responds to a registry version that must no longer be trusted. Triggered by
`model_integrity_watch` (a deviation), by the nightly fingerprint check, or by
hand with a **reason**.

1. `revoke` marks the version revoked in the registry index, signed with the
   pipeline's Vault key (connection `airlock_vault`): `airlock pull` and
   verified loads refuse it from then on. Idempotent: a re-run finds its own
   revocation, and a version revoked before (by a person or another incident)
   is left as it is. A new revocation is an event on the registry model's
   Asset (version, digests, incident, reason; airlock.lineage).
2. `write_report` writes the incident report, JSON and Markdown, beside the
   version (never inside it: versions are immutable) at
   `<registry>/incidents/<org>/<name>/<version>/<incident-id>.{json,md}`:
   the version and its digests, what deviated, the **window** (the last check
   that passed, the first that failed) and **every host and path that pulled
   the version** -- the deployments whose decisions need review. All of it is
   read from the registry's records; the trigger's evidence is kept, labelled
   as a claim.
3. `notify` sends the summary through Airflow notifiers: a JSON webhook
   (connection `airlock_incident_webhook`) by default; Slack and email through
   `AIRLOCK_INCIDENT_NOTIFY` (see `airlock.incident.respond`).
4. `confirm_revoked` succeeds only when the verified index says the version is
   revoked; the report and the notification go out even when revocation failed.

`airlock registry incidents` lists the reports.

Test seam: `_registry()` is the one place this DAG builds the registry that
signs (Vault); DAG tests replace it in the module's namespace with a registry
signed by a local test key. Readers use the host trust store (AIRLOCK_TRUST_STORE).
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import pendulum
from airflow.sdk import AssetAlias, Param, dag, task

from airlock.incident.respond import MAX_REASON, SOURCE_PATTERN, VERSION_PATTERN
from airlock.lineage import REVOCATION_ALIAS
from airlock.policy import REGISTRY_NAME_PATTERN

DAG_ID = "model_incident"


def _registry():
    """The registry that revokes: the pipeline's Vault signer for the index checkpoint, and its trust."""
    from airlock.connections import s3_access
    from airlock.ingest import pipeline_registry
    from airlock.signing import VaultTransitSigner

    return pipeline_registry(lambda: s3_access().client(), VaultTransitSigner.from_airflow_connection())


def _reader():
    """The registry for reading and for the report: the host's trust store, no signer."""
    from airlock.connections import s3_access
    from airlock.ingest import open_configured_registry
    from airlock.trust import host_trust_store

    return open_configured_registry(lambda: s3_access().client(), trust=host_trust_store())


def _incident(params: dict, run_id: str, dag_run):
    """The request (parameters re-checked), the incident id (the same for every attempt of this run), the actor."""
    from airlock.incident import IncidentRequest, incident_id

    request = IncidentRequest.from_params(params)
    return request, incident_id(run_id, dag_run.run_after), f"airflow:{DAG_ID}/{run_id}"


@contextmanager
def _refusals_fail_fast():
    """Bad parameters, an unknown version or a damaged index fail the task without retries; the rest retry."""
    from airflow.sdk.exceptions import AirflowFailException

    from airlock.errors import ConfigurationError
    from airlock.incident import IncidentError
    from airlock.registry.base import RegistryIndexError, StoredObjectError, VersionNotFoundError
    from airlock.vault import VaultKeyNotFoundError, VaultPermissionDeniedError

    try:
        yield
    except (IncidentError, ConfigurationError, VersionNotFoundError, RegistryIndexError, StoredObjectError,
            VaultPermissionDeniedError, VaultKeyNotFoundError) as exc:
        raise AirflowFailException(f"refused: {exc}") from None


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=8,
    is_paused_upon_creation=False,  # the watch triggers it; a paused incident DAG would queue revocations
    tags=["airlock", "incident"],
    doc_md=__doc__,
    default_args={
        "owner": "airlock",
        "retries": 2,
        "retry_delay": timedelta(seconds=15),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(minutes=15),
    },
    params={
        "model": Param(type="string", pattern=REGISTRY_NAME_PATTERN, title="Model",
                       description="ORG/NAME in the registry."),
        "version": Param(type="string", pattern=VERSION_PATTERN, title="Version",
                         description="The registry version to revoke."),
        "reason": Param(type="string", minLength=1, maxLength=MAX_REASON, title="Reason",
                        description="Why it must no longer be trusted; recorded in the index and the report."),
        "source": Param("manual", type="string", pattern=SOURCE_PATTERN, title="Source",
                        description="Who opened the incident: manual, integrity_watch, fingerprint_nightly, ..."),
        "evidence": Param(None, type=["null", "object"], title="Evidence",
                          description="What the trigger saw (kept in the report, labelled as a claim)."),
    },
)
def model_incident():
    @task(task_id="revoke", outlets=[AssetAlias(REVOCATION_ALIAS)])
    def revoke(params: dict | None = None, run_id: str | None = None, dag_run=None, outlet_events=None) -> dict:
        """Revoke the version in the index (signed), or find it revoked already."""
        import logging

        from airlock.incident import revoke_for_incident
        from airlock.lineage import record_revocation_event, version_digests

        assert params is not None and run_id is not None
        with _refusals_fail_fast():
            request, incident, actor = _incident(params, run_id, dag_run)
            registry = _registry()
            revocation = revoke_for_incident(registry, request, incident=incident, actor=actor)
        if revocation.outcome == "revoked":
            record_revocation_event(outlet_events, str(request.model), request.version, run_id,
                                    version_digests(registry, str(request.model), request.version),
                                    incident=incident, reason=request.reason, source=request.source)
        from airlock.redact import one_line

        logging.getLogger("airlock.incident").warning(one_line(  # reasons and actors are untrusted text
            f"incident {incident}: {request.reference} {revocation.outcome} at {revocation.at} by {revocation.by}: "
            f"{revocation.reason}"))
        return revocation.model_dump(mode="json")

    @task(task_id="write_report", trigger_rule="all_done")
    def write_report(params: dict | None = None, run_id: str | None = None, dag_run=None) -> dict:
        """The report from the registry's records, stored put-if-absent beside the version."""
        import logging

        from airlock.incident import build_report, store_report

        assert params is not None and run_id is not None
        with _refusals_fail_fast():
            request, incident, actor = _incident(params, run_id, dag_run)
            registry = _reader()
            report = build_report(registry, request.model, request.version, incident=incident,
                                  opened_at=dag_run.run_after, reason=request.reason, source=request.source,
                                  actor=actor, run_id=run_id, revocation=_revocation(registry, request, actor),
                                  evidence=request.evidence)
            stored, json_key, md_key = store_report(registry.store, report)
        log = logging.getLogger("airlock.incident")
        log.info("incident %s: report at %s and %s", incident, registry.store.object_url(json_key),
                 registry.store.object_url(md_key))
        from airlock.redact import one_line

        log.info("incident %s: %d deployment(s) to review: %s", incident, len(stored.deployments),
                 one_line(", ".join(f"{d.host}:{d.dest}" for d in stored.deployments)) or "none recorded")
        return {"incident_id": incident, "json": registry.store.object_url(json_key),
                "markdown": registry.store.object_url(md_key), "deployments": len(stored.deployments)}

    @task(task_id="notify", trigger_rule="all_done")
    def notify(params: dict | None = None, run_id: str | None = None, dag_run=None) -> dict:
        """Send the incident summary to the configured channels (webhook by default)."""
        import logging

        from airflow.sdk import get_current_context

        from airlock.incident import IncidentError, build_report, read_report, send_notifications
        from airlock.incident.report import report_keys

        assert params is not None and run_id is not None
        log = logging.getLogger("airlock.incident")
        with _refusals_fail_fast():
            request, incident, actor = _incident(params, run_id, dag_run)
            registry = _reader()
            json_key, md_key = report_keys(request.model, request.version, incident)
            try:
                report = read_report(registry.store, json_key)
                urls = {"json_url": registry.store.object_url(json_key),
                        "markdown_url": registry.store.object_url(md_key)}
            except IncidentError:
                log.warning("incident %s: the report was not stored; notifying from the records", incident)
                report = build_report(registry, request.model, request.version, incident=incident,
                                      opened_at=dag_run.run_after, reason=request.reason, source=request.source,
                                      actor=actor, run_id=run_id, revocation=_revocation(registry, request, actor),
                                      evidence=request.evidence)
                urls = {"json_url": None, "markdown_url": None}
            sent = send_notifications(report, get_current_context(), log=log, **urls)
        return {"incident_id": incident, "sent": sent}

    @task(task_id="confirm_revoked", trigger_rule="all_done")
    def confirm_revoked(params: dict | None = None, run_id: str | None = None, dag_run=None) -> dict:
        """Succeeds only when the verified index says the version is revoked."""
        from airflow.sdk.exceptions import AirflowFailException

        assert params is not None and run_id is not None
        with _refusals_fail_fast():
            request, _incident_id, actor = _incident(params, run_id, dag_run)
            revocation = _revocation(_reader(), request, actor)
        if revocation.outcome == "failed":
            raise AirflowFailException(f"{request.reference} is NOT revoked: {revocation.error}")
        return revocation.model_dump(mode="json")

    revoke() >> write_report() >> notify() >> confirm_revoked()


def _revocation(registry, request, actor: str):
    """The revocation as the verified index records it (never as the revoke task's XCom says)."""
    from airlock.incident import Revocation, revocation_in
    from airlock.registry import RegistryError

    try:
        state = registry.model_state(request.model, verified=True)
    except RegistryError as exc:
        return Revocation(outcome="failed", error=f"the index of {request.model} does not verify: {exc}")
    return revocation_in(state, request.version, actor)


model_incident()
