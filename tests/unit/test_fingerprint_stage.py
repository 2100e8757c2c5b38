"""The ingest-time fingerprint baseline (`baseline_quarantine`) on a tiny language model in a quarantine area.

Slow: a model build and a short calibration.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from airlock.fingerprint.check import read_document
from airlock.fingerprint.schema import Calibration, Fingerprint
from airlock.fingerprint.stage import (
    BASELINE_KEY,
    artifacts,
    baseline_quarantine,
    report_key,
    report_paths,
)
from airlock.ingest import ScanBlocked

from tests.fingerprint_nightly_fixtures import scanned_area

pytestmark = pytest.mark.slow
RUNS = ((16, 1), (4, 1))


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    import torch

    from tests.unit.fingerprint_lm import build_tiny_lm

    torch.set_num_threads(1)
    return build_tiny_lm(tmp_path_factory.mktemp("stage-lm") / "lm")


def test_baseline_reports_are_written_beside_the_model_for_promotion(tmp_path: Path, lm: Path) -> None:
    area = scanned_area(tmp_path / "quarantine", lm)
    lines: list[str] = []
    summary = baseline_quarantine(area, "medium", device="cpu", runs=RUNS, samples_per_prompt=2, sample_tokens=4,
                                  claims="acme/tiny-lm@1", log=lines.append)

    baseline = read_document(area.path / "reports/fingerprint-baseline.json", Fingerprint)
    calibration = read_document(area.path / "reports/fingerprint-calibration.json", Calibration)
    manifest = json.loads(area.manifest_file.read_text())
    assert baseline.model["root_digest"] == manifest["root_digest"] == summary["root_digest"]
    assert calibration.baseline_digest == baseline.digest() == summary["baseline_digest"]
    for kind in ("baseline", "calibration", "samples"):
        data = (area.path / report_key(kind)).read_bytes()
        assert summary[f"{kind}_sha256"] == hashlib.sha256(data).hexdigest()
    samples = json.loads((area.path / report_key("samples")).read_text())
    assert len(samples["samples"]) == len(baseline.prompts) and {len(v) for v in samples["samples"].values()} == {2}
    assert summary["runtime_class"] == baseline.runtime.runtime_class.id and summary["floor"] == calibration.floor
    assert lines and "fingerprint baseline" in lines[-1]

    # What the ingest wiring passes on: every report to promotion, each pinned in the AI-BOM by key and sha256.
    assert [p.name for p in report_paths(area)] == ["fingerprint-baseline.json", "fingerprint-calibration.json",
                                                    "fingerprint-samples.json"]
    refs = artifacts(area)
    assert [(r.kind, r.key) for r in refs] == [("fingerprint", f"reports/{p.name}") for p in report_paths(area)]
    assert refs[0].sha256 == summary["baseline_sha256"] and BASELINE_KEY.fullmatch(refs[0].key)
    stage = json.loads((area.path / "stages" / "fingerprint.json").read_text())
    assert stage["baseline_sha256"] == summary["baseline_sha256"]


def test_nothing_is_loaded_from_a_quarantine_the_scan_did_not_clear(tmp_path: Path, lm: Path) -> None:
    area = scanned_area(tmp_path / "quarantine", lm)
    with pytest.raises(ScanBlocked, match="tier"):
        baseline_quarantine(area, "critical", device="cpu", runs=RUNS)  # the report is for tier medium
    (area.path / "reports" / "scan.json").unlink()
    with pytest.raises(ScanBlocked, match="no scan report"):
        baseline_quarantine(area, "medium", device="cpu", runs=RUNS)
    assert not (area.path / report_key("baseline")).exists()


def test_a_directory_that_is_not_a_transformers_model_gets_no_baseline(tmp_path: Path) -> None:
    import numpy as np

    model = tmp_path / "weights"
    model.mkdir()
    np.save(model / "weights.npy", np.zeros(4, dtype=np.float32))
    area = scanned_area(tmp_path / "quarantine", model, tier="low")
    summary = baseline_quarantine(area, "low", device="cpu", runs=RUNS)
    assert "no config.json" in summary["skipped"] and report_paths(area) == [] and artifacts(area) == []
