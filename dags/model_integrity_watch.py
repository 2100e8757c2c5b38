"""
### model_integrity_watch

File integrity monitoring for the registry, like AIDE or OSSEC, except that the
reference is the **signature**, not a local database. Hourly, and triggerable.

1. `plan` lists the targets: every released, non-revoked version in the
   registry, and every deployed copy the pull records name (`airlock pull`:
   host and path; the newest pull per path) that this worker can read: copies
   on this host, and copies on other hosts whose storage is mounted here as
   `AIRLOCK_WATCH_PATHS` maps it (a JSON object, or a file holding one:
   `{"serving-1": "/mnt/serving-1"}`). Copies nothing here can reach are checked
   on their own host by `airlock watch`, which a cron job there runs and which
   reports back into the same index.
2. `check` (one mapped task per target, at most as many at once as the
   `integrity_watch` pool has slots; `make stack-up` creates the pool) re-hashes
   every object once with the parallel hasher and compares it with `model.sig`,
   verified with this host's trust store for this very version, and with the
   plan the signed index pins; the index chain itself is verified too. It logs
   modified, added and removed files, bytes re-hashed and seconds, and records
   a `checked` event (pass / fail / error) in the version's index history, and
   (pass / fail) an event on the registry model's Asset with the version's
   digests (airlock.lineage; the checks' alias, which schedules nothing).
   A check that could not run fails its task.
3. `incidents` reads this run's recorded verdicts back from the index (never
   from XCom) and, for every version that deviated or whose index no longer
   verifies, `trigger_incident` starts `model_incident` with
   `{model, version, reason, source: "integrity_watch", evidence}`.
4. `summary` logs what the run cost (bytes re-hashed, seconds) and fails the run
   when anything deviated or could not be checked, so it shows in the grid.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import AssetAlias, dag, task

from airlock.lineage import CHECK_ALIAS

# Created by `make stack-up` (scripts/stack.py); its slots bound how many targets are re-hashed at once
# across all runs (each check already uses every core of its worker).
WATCH_POOL = "integrity_watch"
DAG_ID = "model_integrity_watch"


def _registry():
    """The registry as the watch reads it: no signer (check records need none), the host's trust store, and this
    host's memory of verified index heads (a rolled-back index is a finding)."""
    from airlock.connections import s3_access
    from airlock.ingest import open_configured_registry
    from airlock.registry import HostState
    from airlock.trust import host_trust_store

    registry = open_configured_registry(lambda: s3_access().client(), trust=host_trust_store())
    registry.host_state = HostState.from_settings()
    return registry


