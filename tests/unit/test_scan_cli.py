"""``airlock scan``: exit codes 0/1/2 and the JSON report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from airlock.cli import EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, main
from scan_corpus import dumps_reduce, safetensors_bytes, write


def test_scan_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    clean = write(tmp_path, "clean/model.safetensors", safetensors_bytes({}))
    evil = write(tmp_path, "evil/model.bin", dumps_reduce(os.system, "true"))

    assert main(["scan", str(clean.parent), "--tier", "critical", "--format", "json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "allow" and report["tier"] == "critical"
    assert report["files"][0]["detected_format"] == "safetensors"
    assert set(report) >= {"schema", "verdict", "files", "scanners", "policy", "requires_approval"}

    assert main(["scan", str(evil.parent)]) == EXIT_NEGATIVE
    out = capsys.readouterr().out
    assert "BLOCK" in out and "pickle.global.disallowed" in out and "posix.system" in out  # os.system pickles as posix

    assert main(["scan", str(tmp_path / "missing")]) == EXIT_ERROR
    assert "no such file" in capsys.readouterr().err


def test_scan_verb_is_registered(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["scan", "--help"])
    assert "--tier" in capsys.readouterr().out
