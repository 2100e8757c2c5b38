#!/usr/bin/env python3
"""`make demo`: ingest the demo models through the running Airflow and show the outcome.

Expects the stack from `make stack-up` (it reads <state>/env through the
environment that the Makefile sources). Runs are triggered as the admin user;
approval forms are answered as a reviewer (four eyes: Airlock refuses an
approval by the user who triggered the run). A blocked run's reason is read
back from its note (written by the pipeline, shown in the grid) and printed
under it.

Then the after-ingestion story: a model ingested for this purpose under a
registry name of its own (``demo-incident/tiny-gpt2-<time>``, so no other
version is touched) has one stored file altered on disk; ``model_integrity_watch``
finds it, ``model_incident`` revokes the version. A summary table and where to
look in the UI end it, then the model proxy's step (scripts/demo_proxy.py) when
it is there. Exits non-zero when something does not end as expected.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from airlock.airflow_client import AirflowClient
from airlock.errors import AirlockError
from airlock.runnote import note_reason_lines

DAG_ID = "model_ingest"
TASK_ORDER = [
    "resolve_source", "prepare_quarantine", "download_to_quarantine", "verify_published_checksums", "hash_manifest",
    "scan_model", "review_gate", "approve", "sign_model", "build_aibom", "promote", "remove_quarantine",
]


@dataclass(frozen=True)
class DemoCase:
    source: str
    risk_tier: str
    expected_state: str
    why: str
    stops_at: str | None = None  # the task expected to fail
    derivation: str | None = None  # derivation record the demo hub builder wrote, relative to <state>/hub/models
    registry_name: str | None = None  # a registry name other than the source's own (always needs an approval)

    @property
    def needs_approval(self) -> bool:
        """Tier high/critical, every derivation claim and every rename wait for a human (here: the reviewer)."""
        return self.expected_state == "success" and (
            self.risk_tier in ("high", "critical") or bool(self.derivation) or bool(self.registry_name))


@dataclass
class Outcome:
    """One line of the summary table."""

    what: str
    ok: bool
    outcome: str
    detail: str


CASES = (
    DemoCase("hf://demo/tiny-gpt2", "high", "success",
             "a clean safetensors model; tier high needs a human's approval, given here through the API"),
    DemoCase("hf://demo/tiny-gpt2-fp16", "medium", "success",
             "an fp16 cast of tiny-gpt2 with its derivation record: a reviewer approves the claim, "
             "the AI-BOM's pedigree names the parent",
             derivation="demo/tiny-gpt2-fp16.derivation.json"),
    DemoCase("hf://demo/tiny-gpt2-bin", "medium", "success", "pickle weights, all allowlisted: fine at medium"),
    DemoCase("hf://demo/tiny-gpt2-bin", "high", "failed", "the same pickle weights are refused at high",
             stops_at="scan_model"),
    DemoCase("hf://demo/evil-pickle", "medium", "failed", "a pickle that would run a command on load",
             stops_at="scan_model"),
    DemoCase("hf://demo/tampered-lfs", "low", "failed", "an LFS object altered after commit: checksum blocks it",
             stops_at="verify_published_checksums"),
    DemoCase("hf://demo/remote-code", "high", "failed",
             "a model that needs trust_remote_code (its own Python): refused at high", stops_at="scan_model"),
)
WATCH_DAG_ID = "model_integrity_watch"
INCIDENT_DAG_ID = "model_incident"
TAMPERED_FILE = "config.json"


def run_case(client: AirflowClient, reviewer: AirflowClient, case: DemoCase) -> tuple[bool, dict | None, Outcome]:
    conf = {"source": case.source, "revision": None, "owner": "ml-platform", "risk_tier": case.risk_tier}
    if case.derivation:
        state = Path(os.environ.get("AIRLOCK_STATE_DIR", ".airlock"))
        conf["derivation"] = json.loads((state / "hub" / "models" / case.derivation).read_text())
    if case.registry_name:
        conf["registry_name"] = case.registry_name
    run_id = client.trigger(DAG_ID, conf, note=f"make demo: {case.why}")
    print(f"\n▶ {case.source} (tier {case.risk_tier}): {case.why}\n  run {run_id}")
    if case.needs_approval:
        client.wait_for_task(DAG_ID, run_id, "approve", {"awaiting_input", "deferred"})
        print(f"  waiting for approval (UI: {client.base_url}/required_actions); approving as "
              f"{reviewer.username} through the API (triggered by {client.username})")
        # A busy machine reports the pause late; an answer racing that report fails the task (Airflow 3.3).
        reviewer.respond(DAG_ID, run_id, "approve", ["Approve"], settle_s=15.0)
    run = client.wait_for_run(DAG_ID, run_id)
    instances = client.task_instances(DAG_ID, run_id)
    for ti in sorted(instances, key=lambda t: (t.get("start_date") or "~", TASK_ORDER.index(t["task_id"])
                                               if t["task_id"] in TASK_ORDER else len(TASK_ORDER))):
        print(f"    {ti['task_id']:<28} {ti['state']}")
    states = {ti["task_id"]: ti["state"] for ti in instances}
    promoted = client.xcom(DAG_ID, run_id, "promote") if run["state"] == "success" else None
    if promoted:
        print(f"  promoted {promoted['model']}@{promoted['version']} root sha256:{promoted['root_digest'][:16]}… "
              f"({'new version' if promoted['created'] else 'already in the registry'})")
    reason = note_reason_lines(_run_note(client, DAG_ID, run_id)) if run["state"] == "failed" else []
    if reason:
        print(f"  why (the run's note, shown in the grid): {reason[0]}")
        for line in reason[1:]:
            print(f"    {line}")
    elif run["state"] == "failed":
        print("  why: the run's note has no reason (see the failed task's log)")
    ok = run["state"] == case.expected_state and (case.stops_at is None or states.get(case.stops_at) == "failed")
    verdict = "as expected" if ok else f"UNEXPECTED (wanted {case.expected_state}" + (
        f" at {case.stops_at})" if case.stops_at else ")")
    print(f"  run {run['state']}: {verdict}")
    if promoted:
        row = Outcome(f"{case.source} ({case.risk_tier})", ok, "promoted", f"{promoted['model']}@{promoted['version']}")
    else:
        finding = next((line for line in reason[2:] if line.startswith("[")), reason[1] if len(reason) > 1 else "")
        row = Outcome(f"{case.source} ({case.risk_tier})", ok, f"blocked at {states_failed(states)}",
                      finding or "no reason in the note")
    return ok, promoted, row


def states_failed(states: dict[str, str]) -> str:
    return next((task for task in TASK_ORDER + sorted(states) if states.get(task) == "failed"), "?")


def _run_note(client: AirflowClient, dag_id: str, run_id: str, wait_s: float = 20.0) -> str | None:
    """The run's note once the pipeline wrote its reason (the failure callback may finish just after the run)."""
    deadline = time.monotonic() + wait_s
    while True:
        note = client.dag_run(dag_id, run_id).get("note")
        if note_reason_lines(note) or time.monotonic() > deadline:
            return note
        time.sleep(2)


