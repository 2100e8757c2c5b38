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
   digest) from that same pass and records an event on the model's Asset.
6. `scan_model` scans every file by content at the tier's policy; a block (or
   "could not scan") fails the run here, with every finding in the task log and
   the ScanReport in quarantine.
7. `review_gate` sends the run to `approve` (human approval in the Airflow UI:
   Required Actions) when the tier requires it or the scan flagged something;
   a rejection or a timeout fails the run.
8. `sign_model` signs the manifest with the Vault Transit key (`airlock_vault`
   connection) into an OpenSSF model-signing bundle; re-ingesting a revision
   that is already released is a no-op.
9. `build_aibom` writes the CycloneDX 1.6 AI-BOM (validated strictly) and signs it.
10. `promote` stores files, signature, BOM and reports as an immutable registry
   version (RELEASED last) and records the Asset event with version and digests.
11. `remove_quarantine` (teardown) deletes the run's quarantine directory when
   the run ends (kept after a failure only if AIRLOCK_QUARANTINE_KEEP_ON_FAILURE).

All logic lives in the `airlock` library; tasks pass paths and digests, never bytes.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import AssetAlias, Param, dag, task

from airlock.lineage import MODEL_ALIAS

RISK_TIERS = ["low", "medium", "high", "critical"]
SOURCE_PATTERN = (
    r"^(hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._/-]+)?"
    r"|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^?#]*)?(\?version=sha256:[0-9a-f]{64})?"
    r"|file:///[^?#]*(\?version=sha256:[0-9a-f]{64})?)$"
)


