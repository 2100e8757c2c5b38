"""`model_fingerprint_nightly` over configured endpoints with dag.test(): one mapped `check_endpoint` per endpoint.

The endpoints are configuration (AIRLOCK_FINGERPRINT_ENDPOINTS: name, URL, the registry version they claim to
serve). Two endpoints claim acme/served@1, whose signed baseline samples are one fixed text per prompt: `good`
answers that text, `swapped` answers another. Constant answers make the permutation test's verdict independent
of tonight's seeds (identical samples: MMD 0 and p = 1; disjoint ones: the smallest p), so the run is
deterministic. The real server is tests/integration/test_fingerprint_endpoint_serve.py's business.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fingerprint_nightly_fixtures import FakeCompletions, nightly_env, promote_version
from tests.registry_contract import SIGNER, TRUST
from tests.signing_fixtures import make_model

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MODEL = "acme/served"
GOOD_TEXT = " the keeper trimmed the wick and"
OTHER_TEXT = " zq vx kj wq zz xq jj"


def _baseline_samples(prompts: int = 4, per_prompt: int = 6) -> bytes:
    from airlock.fingerprint.endpoint import SampleSet
    from airlock.fingerprint.prompts import load_prompt_set

    prompt_set = load_prompt_set()
    samples = {p.id: [GOOD_TEXT] * per_prompt for p in prompt_set.prompts[:prompts]}
    return SampleSet(source="verified-copy", claims=f"{MODEL}@1", prompt_set_sha256=prompt_set.sha256, max_tokens=32,
                     seed_base=0, samples=samples).model_dump_json(by_alias=True).encode()


def test_one_mapped_check_per_configured_endpoint(airflow_db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airlock.registry import open_registry

    from tests.dags.test_fingerprint_nightly import _incident_runs, _task_states, _xcom

    root = tmp_path / "registry"
    nightly_env(monkeypatch, tmp_path, root, TRUST)
    registry = open_registry(root, signer=SIGNER, trust=TRUST)
    promote_version(registry, tmp_path, SIGNER, model=MODEL, version="1",
                    model_dir=make_model(tmp_path / "model", with_safetensors=False),
                    reports={"fingerprint-samples.json": _baseline_samples()})
    good, swapped = FakeCompletions(lambda _: GOOD_TEXT), FakeCompletions(lambda _: OTHER_TEXT)
    config = tmp_path / "endpoints.json"
    config.write_text(json.dumps({"endpoints": [
        {"name": "good", "url": good.url, "model": MODEL, "version": "1", "served_model": "served"},
        {"name": "swapped", "url": swapped.url, "model": MODEL, "version": "1", "served_model": "served"},
    ]}))
    monkeypatch.setenv("AIRLOCK_FINGERPRINT_ENDPOINTS", str(config))
    try:
        dag = DagBag(dag_folder=str(REPO / "dags" / "model_fingerprint_nightly.py")).dags["model_fingerprint_nightly"]
        dag_run = dag.test()
    finally:
        good.close()
        swapped.close()

    states = _task_states(dag_run)
    assert dag_run.state == "success", states
    assert [s for s in states if s[0] == "check_endpoint"] == [("check_endpoint", 0, "success"),
                                                                ("check_endpoint", 1, "success")]
    planned = _xcom(dag_run, "plan")
    assert planned["endpoints"] == ["good", "swapped"] and planned["cpu"] == []
    assert planned["uncovered"] == [f"{MODEL}@1: no fingerprint baseline"]
    results = {r["target"].split()[0]: r for r in (_xcom(dag_run, "check_endpoint", i) for i in (0, 1))}
    assert results["endpoint:good"]["verdict"] == "pass", results["endpoint:good"]
    assert results["endpoint:swapped"]["verdict"] == "fail", results["endpoint:swapped"]
    for result in results.values():  # the configured level (the strict default), the whole test in the report
        comparison = json.loads(Path(result["report"]).with_name("comparison.json").read_text())
        assert comparison["alpha"] == 0.01 and comparison["test"]["prompts"] == 4
    # Every prompt of the baseline was asked as often as the baseline has samples, each with its own seed.
    for server in (good, swapped):
        assert len(server.requests) == 4 * 6 and len({r["seed"] for r in server.requests}) == 24
        assert all(r["model"] == "served" and r["max_tokens"] == 32 for r in server.requests)

    recorded = [(c.target.split()[0], c.verdict) for c in open_registry().model_state(MODEL).checks("1", "fingerprint")]
    assert sorted(recorded) == [("endpoint:good", "pass"), ("endpoint:swapped", "fail")]
    # This run's incidents (the tests' metadata DB may hold other tests' runs of model_incident).
    incidents = [c for c in _incident_runs() if (c.get("evidence") or {}).get("run_id") == dag_run.run_id]
    assert [(c["model"], c["version"], c["source"]) for c in incidents] == [(MODEL, "1", "fingerprint_nightly")]
    assert "endpoint:swapped" in incidents[0]["reason"] and "endpoint:good" not in incidents[0]["reason"]