def pull_verified_copy(promoted: dict) -> bool:
    """What a serving host does: publish the trust store once, then `airlock pull` verifies before it copies."""
    airlock = str(Path(sys.executable).parent / "airlock")
    state = Path(os.environ.get("AIRLOCK_STATE_DIR", ".airlock"))
    trust = state / "trust.pem"
    dest = state / "serving" / f"{promoted['model'].replace('/', '--')}@{promoted['version']}"
    subprocess.run([airlock, "keys", "export", "--output", str(trust)], check=True, capture_output=True)
    if dest.exists():
        subprocess.run(["chmod", "-R", "u+w", str(dest)], check=True)
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    reference = f"{promoted['model']}@{promoted['version']}"
    print(f"\n▶ airlock pull {reference} --dest {dest} --trust-store {trust}")
    result = subprocess.run([airlock, "pull", reference, "--dest", str(dest), "--trust-store", str(trust)],
                            capture_output=True, text=True)
    print("  " + (result.stdout.strip() or result.stderr.strip()).replace("\n", "\n  "))
    return result.returncode == 0


def tamper_file(path: Path) -> str:
    """Alter one stored file the way an attacker with write access to the storage would. The file is replaced
    (a new inode), so no other link to the original bytes changes; the registry's own modes are restored."""
    data = json.loads(path.read_bytes())
    data["_airlock_demo_tampered"] = True
    parent_mode = path.parent.stat().st_mode & 0o7777
    path.parent.chmod(parent_mode | 0o200)
    try:
        altered = path.with_name(path.name + ".tampering")
        altered.write_text(json.dumps(data, indent=2) + "\n")
        altered.chmod(path.stat().st_mode & 0o7777)
        os.replace(altered, path)
    finally:
        path.parent.chmod(parent_mode)
    return f"added a key to {path.name}"


