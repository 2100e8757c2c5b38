"""`model_ingest` against the real demo hub: dag.test() in-process, and a real run through the API.

dag.test() runs every task in this process, so the quarantine root is pointed
at a temporary directory per test with the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airlock.quarantine import RESERVATIONS_DIR
from tests.conftest import require_env

REPO = Path(__file__).resolve().parents[2]
# The running stack's registry (tests below point AIRLOCK_REGISTRY at a temporary one for dag.test runs).
STACK_REGISTRY = os.environ.get("AIRLOCK_REGISTRY", "")


@pytest.fixture()
def model_ingest(airflow_db):
    """A freshly parsed DAG per test: dag.test() leaves a run's conf in the DAG object's params."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags" / "model_ingest.py")).dags["model_ingest"]


@pytest.fixture(scope="module")
def hub_commit() -> str:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=require_env("AIRLOCK_HUB_ENDPOINT"), token=False)
    return api.model_info("demo/tiny-gpt2", revision="main").sha


@pytest.fixture(autouse=True)
def quarantine_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "quarantine"
    monkeypatch.setenv("AIRLOCK_QUARANTINE_ROOT", str(root))
    monkeypatch.setenv("AIRLOCK_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.delenv("AIRLOCK_QUARANTINE_KEEP_ON_FAILURE", raising=False)
    return root


def _states(dag_run) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id)
        )
        return {ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state) for ti in rows}


def _asset_events(dag_run) -> list[tuple[str, dict]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetModel.uri, AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetEvent.source_dag_id == dag_run.dag_id, AssetEvent.source_run_id == dag_run.run_id)
        )
        return [(uri, extra) for uri, extra in rows]


def _xcom(dag_run, task_id: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id, key="return_value")
        ).first()
        return XComModel.deserialize_value(row)


def test_dag_test_pins_the_demo_model_to_its_commit(model_ingest, hub_commit: str) -> None:
    dag_run = model_ingest.test(
        run_conf={"source": "hf://demo/tiny-gpt2", "revision": None, "owner": "tests", "risk_tier": "low"}
    )
    assert dag_run.state == "success"
    resolved = _xcom(dag_run, "resolve_source")
    assert resolved["revision"] == hub_commit
    assert resolved["requested_revision"] == "main"
    files = {f["path"]: f for f in resolved["files"]}
    assert files["model.safetensors"]["lfs_sha256"] and len(files["model.safetensors"]["lfs_sha256"]) == 64
    assert files["config.json"]["lfs_sha256"] is None and len(files["config.json"]["git_sha1"]) == 40


INGEST_TASKS = [
    "resolve_source", "prepare_quarantine", "download_to_quarantine", "verify_published_checksums",
    "hash_manifest", "scan_model", "evaluate", "fingerprint_baseline", "review_gate", "sign_model", "build_aibom",
    "promote", "remove_quarantine",
]


