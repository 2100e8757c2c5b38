"""Names and ownership on the index side: whole-string names, a model record fixed at first release, admin changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airlock.cli import EXIT_ERROR, EXIT_OK, main
from airlock.registry import (
    FilesystemStore,
    ModelName,
    OwnershipEvent,
    Registry,
    RegistryError,
    RegistryIndexError,
    SourceMatch,
    parse_reference,
    source_repository,
)
from airlock.registry.base import Layout, check_version
from tests.registry_contract import MODEL, SIGNER, TRUST, request


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture()
def registry(root: Path) -> Registry:
    return Registry(FilesystemStore(root), signer=SIGNER, trust=TRUST)


# --------------------------------------------------------------------------- names match the whole string


@pytest.mark.parametrize("name", ["demo/tiny-gpt2\n", "demo\n/tiny-gpt2", "demo/tiny-gpt2\r", "demo/tiny gpt2",
                                  "demo/tiny-gpt2/", "demo//x", "../etc/x"])
def test_a_name_is_matched_as_a_whole(name: str) -> None:
    with pytest.raises(RegistryError, match="must be ORG/NAME"):
        ModelName.parse(name)


@pytest.mark.parametrize("version", ["1\n", "1\r\n", "rev-abc\n"])
def test_a_version_is_matched_as_a_whole(version: str) -> None:
    with pytest.raises(RegistryError, match="must start with a letter or digit"):
        check_version(version)
    with pytest.raises(RegistryError):
        parse_reference(f"demo/tiny-gpt2@{version}", version_required=True)


def test_a_trailing_newline_cannot_create_a_second_model(registry: Registry, tmp_path: Path) -> None:
    registry.promote(request(tmp_path, model="demo/tiny-gpt2"))
    with pytest.raises(RegistryError, match="must be ORG/NAME"):
        registry.promote(request(tmp_path, model="demo/tiny-gpt2\n", version="2", flavour="b"))
    assert [str(m) for m in registry.models()] == ["demo/tiny-gpt2"]


def test_report_names_are_matched_as_a_whole(registry: Registry, tmp_path: Path) -> None:
    bad = tmp_path / "scan.json\n"
    bad.write_text("{}")
    with pytest.raises(RegistryError, match="report files must be named"):
        registry.promote(request(tmp_path, reports=(bad,)))


@pytest.mark.parametrize("uri, repository", [
    ("hf://demo/tiny-gpt2@0123456789abcdef0123456789abcdef01234567", "hf://demo/tiny-gpt2"),
    ("hf://demo/tiny-gpt2", "hf://demo/tiny-gpt2"),
    ("s3://vendor-drops/acme/model-z?version=sha256:" + "a" * 64, "s3://vendor-drops/acme/model-z/"),
    ("file:///srv/drops/model-z", "file:///srv/drops/model-z"),
])
def test_the_source_repository_is_the_uri_without_revision(uri: str, repository: str) -> None:
    assert source_repository(uri) == repository


# --------------------------------------------------------------------------- the model record


def test_the_first_release_fixes_owner_tier_and_source(registry: Registry, tmp_path: Path) -> None:
    registry.promote(request(tmp_path, version="1", flavour="a", source="hf://demo/tiny@" + "a" * 40))
    # A later version from another repository (the gate required the owner's approval) at a stricter tier.
    later = request(tmp_path, version="2", flavour="b", source="hf://attacker/evil")
    registry.promote(type(later)(**{**later.__dict__, "risk_tier": "high", "approver": "reviewer:bob"}))
    state = registry.model_state(MODEL, verified=True)
    assert (state.owner, state.risk_tier, state.source) == ("ml-platform", "medium", "hf://demo/tiny")
    assert [(v.version, v.source, v.risk_tier) for v in state.versions] == [
        ("1", "hf://demo/tiny", "medium"), ("2", "hf://attacker/evil", "high")]
    event = state.history[0]
    assert (event.source, event.source_revision) == ("hf://demo/tiny", None)


def test_a_later_promotion_cannot_lower_the_tier_or_change_the_owner(registry: Registry, tmp_path: Path) -> None:
    registry.promote(request(tmp_path, version="1", flavour="a"))
    low = request(tmp_path, version="2", flavour="b")
    with pytest.raises(RegistryIndexError, match="risk tier low is below the model's minimum tier medium"):
        registry.promote(type(low)(**{**low.__dict__, "risk_tier": "low", "approver": "policy:low"}))
    with pytest.raises(RegistryIndexError, match="owner 'attacker' is not the model's owner 'ml-platform'"):
        registry.promote(type(low)(**{**low.__dict__, "owner": "attacker"}))
    state = registry.model_state(MODEL)
    assert [v.version for v in state.versions] == ["1"] and state.owner == "ml-platform"


def test_promotion_claim_for_the_gate(registry: Registry, tmp_path: Path) -> None:
    claim = registry.promotion_claim(MODEL, "hf://demo/tiny@" + "b" * 40, "ml-platform", "low")
    assert claim.match is SourceMatch.NEW_MODEL and claim.refusal is None and not claim.needs_owner_approval
    registry.promote(request(tmp_path))
    same = registry.promotion_claim(MODEL, "hf://demo/tiny@" + "b" * 40, "ml-platform", "high")
    assert (same.match, same.owner, same.min_risk_tier, same.refusal) == (SourceMatch.SAME_SOURCE, "ml-platform",
                                                                          "medium", None)
    other = registry.promotion_claim(MODEL, "hf://attacker/evil", "ml-platform", "medium")
    assert other.match is SourceMatch.OTHER_SOURCE and other.needs_owner_approval and other.refusal is None
    assert "below" not in (other.refusal or "")
    assert "owned by 'ml-platform'" in registry.promotion_claim(MODEL, "hf://demo/tiny", "attacker", "medium").refusal
    assert "minimum risk tier medium" in registry.promotion_claim(MODEL, "hf://demo/tiny", "ml-platform",
                                                                  "low").refusal
    assert json.loads(json.dumps(other.to_json_dict()))["match"] == "other-source"


def test_the_claim_reads_a_verified_record(registry: Registry, root: Path, tmp_path: Path) -> None:
    from airlock.registry import IndexIntegrityError

    registry.promote(request(tmp_path))
    (root / Layout.checkpoint_key(ModelName.parse(MODEL), 0)).unlink()
    with pytest.raises(IndexIntegrityError, match="unsigned head"):
        registry.promotion_claim(MODEL, "hf://demo/tiny", "ml-platform", "medium")


def test_an_admin_changes_the_record_with_a_signed_event(registry: Registry, tmp_path: Path) -> None:
    registry.promote(request(tmp_path, version="1", flavour="a"))
    event = registry.change_ownership(MODEL, reason="team reorg", actor="admin", owner="nlp-team", risk_tier="low")
    assert isinstance(event, OwnershipEvent) and event.seq == 1
    state = registry.model_state(MODEL, verified=True)  # checkpointed like any status change
    assert (state.owner, state.risk_tier, state.source) == ("nlp-team", "low", "hf://demo/tiny")
    low = request(tmp_path, version="2", flavour="b")
    registry.promote(type(low)(**{**low.__dict__, "owner": "nlp-team", "risk_tier": "low",
                                  "approver": "policy:low"}))
    assert registry.model_state(MODEL).version("2").owner == "nlp-team"
    with pytest.raises(RegistryError, match="has no released version"):
        registry.change_ownership("demo/unknown", reason="x", actor="admin", owner="y")
    with pytest.raises(RegistryError, match="needs a reason"):
        registry.change_ownership(MODEL, reason=" ", actor="admin", owner="y")


def test_cli_show_reports_the_record_and_ownership_is_an_admin_verb(
        registry: Registry, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import airlock.commands.registry as registry_command

    registry.promote(request(tmp_path, version="1", flavour="a"))
    later = request(tmp_path, version="2", flavour="b", source="hf://other/repo")
    registry.promote(type(later)(**{**later.__dict__, "risk_tier": "critical", "approver": "reviewer:eve"}))
    monkeypatch.setattr(registry_command, "_signer", lambda: SIGNER)
    TRUST.write(tmp_path / "trust.pem")
    monkeypatch.setenv("AIRLOCK_TRUST_STORE", str(tmp_path / "trust.pem"))
    monkeypatch.setenv("AIRLOCK_ACTOR", "admin")

    assert main(["registry", "show", MODEL, "--registry", str(root)]) == EXIT_OK
    header = capsys.readouterr().out.splitlines()[0]
    # From the record (first release), not from the latest promotion (critical, other source).
    assert "owner ml-platform  min tier medium  source hf://demo/tiny" in header

    assert main(["registry", "ownership", MODEL, "--owner", "nlp-team", "--min-tier", "high", "--reason", "reorg",
                 "--registry", str(root)]) == EXIT_OK
    assert "ownership by admin (owner nlp-team, min tier high): reorg" in capsys.readouterr().out
    assert main(["registry", "show", MODEL, "--registry", str(root), "--format", "json"]) == EXIT_OK
    shown = json.loads(capsys.readouterr().out)
    assert (shown["owner"], shown["risk_tier"], shown["source"]) == ("nlp-team", "high", "hf://demo/tiny")
    assert main(["registry", "ownership", MODEL, "--reason", "nothing", "--registry", str(root)]) == EXIT_ERROR
    assert "at least one of" in capsys.readouterr().err