@contextmanager
def _verdicts_fail_fast():
    """A block or a refused input fails the task without retries; a transient failure is left to retry."""
    from airflow.sdk.exceptions import AirflowFailException

    from airlock.errors import ConfigurationError, DownloadError, IntegrityError, ManifestError, QuarantineError
    from airlock.ingest import RegistryConflict, ScanBlocked
    from airlock.vault import VaultKeyNotFoundError, VaultPermissionDeniedError

    try:
        yield
    except DownloadError as exc:
        if exc.retryable:
            raise
        raise AirflowFailException(str(exc)) from None
    except (
        IntegrityError, QuarantineError, ManifestError, ConfigurationError, ScanBlocked, RegistryConflict,
        VaultPermissionDeniedError, VaultKeyNotFoundError,
    ) as exc:
        raise AirflowFailException(str(exc)) from None


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
            pattern=SOURCE_PATTERN,
            title="Source",
            description="hf://org/name[@revision], s3://bucket/prefix or file:///absolute/path.",
        ),
        "revision": Param(
            None,
            type=["null", "string"],
            pattern=r"^[A-Za-z0-9._/:-]{1,255}$",
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
            title="Owner",
            description="Team or person accountable for this model in the registry.",
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
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$",
            title="Registry name",
            description="ORG/NAME in the registry. Empty: the hub repo id (required for s3:// and file:// drops).",
        ),
        "derivation": Param(
            None,
            type=["null", "object"],
            title="Derivation record",
            description="For a derived model: {schema, parent: {model, version|root_digest}, steps: [...]}.",
        ),
    },
)
def model_ingest():
    @task(task_id="resolve_source")
    def resolve_source(params: dict | None = None) -> dict:
        """Pin the source to an immutable revision and record the listing (paths, sizes, checksums)."""
        import logging

        from airflow.sdk.exceptions import AirflowFailException

        from airlock.connections import hub_access, s3_access
        from airlock.errors import SourceError, SourceUnavailable
        from airlock.sources import parse_source_uri, resolve_ref

        log = logging.getLogger("airlock.model_ingest")
        assert params is not None
        try:
            ref = parse_source_uri(params["source"], params.get("revision"))
            hub = hub_access() if ref.scheme == "hf" else None
            s3 = s3_access() if ref.scheme == "s3" else None
            log.info("resolving %s@%s", ref.uri, ref.requested_revision or "current")
            resolved = resolve_ref(ref, hub=hub, s3=s3)
        except SourceUnavailable:
            raise  # the hub or S3 is down or overloaded: worth a retry
        except SourceError as exc:  # bad input, not found, changed since pinned: retrying cannot help
            raise AirflowFailException(str(exc)) from None
        log.info(
            "pinned %s to %s: %d files, %d bytes",
            ref.uri, resolved.revision, len(resolved.files), resolved.total_size,
        )
        return resolved.to_json_dict()

    @task(task_id="prepare_quarantine")
    def prepare_quarantine(resolved: dict, params: dict | None = None, run_id: str | None = None) -> dict:
        """Check names, tier limits and free space; create this run's quarantine directory."""
        from airlock.config import load_settings
        from airlock.lineage import prepare_summary
        from airlock.policy import policy_for
        from airlock.quarantine import QuarantineArea, preflight
        from airlock.sources import ResolvedSource

        assert params is not None and run_id is not None
        source = ResolvedSource.model_validate(resolved)
        area = QuarantineArea.for_run(load_settings().quarantine_root, "model_ingest", run_id, source.uri)
        with _verdicts_fail_fast():
            checked = preflight(source, policy_for(params["risk_tier"]), area)
            area.create()
        return prepare_summary(source, area, checked)

    @task(task_id="download_to_quarantine", execution_timeout=timedelta(hours=2))
    def download_to_quarantine(resolved: dict, prepared: dict, params: dict | None = None) -> dict:
        """Fetch the pinned files into quarantine (parallel, retried, resumable, bounded in time)."""
        import logging

        from airlock.config import load_settings
        from airlock.connections import hub_access, s3_access
        from airlock.lineage import download_summary
        from airlock.policy import policy_for
        from airlock.quarantine import QuarantineArea, download, preflight
        from airlock.sources import ResolvedSource, fetcher_for

        assert params is not None
        settings = load_settings()
        source = ResolvedSource.model_validate(resolved)
        area = QuarantineArea.at(settings.quarantine_root, prepared["quarantine"])
        fetcher = fetcher_for(
            source,
            hub=hub_access() if source.kind == "hf" else None,
            s3=s3_access() if source.kind == "s3" else None,
        )
        started_at = pendulum.now("UTC").isoformat()
        with _verdicts_fail_fast():
            preflight(source, policy_for(params["risk_tier"]), area)  # free space may have changed since setup
            result = download(
                source, area, fetcher, workers=settings.download_workers, timeout_s=settings.download_timeout_s
            )
        logging.getLogger("airlock.model_ingest").info(
            "%s@%s: %d files, %d bytes in %.1fs (%d fetched, %d resumed, %d already present)",
            source.uri, source.revision, result.files, result.bytes, result.seconds,
            result.fetched, result.resumed, result.already_present,
        )
        return {**download_summary(source, area, result), "started_at": started_at,
                "ended_at": pendulum.now("UTC").isoformat()}

    @task(task_id="verify_published_checksums")
    def verify_published_checksums(resolved: dict, downloaded: dict, params: dict | None = None) -> dict:
        """One hashing pass; compare with the hub's or the vendor's checksums. Any difference blocks."""
        from airlock.checksums import verify_quarantine
        from airlock.config import load_settings
        from airlock.lineage import verification_summary
        from airlock.policy import policy_for
        from airlock.quarantine import QuarantineArea
        from airlock.sources import ResolvedSource

        assert params is not None
        source = ResolvedSource.model_validate(resolved)
        area = QuarantineArea.at(load_settings().quarantine_root, downloaded["quarantine"])
        with _verdicts_fail_fast():
            report = verify_quarantine(source, area, policy_for(params["risk_tier"]))
        return verification_summary(area, report)

    @task(task_id="hash_manifest", outlets=[AssetAlias(MODEL_ALIAS)])
    def hash_manifest(resolved: dict, verified: dict, outlet_events=None) -> dict:
        """The manifest from the verification's pass (no second read); an Asset event with revision and root digest."""
        from airlock.config import load_settings
        from airlock.lineage import manifest_summary, record_model_event
        from airlock.manifest import ModelRef, manifest_from_pass, save_manifest
        from airlock.quarantine import QuarantineArea
        from airlock.sources import ResolvedSource

        source = ResolvedSource.model_validate(resolved)
        area = QuarantineArea.at(load_settings().quarantine_root, verified["quarantine"])
        model = ModelRef(name=source.model_name, source=source.uri, revision=source.revision)
        with _verdicts_fail_fast():
            manifest = manifest_from_pass(area.files_dir, area.digests_file, model)
        save_manifest(manifest, area.manifest_file)
        record_model_event(outlet_events, source, manifest, stage="quarantine")
        return manifest_summary(area, manifest)

    @task(task_id="remove_quarantine")
    def remove_quarantine(dag_run=None, ti=None) -> dict:
        """Delete this run's quarantine directory; keep it after a failure only when configured to."""
        import logging

        from airlock.config import load_settings
        from airlock.quarantine import release_reservations, remove_run, run_directory

        log = logging.getLogger("airlock.model_ingest")
        settings = load_settings()
        run_dir = run_directory(settings.quarantine_root, "model_ingest", dag_run.run_id)
        if settings.quarantine_keep_on_failure and _run_failed(ti, dag_run):
            log.warning("run failed: keeping %s for forensics (AIRLOCK_QUARANTINE_KEEP_ON_FAILURE)", run_dir)
            release_reservations(settings.quarantine_root, "model_ingest", dag_run.run_id)  # its bytes are on disk
            return {"quarantine": str(run_dir), "removed": False, "kept_for_forensics": True}
        removed = remove_run(settings.quarantine_root, "model_ingest", dag_run.run_id)
        log.info("removed %s", removed or f"{run_dir} (already absent)")
        return {"quarantine": str(run_dir), "removed": removed is not None, "kept_for_forensics": False}

    @task(task_id="scan_model")
    def scan_model(hashed: dict, params: dict | None = None) -> dict:
        """Scan every quarantined file by content; a block stops the run before anything is signed."""
        import logging

        from airlock.config import load_settings
        from airlock.ingest import scan_quarantine
        from airlock.quarantine import QuarantineArea

        assert params is not None
        log = logging.getLogger("airlock.model_ingest")
        area = QuarantineArea.at(load_settings().quarantine_root, hashed["quarantine"])
        with _verdicts_fail_fast():
            return scan_quarantine(area, params["risk_tier"], log.info)

    @task.branch(task_id="review_gate")
    def review_gate(scanned: dict, params: dict | None = None) -> str:
        """Human approval when the tier requires it or the scan flagged something; otherwise straight to signing."""
        from airlock.ingest import approval_required

        assert params is not None
        return "approve" if approval_required(params["risk_tier"], scanned) else "sign_model"

    approve = ApprovalOperator(
        task_id="approve",
        subject="Approve {{ params.source }} (tier {{ params.risk_tier }}) for the model registry?",
        body=(
            "**Source:** {{ params.source }} pinned to `{{ ti.xcom_pull(task_ids='resolve_source')['revision'] }}`\n\n"
            "**Owner:** {{ params.owner }}\n\n"
            "**Root digest:** `sha256:{{ ti.xcom_pull(task_ids='hash_manifest')['root_digest'] }}`\n\n"
            "**Scan:** {{ ti.xcom_pull(task_ids='scan_model')['verdict'] }}, "
            "{{ ti.xcom_pull(task_ids='scan_model')['flagged'] }} flagged finding(s); "
            "report `{{ ti.xcom_pull(task_ids='scan_model')['report'] }}`\n\n"
            "Approving lets Airlock sign this model and promote it. Rejecting fails the run."
        ),
        fail_on_reject=True,  # a rejected model must show as a failed ingestion, not a quiet skip
        response_timeout=timedelta(days=7),  # no answer within a week is a refusal
        retries=0,
    )

    @task(task_id="sign_model", trigger_rule="none_failed_min_one_success")
    def sign_model(resolved: dict, hashed: dict, scanned: dict, params: dict | None = None, ti=None) -> dict:
        """Sign the manifest in Vault Transit; a revision already released with the same digest is a no-op."""
        from airlock.config import load_settings
        from airlock.connections import s3_access
        from airlock.ingest import (
            already_released,
            approver_of,
            open_configured_registry,
            registry_target,
            sign_quarantine,
        )
        from airlock.quarantine import QuarantineArea
        from airlock.signing import VaultTransitSigner
        from airlock.sources import ResolvedSource

        assert params is not None
        source = ResolvedSource.model_validate(resolved)
        area = QuarantineArea.at(load_settings().quarantine_root, hashed["quarantine"])
        with _verdicts_fail_fast():
            approver = approver_of(ti.xcom_pull(task_ids="approve"), params["risk_tier"], scanned)
            target = registry_target(source.kind, source.model_name, source.revision, params.get("registry_name"))
            registry = open_configured_registry(lambda: s3_access().client())
            existing = already_released(registry, target, hashed["root_digest"])
            if existing is not None:
                return {**target.to_json_dict(), "already_released": existing}
            signer = VaultTransitSigner.from_airflow_connection()
            return {**target.to_json_dict(), **sign_quarantine(area, target, signer), "approver": approver}

    @task(task_id="build_aibom")
    def build_aibom(
        resolved: dict, downloaded: dict, hashed: dict, scanned: dict, signed: dict, params: dict | None = None,
        run_id: str | None = None,
    ) -> dict:
        """The CycloneDX 1.6 AI-BOM of this ingestion (validated strictly), signed like the model."""
        from airlock.config import load_settings
        from airlock.connections import s3_access
        from airlock.ingest import RegistryTarget, build_quarantine_aibom, ingest_stage_records, open_configured_registry
        from airlock.quarantine import QuarantineArea
        from airlock.signing import VaultTransitSigner
        from airlock.sources import ResolvedSource

        assert params is not None and run_id is not None
        if "already_released" in signed:
            return {"skipped": "already released", **signed["already_released"]}
        source = ResolvedSource.model_validate(resolved)
        area = QuarantineArea.at(load_settings().quarantine_root, hashed["quarantine"])
        target = RegistryTarget(signed["model"], signed["version"])
        with _verdicts_fail_fast():
            registry = open_configured_registry(lambda: s3_access().client())
            return build_quarantine_aibom(
                area, target,
                stages=ingest_stage_records(source.kind, downloaded, scanned, signed, run_id),
                run_id=run_id,
                registry_url=registry.version_url(target.model, target.version),
                signer=VaultTransitSigner.from_airflow_connection(),
                derivation=params.get("derivation"),
                registry=registry,
            )

    @task(task_id="promote", outlets=[AssetAlias(MODEL_ALIAS)])
    def promote(
        resolved: dict, hashed: dict, scanned: dict, signed: dict, bom: dict, params: dict | None = None,
        outlet_events=None, ti=None,
    ) -> dict:
        """Store everything as an immutable registry version (RELEASED last); record the model's Asset event."""
        from airlock.config import load_settings
        from airlock.connections import s3_access
        from airlock.ingest import RegistryTarget, approver_of, open_configured_registry, promote_quarantine
        from airlock.lineage import record_promotion_event
        from airlock.quarantine import QuarantineArea
        from airlock.sources import ResolvedSource

        assert params is not None
        source = ResolvedSource.model_validate(resolved)
        if "already_released" in signed:
            promotion = signed["already_released"]
        else:
            area = QuarantineArea.at(load_settings().quarantine_root, hashed["quarantine"])
            with _verdicts_fail_fast():
                promotion = promote_quarantine(
                    area, RegistryTarget(signed["model"], signed["version"]),
                    open_configured_registry(lambda: s3_access().client()),
                    owner=params["owner"], tier=params["risk_tier"],
                    approver=approver_of(ti.xcom_pull(task_ids="approve"), params["risk_tier"], scanned),
                    actor=f"airflow:model_ingest/{ti.run_id}",
                )
            promotion = {**promotion, "key_id": signed["key_id"]}
        record_promotion_event(outlet_events, source, promotion)
        return promotion

    resolved = resolve_source()
    prepared = prepare_quarantine(resolved)
    downloaded = download_to_quarantine(resolved, prepared)
    verified = verify_published_checksums(resolved, downloaded)
    manifest = hash_manifest(resolved, verified)
    scanned = scan_model(manifest)
    gate = review_gate(scanned)
    signed = sign_model(resolved, manifest, scanned)
    gate >> [approve, signed]
    approve >> signed
    bom = build_aibom(resolved, downloaded, manifest, scanned, signed)
    promoted = promote(resolved, manifest, scanned, signed, bom)
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
