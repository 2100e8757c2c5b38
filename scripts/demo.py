#!/usr/bin/env python3
"""`make demo`: ingest the demo models through the running Airflow and show the outcome.

Expects the stack from `make stack-up` (it reads <state>/env through the
environment that the Makefile sources). Runs are triggered as the admin user;
approval forms are answered as a reviewer (four eyes: Airlock refuses an
approval by the user who triggered the run). Exits non-zero when a run does not
end as expected.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from airlock.airflow_client import AirflowClient
from airlock.errors import AirlockError

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

    @property
    def needs_approval(self) -> bool:
        """Tier high/critical, and every derivation claim, wait for a human (here: the reviewer, via the API)."""
        return self.expected_state == "success" and (self.risk_tier in ("high", "critical") or bool(self.derivation))


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
)


def run_case(client: AirflowClient, reviewer: AirflowClient, case: DemoCase) -> tuple[bool, dict | None]:
    conf = {"source": case.source, "revision": None, "owner": "ml-platform", "risk_tier": case.risk_tier}
    if case.derivation:
        state = Path(os.environ.get("AIRLOCK_STATE_DIR", ".airlock"))
        conf["derivation"] = json.loads((state / "hub" / "models" / case.derivation).read_text())
    run_id = client.trigger(DAG_ID, conf, note=f"make demo: {case.why}")
    print(f"\n▶ {case.source} (tier {case.risk_tier}): {case.why}\n  run {run_id}")
    if case.needs_approval:
        client.wait_for_task(DAG_ID, run_id, "approve", {"awaiting_input", "deferred"})
        print(f"  waiting for approval (UI: {client.base_url}/required_actions); approving as "
              f"{reviewer.username} through the API (triggered by {client.username})")
        reviewer.respond(DAG_ID, run_id, "approve", ["Approve"])
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
    ok = run["state"] == case.expected_state and (case.stops_at is None or states.get(case.stops_at) == "failed")
    verdict = "as expected" if ok else f"UNEXPECTED (wanted {case.expected_state}" + (
        f" at {case.stops_at})" if case.stops_at else ")")
    print(f"  run {run['state']}: {verdict}")
    return ok, promoted


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
    except AirlockError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    results = [ok for ok, _ in outcomes]
    first_promoted = next((promoted for _, promoted in outcomes if promoted), None)
    if first_promoted:
        results.append(pull_verified_copy(first_promoted))
    print(f"\nAirflow UI: {url}  (login: {user} / {password})")
    print(f"Approvals: only reviewers may answer, never the user who triggered the run: log in as {reviewer_name} "
          f"(password in {state}/secrets/airflow-passwords.json) under Required Actions")
    print(f"Runs: {url}/dags/{DAG_ID}/runs")
    print("Registry:  . .airlock/env && .venv/bin/airlock registry list")
    print("Outcome:", "all demo runs ended as expected" if all(results) else "some demo runs did NOT end as expected")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
