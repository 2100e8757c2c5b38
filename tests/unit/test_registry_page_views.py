"""The Registry page's view models, built from a real (filesystem) registry with a local signing key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airlock.registry import FilesystemStore, Layout, ModelName, Registry
from airlock.signing import LocalKeySigner
from airlock.ui import views
from tests.registry_page_fixtures import promote_version
from tests.signing_fixtures import trust_store_for

MODEL = "demo/tiny-gpt2"
SIGNER = LocalKeySigner.generate(key_name="airlock-model-signing", version=2)
TRUST = trust_store_for(SIGNER)


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    registry = Registry(FilesystemStore(tmp_path / "registry"), signer=SIGNER, trust=TRUST)
    promote_version(registry, tmp_path, SIGNER, model=MODEL, version="1", owner="team-a", risk_tier="high",
                    run_id="scheduled__2026-05-01T00:00:00+00:00", approver="reviewer")
    promote_version(registry, tmp_path, SIGNER, model=MODEL, version="2", owner="team-a", risk_tier="high")
    return registry


def test_versions_show_record_status_key_and_links(registry: Registry) -> None:
    page = views.build_registry_view(registry)
    assert page.problem is None
    [model] = page.models
    assert (model.name, model.owner, model.risk_tier, model.source, model.verified) == (
        MODEL, "team-a", "high", "hf://demo/tiny-gpt2", True)
    assert model.checkpoint_key == "airlock-model-signing:v2"
    assert [v.version for v in model.versions] == ["2", "1"]  # newest first
    one = model.version("1")
    assert one is not None
    assert (one.status, one.owner, one.risk_tier, one.approver, one.source_revision) == (
        "approved", "team-a", "high", "reviewer", "0" * 40)
    assert one.root_digest == registry.released(MODEL, "1").root_digest
    assert one.signing_key == "airlock-model-signing:v2" and one.signature_problem is None
    assert one.ingest_run_id == "scheduled__2026-05-01T00:00:00+00:00"
    assert one.artifact("aibom").key == "models/demo/tiny-gpt2/1/aibom.cdx.json"
    assert one.artifact("scan").key == "models/demo/tiny-gpt2/1/reports/scan.json"
    assert all(a.signed and a.sha256 for a in one.artifacts)
    assert one.integrity.last is None and one.fingerprint.last is None  # "no checks yet"
    assert one.revocable


def test_check_records_become_trends_oldest_first(registry: Registry) -> None:
    for verdict in ("pass", "pass", "fail"):
        registry.record_check(MODEL, "1", check="integrity", verdict=verdict, target="registry",
                              summary=f"integrity {verdict}", actor="airflow:model_integrity_watch/r")
    registry.record_check(MODEL, "1", check="fingerprint", verdict="pass", target="cpu/float32", summary="stable",
                          actor="airflow:model_fingerprint_nightly/n", report_key="reports/fp.json",
                          report_sha256="b" * 64)
    one = views.build_model_view(registry, MODEL).version("1")
    assert [p.verdict for p in one.integrity.points] == ["pass", "pass", "fail"]
    assert one.integrity.last.verdict == "fail" and one.integrity.last_pass.summary == "integrity pass"
    assert one.integrity.total == 3
    assert one.fingerprint.last.target == "cpu/float32"
    [report] = one.artifacts_of("check-report")
    assert (report.key, report.sha256, report.signed) == ("reports/fp.json", "b" * 64, False)
    two = views.build_model_view(registry, MODEL).version("2")
    assert two.integrity.points == ()  # another version's records are not this one's


def test_trend_keeps_the_newest_points(registry: Registry) -> None:
    for i in range(views.TREND_POINTS + 5):
        registry.record_check(MODEL, "1", check="integrity", verdict="pass", target="registry", summary=f"run {i}",
                              actor="watch")
    trend = views.build_model_view(registry, MODEL).version("1").integrity
    assert len(trend.points) == views.TREND_POINTS and trend.total == views.TREND_POINTS + 5
    assert trend.last.summary == f"run {views.TREND_POINTS + 4}"


def test_revocation_through_views_is_signed_and_shown(registry: Registry) -> None:
    event = views.revoke(registry, MODEL, "1", reason="  backdoor\nin tokenizer ", actor="airflow-ui:admin")
    assert (event.kind, event.reason, event.actor) == ("revoked", "backdoor in tokenizer", "airflow-ui:admin")
    one = views.build_model_view(registry, MODEL).version("1")
    assert (one.status, one.status_reason, one.status_by) == ("revoked", "backdoor in tokenizer", "airflow-ui:admin")
    assert not one.revocable
    assert one.history[0].kind == "revoked"
    # Checked with the trust store, as pulls check it: the revocation is covered by a signed checkpoint.
    assert Registry(registry.store, trust=TRUST).verify_index(MODEL).state.version("1").status.value == "revoked"


@pytest.mark.parametrize("reason", ["", "   ", "x" * (views.REASON_MAX + 1), "bell\x07"])
def test_bad_reasons_are_refused(reason: str) -> None:
    with pytest.raises(ValueError):
        views.clean_reason(reason)


def test_an_edited_index_makes_every_version_unverified(registry: Registry) -> None:
    event_path = Path(registry.store.root) / Layout.event_key(ModelName.parse(MODEL), 0)
    data = json.loads(event_path.read_text())
    data["owner"] = "mallory"
    event_path.write_text(json.dumps(data))
    model = views.build_model_view(registry, MODEL)
    assert not model.verified and "did not verify" in model.problem
    assert model.owner is None  # nothing the failed chain claims is shown as the record
    assert {v.status for v in model.versions} == {"unverified"}
    assert all(not v.revocable for v in model.versions)


def test_without_a_trust_store_nothing_is_verified(tmp_path: Path, registry: Registry,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRLOCK_TRUST_STORE", raising=False)
    monkeypatch.delenv("AIRLOCK_TRUST_STORE_SHA256", raising=False)
    monkeypatch.setattr("airlock.config.DEFAULT_TRUST_STORE", tmp_path / "absent.pem")
    page = views.build_registry_view(Registry(registry.store))
    assert page.problem and "trust store" in page.problem
    [model] = page.models
    assert {v.status for v in model.versions} == {"unverified"}
    assert all(v.signing_key is None for v in model.versions)


def test_a_signature_from_an_untrusted_key_names_no_key(tmp_path: Path) -> None:
    other = LocalKeySigner.generate(key_name="someone-else", version=1)
    registry = Registry(FilesystemStore(tmp_path / "registry"), signer=SIGNER, trust=TRUST)
    promote_version(registry, tmp_path, other, model=MODEL, version="1")  # model.sig by a key TRUST lacks
    one = views.build_model_view(registry, MODEL).version("1")
    assert one.signing_key is None and one.signature_problem


def test_released_but_unindexed_is_not_approved(registry: Registry) -> None:
    # A version directory whose promotion crashed before its index event: RELEASED copied from version 2.
    name = ModelName.parse(MODEL)
    for key in (Layout.PLAN, Layout.RELEASED):
        data = registry.store.read(Layout.key(name, "2", key))
        text = data.decode().replace('"version": "2"', '"version": "3"')
        path = Path(registry.store.root) / Layout.key(name, "3", key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    model = views.build_model_view(registry, MODEL)
    three = model.version("3")
    assert three is not None and three.status == "unindexed"


def test_incident_reports_are_listed_when_present(registry: Registry) -> None:
    name = ModelName.parse(MODEL)
    assert views.build_model_view(registry, MODEL).version("1").artifacts_of("incident") == ()
    root = Path(registry.store.root)
    for key in (f"{views.incident_prefix(name, '1')}2026-05-02T00-00-00Z.json",
                f"{views.incident_prefix(name, '1')}2026-05-02T00-00-00Z.md",
                Layout.key(name, "1", "reports/incident-2026-05-03.json")):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_text("{}")
    incidents = views.build_model_view(registry, MODEL).version("1").artifacts_of("incident")
    assert [a.name for a in incidents] == ["2026-05-02T00-00-00Z.json", "2026-05-02T00-00-00Z.md",
                                           "incident-2026-05-03.json"]
    assert all(not a.signed and a.sha256 is None for a in incidents)
    assert views.build_model_view(registry, MODEL).version("2").artifacts_of("incident") == ()


def test_downloads_are_the_recorded_bytes_or_nothing(registry: Registry) -> None:
    one = views.build_model_view(registry, MODEL).version("1")
    bom = one.artifact("aibom")
    served = views.read_artifact(one, bom.key, registry)
    assert served.data == registry.store.read(bom.key)
    assert served.media_type == "application/json" and served.filename == "aibom.cdx.json"
    with pytest.raises(views.NotServed) as refused:
        views.read_artifact(one, "models/demo/tiny-gpt2/1/files/config.json", registry)  # not linked by the page
    assert refused.value.status == 404
    with pytest.raises(views.NotServed) as refused:
        views.read_artifact(one, "../../etc/passwd", registry)
    assert refused.value.status == 404
    (Path(registry.store.root) / bom.key).write_bytes(b'{"tampered": true}')
    with pytest.raises(views.NotServed) as refused:
        views.read_artifact(one, bom.key, registry)
    assert refused.value.status == 409


def test_check_report_keys_that_are_not_plain_keys_are_not_linked(registry: Registry) -> None:
    for key in ("../outside.json", "/etc/passwd", "reports//x.json", "reports/\nx.json"):
        registry.record_check(MODEL, "1", check="integrity", verdict="pass", target="registry", summary="ok",
                              actor="watch", report_key=key)
    assert views.build_model_view(registry, MODEL).version("1").artifacts_of("check-report") == ()


def test_query_filters_models(registry: Registry, tmp_path: Path) -> None:
    promote_version(registry, tmp_path, SIGNER, model="acme/other", version="1")
    assert [m.name for m in views.build_registry_view(registry, query="GPT2").models] == [MODEL]
    assert [m.name for m in views.build_registry_view(registry).models] == ["acme/other", MODEL]