def test_dag_test_ingests_the_demo_model_end_to_end(
    model_ingest, hub_commit: str, quarantine_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keep-on-failure must not keep a successful run's files (the teardown reads the run's task states).
    monkeypatch.setenv("AIRLOCK_QUARANTINE_KEEP_ON_FAILURE", "true")
    dag_run = model_ingest.test(
        run_conf={"source": "hf://demo/tiny-gpt2", "revision": None, "owner": "tests", "risk_tier": "medium"}
    )
    assert dag_run.state == "success", _states(dag_run)
    assert _states(dag_run) == {**dict.fromkeys(INGEST_TASKS, "success"), "approve": "skipped"}
    downloaded = _xcom(dag_run, "download_to_quarantine")
    assert downloaded["files"] == 7 and downloaded["model"]["revision"] == hub_commit
    verified = _xcom(dag_run, "verify_published_checksums")
    assert (verified["verdict"], verified["verified"], verified["checked_against"]) == ("allow", 7, ["hub"])
    manifest = _xcom(dag_run, "hash_manifest")
    assert manifest["model"] == {"name": "demo/tiny-gpt2", "source": "hf://demo/tiny-gpt2", "revision": hub_commit}
    assert manifest["files"] == 6  # .gitattributes is verified but, like model_signing, left out
    built = Path(require_env("AIRLOCK_STATE_DIR")) / "hub" / "models" / "demo" / "tiny-gpt2"
    assert manifest["root_digest"] == _model_signing_root_digest(built)
    assert Path(manifest["files_dir"]).is_relative_to(quarantine_root)
    assert _xcom(dag_run, "scan_model")["verdict"] == "allow"
    signed = _xcom(dag_run, "sign_model")
    assert signed["key_id"].startswith("airlock-model-signing:v") and signed["root_digest"] == manifest["root_digest"]
    promoted = _xcom(dag_run, "promote")
    version = f"rev-{hub_commit[:12]}"
    assert (promoted["model"], promoted["version"], promoted["created"]) == ("demo/tiny-gpt2", version, True)
    assert promoted["root_digest"] == manifest["root_digest"]
    assert promoted["signature_sha256"] == signed["bundle_sha256"]
    assert promoted["aibom_sha256"] == _xcom(dag_run, "build_aibom")["aibom_sha256"]
    events = _asset_events(dag_run)
    # The quarantined source and the registry model are two Assets: only the release is the model's event.
    assert [uri for uri, _ in events] == ["airlock://sources/hf/demo/tiny-gpt2", "airlock://registry/demo/tiny-gpt2"]
    assert events[0][1] == {"stage": "quarantine", "source": "hf://demo/tiny-gpt2", "revision": hub_commit,
                            "root_digest": manifest["root_digest"], "files": 6,
                            "total_bytes": manifest["total_bytes"], "run_id": dag_run.run_id}
    assert events[1][1]["kind"] == "released" and events[1][1]["version"] == version
    assert events[1][1]["run_id"] == dag_run.run_id and events[1][1]["root_digest"] == manifest["root_digest"]
    assert events[1][1]["signature_sha256"] == signed["bundle_sha256"]
    assert events[1][1]["aibom_sha256"] == promoted["aibom_sha256"]
    _assert_promoted_copy_verifies(tmp_path / "registry", "demo/tiny-gpt2", version)
    teardown = _xcom(dag_run, "remove_quarantine")
    assert teardown["removed"] is True
    assert not Path(manifest["quarantine"]).exists()

    # Ingesting the same revision again is a no-op: the version is immutable and already holds this model.
    again = model_ingest.test(
        run_conf={"source": "hf://demo/tiny-gpt2", "revision": hub_commit, "owner": "tests", "risk_tier": "medium"}
    )
    assert again.state == "success", _states(again)
    assert _xcom(again, "promote")["created"] is False


def _assert_promoted_copy_verifies(registry_root: Path, model: str, version: str) -> None:
    """The stored copy verifies offline with the public keys exported from Vault, and its BOM is strict-valid."""
    import hashlib
    import json

    from airlock.aibom import validate_aibom
    from airlock.trust import export_from_vault
    from airlock.vault import signer_session_from_env
    from airlock.verify import verify_model

    version_dir = registry_root / "models" / model / version
    assert (version_dir / "RELEASED").exists()
    trust = export_from_vault(signer_session_from_env())
    result = verify_model(version_dir / "files", version_dir / "model.sig", trust,
                          expected_model_name=f"{model}@{version}")
    assert result.ok, result.reason
    bom = json.loads((version_dir / "aibom.cdx.json").read_text())
    validate_aibom(bom)
    component = bom["metadata"]["component"]
    assert component["type"] == "machine-learning-model"
    assert component["hashes"][0]["content"] == result.root_digest
    bom_files = {c["name"]: c["hashes"][0]["content"] for c in component["components"]}
    stored = {f.relative_to(version_dir / "files").as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
              for f in (version_dir / "files").rglob("*") if f.is_file()}
    assert bom_files == stored
    # Evaluation and the behavioural baseline are stored with the version, bound by the signed BOM.
    reports = {p.name for p in (version_dir / "reports").iterdir()}
    assert {"scan.json", "eval.json", "fingerprint-baseline.json", "fingerprint-calibration.json"} <= reports
    metrics = component["modelCard"]["quantitativeAnalysis"]["performanceMetrics"]
    assert ("acc", "airlock_mc") in {(m["type"], m.get("slice")) for m in metrics}, metrics
    tasks = [t["name"] for w in bom["formulation"][0]["workflows"] for t in w["tasks"]]
    assert tasks.index("scan") < tasks.index("evaluate") < tasks.index("sign"), tasks

    # A serving host's pull verifies the same copy again and yields a read-only, exact replica.
    from airlock.pull import pull
    from airlock.registry import open_registry

    dest = registry_root.parent / "serving" / "tiny-gpt2"
    dest.parent.mkdir()
    pulled = pull(open_registry(str(registry_root)), f"{model}@{version}", dest, trust=trust)
    assert pulled is not None and (dest / "files" / "model.safetensors").read_bytes() == (
        version_dir / "files" / "model.safetensors").read_bytes()


