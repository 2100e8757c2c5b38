"""
### model_fingerprint_nightly

Re-runs the behavioural fingerprint of every released model version and compares it with the baseline
recorded at ingestion, within the baseline's runtime class. Daily at 02:00 UTC, and whenever `promote`
releases a version (an event on a registry-model Asset through the release alias; quarantine events,
checks and revocations do not trigger it): a new version gets its first check at once (such runs check
only what was never checked; the daily run checks everything).

1. `plan` lists one check per released, not revoked version and baseline runtime class (versions without
   a baseline are listed as not covered), and one per configured endpoint (`AIRLOCK_FINGERPRINT_ENDPOINTS`
   file or the `airlock_fingerprint_endpoints` Variable: `[{name, url, model, version}]`).
2. `check_version` (CPU classes) / `check_version_gpu` (CUDA classes, queue `gpu`), one mapped task each:
   fetch a **verified** copy (signature, digests, signed index and AI-BOM, as `airlock pull` checks;
   not recorded as a deployment), fingerprint it in the baseline's runtime class (another class is an
   error, never a comparison), compare with the baseline and its calibrated noise floor, validate with
   great-expectations (Data Docs kept, offline), write the check report under `AIRLOCK_CHECKS_DIR`,
   record the verdict in the registry's check history and an event on the registry model's Asset with the
   version's digests (through the checks' alias, which does not schedule this DAG).
3. `check_endpoint`: sampled completions of each endpoint against the baseline samples of the version it
   claims (an MMD permutation test); a version without baseline samples is an error, not a pass.
4. `incidents` reads this run's deviations back from the registry's check history (never from XCom), and
   `raise_incident` triggers `model_incident` once per deviating version (source `fingerprint_nightly`,
   the check reports and distances as evidence); without that DAG it fails with the distances.
5. `summary` fails the run when planning met a model it could not read.

A check that could not produce a verdict fails its task (recorded as `error`); a deviation does not fail
its check (the verdict is recorded; the incident is the alarm). All logic is in `airlock.fingerprint.nightly`.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import (
    AssetAlias,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    dag,
    task,
)
from airlock.fingerprint.nightly import CHECK_ALIAS, DAG_ID, INCIDENT_DAG_ID
from airlock.lineage import RELEASE_ALIAS

# Bounded parallelism: each check holds a model in memory. A pool of its own can be named with
# AIRLOCK_FINGERPRINT_POOL (created by the stack or an admin); default_pool otherwise.
POOL = os.environ.get("AIRLOCK_FINGERPRINT_POOL", "default_pool")
PARALLEL_CHECKS = int(os.environ.get("AIRLOCK_FINGERPRINT_PARALLELISM", "2"))


def _registry():
    """The configured registry, verified with the host's trust store (no signer: checks need none)."""
    from airlock.connections import s3_access
    from airlock.ingest import open_configured_registry

    return open_configured_registry(lambda: s3_access().client())


def _endpoints():
    """The endpoints to check: the AIRLOCK_FINGERPRINT_ENDPOINTS file, else the Airflow Variable."""
    from airlock.fingerprint.nightly import (
        ENDPOINTS_ENV,
        ENDPOINTS_VARIABLE,
        load_endpoints,
    )

    if os.environ.get(ENDPOINTS_ENV, "").strip():
        return load_endpoints()
    from airflow.sdk import Variable

    return load_endpoints(Variable.get(ENDPOINTS_VARIABLE, default=None))


def _digests(outcome) -> dict:
    """The checked version's root, signature and AI-BOM digests for its Asset event (lineage only)."""
    from airlock.lineage import version_digests

    return version_digests(_registry(), outcome.model, outcome.version)


def _outcome_to_task_state(outcome) -> dict:
    """error -> the task fails (no retry: the same bytes give the same refusal); skipped -> skipped."""
    import logging

    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    logging.getLogger("airlock.model_fingerprint_nightly").info(
        "%s@%s %s: %s (report %s)", outcome.model, outcome.version, outcome.verdict, outcome.reason, outcome.report)
    if outcome.skipped:
        raise AirflowSkipException(outcome.reason)
    if outcome.verdict == "error":
        raise AirflowFailException(f"{outcome.model}@{outcome.version}: check error: {outcome.reason}")
    return outcome.to_json_dict()


