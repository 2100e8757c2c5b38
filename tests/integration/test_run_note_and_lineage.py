"""A blocked run says why (its note), and every task of a run reports its OpenLineage inputs and outputs.

Both drive `model_ingest` with dag.test() against the real demo hub and Vault, with the quarantine and the
registry in a temporary directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def private_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRLOCK_QUARANTINE_ROOT", str(tmp_path / "quarantine"))
    monkeypatch.setenv("AIRLOCK_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.delenv("AIRLOCK_QUARANTINE_KEEP_ON_FAILURE", raising=False)


class MetadataNoteWriter:
    """The run's note in the metadata DB dag.test() uses (the stack's API does not know these runs)."""

    def read(self, dag_id: str, run_id: str) -> str | None:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session

        with create_session() as session:
            return DagRun.find(dag_id=dag_id, run_id=run_id, session=session)[0].note

    def write(self, dag_id: str, run_id: str, note: str) -> None:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session

        with create_session() as session:
            DagRun.find(dag_id=dag_id, run_id=run_id, session=session)[0].note = note


def _run_note(dag_run) -> str | None:
    return MetadataNoteWriter().read(dag_run.dag_id, dag_run.run_id)


@pytest.fixture()
def model_ingest(airflow_db, monkeypatch: pytest.MonkeyPatch):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags" / "model_ingest.py")).dags["model_ingest"]
    glue = dag.get_task("scan_model").on_failure_callback[-1]
    monkeypatch.setitem(glue.__globals__, "_note_writer", MetadataNoteWriter)
    return dag


def test_a_blocked_scan_puts_rule_and_file_in_the_run_note(model_ingest) -> None:
    from airlock.runnote import note_reason_lines

    dag_run = model_ingest.test(
        run_conf={"source": "hf://demo/evil-pickle", "revision": None, "owner": "tests", "risk_tier": "medium"})
    assert dag_run.state == "failed"
    note = _run_note(dag_run)
    lines = note_reason_lines(note)
    assert lines[0] == "Blocked at scan_model", note
    assert "scan verdict block" in lines[1] and "tier medium" in lines[1]
    findings = lines[2:]
    assert any(f.startswith("[block] pickle.global.disallowed (critical): pytorch_model.bin") and "os.system" in f
               for f in findings), note
    # The teardown ran (and succeeded) after the block: the note is still the scan's reason, written once.
    assert note.count("Blocked at") == 1


def test_a_checksum_block_names_the_file_in_the_run_note(model_ingest) -> None:
    from airlock.runnote import note_reason_lines

    dag_run = model_ingest.test(
        run_conf={"source": "hf://demo/tampered-lfs", "revision": None, "owner": "tests", "risk_tier": "low"})
    assert dag_run.state == "failed"
    lines = note_reason_lines(_run_note(dag_run))
    assert lines[0] == "Blocked at verify_published_checksums"
    assert "model.safetensors" in " ".join(lines[1:])


_RUN_WITH_OPENLINEAGE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1]).dags["model_ingest"]
runs = {}
for source, tier in (("hf://demo/tiny-gpt2", "medium"), ("hf://demo/evil-pickle", "medium")):
    run = dag.test(run_conf={"source": source, "revision": None, "owner": "tests", "risk_tier": tier})
    runs[source] = [run.run_id, str(run.state)]
print("RUNS=" + json.dumps(runs))
"""


@pytest.mark.slow
def test_every_task_reports_its_openlineage_inputs_and_outputs(airflow_db, tmp_path: Path) -> None:
    """A separate process (the test session runs with OpenLineage disabled), the stack's file transport."""
    events_file = tmp_path / "openlineage.jsonl"
    env = {**os.environ, "AIRFLOW__OPENLINEAGE__DISABLED": "False", "AIRFLOW__OPENLINEAGE__NAMESPACE": "airlock-test",
           "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
               {"type": "file", "log_file_path": str(events_file), "append": True})}
    done = subprocess.run([sys.executable, "-c", _RUN_WITH_OPENLINEAGE, str(REPO / "dags" / "model_ingest.py")],
                          env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(done.stdout.rsplit("RUNS=", 1)[1].splitlines()[0])
    assert runs["hf://demo/tiny-gpt2"][1] == "success" and runs["hf://demo/evil-pickle"][1] == "failed"
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]

    def final(run_id: str) -> dict[str, dict]:
        """The COMPLETE/FAIL event of each task of the run (its lineage as the task ended)."""
        found = {}
        for event in events:
            job = event["job"]["name"]
            parent = event["run"]["facets"].get("parent", {})
            airflow = event["run"]["facets"].get("airflow", {})
            run_of_task = (airflow.get("dagRun") or {}).get("run_id") or parent.get("run", {}).get("runId")
            if event["eventType"] in ("COMPLETE", "FAIL") and job.startswith("model_ingest.") and \
                    run_of_task == run_id:
                found[job.removeprefix("model_ingest.")] = event
        return found

    def names(datasets: list[dict]) -> list[tuple[str, str]]:
        return [(d["namespace"], d["name"]) for d in datasets]

    ok = final(runs["hf://demo/tiny-gpt2"][0])
    from airlock.lineage import DIGESTS_FACET, INGEST_LINEAGE

    ran = set(INGEST_LINEAGE) - {"approve"}  # tier medium, clean scan: no human approval
    assert ran <= set(ok), sorted(ok)
    for task_id in ran:
        reads, writes = INGEST_LINEAGE[task_id]
        event = ok[task_id]
        assert len(event["inputs"]) == len(reads) and len(event["outputs"]) == len(writes), (task_id, event)
        for dataset in event["inputs"] + event["outputs"]:
            if "lifecycleStateChange" not in dataset["facets"]:  # a dropped quarantine has no digests left
                assert dataset["facets"][DIGESTS_FACET]["digests"], (task_id, dataset)
    source = ok["download_to_quarantine"]["inputs"][0]
    revision = source["facets"]["version"]["datasetVersion"]
    assert source["name"] == "demo/tiny-gpt2" and source["namespace"].startswith("hf://") and len(revision) == 40
    assert source["facets"][DIGESTS_FACET]["digests"]["published"]["model.safetensors"].startswith("sha256:")
    quarantine = ok["hash_manifest"]["outputs"][0]
    root = quarantine["facets"][DIGESTS_FACET]["digests"]["root_digest"]
    assert quarantine["namespace"].startswith("file://") and "quarantine" in quarantine["name"] and len(root) == 64
    assert names(ok["scan_model"]["inputs"]) == names([quarantine])
    assert ok["scan_model"]["outputs"][0]["facets"][DIGESTS_FACET]["digests"]["report_sha256"]
    registry = ok["promote"]["outputs"][0]
    assert registry["name"].endswith(f"/models/demo/tiny-gpt2/rev-{revision[:12]}")
    assert registry["facets"]["version"]["datasetVersion"] == f"rev-{revision[:12]}"
    digests = registry["facets"][DIGESTS_FACET]["digests"]
    assert digests["root_digest"] == root and digests["signature_sha256"] and digests["aibom_sha256"]
    assert ok["remove_quarantine"]["outputs"][0]["facets"]["lifecycleStateChange"]["lifecycleStateChange"] == "DROP"

    blocked = final(runs["hf://demo/evil-pickle"][0])
    assert blocked["scan_model"]["eventType"] == "FAIL"
    [scanned] = blocked["scan_model"]["inputs"]  # the run's quarantine, naming what it holds
    assert scanned["facets"][DIGESTS_FACET]["digests"]["source"] == "hf://demo/evil-pickle"
    assert "promote" not in blocked  # never ran: nothing reached the registry