@pytest.mark.parametrize(("source", "tier"), [("hf://demo/evil-pickle", "low"), ("hf://demo/tiny-gpt2-bin", "high")])
def test_scan_blocks_before_anything_is_signed(model_ingest, source: str, tier: str, tmp_path: Path) -> None:
    dag_run = model_ingest.test(run_conf={"source": source, "revision": None, "owner": "tests", "risk_tier": tier})
    assert dag_run.state == "failed"
    states = _states(dag_run)
    assert states["scan_model"] == "failed"
    assert states["sign_model"] == "upstream_failed" and states["promote"] == "upstream_failed"
    assert states["remove_quarantine"] == "success"
    assert not (tmp_path / "registry" / "models").exists()


def test_pickle_weights_pass_at_medium(model_ingest, tmp_path: Path) -> None:
    dag_run = model_ingest.test(
        run_conf={"source": "hf://demo/tiny-gpt2-bin", "revision": None, "owner": "tests", "risk_tier": "medium"}
    )
    assert dag_run.state == "success", _states(dag_run)
    assert _xcom(dag_run, "promote")["model"] == "demo/tiny-gpt2-bin"


def test_a_tampered_hub_repo_fails_the_run_naming_the_file_and_still_tears_down(
    model_ingest, quarantine_root: Path
) -> None:
    dag_run = model_ingest.test(
        run_conf={"source": "hf://demo/tampered-lfs", "revision": None, "owner": "tests", "risk_tier": "low"}
    )
    assert dag_run.state == "failed"
    states = _states(dag_run)
    assert states["verify_published_checksums"] == "failed"
    assert states["hash_manifest"] == "upstream_failed"
    assert states["remove_quarantine"] == "success"
    assert _asset_events(dag_run) == []
    # Nothing of the model is left, and the run's space reservation was released (only the ledger's lock remains).
    left = [p.relative_to(quarantine_root) for p in quarantine_root.rglob("*") if p.is_file()]
    assert left in ([], [Path(RESERVATIONS_DIR, ".lock")]), left


def test_keep_on_failure_leaves_the_evidence(model_ingest, quarantine_root: Path, monkeypatch) -> None:
    monkeypatch.setenv("AIRLOCK_QUARANTINE_KEEP_ON_FAILURE", "true")
    dag_run = model_ingest.test(
        run_conf={"source": "hf://demo/tampered-lfs", "revision": None, "owner": "tests", "risk_tier": "low"}
    )
    assert dag_run.state == "failed"
    assert _xcom(dag_run, "remove_quarantine")["kept_for_forensics"] is True
    (report,) = quarantine_root.rglob("published-checksums.json")
    assert '"path": "model.safetensors"' in report.read_text()
    assert (report.parent / "files" / "model.safetensors").exists()


