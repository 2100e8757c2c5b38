"""The nightly fingerprint check's library half over a filesystem registry of really signed versions.

Planning, configuration, the runtime-class refusal, the verified copy, endpoint checks against a local
fake server, incident confirmation and pruning. No model is run here (synthetic fingerprints and random
files); tests/dags/test_fingerprint_nightly.py runs the whole DAG on a tiny language model.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from airlock.errors import ConfigurationError
from airlock.fingerprint.endpoint import SampleSet
from airlock.fingerprint.nightly import (
    CheckOutcome,
    NightlySettings,
    PlannedCheck,
    check_endpoint,
    check_version,
    incident_confs,
    incident_run_id,
    load_endpoints,
    parse_endpoints,
    plan_checks,
    prune,
    slug,
    target_of,
)
from airlock.fingerprint.prompts import load_prompt_set
from airlock.registry import open_registry

from tests.fingerprint_nightly_fixtures import (
    CUDA,
    FakeCompletions,
    OLD_CPU,
    nightly_env,
    promote_version,
)
from tests.fingerprint_nightly_fixtures import synthetic_fingerprint as _fingerprint
from tests.fingerprint_nightly_fixtures import synthetic_reports as _reports
from tests.registry_contract import SIGNER, TRUST
from tests.signing_fixtures import make_model


@pytest.fixture()
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "registry"
    nightly_env(monkeypatch, tmp_path, root, TRUST)
    return open_registry(root, signer=SIGNER, trust=TRUST)


def _promote(registry, tmp_path: Path, model: str, version: str, reports: dict[str, bytes] | None = None):
    model_dir = make_model(tmp_path / "models" / f"{model.replace('/', '_')}-{version}", with_safetensors=False)
    return promote_version(registry, tmp_path, SIGNER, model=model, version=version, model_dir=model_dir,
                           reports=reports)


def _reader():
    """The registry as the DAG's tasks open it: no signer, the host's trust store."""
    return open_registry()


# --------------------------------------------------------------------------- planning


def test_plan_covers_released_versions_with_baselines_per_runtime_class(registry, tmp_path: Path) -> None:
    _promote(registry, tmp_path, "acme/tiny", "1", _reports(_fingerprint()))
    _promote(registry, tmp_path, "acme/tiny", "2")  # no baseline
    _promote(registry, tmp_path, "acme/tiny", "3", _reports(_fingerprint()))
    registry.revoke("acme/tiny", "3", reason="test", actor="test")
    _promote(registry, tmp_path, "acme/tiny", "4", {**_reports(_fingerprint(CUDA)),
                                                     **_reports(_fingerprint(), ".cpu")})
    _promote(registry, tmp_path, "other/lm", "1", _reports(_fingerprint()))

    plan = plan_checks(_reader(), endpoints=parse_endpoints(
        '[{"name": "edge", "url": "http://127.0.0.1:1", "model": "acme/tiny", "version": "1"}]', "test"))

    assert [(c.model, c.version, c.baseline) for c in plan.cpu] == [
        ("acme/tiny", "1", "reports/fingerprint-baseline.json"),
        ("acme/tiny", "4", "reports/fingerprint-baseline.cpu.json"),
        ("other/lm", "1", "reports/fingerprint-baseline.json"),
    ]
    assert [(c.version, c.runtime_class, c.device_type) for c in plan.gpu] == [("4", CUDA.id, "cuda")]
    assert plan.revoked == ["acme/tiny@3"]
    assert plan.uncovered == ["acme/tiny@2: no fingerprint baseline"]
    assert plan.endpoints == ["edge"] and plan.problems == []
    assert json.loads(json.dumps(plan.to_json_dict()))["cpu"][0]["model"] == "acme/tiny"


def test_scope_new_plans_only_targets_never_checked_and_no_endpoints(registry, tmp_path: Path) -> None:
    _promote(registry, tmp_path, "acme/tiny", "1", _reports(_fingerprint()))
    _promote(registry, tmp_path, "acme/tiny", "2", _reports(_fingerprint()))
    registry.record_check("acme/tiny", "1", check="fingerprint", verdict="pass", target=target_of(OLD_CPU.id),
                          summary="ok", actor="test")
    registry.record_check("acme/tiny", "2", check="fingerprint", verdict="pass", target="runtime:another-class",
                          summary="ok", actor="test")
    endpoints = parse_endpoints('[{"name": "e", "url": "http://h", "model": "acme/tiny", "version": "1"}]', "t")

    new = plan_checks(_reader(), scope="new", endpoints=endpoints)
    assert [c.version for c in new.cpu] == ["2"] and new.endpoints == []
    every = plan_checks(_reader(), scope="all", endpoints=endpoints)
    assert [c.version for c in every.cpu] == ["1", "2"] and every.endpoints == ["e"]


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(("text", "message"), [
    ("{", "not JSON"),
    ('{"endpoints": {}}', "expected a list"),
    ('[{"name": "a", "url": "http://h", "model": "nope", "version": "1"}]', "ORG/NAME"),
    ('[{"name": "a b", "url": "http://h", "model": "o/n", "version": "1"}]', "name"),
    ('[{"name": "a", "url": "http://h", "model": "o/n", "version": "1", "extra": 1}]', "extra"),
    (('[{"name": "a", "url": "http://h", "model": "o/n", "version": "1"},'
      ' {"name": "a", "url": "http://g", "model": "o/n", "version": "2"}]'), "not unique"),
])
def test_endpoint_configuration_is_validated(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_endpoints(text, "conf")


def test_the_endpoints_file_wins_over_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    path.write_text('{"endpoints": [{"name": "file", "url": "http://h", "model": "o/n", "version": "1"}]}')
    variable = '[{"name": "variable", "url": "http://h", "model": "o/n", "version": "1"}]'
    assert [e.name for e in load_endpoints(variable, env={"AIRLOCK_FINGERPRINT_ENDPOINTS": str(path)})] == ["file"]
    assert [e.name for e in load_endpoints(variable, env={})] == ["variable"]
    assert load_endpoints(None, env={}) == []


def test_checks_are_never_kept_inside_the_registry(tmp_path: Path) -> None:
    env = {"AIRLOCK_REGISTRY": str(tmp_path / "registry"), "AIRLOCK_CHECKS_DIR": str(tmp_path / "registry" / "c")}
    with pytest.raises(ConfigurationError, match="inside the registry"):
        NightlySettings.from_env(env)
    with pytest.raises(ConfigurationError, match="KEEP_RUNS"):
        NightlySettings.from_env({"AIRLOCK_FINGERPRINT_KEEP_RUNS": "0"})


# --------------------------------------------------------------------------- checking a version


def _check(planned: PlannedCheck, run_id: str = "scheduled__2026-05-02T02:00:00+00:00") -> CheckOutcome:
    return check_version(_reader(), planned, run_id=run_id, settings=NightlySettings.from_env())


def _item(version: str = "1", baseline: str = "reports/fingerprint-baseline.json") -> PlannedCheck:
    return PlannedCheck(model="acme/tiny", version=version, baseline=baseline, runtime_class=OLD_CPU.id,
                        device_type="cpu")


def test_a_baseline_of_another_runtime_class_is_an_error_never_a_comparison(registry, tmp_path: Path) -> None:
    _promote(registry, tmp_path, "acme/tiny", "1", _reports(_fingerprint()))
    outcome = _check(_item())
    assert (outcome.verdict, outcome.skipped) == ("error", True)
    assert "runtime class" in outcome.reason and OLD_CPU.id in outcome.reason
    # The copy was verified before the refusal: the report names what was checked.
    report = json.loads(outcome.report.read_text())
    assert report["verdict"] == "error" and report["details"]["root_digest"] == outcome.details["root_digest"]
    assert report["details"]["baseline_sha256"] == hashlib.sha256(_reports(_fingerprint())[
        "fingerprint-baseline.json"]).hexdigest()
    recorded = _reader().model_state("acme/tiny").checks("1", "fingerprint")
    assert [(c.verdict, c.target, c.report_key, c.report_sha256) for c in recorded] == [
        ("error", target_of(OLD_CPU.id), outcome.report_key, outcome.report_sha256)]
    assert outcome.report == NightlySettings.from_env().checks_root / outcome.report_key
    assert not list(Path(outcome.report).parent.glob("candidate.json"))


def test_tampered_bytes_are_refused_before_anything_is_loaded(registry, tmp_path: Path) -> None:
    _promote(registry, tmp_path, "acme/tiny", "1", _reports(_fingerprint()))
    stored = tmp_path / "registry" / "models" / "acme" / "tiny" / "1" / "files" / "config.json"
    stored.chmod(0o644)
    stored.write_text('{"model_type": "tiny", "hidden_size": 5}')
    outcome = _check(_item())
    assert (outcome.verdict, outcome.skipped) == ("error", False)
    assert outcome.reason.startswith("no verified copy:") and "config.json" in outcome.reason
    assert _reader().model_state("acme/tiny").checks("1", "fingerprint")[-1].verdict == "error"


def test_an_edited_plan_item_cannot_point_at_another_report(registry, tmp_path: Path) -> None:
    _promote(registry, tmp_path, "acme/tiny", "1", _reports(_fingerprint()))
    with pytest.raises(ConfigurationError, match="not a fingerprint baseline"):
        _check(_item(baseline="reports/scan.json"))


def test_a_version_revoked_since_planning_is_skipped_unrecorded(registry, tmp_path: Path) -> None:
    _promote(registry, tmp_path, "acme/tiny", "1", _reports(_fingerprint()))
    registry.revoke("acme/tiny", "1", reason="compromised", actor="test")
    outcome = _check(_item())
    assert outcome.skipped and "revoked" in outcome.reason
    assert _reader().model_state("acme/tiny").checks("1", "fingerprint") == []


# --------------------------------------------------------------------------- endpoints


def _sampling_server(alphabet: str) -> FakeCompletions:
    """Samples 'words' from a fixed distribution per request, seeded by the request's seed."""
    def sample(body: dict) -> str:
        rng = random.Random(body["seed"])
        return "".join(rng.choice(alphabet) for _ in range(24))

    return FakeCompletions(sample)


