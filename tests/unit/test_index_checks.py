"""Check records in the index: history for incident windows and trends, chained but never a status change."""

from __future__ import annotations

from pathlib import Path

import pytest

from airlock.registry import CheckedEvent, FilesystemStore, Registry, RegistryIndexError, Status
from tests.registry_contract import MODEL, SIGNER, TRUST, request


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    return Registry(FilesystemStore(tmp_path / "registry"), signer=SIGNER, trust=TRUST)


def test_checks_are_recorded_in_order_without_a_signer(registry: Registry, tmp_path: Path) -> None:
    registry.promote(request(tmp_path))
    reader = Registry(registry.store, trust=TRUST)  # a checking task needs no signing key for its records
    reader.record_check(MODEL, "1", check="integrity", verdict="pass", target="registry", summary="3 files intact",
                        actor="airflow:model_integrity_watch/r1")
    reader.record_check(MODEL, "1", check="fingerprint", verdict="fail", target="cpu/float32",
                        summary="prompt 7: max |dlogprob| 0.3 > 1e-05", actor="airflow:model_fingerprint_nightly/r2",
                        report_key="reports/fingerprint-check-r2.json", report_sha256="a" * 64, run_id="r2")
    state = reader.model_state(MODEL, verified=True)
    assert state is not None
    assert [(e.check, e.verdict) for e in state.checks("1")] == [("integrity", "pass"), ("fingerprint", "fail")]
    assert [e.verdict for e in state.checks("1", "fingerprint")] == ["fail"]
    assert state.version("1").status is Status.APPROVED  # a failed check acts only through an incident


def test_a_check_of_an_unknown_version_is_refused(registry: Registry, tmp_path: Path) -> None:
    registry.promote(request(tmp_path))
    with pytest.raises(RegistryIndexError, match="not in the index"):
        registry.record_check(MODEL, "9", check="integrity", verdict="pass", target="registry", summary="ok",
                              actor="t")


def test_check_records_are_bounded(registry: Registry, tmp_path: Path) -> None:
    registry.promote(request(tmp_path))
    with pytest.raises(ValueError):
        CheckedEvent(seq=1, model=MODEL, version="1", at="2026-01-01T00:00:00Z", actor="t", check="integrity",
                     verdict="maybe", target="registry", summary="x")