def _model_signing_root_digest(path: Path) -> str:
    from model_signing import hashing
    from model_signing._signing.signing import Payload

    return Payload(hashing.Config().use_file_serialization().hash(path)).statement.pb.subject[0].digest["sha256"]


def test_dag_test_fails_for_a_missing_repository(model_ingest) -> None:
    dag_run = model_ingest.test(
        run_conf={"source": "hf://demo/does-not-exist", "revision": "main", "owner": "tests", "risk_tier": "low"}
    )
    assert dag_run.state == "failed"


def _api_client(user: str = "admin"):
    """A client of the running Airflow as ``user``: admin, or a user scripts/stack.py created (reviewer, ...)."""
    import json

    from airlock.airflow_client import AirflowClient

    if user == "admin":
        password = os.environ.get("AIRLOCK_AIRFLOW_ADMIN_PASSWORD", "airlock")
    else:
        secrets = Path(require_env("AIRLOCK_STATE_DIR")) / "secrets" / "airflow-passwords.json"
        password = json.loads(secrets.read_text())[user]
    return AirflowClient(require_env("AIRLOCK_AIRFLOW_URL"), user, password, timeout=120)


def _approved_run(conf: dict) -> str:
    """Trigger as admin, approve as a reviewer (four eyes), wait for the run; its id."""
    client, reviewer = _api_client(), _api_client("reviewer")
    client.wait_for_dag("model_ingest")
    client.unpause("model_ingest")
    run_id = client.trigger("model_ingest", conf)
    client.wait_for_task("model_ingest", run_id, "approve", {"awaiting_input", "deferred"}, timeout=600)
    reviewer.respond("model_ingest", run_id, "approve", ["Approve"])
    run = client.wait_for_run("model_ingest", run_id, timeout=600, poll=5)
    assert run["state"] == "success", client.task_instances("model_ingest", run_id)
    return run_id


@pytest.mark.slow
def test_a_real_run_through_the_airflow_api_with_human_approval() -> None:
    """The running `airflow standalone`: tier high waits for a human, a reviewer's approval (as the UI sends it)
    promotes."""
    client = _api_client()
    assert client.import_errors() == []
    run_id = _approved_run({"source": "hf://demo/tiny-gpt2@main", "owner": "ml-platform", "risk_tier": "high"})
    promoted = client.xcom("model_ingest", run_id, "promote")
    assert promoted["model"] == "demo/tiny-gpt2" and promoted["version"].startswith("rev-")
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances("model_ingest", run_id)}
    assert states["approve"] == "success"


@pytest.mark.slow
def test_a_derived_model_bom_points_at_its_parent_in_the_registry() -> None:
    """demo/tiny-gpt2-fp16 with its derivation record (a claim a reviewer approves): the pedigree names the
    parent's registry version and digest."""
    import json

    from airlock.manifest import manifest_for_directory
    from airlock.registry import open_registry

    hub = Path(require_env("AIRLOCK_STATE_DIR")) / "hub" / "models" / "demo"
    assert STACK_REGISTRY, "AIRLOCK_REGISTRY is not set: start the local stack with `make stack-up`"
    registry = open_registry(STACK_REGISTRY)
    parent_root = manifest_for_directory(hub / "tiny-gpt2").root_digest
    if not registry.find_by_digest("demo/tiny-gpt2", parent_root):
        _approved_run({"source": "hf://demo/tiny-gpt2", "owner": "ml-platform", "risk_tier": "high"})
    (parent,) = registry.find_by_digest("demo/tiny-gpt2", parent_root)
    record = json.loads((hub / "tiny-gpt2-fp16.derivation.json").read_text())
    assert record["steps"][-1]["output_root_digest"] == manifest_for_directory(hub / "tiny-gpt2-fp16").root_digest
    run_id = _approved_run({"source": "hf://demo/tiny-gpt2-fp16", "owner": "ml-platform", "risk_tier": "medium",
                            "derivation": record})
    promoted = _api_client().xcom("model_ingest", run_id, "promote")
    version_dir = Path(STACK_REGISTRY) / "models" / "demo" / "tiny-gpt2-fp16" / promoted["version"]
    bom = json.loads((version_dir / "aibom.cdx.json").read_text())
    (ancestor,) = bom["metadata"]["component"]["pedigree"]["ancestors"]
    assert ancestor["hashes"][0]["content"] == parent.root_digest
    properties = {p["name"]: p["value"] for p in ancestor["properties"]}
    assert properties["airlock:registry:version"] == parent.version
    assert properties["airlock:registry:model"] == "demo/tiny-gpt2"
    tasks = {w["bom-ref"].rsplit(":", 1)[-1]: [t["name"] for t in w["tasks"]] for w in bom["formulation"][0]["workflows"]}
    assert tasks == {"ingest": ["download", "scan", "evaluate", "review", "sign", "promote"],
                     "derivation": ["conversion: dtype-cast"]}