def _baseline_samples(alphabet: str, prompts: int = 4, per_prompt: int = 6) -> bytes:
    prompt_set = load_prompt_set()
    rng = random.Random(1)
    samples = {p.id: ["".join(rng.choice(alphabet) for _ in range(24)) for _ in range(per_prompt)]
               for p in prompt_set.prompts[:prompts]}
    return SampleSet(source="quarantine", claims="acme/tiny@1", prompt_set_sha256=prompt_set.sha256, max_tokens=32,
                     seed_base=0, samples=samples).model_dump_json(by_alias=True).encode()


@pytest.mark.parametrize(("served", "verdict"), [("ab", "pass"), ("xyz", "fail")])
def test_endpoint_is_tested_against_the_versions_baseline_samples(registry, tmp_path: Path, served: str,
                                                                   verdict: str) -> None:
    _promote(registry, tmp_path, "acme/tiny", "1", {"fingerprint-samples.json": _baseline_samples("ab")})
    server = _sampling_server(served)
    try:
        endpoints = parse_endpoints(json.dumps([{"name": "edge", "url": server.url, "model": "acme/tiny",
                                                 "version": "1", "served_model": "tiny"}]), "test")
        outcome = check_endpoint(_reader(), "edge", endpoints, run_id="r1", settings=NightlySettings.from_env(),
                                 permutations=200)
    finally:
        server.close()
    assert outcome.verdict == verdict, outcome.reason
    assert outcome.target.startswith("endpoint:edge http://127.0.0.1:")
    assert (outcome.details["p_value"] < 0.05) == (verdict == "fail")
    recorded = _reader().model_state("acme/tiny").checks("1", "fingerprint")
    assert [(c.verdict, c.target) for c in recorded] == [(verdict, outcome.target)]
    assert {"samples", "comparison"} <= set(json.loads(outcome.report.read_text())["files"])


