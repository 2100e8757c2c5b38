"""A blocked run says why: the reason goes into the DAG run's note, which the grid shows beside the run.

When a task of ``model_ingest`` fails for good, its ``on_failure_callback`` turns the failure into a short
note -- the task, and the reason as the task's refusal states it: the scan's rule and file, the checksum
and file, the metric and bound -- and writes it through Airflow's REST API (PATCH of the run's note; the
least role that may edit a run, here the ``airlock_airflow_notes`` connection's user, which is used for
nothing else). The first reason wins: a later failure of the same run (a teardown, say) does not replace it,
and a note the run was triggered with is kept below it.

The reason is text from the model (file names) and the source: it is shown as an indented code block
(Markdown renders it literally, whatever it contains), one finding per line, control characters escaped.

A note is a convenience for people, not evidence: nothing reads a verdict back from it, and a note that
cannot be written (no connection, API down) is logged and never fails or retries the task.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

NOTES_CONN_ID = "airlock_airflow_notes"
MARKER = "⛔"  # starts every note this module writes; a run whose note starts with it already says why
MAX_NOTE = 1000  # Airflow keeps a run's note in a 1000-character column
_MAX_LINES = 12
_REFUSED = re.compile(r"^(?:refused:\s*)+")
# The findings a refusal lists ("...: [block] rule (sev): file: detail; [block] ..."), one per line in the note.
_FINDING_SPLIT = re.compile(r";\s+(?=\[(?:block|error|flag)\])|:\s+(?=\[(?:block|error|flag)\])")

_log = logging.getLogger(__name__)


class NoteWriter(Protocol):
    def read(self, dag_id: str, run_id: str) -> str | None: ...

    def write(self, dag_id: str, run_id: str, note: str) -> None: ...


@dataclass(frozen=True)
class BlockReason:
    """Why a run stopped: the task that stopped it and the refusal's own words."""

    task_id: str
    message: str
    verdict: bool = True  # a refusal (blocked) rather than an error the task could not get past

    @property
    def lines(self) -> list[str]:
        """The refusal split into its headline and one line per finding, each on one safe line."""
        from airlock.redact import one_line

        text = _REFUSED.sub("", self.message.strip())
        parts = [one_line(p).strip() for p in _FINDING_SPLIT.split(text) if p.strip()]
        if len(parts) > _MAX_LINES:
            parts = parts[:_MAX_LINES - 1] + [f"... and {len(parts) - _MAX_LINES + 1} more"]
        return parts or ["(no reason given)"]

    def note(self, previous: str | None = None) -> str:
        """The run's note: headline, the reason as a literal block, then the note the run had before.

        Within Airflow's 1000 characters: findings that do not fit are counted, then the previous note goes.
        """
        headline = f"{MARKER} {'Blocked' if self.verdict else 'Failed'} at {self.task_id}"
        lines = self.lines
        after = f"\n{previous.strip()}" if previous and previous.strip() else ""
        for shown in range(len(lines), 0, -1):
            kept = [line[:MAX_NOTE // 2] for line in lines[:shown]]
            if shown < len(lines):
                kept.append(f"... and {len(lines) - shown} more")
            text = f"{headline}\n\n" + "\n".join("    " + line for line in kept) + "\n"
            for tail in (after, ""):
                if len(text + tail) <= MAX_NOTE:
                    return text + tail
        return f"{headline}\n"


def reason_from_exception(task_id: str, exception: BaseException | str | None) -> BlockReason:
    """The reason of a failed task: a refusal (AirflowFailException: a verdict) or another error."""
    if exception is None:
        return BlockReason(task_id, "the task failed without an error message (see its log)", verdict=False)
    if isinstance(exception, str):
        return BlockReason(task_id, exception)
    # AirflowFailException: the DAG's refusals (a verdict, no retry); HITLRejectException: a reviewer rejected it.
    verdict = type(exception).__name__ in ("AirflowFailException", "HITLRejectException", "HITLTimeoutError") or \
        str(exception).startswith("refused:")
    message = str(exception) or type(exception).__name__
    return BlockReason(task_id, message, verdict=verdict)


def has_reason(note: str | None) -> bool:
    return bool(note) and note.lstrip().startswith(MARKER)


def write_reason(writer: NoteWriter | None, dag_id: str, run_id: str, reason: BlockReason,
                 log: Callable[[str], None] = _log.warning) -> str | None:
    """Write ``reason`` as the run's note unless the run already says why; the note written, or None.

    Never raises: a note is for people, and the task has already failed with its reason in the log.
    """
    if writer is None:
        log(f"run note not written ({NOTES_CONN_ID} is not configured): {reason.lines[0]}")
        return None
    try:
        previous = writer.read(dag_id, run_id)
        if has_reason(previous):
            return None
        note = reason.note(previous)
        writer.write(dag_id, run_id, note)
        return note
    except Exception as exc:  # noqa: BLE001 - see the docstring: the failure itself is already on record
        from airlock.redact import one_line

        log(one_line(f"run note not written: {type(exc).__name__}: {exc}"))
        return None


@dataclass
class RestNoteWriter:
    """A run's note through Airflow's REST API (``client``: :class:`airlock.airflow_client.AirflowClient`)."""

    client: Any

    @staticmethod
    def _path(dag_id: str, run_id: str) -> str:
        from urllib.parse import quote

        return f"/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"

    def read(self, dag_id: str, run_id: str) -> str | None:
        return self.client.request("GET", self._path(dag_id, run_id)).get("note")

    def write(self, dag_id: str, run_id: str, note: str) -> None:
        self.client.request("PATCH", self._path(dag_id, run_id), params={"update_mask": "note"}, json={"note": note})


def rest_writer(conn_id: str = NOTES_CONN_ID) -> RestNoteWriter | None:
    """The writer the ``conn_id`` connection (type http: host, port, schema, login, password) names; None when it
    is not configured."""
    from airlock.airflow_client import client_from_connection

    client = client_from_connection(conn_id)
    return RestNoteWriter(client) if client is not None else None


def note_reason_lines(note: str | None) -> list[str]:
    """The reason in a note this module wrote (headline and findings), for printing; [] for any other note."""
    if not has_reason(note):
        return []
    assert note is not None
    head, _, rest = note.strip().partition("\n\n")
    findings = []
    for line in rest.splitlines():
        if not line.startswith("    "):
            break
        findings.append(line[4:])
    return [head.removeprefix(MARKER).strip(), *findings]
