"""The pipeline glue in airlock.ingest: registry naming, scan gate, re-ingestion (the gates: test_gates.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airlock.errors import AirlockError, SourceError
from airlock.ingest import (
    RegistryConflict,
    RegistryTarget,
    ScanBlocked,
    already_released,
    approval_required,
    registry_target,
    scan_quarantine,
)
from airlock.quarantine import QuarantineArea

SHA = "f5ad3ac481585f05b43e919141aeeb4c2ebf6f7e"


def test_hub_models_keep_their_repo_id_and_version_by_commit() -> None:
    assert registry_target("hf", "demo/tiny-gpt2", SHA, None) == RegistryTarget("demo/tiny-gpt2", "rev-f5ad3ac48158")


def test_drops_need_a_registry_name_and_use_their_listing_digest() -> None:
    digest = "sha256:" + "ab" * 32
    assert registry_target("s3", "bucket/vendor/x", digest, "acme/model-z").version == "rev-abababababab"
    # SourceError: resolve_source fails at once on bad input instead of retrying it.
    with pytest.raises(SourceError, match="needs a registry name"):
        registry_target("file", "x", digest, None)
    with pytest.raises(SourceError, match="not an immutable revision"):
        registry_target("hf", "demo/x", "main", None)


@pytest.mark.parametrize("name", ["acme", "acme/x/y", "../x", "acme/-x", "acme/x y"])
def test_registry_names_must_be_org_slash_name(name: str) -> None:
    with pytest.raises(AirlockError, match="ORG/NAME"):
        registry_target("hf", "demo/x", SHA, name)


def test_a_branch_name_is_never_a_version() -> None:
    with pytest.raises(AirlockError, match="not an immutable revision"):
        registry_target("hf", "demo/x", "main", None)


def test_approval_follows_the_tier_or_a_flagged_finding() -> None:
    assert approval_required("high", {"requires_approval": False})
    assert not approval_required("medium", {"requires_approval": False})
    assert approval_required("medium", {"requires_approval": True})


def _area(tmp_path: Path, files: dict[str, bytes]) -> QuarantineArea:
    area = QuarantineArea(root=tmp_path, path=tmp_path / "run" / "model")
    area.create()
    for name, data in files.items():
        (area.files_dir / name).write_bytes(data)
    return area


def test_a_blocked_scan_raises_logs_every_finding_and_keeps_the_report(tmp_path: Path) -> None:
    # GLOBAL os.system, then STOP: never executed, only scanned.
    area = _area(tmp_path, {"pytorch_model.bin": b"cos\nsystem\n(S'touch /tmp/x'\ntR."})
    logged: list[str] = []
    with pytest.raises(ScanBlocked, match="pytorch_model.bin"):
        scan_quarantine(area, "low", logged.append)
    assert any("[block]" in line for line in logged)
    assert json.loads((area.path / "reports" / "scan.json").read_text())["verdict"] == "block"


def test_an_allowed_scan_summarises_the_report(tmp_path: Path) -> None:
    area = _area(tmp_path, {"config.json": b'{"model_type": "gpt2"}'})
    summary = scan_quarantine(area, "high", lambda _line: None)
    assert summary["verdict"] == "allow" and summary["files"] == 1 and len(summary["report_sha256"]) == 64


class _Registry:
    def __init__(self, released=None):
        self._released = released

    def released(self, model: str, version: str):
        from airlock.registry.base import VersionNotFoundError

        if self._released is None:
            raise VersionNotFoundError(f"{model}@{version}")
        return self._released


class _Released:
    def __init__(self, root_digest: str):
        self.root_digest = root_digest

    def to_json_dict(self) -> dict:
        return {"root_digest": self.root_digest}


def test_reingesting_the_same_model_is_a_no_op_and_different_content_a_conflict() -> None:
    target = RegistryTarget("demo/x", "rev-000000000000")
    assert already_released(_Registry(), target, "a" * 64) is None
    assert already_released(_Registry(_Released("a" * 64)), target, "a" * 64)["created"] is False
    with pytest.raises(RegistryConflict, match="never rewritten"):
        already_released(_Registry(_Released("b" * 64)), target, "a" * 64)
