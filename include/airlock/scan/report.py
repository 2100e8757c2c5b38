"""The ScanReport JSON contract (ARCHITECTURE.md): what was scanned, what was found, the verdict.

``{schema, verdict: allow|block, files: [{path, detected_format, findings: [{rule, severity,
detail}]}], scanners: {name: version}}`` plus fields that explain the verdict: the tier and the
policy applied, the action each finding triggered, whether a human must approve, and scan errors.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA = "airlock.scan-report/v1"

# Exit codes of `airlock scan` (ARCHITECTURE.md); the DAG treats EXIT_COULD_NOT_SCAN as blocked.
EXIT_ALLOWED = 0
EXIT_BLOCKED = 1
EXIT_COULD_NOT_SCAN = 2

Verdict = Literal["allow", "block"]
Action = Literal["allow", "flag", "block"]


class Severity(StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Category(StrEnum):
    """Why a finding matters; the tier policy turns a category into an action."""

    CODE_EXECUTION = "code_execution"  # would run code on load: always blocks
    MALFORMED = "malformed"  # unparsable, truncated or inconsistent: cannot be vouched for, always blocks
    UNSUPPORTED = "unsupported"  # a format Airlock refuses outright (e.g. torch's pre-2018 tar checkpoints)
    BUDGET = "budget"  # the scan ran out of time or bytes: always blocks
    CONTAINER_ANOMALY = "container_anomaly"  # policy.container_anomaly
    PICKLE_WEIGHTS = "pickle_weights"  # policy.allow_pickle_weights
    FORMAT_POLICY = "format_policy"  # a model format outside policy.allowed_model_formats
    REMOTE_CODE = "remote_code"  # policy.remote_code
    UNKNOWN = "unknown"  # policy.unknown_binary: content Airlock cannot identify or look inside
    INFO = "info"  # recorded for the reviewer, never changes the verdict


class Finding(BaseModel):
    model_config = ConfigDict(frozen=True)

    rule: str
    severity: Severity
    detail: str
    category: Category
    action: Action
    # Where inside the file: a member chain such as "archive/data.pkl" or "a.zip!b.tar!c.pkl".
    member: str | None = None
    # Byte offset within that member (or the file), when the finding is about one spot.
    offset: int | None = None


class MemberReport(BaseModel):
    """A member of a container (zip, tar, gzip ...), detected by content like a file."""

    path: str
    detected_format: str
    size: int


class FileReport(BaseModel):
    path: str  # POSIX, relative to the scanned root
    detected_format: str
    size: int
    findings: list[Finding] = Field(default_factory=list)
    members: list[MemberReport] = Field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return any(f.action == "block" for f in self.findings)


class ScanError(BaseModel):
    """The scanner itself failed on a file: the file counts as not scanned (and blocks)."""

    path: str
    detail: str


class ScanReport(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    schema_: str = Field(default=SCHEMA, alias="schema")
    verdict: Verdict
    requires_approval: bool  # the verdict is allow, but a flagged finding needs a human's approval
    tier: str
    target: str
    files: list[FileReport]
    scanners: dict[str, str]
    policy: dict[str, Any]
    errors: list[ScanError] = Field(default_factory=list)
    elapsed_s: float = 0.0
    bytes_scanned: int = 0

    @property
    def exit_code(self) -> int:
        """0 allowed, 1 blocked, 2 could not scan (a scanner error): the `airlock scan` contract."""
        if self.errors:
            return EXIT_COULD_NOT_SCAN
        return EXIT_BLOCKED if self.verdict == "block" else EXIT_ALLOWED

    @property
    def allowed(self) -> bool:
        return self.exit_code == EXIT_ALLOWED

    def findings(self, *actions: Action) -> list[tuple[str, Finding]]:
        """``(file path, finding)`` pairs, optionally only those whose action is one of ``actions``."""
        return [
            (f.path, finding) for f in self.files for finding in f.findings if not actions or finding.action in actions
        ]

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def summary_lines(self) -> list[str]:
        """Human-readable lines for a task log or a terminal: the verdict, then every non-info finding."""
        lines = [
            f"scan {self.target} at tier {self.tier}: {self.verdict.upper()}"
            + (" (requires approval)" if self.requires_approval else "")
            + f" - {len(self.files)} files, {self.bytes_scanned} bytes, {self.elapsed_s:.2f}s"
        ]
        for _path, finding in self.findings("block", "flag"):  # details name the file, member and offset
            lines.append(f"  [{finding.action}] {finding.rule} ({finding.severity}): {finding.detail}")
        for error in self.errors:
            lines.append(f"  [error] {error.path}: {error.detail}")
        return lines