@dag(
    dag_id=DAG_ID,
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 2 * * *", timezone="UTC"),
        assets=AssetAlias(RELEASE_ALIAS),
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["airlock", "fingerprint", "monitoring"],
    doc_md=__doc__,
    default_args={
        "owner": "airlock",
        "retries": 1,
        "retry_delay": timedelta(minutes=2),
        "execution_timeout": timedelta(hours=2),
    },
    params={
        "scope": Param("auto", type="string", enum=["auto", "all", "new"], title="Scope",
                       description="all: every version; new: only versions never checked; auto: new for "
                                   "Asset-triggered runs, all otherwise."),
    },
)
def model_fingerprint_nightly():
    @task(task_id="plan")
    def plan(params: dict | None = None, dag_run=None) -> dict:
        """One check per released, not revoked version and baseline runtime class, and per endpoint."""
        import logging

        from airlock.fingerprint.nightly import plan_checks

        assert params is not None and dag_run is not None
        scope = params["scope"]
        if scope == "auto":
            run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
            scope = "new" if run_type == "asset_triggered" else "all"
        planned = plan_checks(_registry(), scope=scope, endpoints=_endpoints() if scope == "all" else ())
        log = logging.getLogger("airlock.model_fingerprint_nightly")
        log.info("scope %s: %d CPU check(s), %d GPU check(s), %d endpoint(s)", scope, len(planned.cpu),
                 len(planned.gpu), len(planned.endpoints))
        for line in planned.uncovered:
            log.warning("not covered: %s", line)
        for line in planned.problems:
            log.error("cannot plan: %s", line)
        return planned.to_json_dict()

    @task(task_id="check_version", pool=POOL, pool_slots=1, max_active_tis_per_dagrun=PARALLEL_CHECKS,
          outlets=[AssetAlias(CHECK_ALIAS)], map_index_template="{{ check_label }}")
    def check_version(item: dict, run_id: str | None = None, outlet_events=None) -> dict:
        """Verified copy -> fingerprint in the baseline's runtime class -> compare + GX -> record."""
        import logging

        from airflow.sdk import get_current_context
        from airlock.fingerprint.nightly import (
            NightlySettings,
            PlannedCheck,
            check_version,
            record_check_event,
        )

        assert run_id is not None
        planned = PlannedCheck.model_validate(item)
        get_current_context()["check_label"] = planned.label
        outcome = check_version(_registry(), planned, run_id=run_id, settings=NightlySettings.from_env(),
                                log=logging.getLogger("airlock.model_fingerprint_nightly").info)
        if not outcome.skipped and outcome.verdict != "error":
            record_check_event(outlet_events, outcome, run_id, _digests(outcome))
        return _outcome_to_task_state(outcome)

    @task(task_id="check_endpoint", pool=POOL, pool_slots=1, max_active_tis_per_dagrun=PARALLEL_CHECKS,
          outlets=[AssetAlias(CHECK_ALIAS)], map_index_template="{{ check_label }}",
          execution_timeout=timedelta(hours=1))
    def check_endpoint(name: str, run_id: str | None = None, outlet_events=None) -> dict:
        """The endpoint's sampled text against the baseline samples of the version it claims."""
        import logging

        from airflow.sdk import get_current_context
        from airlock.fingerprint.nightly import (
            NightlySettings,
            check_endpoint,
            record_check_event,
        )

        assert run_id is not None
        get_current_context()["check_label"] = name
        outcome = check_endpoint(_registry(), name, _endpoints(), run_id=run_id, settings=NightlySettings.from_env(),
                                 log=logging.getLogger("airlock.model_fingerprint_nightly").info)
        if outcome.verdict != "error":
            record_check_event(outlet_events, outcome, run_id, _digests(outcome))
        return _outcome_to_task_state(outcome)

    @task(task_id="incidents", trigger_rule="all_done")
    def incidents(run_id: str | None = None) -> list:
        """One `model_incident` trigger per version this run recorded a deviation of (read back from the
        registry's check history, never from XCom)."""
        from airlock.fingerprint.nightly import (
            NightlySettings,
            incident_confs,
            incident_run_id,
        )

        assert run_id is not None
        confs = incident_confs(_registry(), NightlySettings.from_env(), run_id)
        return [{"conf": conf, "trigger_run_id": incident_run_id(conf, run_id)} for conf in confs]

    # Retries are for a busy API server; a missing model_incident fails at once (AirflowFailException).
    @task(task_id="raise_incident", retries=2, map_index_template="{{ incident_label }}")
    def raise_incident(conf: dict, trigger_run_id: str, ti=None) -> None:
        """Trigger `model_incident` for one deviating version; without that DAG, fail with the distances.

        Raises the Task SDK's trigger signal itself (what TriggerDagRunOperator does) so that the DAG file
        does not import the operator's module at parse time.
        """
        import json
        import logging

        from airflow.sdk import get_current_context, timezone
        from airflow.sdk.exceptions import (
            AirflowFailException,
            AirflowRuntimeError,
            DagRunTriggerException,
        )

        get_current_context()["incident_label"] = f"{conf['model']}@{conf['version']}"
        evidence = json.dumps(conf.get("evidence"), sort_keys=True)
        logging.getLogger("airlock.model_fingerprint_nightly").error(
            "behavioural deviation of %s@%s: %s; evidence %s", conf["model"], conf["version"], conf["reason"], evidence)
        try:
            ti.get_dag(INCIDENT_DAG_ID)
        except AirflowRuntimeError as exc:
            detail = exc.error.detail if isinstance(exc.error.detail, dict) else {}
            if detail.get("status_code") != 404:
                raise  # the API server could not answer: retried
            raise AirflowFailException(f"{conf['model']}@{conf['version']}: behavioural deviation and no DAG "
                                       f"{INCIDENT_DAG_ID} to raise the incident with: {conf['reason']}; "
                                       f"evidence {evidence}") from None
        raise DagRunTriggerException(
            trigger_dag_id=INCIDENT_DAG_ID, dag_run_id=trigger_run_id, conf=conf, logical_date=None,
            run_after=timezone.utcnow(), reset_dag_run=False, skip_when_already_exists=True,
            wait_for_completion=False, allowed_states=["success"], failed_states=["failed"], poke_interval=60,
            deferrable=False, note=f"fingerprint deviation found by {DAG_ID}",
        )

    @task(task_id="summary", trigger_rule="all_done")
    def summary(planned: dict) -> dict:
        """The run's coverage; fails when a model could not be planned (its versions went unchecked)."""
        from airflow.sdk.exceptions import AirflowFailException

        counts = {k: len(planned.get(k) or []) for k in ("cpu", "gpu", "endpoints", "uncovered", "revoked")}
        if planned.get("problems"):
            raise AirflowFailException("models not checked: " + "; ".join(planned["problems"])[:2000])
        return counts

    @task(task_id="select")
    def select(planned: dict, key: str) -> list:
        """One list of the plan (a mapped task expands over a whole return value only)."""
        return planned[key]

    planned = plan()
    cpu = check_version.expand(item=select.override(task_id="plan_cpu")(planned, "cpu"))
    gpu = check_version.override(task_id="check_version_gpu", queue="gpu").expand(
        item=select.override(task_id="plan_gpu")(planned, "gpu"))
    endpoint_checks = check_endpoint.expand(name=select.override(task_id="plan_endpoints")(planned, "endpoints"))
    deviations = incidents()
    [cpu, gpu, endpoint_checks] >> deviations
    raise_incident.expand_kwargs(deviations)
    [cpu, gpu, endpoint_checks] >> summary(planned)


model_fingerprint_nightly()
