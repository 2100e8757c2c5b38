"""
### model_ingest

Takes one model from outside the trust boundary towards the registry.

Trigger it with a **source** (`hf://org/name[@revision]`, a vendor drop
`s3://bucket/prefix[?version=sha256:...]`, or a local drop `file:///path`), the
**revision** to pin (hf: branch, tag or commit sha, empty means `main`; drops:
the `sha256:...` drop revision, empty means "as it is now"), the **owner**
accountable for the model, and its **risk tier**, which decides the quarantine
limits, whether a drop must carry a vendor manifest, scan strictness and approval.

1. `resolve_source` pins the source to an immutable revision (HF commit sha, S3
   object versions + ETags, local file digests) and records the listing; every
   later task uses that revision, never a branch name.
2. `prepare_quarantine` (setup) checks file names, the tier's limits and free
   space, and creates this run's quarantine directory.
3. `download_to_quarantine` fetches the pinned files there: parallel, retried
   with backoff, resumable, bounded in time.
4. `verify_published_checksums` hashes every file once and compares it with the
   hub's LFS sha256 / git blob sha1 or the drop's vendor manifest; a mismatch,
   a missing or an unexpected file blocks the run.
5. `hash_manifest` builds the manifest (sha256 per file, model_signing root
   digest) from that same pass and records an event on the quarantined
   source's Asset (`source:<kind>:<name>`; never a registry model).
6. `scan_model` scans every file by content at the tier's policy; a block (or
   "could not scan") fails the run here, with every finding in the task log and
   the ScanReport in quarantine.
6b. `evaluate` (queue `gpu`) runs the tier's offline lm-eval suite on the
   quarantined copy the scan allowed (no remote code, nothing from a hub): below
   a bound blocks, a drop against the latest approved version needs approval.
   `fingerprint_baseline` (queue `gpu`) records the behavioural baseline and its
   calibration that `model_fingerprint_nightly` compares with.
7. `review_gate` sends the run to `approve` (human approval in the Airflow UI:
   Required Actions) when the tier requires it, the scan flagged something, the
   registry name differs from the source's own, the run claims a derivation, or
   the model already exists with another source repository. The form is written
   from the run's records (every value escaped) and only the configured
   reviewers, minus whoever triggered the run, may answer it. A rejection is
   final for the run; no answer within a week is a refusal.
8. `sign_model` re-derives every verdict before Vault signs anything: the scan
   is re-run on the quarantined files, the approval is read from Airflow's HITL
   record of this run (never from XCom), names, owner, tier and any derivation
   claim are checked against the registry. Re-ingesting a released revision is
   a no-op.
9. `build_aibom` writes the CycloneDX 1.6 AI-BOM (validated strictly; it binds
   the scan report and the approval) and signs it.
10. `promote` checks the approval and the BOM's bindings again, then stores
   files, signature, BOM and reports as an immutable registry version (RELEASED
   last) and records the release on the registry model's Asset
   (`airlock://registry/<org>/<name>`) with version, digests and run id.
11. `remove_quarantine` (teardown) deletes the run's quarantine directory when
   the run ends (kept after a failure only if AIRLOCK_QUARANTINE_KEEP_ON_FAILURE).

A blocked run says why: the failing task writes its reason (rule and file,
checksum and file, metric) into the run's note, shown in the grid
(airlock.runnote). Every task reports the datasets it read and wrote (source
and revision, quarantine, registry version, with digests) to OpenLineage
(airlock.lineage).

All logic lives in the `airlock` library. XCom carries summaries for people;
no task takes a verdict from it: each reads the run's records in quarantine
(derived from the run id), Airflow's own records and the registry.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import AssetAlias, Param, dag, task

from airlock.lineage import RELEASE_ALIAS, SOURCE_ALIAS
from airlock.policy import OWNER_PATTERN, REGISTRY_NAME_PATTERN, REVISION_PATTERN, SOURCE_PATTERN

RISK_TIERS = ["low", "medium", "high", "critical"]


@contextmanager
def _verdicts_fail_fast():
    """A block or a refused input fails the task without retries; a transient failure is left to retry."""
    from airflow.sdk.exceptions import AirflowFailException

    from airlock.aibom import AibomError
    from airlock.approval import ApprovalRefused
    from airlock.errors import ConfigurationError, DownloadError, IntegrityError, ManifestError, QuarantineError
    from airlock.evaluate.stage import EvaluationBlocked, EvalReportInvalid
    from airlock.fingerprint.model import FingerprintError
    from airlock.ingest import GateRefused, RegistryConflict, ScanBlocked
    from airlock.registry.base import RegistryIndexError, SourceChangedError, StoredObjectError, VersionConflictError
    from airlock.vault import VaultKeyNotFoundError, VaultPermissionDeniedError

    try:
        yield
    except DownloadError as exc:
        if exc.retryable:
            raise
        raise AirflowFailException(str(exc)) from None
    except (
        IntegrityError, QuarantineError, ManifestError, ConfigurationError, ScanBlocked, RegistryConflict,
        GateRefused, ApprovalRefused, AibomError, VersionConflictError, RegistryIndexError, StoredObjectError,
        SourceChangedError, VaultPermissionDeniedError, VaultKeyNotFoundError, EvaluationBlocked, EvalReportInvalid,
        FingerprintError,
    ) as exc:
        raise AirflowFailException(f"refused: {exc}") from None


def _registry():
    """The registry with the pipeline's signer (index checkpoints) and trust (the verified index chain)."""
    from airlock.connections import s3_access
    from airlock.ingest import pipeline_registry
    from airlock.signing import VaultTransitSigner

    return pipeline_registry(lambda: s3_access().client(), VaultTransitSigner.from_airflow_connection())


