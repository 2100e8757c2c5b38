"""scripts/demo.py's own helpers: the on-disk tamper touches only the copy it targets, the proxy step is optional."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("airlock_demo_script", REPO / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_tampering_replaces_the_file_and_leaves_other_links_alone(demo, tmp_path: Path) -> None:
    files = tmp_path / "models" / "demo-incident" / "m" / "rev-1" / "files"
    files.mkdir(parents=True)
    stored = files / "config.json"
    stored.write_text('{"n_layer": 2}\n')
    elsewhere = tmp_path / "other-version-config.json"
    os.link(stored, elsewhere)  # a second link to the same bytes (as a deduplicating store might keep)
    stored.chmod(0o444)
    files.chmod(0o555)
    try:
        assert "config.json" in demo.tamper_file(stored)
        assert json.loads(stored.read_text()) == {"n_layer": 2, "_airlock_demo_tampered": True}
        assert json.loads(elsewhere.read_text()) == {"n_layer": 2}
        assert stored.stat().st_mode & 0o777 == 0o444 and files.stat().st_mode & 0o777 == 0o555
    finally:
        files.chmod(0o755)


def test_the_summary_marks_what_did_not_end_as_expected(demo, capsys) -> None:
    demo.print_summary([demo.Outcome("hf://demo/evil-pickle (medium)", True, "blocked at scan_model",
                                     "[block] pickle.global.disallowed (critical): pytorch_model.bin"),
                        demo.Outcome("demo-incident/x@rev-1 (tampered on disk)", False, "NOT revoked", "watch failed")])
    out = capsys.readouterr().out
    assert "blocked at scan_model  [block] pickle.global.disallowed" in out
    assert out.strip().splitlines()[-1].endswith("<- UNEXPECTED")


def test_the_proxy_step_is_skipped_without_its_script(demo, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(demo, "__file__", str(tmp_path / "demo.py"))
    assert demo.proxy_step() is None
    assert "skipped (scripts/demo_proxy.py is not there)" in capsys.readouterr().out