def wait_for_run_to_exist(client: AirflowClient, dag_id: str, run_id: str, timeout: float = 300.0) -> None:
    from airlock.airflow_client import AirflowApiError

    deadline = time.monotonic() + timeout
    while True:
        try:
            client.dag_run(dag_id, run_id)
            return
        except AirflowApiError as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(3)


def version_status(model: str, version: str) -> str:
    """The version's status as the index says, verified with this host's trust store."""
    from airlock.registry import open_registry
    from airlock.trust import host_trust_store

    registry = open_registry(os.environ.get("AIRLOCK_REGISTRY", ".airlock/registry"), trust=host_trust_store())
    state = registry.model_state(model, verified=True)
    found = state.version(version) if state else None
    if found is None:
        return "unknown"
    return found.status.value + (f" ({found.reason})" if found.reason else "")


def integrity_incident(client: AirflowClient, reviewer: AirflowClient) -> tuple[bool, list[Outcome]]:
    """Ingest a model of its own, tamper with its registry copy, let the watch find it and the incident revoke it."""
    name = f"demo-incident/tiny-gpt2-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"
    case = DemoCase("hf://demo/tiny-gpt2", "medium", "success",
                    f"the copy the integrity demo will tamper with, under a name of its own ({name}; a rename "
                    "needs a reviewer)", registry_name=name)
    ok, promoted, row = run_case(client, reviewer, case)
    rows = [row]
    if not promoted:
        return False, rows
    version = promoted["version"]
    registry = os.environ.get("AIRLOCK_REGISTRY", ".airlock/registry")
    if registry.startswith("s3://"):
        print(f"\n▶ tamper: skipped (the registry is {registry}; this demo alters a filesystem registry)")
        return ok, rows
    stored = Path(registry) / "models" / name / version / "files" / TAMPERED_FILE
    how = tamper_file(stored)
    print(f"\n▶ tamper: {how} in the registry copy of {name}@{version}\n  {stored}")

    client.unpause(WATCH_DAG_ID)
    client.unpause(INCIDENT_DAG_ID)
    watch_run = client.trigger(WATCH_DAG_ID, {}, note="make demo: find the tampered registry copy")
    print(f"\n▶ {WATCH_DAG_ID}: re-hash every released version against its signature\n  run {watch_run}")
    watched = client.wait_for_run(WATCH_DAG_ID, watch_run, timeout=1200, poll=5)
    checks = client.request("GET", f"/dags/{WATCH_DAG_ID}/dagRuns/{watch_run}/taskInstances/check/listMapped",
                            params={"limit": 1000})["task_instances"]
    mine = [ti for ti in checks if f"{name}@{version}" in (ti.get("rendered_map_index") or "")]
    for ti in mine:
        result = client.request(
            "GET", f"/dags/{WATCH_DAG_ID}/dagRuns/{watch_run}/taskInstances/check/xcomEntries/return_value",
            params={"map_index": ti["map_index"], "deserialize": "true"})["value"]
        found = "; ".join(f"{what} {', '.join(result.get(what) or [])}" for what in ("modified", "added", "removed")
                          if result.get(what))
        print(f"    check [{ti.get('rendered_map_index')}] {ti['state']}: verdict {result.get('verdict')}"
              + (f" ({found})" if found else ""))
    print(f"  {len(checks)} target(s) checked; run {watched['state']} (a deviation fails the watch run, on purpose)")

    incident_run = f"integrity_watch__{watch_run}__{name.replace('/', '~')}~{version}"
    print(f"\n▶ {INCIDENT_DAG_ID}: opened by the watch for {name}@{version}\n  run {incident_run}")
    wait_for_run_to_exist(client, INCIDENT_DAG_ID, incident_run)
    incident = client.wait_for_run(INCIDENT_DAG_ID, incident_run, timeout=900, poll=5)
    for ti in client.task_instances(INCIDENT_DAG_ID, incident_run):
        print(f"    {ti['task_id']:<28} {ti['state']}")
    status = version_status(name, version)
    print(f"  {name}@{version} is now: {status}")
    caught = incident["state"] == "success" and status.startswith("revoked")
    rows.append(Outcome(f"{name}@{version} (tampered on disk)", caught,
                        "revoked" if caught else f"NOT revoked ({status})",
                        f"watch {watched['state']}, incident {incident['state']}: {TAMPERED_FILE} modified"))
    return ok and caught, rows


