"""``airlock pull`` delivers nothing a signature does not bind to the version, and believes only a verified index."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from airlock.cli import EXIT_NEGATIVE, EXIT_OK, main
from airlock.registry import FilesystemStore, Registry
from airlock.registry.base import Layout, ModelName
from airlock.registry.promotion import PromotionPlan, ReleasedRecord
from airlock.signing import LocalKeySigner
from airlock.trust import TrustStore
from tests.pull_fixtures import MODEL, VERSION, promote_signed, tree_of
from tests.signing_fixtures import trust_store_for

REFERENCE = f"{MODEL}@{VERSION}"
NAME = ModelName.parse(MODEL)


@pytest.fixture(scope="module")
def signer() -> LocalKeySigner:
    return LocalKeySigner.generate(key_name="airlock-model-signing", version=1)


@pytest.fixture()
def trust(signer: LocalKeySigner) -> TrustStore:
    return trust_store_for(signer)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture()
def registry(root: Path, signer: LocalKeySigner, trust: TrustStore) -> Registry:
    return Registry(FilesystemStore(root), workers=2, signer=signer, trust=trust)


@pytest.fixture(autouse=True)
def _host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, trust: TrustStore) -> None:
    """A serving host configured the documented way: AIRLOCK_TRUST_STORE and its own state directory."""
    trust.write(tmp_path / "host-trust.pem")
    monkeypatch.setenv("AIRLOCK_TRUST_STORE", str(tmp_path / "host-trust.pem"))
    monkeypatch.setenv("AIRLOCK_HOST_STATE", str(tmp_path / "host-state"))
    monkeypatch.delenv("AIRLOCK_TRUST_STORE_SHA256", raising=False)
    monkeypatch.setenv("AIRLOCK_ACTOR", "ops@serving-1")


def _pull(root: Path, dest: Path) -> int:
    return main(["pull", REFERENCE, "--registry", str(root), "--dest", str(dest)])


def _reason(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def _writable(path: Path) -> Path:
    path.chmod(0o644)
    return path


# --------------------------------------------------------------------------- the AI-BOM is this version's


def test_a_foreign_validly_signed_bom_is_refused(registry: Registry, root: Path, signer: LocalKeySigner,
                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = promote_signed(registry, tmp_path / "other", signer, model="acme/other")
    foreign = (other.artifacts["aibom.cdx.json"]).read_bytes()  # another model's BOM, signed by the trusted key
    promote_signed(registry, tmp_path, signer, aibom_bytes=foreign)
    assert _pull(root, tmp_path / "llm") == EXIT_NEGATIVE
    assert _reason(capsys) == ("refused: AI-BOM does not bind the version: aibom.cdx.json: describes acme/other@1 "
                               "(component acme/other, type machine-learning-model), not acme/tiny@1: another "
                               "version's BOM is not delivered")
    assert not (tmp_path / "llm").exists()


def test_the_bom_of_another_version_of_the_same_model_is_refused(registry: Registry, root: Path,
                                                                 signer: LocalKeySigner, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    v2 = promote_signed(registry, tmp_path / "v2", signer, version="2")
    promote_signed(registry, tmp_path, signer, aibom_bytes=v2.artifacts["aibom.cdx.json"].read_bytes())
    assert _pull(root, tmp_path / "llm") == EXIT_NEGATIVE
    assert "describes acme/tiny@2" in _reason(capsys)


def test_a_forged_scan_report_is_refused(registry: Registry, root: Path, signer: LocalKeySigner, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # The BOM pinned the real report; the version carries another one.
    promote_signed(registry, tmp_path, signer, forged_scan_report=json.dumps({"verdict": "allow", "forged": 1}).encode())
    assert _pull(root, tmp_path / "llm") == EXIT_NEGATIVE
    reason = _reason(capsys)
    assert reason.startswith("refused: AI-BOM does not bind the version: reports/scan.json: sha256:")
    assert "but the signed AI-BOM pins sha256:" in reason


def test_a_report_the_bom_does_not_pin_is_refused(registry: Registry, root: Path, signer: LocalKeySigner,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    promote_signed(registry, tmp_path, signer, unbound_reports={"eval.json": b'{"acc": 0.99}'})
    assert _pull(root, tmp_path / "llm") == EXIT_NEGATIVE
    assert _reason(capsys) == ("refused: AI-BOM does not bind the version: reports/eval.json: not referenced by the "
                               "signed AI-BOM; an object the BOM does not pin is not delivered")


def test_a_bom_with_a_repeated_key_is_refused(registry: Registry, root: Path, signer: LocalKeySigner,
                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    genuine = promote_signed(registry, tmp_path / "g", signer, model="acme/genuine")
    text = genuine.artifacts["aibom.cdx.json"].read_text()
    # Two readings: a parser that keeps the first "metadata" and one that keeps the last.
    doubled = text.rstrip().rstrip("}") + ', "metadata": {"component": {"name": "x"}}}\n'
    promote_signed(registry, tmp_path, signer, aibom_bytes=doubled.encode())
    assert _pull(root, tmp_path / "llm") == EXIT_NEGATIVE
    assert "'metadata' appears twice" in _reason(capsys)


def test_a_bound_version_is_delivered(registry: Registry, root: Path, signer: LocalKeySigner, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    promoted = promote_signed(registry, tmp_path, signer)
    assert _pull(root, tmp_path / "llm") == EXIT_OK
    assert tree_of(tmp_path / "llm") == promoted.expected_tree()


# --------------------------------------------------------------------------- storage rewritten behind the index


def test_a_report_rewritten_in_storage_with_a_matching_plan_is_refused(
        registry: Registry, root: Path, signer: LocalKeySigner, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Someone with storage write access replaces the report and rewrites promotion.json and RELEASED to match.
    promote_signed(registry, tmp_path, signer)
    forged = json.dumps({"verdict": "allow", "note": "nothing to see"}).encode()
    _writable(root / Layout.key(NAME, VERSION, "reports/scan.json")).write_bytes(forged)
    plan_path = _writable(root / Layout.key(NAME, VERSION, Layout.PLAN))
    plan = PromotionPlan.model_validate_json(plan_path.read_bytes())
    objects = tuple(o.model_copy(update={"size": len(forged), "sha256": hashlib.sha256(forged).hexdigest()})
                    if o.key == "reports/scan.json" else o for o in plan.objects)
    plan_bytes = plan.model_copy(update={"objects": objects}).to_bytes()
    plan_path.write_bytes(plan_bytes)
    released_path = _writable(root / Layout.key(NAME, VERSION, Layout.RELEASED))
    record = ReleasedRecord.model_validate_json(released_path.read_bytes())
    released_path.write_bytes(record.model_copy(update={"plan_sha256": hashlib.sha256(plan_bytes).hexdigest()})
                              .to_bytes())
    assert _pull(root, tmp_path / "llm") == EXIT_NEGATIVE
    assert "the index recorded sha256:" in _reason(capsys)


def test_a_deleted_revocation_is_still_refused_by_pull(registry: Registry, root: Path, signer: LocalKeySigner,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    promote_signed(registry, tmp_path, signer)
    registry.revoke(MODEL, VERSION, reason="backdoor found", actor="security")
    event = root / Layout.event_key(NAME, 1)
    os.chmod(event.parent, 0o755)
    event.unlink()
    assert _pull(root, tmp_path / "llm") == EXIT_NEGATIVE
    assert "checkpoint #1" in _reason(capsys)
    assert not (tmp_path / "llm").exists()


def test_a_rolled_back_revocation_is_refused_by_a_host_that_saw_it(
        registry: Registry, root: Path, signer: LocalKeySigner, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    promote_signed(registry, tmp_path, signer)
    promote_signed(registry, tmp_path / "v2", signer, version="2")
    registry.revoke(MODEL, VERSION, reason="backdoor found", actor="security")
    assert main(["pull", f"{MODEL}@2", "--registry", str(root), "--dest", str(tmp_path / "v2-copy")]) == EXIT_OK
    # The revocation (event 2) and its checkpoint deleted; the pull record of v2 (event 3) goes too.
    for key in (Layout.event_key(NAME, 3), Layout.event_key(NAME, 2), Layout.checkpoint_key(NAME, 2)):
        os.chmod((root / key).parent, 0o755)
        (root / key).unlink()
    assert _pull(root, tmp_path / "llm") == EXIT_NEGATIVE
    assert "rolled back: this host verified checkpoint #2" in _reason(capsys)
    assert not (tmp_path / "llm").exists()
