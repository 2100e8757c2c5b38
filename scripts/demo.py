#!/usr/bin/env python3
"""`make demo`: ingest the demo models through the running Airflow and show the outcome.

Expects the stack from `make stack-up` (it reads <state>/env through the
environment that the Makefile sources). Exits non-zero when a run does not
end as expected.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from airlock.airflow_client import AirflowClient
from airlock.errors import AirlockError

DAG_ID = "model_ingest"


@dataclass(frozen=True)
class DemoCase:
    source: str
    risk_tier: str
    expected_state: str
    why: str


CASES = (
    DemoCase("hf://demo/tiny-gpt2", "high", "success", "a clean safetensors model"),
    DemoCase("hf://demo/tampered-lfs", "low", "failed", "an LFS object altered after commit: checksum blocks it"),
)


def run_case(client: AirflowClient, case: DemoCase) -> bool:
    conf = {"source": case.source, "revision": None, "owner": "ml-platform", "risk_tier": case.risk_tier}
    run_id = client.trigger(DAG_ID, conf, note=f"make demo: {case.why}")
    print(f"\n▶ {case.source} (tier {case.risk_tier}): triggered {DAG_ID} run {run_id}")
    run = client.wait_for_run(DAG_ID, run_id)
    for ti in sorted(client.task_instances(DAG_ID, run_id), key=lambda t: t.get("start_date") or ""):
        print(f"    {ti['task_id']:<28} {ti['state']}")
    if run["state"] == "success":
        resolved = client.xcom(DAG_ID, run_id, "resolve_source")
        print(f"    pinned revision: {resolved['revision']} ({len(resolved['files'])} files)")
        manifest = client.xcom(DAG_ID, run_id, "hash_manifest")
        print(f"    manifest root digest: {manifest['root_digest']} ({manifest['files']} files)")
    ok = run["state"] == case.expected_state
    verdict = "as expected" if ok else f"UNEXPECTED (wanted {case.expected_state})"
    print(f"  run {run['state']}: {verdict}")
    return ok


def main() -> int:
    url = os.environ.get("AIRLOCK_AIRFLOW_URL", "http://127.0.0.1:8080")
    user = os.environ.get("AIRLOCK_AIRFLOW_ADMIN_USER", "admin")
    password = os.environ.get("AIRLOCK_AIRFLOW_ADMIN_PASSWORD", "airlock")
    client = AirflowClient(url, user, password)
    try:
        client.wait_for_dag(DAG_ID)
        client.unpause(DAG_ID)
        results = [run_case(client, case) for case in CASES]
    except AirlockError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    print(f"\nAirflow UI: {url}  (login: {user} / {password})")
    print(f"Runs: {url}/dags/{DAG_ID}/runs")
    print("Outcome:", "all demo runs ended as expected" if all(results) else "some demo runs did NOT end as expected")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