def test_endpoint_without_baseline_samples_is_an_error_not_a_pass(registry, tmp_path: Path) -> None:
    _promote(registry, tmp_path, "acme/tiny", "1", _reports(_fingerprint()))
    endpoints = parse_endpoints('[{"name": "edge", "url": "http://127.0.0.1:9", "model": "acme/tiny", '
                                '"version": "1"}]', "test")
    outcome = check_endpoint(_reader(), "edge", endpoints, run_id="r1", settings=NightlySettings.from_env())
    assert outcome.verdict == "error" and "no baseline samples" in outcome.reason
    assert _reader().model_state("acme/tiny").checks("1", "fingerprint")[-1].verdict == "error"


def test_endpoint_credentials_never_reach_the_record(registry, tmp_path: Path) -> None:
    _promote(registry, tmp_path, "acme/tiny", "1")
    endpoints = parse_endpoints('[{"name": "edge", "url": "http://user:s3cret@127.0.0.1:9/?token=t0k", '
                                '"model": "acme/tiny", "version": "1"}]', "test")
    outcome = check_endpoint(_reader(), "edge", endpoints, run_id="r1", settings=NightlySettings.from_env())
    text = outcome.report.read_text() + json.dumps(outcome.to_json_dict())
    text += _reader().model_state("acme/tiny").checks("1")[-1].model_dump_json()
    assert "s3cret" not in text and "t0k" not in text