@pytest.mark.slow
def test_a_rejected_model_fails_the_run_and_is_never_signed() -> None:
    client, reviewer = _api_client(), _api_client("reviewer")
    client.wait_for_dag("model_ingest")
    client.unpause("model_ingest")
    run_id = client.trigger(
        "model_ingest", {"source": "hf://demo/remote-code", "owner": "ml-platform", "risk_tier": "medium"}
    )
    # remote code at tier medium is flagged, not blocked: it needs a human, who says no.
    client.wait_for_task("model_ingest", run_id, "approve", {"awaiting_input", "deferred"}, timeout=600)
    assert client.xcom("model_ingest", run_id, "scan_model")["requires_approval"] is True
    reviewer.respond("model_ingest", run_id, "approve", ["Reject"])
    run = client.wait_for_run("model_ingest", run_id, timeout=600, poll=5)
    states = {ti["task_id"]: ti["state"] for ti in client.task_instances("model_ingest", run_id)}
    assert run["state"] == "failed"
    assert states["approve"] == "failed"
    assert states["sign_model"] in {"upstream_failed", "skipped"} and states["promote"] in {"upstream_failed", "skipped"}
    assert states["remove_quarantine"] == "success"


def test_dag_test_verifies_an_s3_vendor_drop_and_signs_nothing_without_its_name_approved(
    model_ingest, tmp_path: Path
) -> None:
    """The S3 path through the DAG: credentials from the environment (no airlock_s3 connection in tests).

    A drop has no name of its own, so its registry name needs a human at the first release; dag.test cannot
    answer a form, and `approve` marked success (mark_success_pattern, as an operator could) is no answer.
    """
    import hashlib
    import uuid

    import boto3

    client = boto3.client("s3", endpoint_url=require_env("AIRLOCK_S3_ENDPOINT"), region_name="us-east-1")
    bucket = f"airlock-dag-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    files = {"config.json": b"{}", "model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "}
    sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {p}\n" for p, d in sorted(files.items()))
    for path, data in {**files, "SHA256SUMS": sums.encode()}.items():
        client.put_object(Bucket=bucket, Key=f"acme/model-z/{path}", Body=data)
    try:
        dag_run = model_ingest.test(
            run_conf={
                "source": f"s3://{bucket}/acme/model-z", "revision": None, "owner": "tests",
                "risk_tier": "medium", "registry_name": "acme/model-z",
            },
            mark_success_pattern="approve",
        )
        assert _xcom(dag_run, "verify_published_checksums")["checked_against"] == ["SHA256SUMS"]
        manifest = _xcom(dag_run, "hash_manifest")
        assert manifest["model"]["name"] == f"{bucket}/acme/model-z" and manifest["files"] == 2
        assert _asset_events(dag_run)[0][0] == f"airlock://sources/s3/{bucket}/acme/model-z"
        states = _states(dag_run)
        assert dag_run.state == "failed" and states["review_gate"] == "success", states
        assert states["sign_model"] == "failed" and states["promote"] == "upstream_failed"
        assert not (tmp_path / "registry" / "models").exists()
    finally:
        for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)
