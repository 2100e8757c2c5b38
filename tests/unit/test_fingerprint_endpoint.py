"""Sampled-text endpoint backend: kernels, the within-prompt MMD permutation test, the completion client."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from airlock.fingerprint.endpoint import (
    Endpoint,
    EndpointError,
    SampleSet,
    char_ngrams,
    compare_samples,
    hamming_kernel_matrix,
    mmd_test,
    ngram_kernel_matrix,
    redact,
    sample_endpoint,
)
from airlock.fingerprint.prompts import Prompt

WORDS = [f"w{i:02d}{'abcdefghij'[i % 10]}" for i in range(40)]


def _model(prompt_index: int, shift: float, seed: int):
    """A synthetic 'language model': per prompt a Dirichlet-drawn word distribution; ``shift`` mixes in
    a different one (0 = the reference model)."""
    base = np.random.default_rng(1000 + prompt_index).dirichlet(np.full(len(WORDS), 0.3))
    other = np.random.default_rng(5000 + prompt_index).dirichlet(np.full(len(WORDS), 0.3))
    probs = (1 - shift) * base + shift * other
    rng = np.random.default_rng(seed)
    return lambda: " ".join(rng.choice(WORDS, size=8, p=probs))


def _samples(prompts: int, per_prompt: int, shift: float, seed: int) -> dict[str, list[str]]:
    out = {}
    for p in range(prompts):
        draw = _model(p, shift, seed * 7919 + p)
        out[f"p{p:02d}"] = [draw() for _ in range(per_prompt)]
    return out


def test_char_ngrams_and_kernels_are_proper():
    assert char_ngrams("abcd") == {"abc": 1, "bcd": 1}
    assert char_ngrams("ab") == {"ab": 1}
    texts = ["the cat sat", "the cat sat", "a dog ran", ""]
    k = ngram_kernel_matrix(texts)
    assert np.allclose(k, k.T) and k[0, 1] == pytest.approx(1.0) and 0 <= k[0, 2] < 1
    assert np.all(np.linalg.eigvalsh(k) > -1e-9)  # positive semi-definite
    h = hamming_kernel_matrix(["abc", "abd", "xyz"])
    assert h[0, 1] == pytest.approx(2 / 3) and h[0, 2] == 0.0 and h[0, 0] == 1.0


def test_false_alarm_rate_on_the_same_model():
    alarms = sum(
        mmd_test(_samples(12, 10, 0.0, seed), _samples(12, 10, 0.0, seed + 100), permutations=200,
                 seed=seed).p_value < 0.05
        for seed in range(20)
    )
    assert alarms <= 2  # nominal 1/20; deterministic seeds, so this is a fixed outcome, not a flaky one


def test_power_against_a_changed_model():
    detected = sum(
        mmd_test(_samples(12, 10, 0.0, seed), _samples(12, 10, 0.5, seed + 100), permutations=200,
                 seed=seed).p_value < 0.05
        for seed in range(10)
    )
    assert detected >= 9


def test_p_value_is_uniform_ish_and_bounded():
    result = mmd_test(_samples(4, 6, 0.0, 1), _samples(4, 6, 0.0, 2), permutations=99, seed=3)
    assert 0.01 <= result.p_value <= 1.0
    assert result.prompts == 4 and result.baseline_samples == 6 and set(result.per_prompt) == {
        "p00", "p01", "p02", "p03"}


def test_within_prompt_permutation_keeps_power_where_pooling_would_not():
    # Prompts differ far more from each other than the models differ: pooled permutation would mix them.
    base, cand = _samples(24, 8, 0.0, 11), _samples(24, 8, 0.6, 12)
    assert mmd_test(base, cand, permutations=200).p_value < 0.05


def test_degenerate_and_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="at least 2 samples"):
        mmd_test({"p": ["a"]}, {"p": ["b"]})
    with pytest.raises(ValueError, match="same, non-empty set of prompts"):
        mmd_test({"p": ["a", "b"]}, {"q": ["a", "b"]})
    with pytest.raises(ValueError, match="unknown kernel"):
        mmd_test({"p": ["a", "b"]}, {"p": ["a", "b"]}, kernel="rbf")


def test_compare_samples_verdicts():
    def sample_set(samples, source):
        return SampleSet(source=source, claims="demo/tiny@1", prompt_set_sha256="a" * 64, max_tokens=32,
                         seed_base=0, samples=samples)
    same = compare_samples(sample_set(_samples(12, 10, 0.0, 1), "verified-copy"),
                           sample_set(_samples(12, 10, 0.0, 2), "prod"), permutations=200)
    assert same.verdict == "match" and same.reason.startswith("match: MMD (char3) p = ")
    changed = compare_samples(sample_set(_samples(12, 10, 0.0, 1), "verified-copy"),
                              sample_set(_samples(12, 10, 0.6, 2), "prod"), permutations=200)
    assert changed.verdict == "deviation"
    with pytest.raises(ValueError, match="not comparable"):
        compare_samples(sample_set({}, "a"), sample_set({}, "b").model_copy(update={"max_tokens": 8}))


# --------------------------------------------------------------------------- HTTP client


class _Server:
    def __init__(self, status: int = 200, body: object = None):
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["Content-Length"])
                payload = json.loads(self.rfile.read(length))
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **payload})
                answer = body if body is not None else {"choices": [{"text": f" sample {payload['seed']}"}]}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://user:secret@127.0.0.1:{self.httpd.server_port}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    servers = []

    def start(**kwargs):
        servers.append(_Server(**kwargs))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


PROMPTS = [Prompt(id="p00", text="Hello"), Prompt(id="p01", text="World")]


def test_sampling_sends_a_distinct_seed_per_sample_and_sampling_flags(server):
    srv = server()
    endpoint = Endpoint(name="prod", base_url=srv.url, model="demo/tiny", claims="demo/tiny@1")
    result = sample_endpoint(endpoint, PROMPTS, prompt_set_sha256="a" * 64, samples_per_prompt=3, seed_base=10)
    assert result.samples == {"p00": [" sample 10", " sample 11", " sample 12"],
                              "p01": [" sample 13", " sample 14", " sample 15"]}
    first = srv.requests[0]
    assert first["path"] == "/v1/completions" and first["prompt"] == "Hello" and first["temperature"] == 1.0
    assert json.loads(first["generation_config"]) == {"do_sample": True, "top_k": 0, "top_p": 1.0,
                                                       "temperature": 1.0}
    assert len({r["seed"] for r in srv.requests}) == 6
    assert first["auth"] == "Basic dXNlcjpzZWNyZXQ="  # user:secret from the URL, sent as a header


def test_bearer_token_comes_from_the_named_environment_variable(server, monkeypatch):
    srv = server()
    endpoint = Endpoint(name="prod", base_url=srv.url, model="m", claims="x@1", token_env="AIRLOCK_TEST_TOKEN")
    with pytest.raises(EndpointError, match="AIRLOCK_TEST_TOKEN is not set"):
        sample_endpoint(endpoint, PROMPTS, prompt_set_sha256="a" * 64, samples_per_prompt=2)
    monkeypatch.setenv("AIRLOCK_TEST_TOKEN", "tok")
    sample_endpoint(endpoint, PROMPTS, prompt_set_sha256="a" * 64, samples_per_prompt=2)
    assert srv.requests[-1]["auth"] == "Bearer tok"


def test_http_errors_are_endpoint_errors_without_credentials(server):
    srv = server(status=500, body={"error": "boom"})
    endpoint = Endpoint(name="prod", base_url=srv.url + "?token=abc", model="m", claims="x@1")
    with pytest.raises(EndpointError) as info:
        sample_endpoint(endpoint, PROMPTS, prompt_set_sha256="a" * 64, samples_per_prompt=2)
    assert "HTTP 500" in str(info.value) and "secret" not in str(info.value) and "token" not in str(info.value)


def test_an_answer_without_text_is_refused(server):
    srv = server(body={"choices": []})
    endpoint = Endpoint(name="prod", base_url=srv.url, model="m", claims="x@1")
    with pytest.raises(EndpointError, match=r"no choices\[0\].text"):
        sample_endpoint(endpoint, PROMPTS, prompt_set_sha256="a" * 64, samples_per_prompt=2)


def test_redact_drops_credentials_query_and_fragment():
    assert redact("https://u:p@host.example:8443/base?key=1#x") == "https://host.example:8443/base"


def test_an_endpoints_significance_level_is_configuration_with_a_strict_default():
    from airlock.errors import ConfigurationError
    from airlock.fingerprint.nightly import parse_endpoints

    entry = {"name": "edge", "url": "http://h", "model": "o/n", "version": "1"}
    assert parse_endpoints(json.dumps([entry]), "conf")[0].alpha == 0.01  # a false incident in 100 nights
    assert parse_endpoints(json.dumps([{**entry, "alpha": 0.05}]), "conf")[0].alpha == 0.05
    for bad in (0, -0.01, 0.5, "x"):
        with pytest.raises(ConfigurationError, match="alpha"):
            parse_endpoints(json.dumps([{**entry, "alpha": bad}]), "conf")


def test_endpoint_samples_at_ingest_are_an_opt_in_setting():
    from airlock.errors import ConfigurationError
    from airlock.fingerprint.stage import ENDPOINT_SAMPLES_ENV, endpoint_samples_setting

    assert endpoint_samples_setting({}) == 0 and endpoint_samples_setting({ENDPOINT_SAMPLES_ENV: " "}) == 0
    assert endpoint_samples_setting({ENDPOINT_SAMPLES_ENV: "30"}) == 30
    for bad in ("1", "-2", "1001", "thirty"):
        with pytest.raises(ConfigurationError, match=ENDPOINT_SAMPLES_ENV):
            endpoint_samples_setting({ENDPOINT_SAMPLES_ENV: bad})


@pytest.mark.slow
def test_the_ingest_baseline_writes_endpoint_samples_when_configured(tmp_path, monkeypatch):
    """`fingerprint_baseline` (ingest.baseline_run) passes no sample count: the setting decides."""
    import torch
    from airlock.fingerprint.stage import (
        ENDPOINT_SAMPLES_ENV,
        baseline_quarantine,
        report_key,
        report_paths,
    )

    from tests.fingerprint_nightly_fixtures import scanned_area
    from tests.unit.fingerprint_lm import build_tiny_lm

    torch.set_num_threads(1)
    lm = build_tiny_lm(tmp_path / "lm")
    monkeypatch.setenv(ENDPOINT_SAMPLES_ENV, "3")
    area = scanned_area(tmp_path / "quarantine", lm)
    summary = baseline_quarantine(area, "medium", device="cpu", runs=((16, 1), (4, 1)), sample_tokens=4)
    samples = SampleSet.model_validate_json((area.path / report_key("samples")).read_text())
    assert summary["samples_per_prompt"] == 3 and {len(v) for v in samples.samples.values()} == {3}
    assert samples.claims and samples.source == "quarantine"
    assert "fingerprint-samples.json" in [p.name for p in report_paths(area)]  # promoted with the version

    monkeypatch.delenv(ENDPOINT_SAMPLES_ENV)
    again = scanned_area(tmp_path / "quarantine-2", lm)
    assert "samples" not in baseline_quarantine(again, "medium", device="cpu", runs=((16, 1), (4, 1)))
    assert not (again.path / report_key("samples")).exists()
