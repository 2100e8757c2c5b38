#!/usr/bin/env python3
"""Parse time of each DAG file, as the DAG processor sees it.

The DAG processor has Airflow imported already, so each file is timed in a
fresh interpreter after `airflow.sdk` is imported, best of N runs. Target:
under 1 s per file on a 2-core machine. The last line is
`max_parse_seconds=<x.xxx> files=<n>`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS = 5
TARGET_SECONDS = 1.0

PROBE = """
import runpy, sys, time
import airflow.sdk  # already loaded in the DAG processor
start = time.perf_counter()
runpy.run_path(sys.argv[1])
print(time.perf_counter() - start)
"""


def parse_seconds(dag_file: Path) -> float:
    timings = []
    for _ in range(RUNS):
        out = subprocess.run([sys.executable, "-c", PROBE, str(dag_file)], capture_output=True, text=True, check=True)
        timings.append(float(out.stdout.strip().splitlines()[-1]))
    return min(timings)


def main() -> int:
    files = sorted((REPO / "dags").glob("*.py"))
    worst = 0.0
    for dag_file in files:
        seconds = parse_seconds(dag_file)
        worst = max(worst, seconds)
        flag = "ok" if seconds < TARGET_SECONDS else "OVER TARGET"
        print(f"{dag_file.name:<40} {seconds:7.3f} s  {flag}")
    print(f"max_parse_seconds={worst:.3f} files={len(files)}")
    return 0 if worst < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
