"""The demo models (scripts/demo_models.py) at each tier, as the demo shows them."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from airlock.scan import EXIT_ALLOWED, EXIT_BLOCKED, scan_model

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _demo_models():
    if "demo_models" in sys.modules:
        return sys.modules["demo_models"]
    spec = importlib.util.spec_from_file_location("demo_models", SCRIPTS / "demo_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo_models"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _demo_models().build_all(tmp_path_factory.mktemp("demo-models"))


@pytest.mark.parametrize("tier", ["low", "medium", "high", "critical"])
def test_evil_pickle_is_blocked_at_every_tier(demo: dict[str, Path], tier: str) -> None:
    report = scan_model(demo["demo/evil-pickle"], tier)
    assert report.exit_code == EXIT_BLOCKED
    details = [f.detail for _, f in report.findings("block") if f.rule == "pickle.global.disallowed"]
    assert details and "os.system" in details[0] and "pytorch_model.bin" in details[0]
    assert not os.path.exists(_demo_models().EVIL_MARKER)


def test_tiny_gpt2_bin_allowed_at_medium_refused_at_high(demo: dict[str, Path]) -> None:
    medium = scan_model(demo["demo/tiny-gpt2-bin"], "medium")
    assert medium.exit_code == EXIT_ALLOWED and not medium.requires_approval, medium.summary_lines()
    high = scan_model(demo["demo/tiny-gpt2-bin"], "high")
    assert high.exit_code == EXIT_BLOCKED
    assert {f.rule for _, f in high.findings("block")} == {"policy.pickle_weights"}


def test_tiny_gpt2_safetensors_allowed_at_high(demo: dict[str, Path]) -> None:
    for tier in ("high", "critical"):
        report = scan_model(demo["demo/tiny-gpt2"], tier)
        assert report.exit_code == EXIT_ALLOWED and not report.requires_approval, report.summary_lines()
        assert {f.path: f.detected_format for f in report.files}["model.safetensors"] == "safetensors"


def test_remote_code_flagged_at_medium_blocked_at_high(demo: dict[str, Path]) -> None:
    medium = scan_model(demo["demo/remote-code"], "medium")
    assert medium.verdict == "allow" and medium.requires_approval and medium.exit_code == EXIT_ALLOWED
    flagged = {(path, f.rule) for path, f in medium.findings("flag")}
    assert flagged == {
        ("config.json", "remote_code.auto_map"),
        ("configuration_tiny.py", "remote_code.file"),
        ("modeling_tiny.py", "remote_code.file"),
    }
    high = scan_model(demo["demo/remote-code"], "high")
    assert high.exit_code == EXIT_BLOCKED and not high.requires_approval