def print_summary(rows: list[Outcome]) -> None:
    width = max(len(r.what) for r in rows)
    outcome_width = max(len(r.outcome) for r in rows)
    print("\nSummary")
    print(f"  {'model':<{width}}  {'outcome':<{outcome_width}}  reason / version")
    for row in rows:
        mark = "" if row.ok else "  <- UNEXPECTED"
        detail = row.detail if len(row.detail) <= 110 else row.detail[:107] + "..."
        print(f"  {row.what:<{width}}  {row.outcome:<{outcome_width}}  {detail}{mark}")


def proxy_step() -> Outcome | None:
    """The model proxy's part of the demo (scripts/demo_proxy.py), when that file is there."""
    path = Path(__file__).with_name("demo_proxy.py")
    if not path.exists():
        print("\n▶ model proxy: skipped (scripts/demo_proxy.py is not there)")
        return None
    spec = importlib.util.spec_from_file_location("airlock_demo_proxy", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
        result = module.run_proxy_demo()
    except Exception as exc:  # noqa: BLE001 - another step's crash must not cost the summary above it
        print(f"\n▶ model proxy: the step failed: {type(exc).__name__}: {exc}")
        return Outcome("model proxy", False, "FAILED", f"{type(exc).__name__}: {exc}")
    print(f"\n▶ {result.line}")
    for detail in result.details:
        print(f"  {detail}")
    return Outcome("model proxy", result.ok, "as expected" if result.ok else "FAILED", result.line)


def main() -> int:
    url = os.environ.get("AIRLOCK_AIRFLOW_URL", "http://127.0.0.1:8080")
    user = os.environ.get("AIRLOCK_AIRFLOW_ADMIN_USER", "admin")
    password = os.environ.get("AIRLOCK_AIRFLOW_ADMIN_PASSWORD", "airlock")
    client = AirflowClient(url, user, password)
    state = Path(os.environ.get("AIRLOCK_STATE_DIR", ".airlock"))
    reviewer_name = os.environ.get("AIRLOCK_AIRFLOW_REVIEWER", "reviewer")
    try:
        passwords = json.loads((state / "secrets" / "airflow-passwords.json").read_text())
        reviewer = AirflowClient(url, reviewer_name, passwords[reviewer_name])
    except (OSError, ValueError, KeyError):
        print(f"demo failed: no password for Airflow user {reviewer_name!r} in {state}/secrets "
              f"(start the stack with `make stack-up`)", file=sys.stderr)
        return 1
    try:
        client.wait_for_dag(DAG_ID)
        client.unpause(DAG_ID)
        outcomes = [run_case(client, reviewer, case) for case in CASES]
        results = [ok for ok, _, _ in outcomes]
        rows = [row for _, _, row in outcomes]
        first_promoted = next((promoted for _, promoted, _ in outcomes if promoted), None)
        if first_promoted:
            pulled = pull_verified_copy(first_promoted)
            results.append(pulled)
            rows.append(Outcome(f"airlock pull {first_promoted['model']}", pulled, "verified" if pulled else "FAILED",
                                f"{first_promoted['model']}@{first_promoted['version']} -> {state}/serving"))
        caught, incident_rows = integrity_incident(client, reviewer)
        results.append(caught)
        rows.extend(incident_rows)
    except AirlockError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    proxy = proxy_step()
    if proxy is not None:
        results.append(proxy.ok)
        rows.append(proxy)
    print_summary(rows)
    print(f"\nAirflow UI: {url}  (login: {user} / {password})")
    print(f"  Registry page (models, versions, checks, incidents; revoke as admin): {url}/registry/")
    print(f"  Ingest runs, grid with each blocked run's reason in its note: {url}/dags/{DAG_ID}/grid")
    print(f"  Integrity watch and incidents: {url}/dags/{WATCH_DAG_ID}/runs  {url}/dags/{INCIDENT_DAG_ID}/runs")
    print(f"  Assets (quarantine sources vs registry models): {url}/assets")
    print(f"Approvals: only reviewers may answer, never the user who triggered the run: log in as {reviewer_name} "
          f"(password in {state}/secrets/airflow-passwords.json) under Required Actions")
    print("Registry:  . .airlock/env && .venv/bin/airlock registry list   (incidents: airlock registry incidents)")
    print(f"Lineage:   OpenLineage events of every task in {state}/lineage/openlineage.jsonl")
    print("Outcome:", "all demo runs ended as expected" if all(results) else "some demo runs did NOT end as expected")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