def _note_writer():
    """Where a blocked run's reason is written (test seam): the run's note through the REST API."""
    from airlock.runnote import rest_writer

    return rest_writer()


def _report_lineage(context) -> None:
    """on_success/on_failure: the datasets this task read and wrote, for the OpenLineage listener."""
    from airlock.config import load_settings
    from airlock.lineage import attach_ingest_lineage

    ti = context["ti"]
    attach_ingest_lineage(context["task"], ti.task_id, context["run_id"], load_settings().quarantine_root,
                          lambda: ti.xcom_pull(task_ids=ti.task_id))


def _note_block_reason(context) -> None:
    """on_failure: the reason this task stopped the run (rule and file, checksum and file, metric), in the run's
    note where the grid shows it."""
    from airlock.runnote import reason_from_exception, write_reason

    reason = reason_from_exception(context["ti"].task_id, context.get("exception"))
    try:
        writer = _note_writer()
    except Exception as exc:  # noqa: BLE001 - a misconfigured note writer must not hide the failure itself
        import logging

        logging.getLogger("airlock.model_ingest").warning("run note not written: %s", exc)
        return
    write_reason(writer, context["dag"].dag_id, context["run_id"], reason)


def _fill_approval_form(context) -> None:
    """pre_execute of `approve`: the form and its assignees from the run's records (never from XCom)."""
    from airlock.config import load_settings
    from airlock.ingest import prepare_approval_form

    with _verdicts_fail_fast():
        prepare_approval_form(
            context["task"], context["run_id"], context["params"],
            getattr(context["dag_run"], "triggering_user_name", None), load_settings(), _registry(),
        )


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
        "on_success_callback": _report_lineage,
        "on_failure_callback": [_report_lineage, _note_block_reason],
    },
    params={
        "source": Param(
            "hf://demo/tiny-gpt2",
            type="string",
            pattern=SOURCE_PATTERN,
            title="Source",
            description="hf://org/name[@revision], s3://bucket/prefix or file:///absolute/path.",
        ),
        "revision": Param(
            None,
            type=["null", "string"],
            pattern=REVISION_PATTERN,
            title="Revision",
            description=(
                "hf: branch, tag or commit sha (empty: main). Drops: sha256:... to assert the drop is unchanged."
            ),
        ),
        "owner": Param(
            "ml-platform",
            type="string",
            minLength=1,
            maxLength=128,
            pattern=OWNER_PATTERN,
            title="Owner",
            description="Team or person accountable for this model in the registry (letters, digits, spaces, .@-).",
        ),
        "risk_tier": Param(
            "high",
            type="string",
            enum=RISK_TIERS,
            title="Risk tier",
            description="low | medium | high | critical: quarantine limits, vendor-manifest rule, scanning, approval.",
        ),
        "registry_name": Param(
            None,
            type=["null", "string"],
            pattern=REGISTRY_NAME_PATTERN,
            title="Registry name",
            description=(
                "ORG/NAME in the registry. Empty: the hub repo id (a drop: the last two segments of its path). "
                "A name other than the source's own always needs a human approval."
            ),
        ),
        "derivation": Param(
            None,
            type=["null", "object"],
            title="Derivation record",
            description=(
                "For a derived model: {schema, parent: {model, version|root_digest}, steps: [...]}; the last "
                "step's output_root_digest must be this model's. Always needs a human approval."
            ),
        ),
    },
)
def model_ingest():
    @task(task_id="resolve_source")
    def resolve_source(params: dict | None = None, run_id: str | None = None) -> dict:
        """Check the parameters, pin the source to an immutable revision and record it for the run."""
        import logging

        from airflow.sdk.exceptions import AirflowFailException

        from airlock.config import load_settings
        from airlock.connections import hub_access, s3_access
        from airlock.errors import SourceError, SourceUnavailable
        from airlock.ingest import resolve_run
        from airlock.sources import parse_source_uri, resolve_ref

        log = logging.getLogger("airlock.model_ingest")
        assert params is not None and run_id is not None

        def resolve():
            ref = parse_source_uri(params["source"], params.get("revision"))
            log.info("resolving %s@%s", ref.uri, ref.requested_revision or "current")
            # A file drop is pinned by its listing here (no byte read); the download pins its content.
            return resolve_ref(ref, hub=hub_access() if ref.scheme == "hf" else None,
                               s3=s3_access() if ref.scheme == "s3" else None, file_pin="listing")

        try:
            with _verdicts_fail_fast():
                resolved = resolve_run(load_settings(), run_id, params, resolve, _registry())
        except SourceUnavailable:
            raise  # the hub or S3 is down or overloaded: worth a retry
        except SourceError as exc:  # bad input, not found, changed since pinned: retrying cannot help
            raise AirflowFailException(str(exc)) from None
        log.info("pinned %s to %s: %d files, %d bytes",
                 resolved.uri, resolved.revision, len(resolved.files), resolved.total_size)
        return resolved.to_json_dict()

    @task(task_id="prepare_quarantine")
    def prepare_quarantine(params: dict | None = None, run_id: str | None = None) -> dict:
        """Check names, tier limits and free space; create this run's quarantine directory."""
        from airlock.config import load_settings
        from airlock.ingest import run_area, run_source
        from airlock.lineage import prepare_summary
        from airlock.policy import policy_for
        from airlock.quarantine import preflight

        assert params is not None and run_id is not None
        root = load_settings().quarantine_root
        with _verdicts_fail_fast():
            source, area = run_source(root, run_id), run_area(root, run_id)
            checked = preflight(source, policy_for(params["risk_tier"]), area)
            area.create()
        return prepare_summary(source, area, checked)

    @task(task_id="download_to_quarantine", execution_timeout=timedelta(hours=2))
    def download_to_quarantine(params: dict | None = None, run_id: str | None = None) -> dict:
        """Fetch the pinned files into quarantine (parallel, retried, resumable, bounded in time)."""
        import logging

        from airlock.config import load_settings
        from airlock.connections import hub_access, s3_access
        from airlock.ingest import pin_downloaded_source, record_download, run_area, run_source
        from airlock.lineage import download_summary
        from airlock.policy import policy_for
        from airlock.quarantine import download, preflight
        from airlock.sources import fetcher_for

        assert params is not None and run_id is not None
        settings = load_settings()
        started_at = pendulum.now("UTC").isoformat()
        with _verdicts_fail_fast():
            source, area = run_source(settings.quarantine_root, run_id), run_area(settings.quarantine_root, run_id)
            fetcher = fetcher_for(
                source,
                hub=hub_access() if source.kind == "hf" else None,
                s3=s3_access() if source.kind == "s3" else None,
            )
            preflight(source, policy_for(params["risk_tier"]), area)  # free space may have changed since setup
            result = download(
                source, area, fetcher, workers=settings.download_workers, timeout_s=settings.download_timeout_s
            )
            source = pin_downloaded_source(settings.quarantine_root, run_id, source, result)
        ended_at = pendulum.now("UTC").isoformat()
        record_download(area, source, result, started_at, ended_at)
        logging.getLogger("airlock.model_ingest").info(
            "%s@%s: %d files, %d bytes in %.1fs (%d fetched, %d resumed, %d already present)",
            source.uri, source.revision, result.files, result.bytes, result.seconds,
            result.fetched, result.resumed, result.already_present,
        )
        return {**download_summary(source, area, result), "started_at": started_at, "ended_at": ended_at}

    @task(task_id="verify_published_checksums")
    def verify_published_checksums(params: dict | None = None, run_id: str | None = None) -> dict:
        """One hashing pass; compare with the hub's or the vendor's checksums. Any difference blocks."""
        from airlock.checksums import verify_quarantine
        from airlock.config import load_settings
        from airlock.ingest import run_area, run_source
        from airlock.lineage import verification_summary
        from airlock.policy import policy_for

        assert params is not None and run_id is not None
        root = load_settings().quarantine_root
        with _verdicts_fail_fast():
            area = run_area(root, run_id)
            report = verify_quarantine(run_source(root, run_id), area, policy_for(params["risk_tier"]))
        return verification_summary(area, report)

    @task(task_id="hash_manifest", outlets=[AssetAlias(SOURCE_ALIAS)])
    def hash_manifest(run_id: str | None = None, outlet_events=None) -> dict:
        """The manifest from the verification's pass (no second read); an Asset event with revision and root digest."""
        from airlock.config import load_settings
        from airlock.ingest import run_area, run_source
        from airlock.lineage import manifest_summary, record_quarantine_event
        from airlock.manifest import ModelRef, manifest_from_pass, save_manifest

        assert run_id is not None
        root = load_settings().quarantine_root
        with _verdicts_fail_fast():
            source, area = run_source(root, run_id), run_area(root, run_id)
            model = ModelRef(name=source.model_name, source=source.uri, revision=source.revision)
            manifest = manifest_from_pass(area.files_dir, area.digests_file, model)
        save_manifest(manifest, area.manifest_file)
        record_quarantine_event(outlet_events, source, manifest, run_id)
        return manifest_summary(area, manifest)

    @task(task_id="remove_quarantine")
    def remove_quarantine(dag_run=None, ti=None) -> dict:
        """Delete this run's quarantine directory; keep it after a failure only when configured to."""
        import logging

        from airlock.config import load_settings
        from airlock.quarantine import remove_run, run_directory

        log = logging.getLogger("airlock.model_ingest")
        settings = load_settings()
        run_dir = run_directory(settings.quarantine_root, "model_ingest", dag_run.run_id)
        if settings.quarantine_keep_on_failure and _run_failed(ti, dag_run):
            log.warning("run failed: keeping %s for forensics (AIRLOCK_QUARANTINE_KEEP_ON_FAILURE)", run_dir)
            return {"quarantine": str(run_dir), "removed": False, "kept_for_forensics": True}
        removed = remove_run(settings.quarantine_root, "model_ingest", dag_run.run_id)
        log.info("removed %s", removed or f"{run_dir} (already absent)")
        return {"quarantine": str(run_dir), "removed": removed is not None, "kept_for_forensics": False}

    @task(task_id="scan_model")
    def scan_model(params: dict | None = None, run_id: str | None = None) -> dict:
        """Scan every quarantined file by content; a block stops the run before anything is signed."""
        import logging

        from airlock.config import load_settings
        from airlock.ingest import run_area, scan_quarantine

        assert params is not None and run_id is not None
        log = logging.getLogger("airlock.model_ingest")
        with _verdicts_fail_fast():
            return scan_quarantine(run_area(load_settings().quarantine_root, run_id), params["risk_tier"], log.info)

    @task(task_id="evaluate", queue="gpu", execution_timeout=timedelta(hours=4))
    def evaluate(params: dict | None = None, run_id: str | None = None) -> dict:
        """The tier's lm-eval suite on the quarantined copy (after the scan allowed it; no remote code, offline)."""
        import logging

        from airlock.config import load_settings
        from airlock.ingest import evaluate_run

        assert params is not None and run_id is not None
        with _verdicts_fail_fast():
            return evaluate_run(load_settings(), run_id, params, _registry(),
                                logging.getLogger("airlock.model_ingest").info)

    @task(task_id="fingerprint_baseline", queue="gpu", execution_timeout=timedelta(hours=2))
    def fingerprint_baseline(params: dict | None = None, run_id: str | None = None) -> dict:
        """The behavioural baseline (calibrated in this worker's runtime class) the nightly check compares with."""
        import logging

        from airlock.config import load_settings
        from airlock.ingest import baseline_run

        assert params is not None and run_id is not None
        with _verdicts_fail_fast():
            return baseline_run(load_settings(), run_id, params, logging.getLogger("airlock.model_ingest").info)

    @task.branch(task_id="review_gate")
    def review_gate(params: dict | None = None, run_id: str | None = None) -> str:
        """Human approval when any rule asks for one (see the DAG doc); otherwise straight to signing."""
        from airlock.config import load_settings
        from airlock.ingest import review_run

        assert params is not None and run_id is not None
        with _verdicts_fail_fast():
            return "approve" if review_run(load_settings(), run_id, params, _registry()) else "sign_model"

    approve = ApprovalOperator(
        task_id="approve",
        # Filled in by _fill_approval_form from the run's records when the task runs.
        subject="Approve a model for the registry?",
        body="(the form is written from the run's records when the task starts)",
        pre_execute=_fill_approval_form,
        fail_on_reject=True,  # a rejected model must show as a failed ingestion, not a quiet skip
        response_timeout=timedelta(days=7),  # no answer within a week is a refusal
        retries=0,
    )

    @task(task_id="sign_model", trigger_rule="none_failed_min_one_success")
    def sign_model(params: dict | None = None, run_id: str | None = None) -> dict:
        """Re-derive every verdict (scan, approval, names, derivation), then sign the manifest in Vault Transit."""
        import logging

        from airlock.approval import airflow_run_records
        from airlock.config import load_settings
        from airlock.ingest import DAG_ID, sign_run

        assert params is not None and run_id is not None
        with _verdicts_fail_fast():
            registry = _registry()
            return sign_run(load_settings(), run_id, params, registry, airflow_run_records(DAG_ID, run_id),
                            lambda: registry.signer, logging.getLogger("airlock.model_ingest").info)

    @task(task_id="build_aibom")
    def build_aibom(params: dict | None = None, run_id: str | None = None) -> dict:
        """The CycloneDX 1.6 AI-BOM of this ingestion (validated strictly, binding scan report and approval), signed."""
        from airlock.config import load_settings
        from airlock.ingest import build_aibom_run

        assert params is not None and run_id is not None
        with _verdicts_fail_fast():
            registry = _registry()
            return build_aibom_run(load_settings(), run_id, params, registry, lambda: registry.signer)

    @task(task_id="promote", outlets=[AssetAlias(RELEASE_ALIAS)])
    def promote(params: dict | None = None, run_id: str | None = None, outlet_events=None) -> dict:
        """Check the gates and the BOM's bindings again; store an immutable registry version (RELEASED last)."""
        from airlock.approval import airflow_run_records
        from airlock.config import load_settings
        from airlock.ingest import DAG_ID, promote_run, run_source
        from airlock.lineage import record_release_event

        assert params is not None and run_id is not None
        settings = load_settings()
        with _verdicts_fail_fast():
            promotion = promote_run(settings, run_id, params, _registry(), airflow_run_records(DAG_ID, run_id),
                                    actor=f"airflow:model_ingest/{run_id}")
        record_release_event(outlet_events, run_source(settings.quarantine_root, run_id), promotion, run_id)
        return promotion

    prepared = prepare_quarantine()
    signed = sign_model()
    promoted = promote()
    # No task takes another's XCom as input: the order is wired here, the evidence is in the run's records.
    chain = resolve_source() >> prepared >> download_to_quarantine() >> verify_published_checksums()
    chain >> hash_manifest() >> scan_model() >> evaluate() >> fingerprint_baseline() >> review_gate() >> [approve, signed]
    approve >> signed >> build_aibom() >> promoted
    # prepare_quarantine is the setup, so the teardown runs whenever the directory was created,
    # whatever fails after it.
    promoted >> remove_quarantine().as_teardown(setups=prepared)


def _run_failed(ti, dag_run) -> bool:
    """Whether any other task of this run failed; unknown counts as failed (keeping is the safe side)."""
    try:
        states = ti.get_task_states(dag_id=dag_run.dag_id, run_ids=[dag_run.run_id])
    except Exception:  # noqa: BLE001 - keeping evidence is the fail-closed choice here
        return True
    failed = {"failed", "upstream_failed"}
    return any(state in failed for task_id, state in states.get(dag_run.run_id, {}).items() if task_id != ti.task_id)


model_ingest()