@dag(
    dag_id=DAG_ID,
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,  # a security control: it runs from the moment it is deployed
    tags=["airlock", "integrity"],
    doc_md=__doc__,
    default_args={
        "owner": "airlock",
        "retries": 1,
        "retry_delay": timedelta(minutes=1),
        "execution_timeout": timedelta(hours=2),
    },
)
def model_integrity_watch():
    @task(task_id="plan")
    def plan() -> list[dict]:
        """Every released version and every reachable deployed copy."""
        import logging

        from airlock.watch import plan_watch

        targets = plan_watch(_registry())
        logging.getLogger("airlock.watch").info(
            "%d targets: %d registry versions, %d deployed copies", len(targets),
            sum(t.kind == "registry" for t in targets), sum(t.kind == "deployed" for t in targets))
        return [t.model_dump(mode="json") for t in targets]

    @task(task_id="check", pool=WATCH_POOL, pool_slots=1, map_index_template="{{ watch_target }}",
          outlets=[AssetAlias(CHECK_ALIAS)])
    def check(target: dict, run_id: str | None = None, outlet_events=None) -> dict:
        """Re-hash one target against its signed manifest and record the verdict in the index."""
        import logging

        from airflow.sdk import get_current_context
        from airflow.sdk.exceptions import AirflowException

        from airlock.lineage import record_watch_event, version_digests
        from airlock.redact import safe_text
        from airlock.watch import WatchTarget, check_target, record_result

        log = logging.getLogger("airlock.watch")
        planned = WatchTarget.model_validate(target)
        get_current_context()["watch_target"] = planned.describe()  # type: ignore[typeddict-unknown-key]
        registry = _registry()
        result = check_target(registry, planned, registry.trust())
        for what in ("modified", "added", "removed", "problems"):
            for item in getattr(result, what):
                log.warning("%s: %s", what, safe_text(item, escape_backslash=False))  # names from storage
        log.info("%s", result.summary())
        event = record_result(registry, result, actor=f"airflow:{DAG_ID}/{run_id}", run_id=run_id)
        log.info("recorded as index event #%d of %s", event.seq, planned.model)
        if result.verdict == "error":
            raise AirflowException(result.summary())  # could not check: worth a retry, and never a pass
        record_watch_event(outlet_events, result, run_id, version_digests(registry, planned.model, planned.version))
        return result.to_json_dict()

    @task(task_id="incidents", trigger_rule="all_done")
    def incidents(run_id: str | None = None) -> list[dict]:
        """The incidents this run's recorded deviations call for (read back from the index)."""
        import logging

        from airlock.redact import safe_text
        from airlock.watch.run import run_outcome

        assert run_id is not None
        outcome = run_outcome(_registry(), run_id)
        log = logging.getLogger("airlock.watch")
        log.info("recorded verdicts: %s", outcome.verdicts or "none")
        for conf in outcome.incidents:
            log.warning("opening an incident for %s@%s: %s", conf["model"], conf["version"],
                        safe_text(conf["reason"], escape_backslash=False))
        return outcome.incidents

    checked = check.expand(target=plan())
    opened = incidents()
    checked >> opened
    # conf comes from XCom: expanded values are not rendered as templates, so names from storage stay text.
    trigger_incident = TriggerDagRunOperator.partial(
        task_id="trigger_incident",
        trigger_dag_id="model_incident",
        # One run id per watch run and version ('~' appears in no model name or version, and run ids may not hold
        # '/'): a retried watch does not open the same incident twice, whatever order the incidents come in.
        trigger_run_id="integrity_watch__{{ run_id }}__{{ task.conf['model'] | replace('/', '~') }}~"
                       "{{ task.conf['version'] }}",
        skip_when_already_exists=True,
        wait_for_completion=False,
        retries=2,
    ).expand(conf=opened)

    @task(task_id="summary", trigger_rule="all_done")
    def summary(run_id: str | None = None, dag_run=None, ti=None) -> dict:
        """Bytes re-hashed and seconds for the run; fails the run on any deviation or unchecked target."""
        import logging

        from airflow.sdk.exceptions import AirflowFailException

        from airlock.watch.run import run_outcome

        assert run_id is not None
        outcome = run_outcome(_registry(), run_id)
        pulled = ti.xcom_pull(task_ids="check", key="return_value") or []
        results = [r for r in (pulled if isinstance(pulled, list) else list(pulled)) if isinstance(r, dict)]
        hashed = sum(int(r.get("bytes_hashed", 0)) for r in results)
        busy = sum(float(r.get("seconds", 0.0)) for r in results)
        wall = (pendulum.now("UTC") - dag_run.start_date).total_seconds() if dag_run and dag_run.start_date else 0.0
        totals = {"verdicts": outcome.verdicts, "incidents": len(outcome.incidents), "bytes_hashed": hashed,
                  "check_seconds": round(busy, 3), "run_seconds": round(wall, 3)}
        logging.getLogger("airlock.watch").info(
            "run %s: %s; %d bytes re-hashed, %.2fs of checking, %.2fs for the run (%.0f MiB/s of checking)",
            run_id, outcome.verdicts or "nothing checked", hashed, busy, wall, hashed / busy / 2**20 if busy else 0)
        bad = outcome.verdicts.get("fail", 0) + outcome.verdicts.get("error", 0)
        planned = ti.xcom_pull(task_ids="plan", key="return_value")
        if planned is None:  # no plan, no checks: a run that checked nothing must not look like a clean one
            raise AirflowFailException("the plan did not complete; nothing was checked")
        unrecorded = len(planned) - sum(outcome.verdicts.values())
        if bad or outcome.incidents or unrecorded > 0:
            raise AirflowFailException(
                f"{outcome.verdicts.get('fail', 0)} deviation(s), {outcome.verdicts.get('error', 0)} check(s) that "
                f"could not run, {max(unrecorded, 0)} target(s) without a recorded verdict, "
                f"{len(outcome.incidents)} incident(s) opened")
        return totals

    trigger_incident >> summary()


model_integrity_watch()
