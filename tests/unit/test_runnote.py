"""A blocked run's note: the refusal's reason, one finding per line, literal in Markdown, first reason wins."""

from __future__ import annotations

from dataclasses import dataclass, field

from airlock.runnote import (
    MARKER,
    MAX_NOTE,
    BlockReason,
    RestNoteWriter,
    note_reason_lines,
    reason_from_exception,
    write_reason,
)

SCAN_REFUSAL = (
    "refused: scan verdict block (exit 1) at tier medium, report /q/run/scan.json: "
    "[block] pickle.global.disallowed (critical): pytorch_model.bin!pytorch_model/data.pkl @24: GLOBAL imports "
    "os.system: a known code-execution primitive; [block] picklescan.dangerous_global (critical): "
    "pytorch_model.bin!pytorch_model/data.pkl @0: picklescan flags os.system as dangerous"
)


@dataclass
class MemoryWriter:
    notes: dict[tuple[str, str], str | None] = field(default_factory=dict)
    writes: int = 0

    def read(self, dag_id: str, run_id: str) -> str | None:
        return self.notes.get((dag_id, run_id))

    def write(self, dag_id: str, run_id: str, note: str) -> None:
        self.writes += 1
        self.notes[(dag_id, run_id)] = note


def test_a_scan_block_names_each_rule_and_file_on_a_line_of_its_own() -> None:
    reason = BlockReason("scan_model", SCAN_REFUSAL)
    note = reason.note()
    assert note.startswith(f"{MARKER} Blocked at scan_model\n\n    scan verdict block (exit 1) at tier medium")
    assert "\n    [block] pickle.global.disallowed (critical): pytorch_model.bin!pytorch_model/data.pkl @24" in note
    assert "\n    [block] picklescan.dangerous_global (critical): pytorch_model.bin" in note
    assert "refused:" not in note
    assert note_reason_lines(note) == ["Blocked at scan_model", *reason.lines]
    assert len(reason.lines) == 3  # the refusal's headline and one line per finding


def test_text_from_the_model_cannot_escape_the_literal_block() -> None:
    hostile = "refused: checksum mismatch: evil\n\n# Approved by security\n[link](http://x)\x1b[31m"
    note = BlockReason("verify_published_checksums", hostile).note()
    body = note.split("\n\n", 1)[1]
    # Every line of the reason is indented as code: Markdown shows it literally, a newline cannot end the block.
    assert all(line.startswith("    ") for line in body.strip("\n").splitlines()), note
    assert "\n# Approved" not in note and "\x1b" not in note


def test_the_first_reason_wins_and_the_trigger_note_is_kept() -> None:
    writer = MemoryWriter({("model_ingest", "r1"): "make demo: a pickle that would run a command"})
    first = write_reason(writer, "model_ingest", "r1", BlockReason("scan_model", SCAN_REFUSAL))
    assert first is not None and first.endswith("make demo: a pickle that would run a command")
    assert write_reason(writer, "model_ingest", "r1", BlockReason("remove_quarantine", "boom", verdict=False)) is None
    assert writer.writes == 1 and writer.notes[("model_ingest", "r1")] == first


def test_a_long_reason_fits_airflows_note_column() -> None:
    many = "refused: scan verdict block: " + "; ".join(f"[block] rule.{i} (high): file{i}.bin: " + "x" * 200
                                                        for i in range(40))
    note = BlockReason("scan_model", many).note("a trigger note " * 50)
    assert len(note) <= MAX_NOTE and note.startswith(f"{MARKER} Blocked at scan_model")
    assert "... and" in note  # the findings beyond the first ones are counted


def test_a_note_that_cannot_be_written_never_raises() -> None:
    class Down:
        def read(self, dag_id: str, run_id: str) -> str | None:
            raise ConnectionError("api down")

        def write(self, dag_id: str, run_id: str, note: str) -> None:  # pragma: no cover - never reached
            raise AssertionError

    logged: list[str] = []
    assert write_reason(Down(), "d", "r", BlockReason("scan_model", SCAN_REFUSAL), log=logged.append) is None
    assert write_reason(None, "d", "r", BlockReason("scan_model", SCAN_REFUSAL), log=logged.append) is None
    assert "api down" in logged[0] and "not configured" in logged[1]


def test_refusals_are_blocks_and_other_errors_are_failures() -> None:
    class AirflowFailException(Exception):
        pass

    assert reason_from_exception("scan_model", AirflowFailException("refused: x")).verdict is True
    assert reason_from_exception("download_to_quarantine", TimeoutError("slow")).verdict is False
    assert reason_from_exception("t", None).note().startswith(f"{MARKER} Failed at t")
    assert note_reason_lines("make demo: something") == []


def test_the_rest_writer_patches_only_the_note() -> None:
    calls = []

    class Client:
        def request(self, method, path, **kwargs):
            calls.append((method, path, kwargs))
            return {"note": None}

    writer = RestNoteWriter(Client())
    assert writer.read("model_ingest", "manual__2026/x") is None
    writer.write("model_ingest", "manual__2026/x", "n")
    assert calls[1] == ("PATCH", "/dags/model_ingest/dagRuns/manual__2026%2Fx",
                        {"params": {"update_mask": "note"}, "json": {"note": "n"}})
