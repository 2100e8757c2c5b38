"""Scanning: every file by content, a pickle allowlist plus picklescan, hostile formats, tier policy.

Entry point for the DAG and the CLI::

    report = scan_model(Path(quarantine_dir), "high")
    report.verdict            # "allow" | "block"
    report.exit_code          # 0 allowed, 1 blocked, 2 could not scan (treat as blocked)
    report.requires_approval  # allowed, but a flagged finding (e.g. remote code at tier medium) needs a human
    report.summary_lines()    # for the task log
    report.to_json_dict()     # the ScanReport of ARCHITECTURE.md, for lineage and the registry

Nothing here imports Airflow, torch or transformers; the scanner never unpickles, imports or
runs anything from the model.
"""

from airlock.scan.report import (
    EXIT_ALLOWED,
    EXIT_BLOCKED,
    EXIT_COULD_NOT_SCAN,
    FileReport,
    Finding,
    ScanReport,
)
from airlock.scan.scanner import ScanTargetError, scan_model

__all__ = [
    "EXIT_ALLOWED",
    "EXIT_BLOCKED",
    "EXIT_COULD_NOT_SCAN",
    "FileReport",
    "Finding",
    "ScanReport",
    "ScanTargetError",
    "scan_model",
]
