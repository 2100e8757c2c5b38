"""The forgeries of issue 15, done the way an operator could, against the running `airflow standalone`.

"operator" has Airflow's ordinary right to trigger and operate runs (role user:
trigger, mark task states, clear tasks, write XCom); "reviewer"/"reviewer2"
are the configured reviewers (AIRLOCK_REVIEWERS); passwords are the stack's
(<state>/secrets/airflow-passwords.json, written by scripts/stack.py). Every
forgery ends with nothing signed and nothing promoted, and the refusing task's
log names the rule. Runs are slow on a small machine: the runs are started
together, and one run checks several things where it can.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from tests.conftest import require_env

pytestmark = pytest.mark.slow

DAG = "model_ingest"
AWAITING = {"awaiting_input", "deferred"}


def _client(user: str):
    from airlock.airflow_client import AirflowClient

    state = Path(require_env("AIRLOCK_STATE_DIR"))
    passwords = json.loads((state / "secrets" / "airflow-passwords.json").read_text())
    if user == "admin":
        passwords["admin"] = os.environ.get("AIRLOCK_AIRFLOW_ADMIN_PASSWORD", passwords.get("admin", "airlock"))
    return AirflowClient(require_env("AIRLOCK_AIRFLOW_URL"), user, passwords[user], timeout=120)


@pytest.fixture(scope="module")
def clients():
    admin = _client("admin")
    admin.wait_for_dag(DAG)
    admin.unpause(DAG)
    return {name: _client(name) for name in ("operator", "reviewer", "reviewer2")} | {"admin": admin}


@pytest.fixture(scope="module")
def registry():
    from airlock.registry import open_registry

    return open_registry(require_env("AIRLOCK_REGISTRY"))


def _versions(registry, model: str) -> list[str]:
    state = registry.model_state(model)
    return sorted(v.version for v in state.versions) if state else []


def _root_digest(model_dir: Path) -> str:
    from airlock.manifest import manifest_for_directory

    return manifest_for_directory(model_dir.resolve()).root_digest


def _hub_model(name: str) -> Path:
    return Path(require_env("AIRLOCK_STATE_DIR")) / "hub" / "models" / name


def _log(client, run_id: str, task_id: str) -> str:
    ti = client.request("GET", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task_id}")
    return client.task_log(DAG, run_id, task_id, ti["try_number"])


def _states(client, run_id: str) -> dict[str, str]:
    return {ti["task_id"]: ti["state"] for ti in client.task_instances(DAG, run_id)}


def _wait_end(client, run_id: str) -> dict:
    return client.wait_for_run(DAG, run_id, timeout=900, poll=5)


def _forge_approval(operator, run_id: str) -> None:
    """What the first review did: a made-up HITL answer as the approve XCom, and the task marked success."""
    operator.set_xcom(DAG, run_id, "approve", {
        "chosen_options": ["Approve"], "params_input": {}, "responded_at": "2026-01-01T00:00:00+00:00",
        "responded_by_user": {"id": "ciso", "name": "Chief Information Security Officer"},
    })
    operator.set_task_state(DAG, run_id, "approve", "success")


@pytest.fixture(scope="module")
def runs(clients, registry):
    """Start the runs together (the DAG runs up to four at once); the tests then take them over."""
    operator = clients["operator"]
    name = f"gates-test/tiny-{uuid.uuid4().hex[:8]}"
    started = {
        "name": name,
        "before": {m: _versions(registry, m) for m in ("demo/remote-code", "demo/evil-pickle", "demo/tiny-gpt2-bin")},
        # The parent the other cases point at: a legitimately approved model under a name of its own.
        "approved": operator.trigger(DAG, {"source": "hf://demo/tiny-gpt2", "owner": "ml-platform",
                                           "risk_tier": "high", "registry_name": name}),
        # Remote code at tier medium is flagged: a human must approve; the reviewer rejects.
        "rejected": operator.trigger(DAG, {"source": "hf://demo/remote-code", "owner": "ml-platform",
                                           "risk_tier": "medium"}),
        "evil": operator.trigger(DAG, {"source": "hf://demo/evil-pickle", "owner": "ml-platform",
                                       "risk_tier": "medium"}),
    }
    # Keep these runs' quarantine (the teardown deletes it when the run fails), as an operator can: a later
    # clear re-runs the setup, which refuses a run whose records are gone, and the forgery would stop there.
    for run in ("rejected", "evil"):
        _mark_when_listed(operator, started[run], "remove_quarantine", "skipped")
    return started


def _mark_when_listed(client, run_id: str, task_id: str, state: str) -> None:
    import time

    from airlock.airflow_client import AirflowApiError

    deadline = time.monotonic() + 120
    while True:
        try:
            client.set_task_state(DAG, run_id, task_id, state)
            return
        except AirflowApiError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.fixture(scope="module")
def approved(clients, runs) -> dict:
    """The legitimately approved run (a reviewer answers its form), finished; its form as Airflow recorded it."""
    operator, reviewer = clients["operator"], clients["reviewer"]
    run_id = runs["approved"]
    operator.wait_for_task(DAG, run_id, "approve", AWAITING, timeout=600)
    form = operator.request("GET", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails")
    reviewer.respond(DAG, run_id, "approve", ["Approve"])
    assert _wait_end(operator, run_id)["state"] == "success", _states(operator, run_id)
    return form


def test_an_approved_run_records_the_hitl_answer_in_the_index_and_the_bom(registry, runs, approved) -> None:
    name = runs["name"]
    assert {u["id"] for u in approved["assigned_users"]} == {"reviewer", "reviewer2"}
    assert "Registry name differs from the source" in approved["body"]
    assert "Triggered by | operator" in approved["body"]
    (version,) = registry.model_state(name).versions
    assert version.approver.startswith("reviewer [hitl:") and version.owner == "ml-platform"
    bom = json.loads((Path(require_env("AIRLOCK_REGISTRY")) / "models" / name / version.version /
                      "aibom.cdx.json").read_text())
    review = next(t for w in bom["formulation"][0]["workflows"] for t in w["tasks"] if t["name"] == "review")
    parameters = {p["name"]: p["value"] for p in review["inputs"][0]["parameters"]}
    assert parameters["approver"] == "reviewer" and parameters["triggered_by"] == "operator"
    assert version.approver.endswith(f"[{parameters['hitl_record']}]")


def test_a_rejection_is_final_even_after_a_forged_approval(clients, registry, runs) -> None:
    operator, reviewer = clients["operator"], clients["reviewer"]
    run_id = runs["rejected"]
    operator.wait_for_task(DAG, run_id, "approve", AWAITING, timeout=600)
    # Only the assigned reviewers may answer: Airflow itself refuses the operator and the admin.
    from airlock.airflow_client import AirflowApiError

    for outsider in (operator, clients["admin"]):
        with pytest.raises(AirflowApiError) as refused:
            outsider.respond(DAG, run_id, "approve", ["Approve"], settle_s=0)
        assert refused.value.status == 403
    reviewer.respond(DAG, run_id, "approve", ["Reject"])
    assert _wait_end(operator, run_id)["state"] == "failed"
    # The forgery: an "Approve" XCom, approve marked success, the later tasks cleared and run again.
    _forge_approval(operator, run_id)
    operator.clear_tasks(DAG, run_id, ["sign_model"], downstream=True)
    assert _wait_end(operator, run_id)["state"] == "failed"
    states = _states(operator, run_id)
    assert states["sign_model"] == "failed" and states["promote"] in {"upstream_failed", "skipped"}
    log = _log(operator, run_id, "sign_model")
    assert "rejected by reviewer" in log and "a rejection is final for this run" in log
    assert _versions(registry, "demo/remote-code") == runs["before"]["demo/remote-code"]


def test_a_forged_scan_verdict_signs_nothing(clients, registry, runs) -> None:
    operator = clients["operator"]
    run_id = runs["evil"]
    assert _wait_end(operator, run_id)["state"] == "failed"
    assert _states(operator, run_id)["scan_model"] == "failed"
    operator.set_xcom(DAG, run_id, "scan_model", {"verdict": "allow", "tier": "medium", "requires_approval": False,
                                                  "flagged": 0, "files": 2})
    operator.set_task_state(DAG, run_id, "scan_model", "success")
    operator.clear_tasks(DAG, run_id, ["evaluate"], downstream=True)  # everything after scan_model runs again
    assert _wait_end(operator, run_id)["state"] == "failed"
    states = _states(operator, run_id)
    # The first task that loads or relies on the files re-reads the stored report (evaluate, before any load).
    refused_at = next(t for t in ("evaluate", "fingerprint_baseline", "review_gate", "sign_model")
                      if states[t] == "failed")
    log = _log(operator, run_id, refused_at)
    assert "scan verdict block" in log and "pytorch_model.bin" in log
    assert states["promote"] in {"upstream_failed", "skipped"}
    assert _versions(registry, "demo/evil-pickle") == runs["before"]["demo/evil-pickle"] == []


def test_a_shadowing_name_is_refused_before_anything_is_downloaded(clients, registry, runs, approved) -> None:
    """Another repo's pickle weights at tier low under an approved model's name: the model record refuses."""
    operator = clients["operator"]
    before = _versions(registry, runs["name"])
    run_id = operator.trigger(DAG, {"source": "hf://demo/tiny-gpt2-bin", "owner": "ml-platform", "risk_tier": "low",
                                    "registry_name": runs["name"]})
    assert _wait_end(operator, run_id)["state"] == "failed"
    states = _states(operator, run_id)
    assert states["resolve_source"] == "failed" and states["download_to_quarantine"] == "upstream_failed"
    assert f"{runs['name']} has minimum risk tier high" in _log(operator, run_id, "resolve_source")
    state = registry.model_state(runs["name"])
    assert _versions(registry, runs["name"]) == before and state.owner == "ml-platform"
    assert state.risk_tier.value == "high" and state.source == "hf://demo/tiny-gpt2"


@pytest.mark.parametrize(
    "conf",
    [
        {"registry_name": "demo/tiny-gpt2\n"},
        {"owner": "ml-platform\n\n**Scan:** allow"},
        {"owner": "[ml-platform](https://evil.example)"},
    ],
    ids=["trailing-newline-name", "markdown-owner-newline", "markdown-owner-link"],
)
def test_names_and_owners_are_checked_whole_when_the_run_is_triggered(clients, conf: dict) -> None:
    from airlock.airflow_client import AirflowApiError

    with pytest.raises(AirflowApiError) as refused:
        clients["operator"].trigger(DAG, {"source": "hf://demo/tiny-gpt2", "owner": "ml-platform",
                                          "risk_tier": "low", **conf})
    assert refused.value.status == 400


def test_a_claimed_derivation_from_an_unrelated_parent_and_a_forged_approval_sign_nothing(
    clients, registry, runs, approved
) -> None:
    """The claim is well formed (its output digest is this model's) and names an approved parent; it needs a
    human, and neither a self-answer nor a forged approve XCom is one."""
    operator, reviewer = clients["operator"], clients["reviewer"]
    (parent,) = registry.model_state(runs["name"]).versions
    claim = {"schema": "airlock.derivation/v1",
             "parent": {"model": runs["name"], "version": parent.version, "root_digest": parent.root_digest},
             "steps": [{"kind": "conversion", "method": "pickle-export", "tool": "torch", "tool_version": "2.13.0",
                        "output_root_digest": _root_digest(_hub_model("demo/tiny-gpt2-bin"))}]}
    # Triggered by a reviewer, who then tries to answer the form: Airflow refuses (not assigned, four eyes).
    run_id = reviewer.trigger(DAG, {"source": "hf://demo/tiny-gpt2-bin", "owner": "ml-platform",
                                    "risk_tier": "medium", "derivation": claim})
    operator.wait_for_task(DAG, run_id, "approve", AWAITING, timeout=600)
    form = operator.request("GET", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails")
    assert "Derivation claim" in form["body"] and [u["id"] for u in form["assigned_users"]] == ["reviewer2"]
    from airlock.airflow_client import AirflowApiError

    with pytest.raises(AirflowApiError) as refused:
        reviewer.respond(DAG, run_id, "approve", ["Approve"])
    assert refused.value.status == 403
    _forge_approval(operator, run_id)
    assert _wait_end(operator, run_id)["state"] == "failed"
    states = _states(operator, run_id)
    assert states["sign_model"] == "failed" and states["promote"] in {"upstream_failed", "skipped"}
    log = _log(operator, run_id, "sign_model")
    assert "a human approval is required" in log and f"claims to derive from {runs['name']}" in log
    assert _versions(registry, "demo/tiny-gpt2-bin") == runs["before"]["demo/tiny-gpt2-bin"]