# --------------------------------------------------------------------------- incidents, retention


def _recorded(registry, settings: NightlySettings, version: str, verdict: str, run_id: str = "r1",
              corrupt_report: bool = False) -> CheckOutcome:
    from airlock.fingerprint.nightly import _finish, _record

    run_dir = settings.version_dir("acme/tiny", version) / slug(run_id) / "t"
    run_dir.mkdir(parents=True)
    outcome = CheckOutcome("acme/tiny", version, "runtime:x", verdict, f"{verdict}: worst p3 |Δ logprob| 0.2",
                           details={"max_distance": 0.2, "threshold": 1e-5, "over_threshold": ["p3"]})
    _finish(outcome, run_dir, run_id=run_id, started=0.0, settings=settings, files={})
    _record(registry, outcome, actor="test", run_id=run_id)
    if corrupt_report:
        outcome.report.write_text("{}")
    return outcome


def test_incidents_come_from_this_runs_recorded_deviations(registry, tmp_path: Path) -> None:
    for version in ("1", "2", "3"):
        _promote(registry, tmp_path, "acme/tiny", version)
    settings = NightlySettings.from_env()
    deviation = _recorded(registry, settings, "1", "fail")
    _recorded(registry, settings, "2", "pass")
    _recorded(registry, settings, "2", "fail", run_id="r0")  # an earlier run's deviation: not this run's incident
    _recorded(registry, settings, "3", "fail", corrupt_report=True)

    confs = incident_confs(_reader(), settings, "r1")

    assert [(c["model"], c["version"], c["source"]) for c in confs] == [("acme/tiny", "1", "fingerprint_nightly"),
                                                                         ("acme/tiny", "3", "fingerprint_nightly")]
    assert confs[0]["reason"] == "fingerprint deviation: runtime:x: fail: worst p3 |Δ logprob| 0.2"
    checks = confs[0]["evidence"]["checks"]
    assert confs[0]["evidence"]["run_id"] == "r1" and len(checks) == 1
    assert (checks[0]["report_key"], checks[0]["report_sha256"]) == (deviation.report_key, deviation.report_sha256)
    assert (checks[0]["max_distance"], checks[0]["over_threshold"]) == (0.2, ["p3"])
    assert confs[1]["evidence"]["checks"][0]["report_confirmed"] is False
    run_id = incident_run_id(confs[0], "r1")
    assert run_id == incident_run_id(confs[0], "r1") != incident_run_id(confs[0], "r2")
    assert set(run_id) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.@-")


def test_incident_conf_fits_model_incident_parameters(registry, tmp_path: Path) -> None:
    from airlock.incident.respond import IncidentRequest

    _promote(registry, tmp_path, "acme/tiny", "1")
    settings = NightlySettings.from_env()
    outcome = _recorded(registry, settings, "1", "fail")
    registry.record_check("acme/tiny", "1", check="fingerprint", verdict="fail", target="runtime:y",
                          summary="x" * 1900, actor="test", report_key=outcome.report_key,
                          report_sha256=outcome.report_sha256, run_id="r1")
    (conf,) = incident_confs(_reader(), settings, "r1")
    request = IncidentRequest.from_params(conf)
    assert (str(request.model), request.version, request.source) == ("acme/tiny", "1", "fingerprint_nightly")
    assert len(conf["evidence"]["checks"]) == 2


def test_prune_keeps_recent_runs_and_every_non_passing_one(tmp_path: Path) -> None:
    import os

    version_dir = tmp_path / "v"
    for index, verdict in enumerate(["pass", "fail", "pass", "error", "pass", "pass"]):
        run = version_dir / f"run{index}" / "target"
        run.mkdir(parents=True)
        (run / "check.json").write_text(json.dumps({"verdict": verdict}))
        os.utime(run.parent, (1000 + index, 1000 + index))
    removed = prune(version_dir, keep=2)
    assert sorted(p.name for p in removed) == ["run0", "run2"]
    assert sorted(p.name for p in version_dir.iterdir()) == ["run1", "run3", "run4", "run5"]
