#!/usr/bin/env python3
"""Concurrent ingests on the Celery stack: N model_ingest runs of distinct small models triggered at once.

Starts its own Celery-mode Airflow (``scripts/stack.py up --celery``: own PostgreSQL database, own Redis database,
own port, own registry and quarantine; Vault and the demo hub are the shared stack's, so run ``make stack-up``
first), builds N distinct tiny models as ``file://`` drops (the demo tiny-gpt2 with a distinguishing config
field and a vendor ``SHA256SUMS``), triggers N runs at once with ``max_active_runs`` and pools as shipped, and
answers each run's approval form as a reviewer (a drop's name needs a human at its first release). Then it
checks the registry: every expected version present exactly once, every RELEASED version verifies (index
chain, plan, objects, signature with the host trust store), exactly one promotion event per version in the
index, no ``.airlock-partial.*`` left. The stack is stopped and its database dropped at the end.

A run is *lost* when it neither ended with a verified registry version nor failed with a reason (still
running at the deadline), or when it succeeded but its version breaks an invariant.

Prints runs completed, failed, wall time and runs/minute; the last line is exactly
``runs_ok=<k>/<n> lost=<m> per_min=<x.x>``.

    set -a; . .airlock/env; set +a
    nice -n 10 .venv/bin/python bench/load_bench.py --runs 20
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DAG_ID = "model_ingest"
TERMINAL = {"success", "failed"}


def build_drops(base: Path, count: int, template: Path) -> list[Path]:
    """``count`` distinct copies of the demo tiny-gpt2, each a drop with a SHA256SUMS vendor manifest."""
    drops = []
    for index in range(count):
        drop = base / "bench" / f"tiny-{index:03d}"
        drop.mkdir(parents=True)
        for source in sorted(template.iterdir()):
            if source.is_file() and not source.name.startswith("."):
                shutil.copyfile(source, drop / source.name)
        config = json.loads((drop / "config.json").read_text())
        config["airlock_load_bench_variant"] = index  # a distinct model (root digest), still loadable
        (drop / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
                       for p in sorted(drop.iterdir()) if p.is_file())
        (drop / "SHA256SUMS").write_text(sums)
        drops.append(drop)
    return drops


def drive(client, reviewer, run_ids: list[str], timeout_s: float) -> dict[str, str]:
    """Answer approval forms as they appear and wait until every run ends (or the deadline); run id -> state."""
    deadline = time.monotonic() + timeout_s
    states: dict[str, str] = {}
    approved: set[str] = set()
    while time.monotonic() < deadline:
        for run_id in run_ids:
            if states.get(run_id) in TERMINAL:
                continue
            states[run_id] = client.dag_run(DAG_ID, run_id)["state"]
            if run_id not in approved and states[run_id] == "running":
                ti = client.request("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve")
                if ti["state"] in {"deferred", "awaiting_input"}:
                    reviewer.respond(DAG_ID, run_id, "approve", ["Approve"], settle_s=2.0)
                    approved.add(run_id)
        if all(states.get(r) in TERMINAL for r in run_ids):
            break
        time.sleep(3)
    return states


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="ingestions triggered at once (default 20)")
    parser.add_argument("--port", type=int, default=8312, help="the bench's Airflow API port (default 8312)")
    parser.add_argument("--redis-db", type=int, default=13, help="the bench's Redis database number (default 13)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for every run (default 3600)")
    parser.add_argument("--tier", default="low", choices=["low", "medium", "high", "critical"])
    args = parser.parse_args(argv)

    from tests.celery_fixtures import celery_airflow, registry_problems

    state = Path(os.environ.get("AIRLOCK_STATE_DIR", REPO / ".airlock"))
    template = state / "hub" / "models" / "demo" / "tiny-gpt2"
    if not template.is_dir():
        print(f"load bench: {template} is missing: start the shared stack with `make stack-up`", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="airlock-load-bench-") as tmp:
        root = Path(tmp)
        drops = build_drops(root / "drops", args.runs, template)
        print(f"built {len(drops)} distinct drops under {root / 'drops'}; starting the Celery stack", flush=True)
        with celery_airflow(root / "celery", port=args.port, redis_db=args.redis_db) as stack:
            client, reviewer = stack.client(), stack.client("reviewer")
            client.wait_for_dag(DAG_ID)
            client.unpause(DAG_ID)
            dag = client.request("GET", f"/dags/{DAG_ID}")
            pools = client.request("GET", "/pools")["pools"]
            print(f"max_active_runs={dag.get('max_active_runs')} pools="
                  + ",".join(f"{p['name']}:{p['slots']}" for p in pools), flush=True)
            started = time.monotonic()
            runs = {client.trigger(DAG_ID, {"source": drop.as_uri(), "owner": "ml-platform", "risk_tier": args.tier,
                                            "registry_name": f"bench/{drop.name}"}): drop for drop in drops}
            states = drive(client, reviewer, list(runs), args.timeout)
            wall = time.monotonic() - started
            completed = [r for r, s in states.items() if s == "success"]
            failed = [r for r, s in states.items() if s == "failed"]
            expected: dict[str, set[str]] = {}
            for run_id in completed:
                promoted = client.xcom(DAG_ID, run_id, "promote")
                expected.setdefault(promoted["model"], set()).add(promoted["version"])
            for run_id in failed:
                failed_tasks = [t["task_id"] for t in client.task_instances(DAG_ID, run_id) if t["state"] == "failed"]
                print(f"failed: {runs[run_id].name} run {run_id}: failed tasks {failed_tasks}")
            problems = registry_problems(str(stack.registry), expected)
            for problem in problems:
                print(f"registry: {problem}")
            broken = {p.split("@", 1)[0].split(":", 1)[0] for p in problems}
            ok = [r for r in completed if f"bench/{runs[r].name}" not in broken]
            unfinished = len(runs) - len(completed) - len(failed)
            lost = unfinished + (len(completed) - len(ok)) + (1 if problems and len(ok) == len(completed) else 0)
    per_min = len(ok) / (wall / 60) if wall > 0 else 0.0
    print(f"completed={len(completed)} failed={len(failed)} unfinished={unfinished} wall={wall:.1f}s "
          f"runs/min={per_min:.2f}")
    print(f"runs_ok={len(ok)}/{len(runs)} lost={lost} per_min={per_min:.1f}")
    return 0 if lost == 0 and len(ok) == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
