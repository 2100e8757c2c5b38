"""Fingerprint a model behind an OpenAI-compatible ``/v1/completions`` endpoint from sampled text.

For servers that do not return log-probabilities (``transformers serve`` ignores ``logprobs`` and
``echo``), the check follows Model Equality Testing (Gao, Liang, Guestrin 2024): draw N completions
per canonical prompt at temperature 1 from the endpoint and from the verified copy, and run a
maximum-mean-discrepancy permutation test with a character n-gram kernel.

Two lessons measured on the demo model shape the test:
- permute **within each prompt** (the statistic is a sum of per-prompt MMD² blocks): pooling samples
  across prompts drowns the model difference in the prompt-to-prompt difference and had no power;
- one sample per prompt is degenerate (no within-prompt variance to compare): refused.

Sampled text only sees large changes (a swapped model, an optimiser step at lr 1e-3); prefer the
logprob fingerprint whenever the server returns log-probabilities.
"""

from __future__ import annotations

import base64
import json
import math
import os
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from airlock.errors import AirlockError
from airlock.fingerprint.prompts import Prompt

SAMPLES_SCHEMA = "airlock.endpoint-samples/v1"
ENDPOINT_COMPARISON_SCHEMA = "airlock.endpoint-comparison/v1"


class EndpointError(AirlockError):
    """The endpoint could not be sampled (unreachable, an HTTP error, an answer that is not a completion)."""


# --------------------------------------------------------------------------- kernels


def char_ngrams(text: str, n: int = 3) -> Counter:
    """Counts of the character n-grams of ``text`` (the whole text when it is shorter than ``n``)."""
    if len(text) < n:
        return Counter({text: 1})
    return Counter(text[i:i + n] for i in range(len(text) - n + 1))


def ngram_kernel_matrix(texts: Sequence[str], n: int = 3):
    """Cosine similarity of character n-gram count vectors: a positive-definite kernel with k(x, x) = 1."""
    import numpy as np

    grams = [char_ngrams(t, n) for t in texts]
    vocab: dict[str, int] = {}
    for g in grams:
        for key in g:
            vocab.setdefault(key, len(vocab))
    features = np.zeros((len(texts), max(len(vocab), 1)))
    for row, g in enumerate(grams):
        for key, count in g.items():
            features[row, vocab[key]] = count
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    features = features / np.where(norms == 0, 1.0, norms)
    return features @ features.T


def hamming_kernel_matrix(texts: Sequence[str]):
    """Fraction of positions with equal characters over the longer text's length (1 for identical texts)."""
    import numpy as np

    size = len(texts)
    kernel = np.ones((size, size))
    for i in range(size):
        for j in range(i + 1, size):
            a, b = texts[i], texts[j]
            longest = max(len(a), len(b))
            same = sum(x == y for x, y in zip(a, b, strict=False))
            kernel[i, j] = kernel[j, i] = same / longest if longest else 1.0
    return kernel


KERNELS = {"char3": lambda texts: ngram_kernel_matrix(texts, 3), "hamming": hamming_kernel_matrix}


# --------------------------------------------------------------------------- MMD permutation test


def _mmd2_for_labels(kernel, labels):
    """Unbiased MMD² for each row of ``labels`` (1 = baseline sample, 0 = candidate sample)."""
    import numpy as np

    k0 = kernel - np.diag(np.diag(kernel))  # unbiased: no k(x, x) terms
    x = labels.astype(float)
    y = 1.0 - x
    m, n = x.sum(axis=1), y.sum(axis=1)
    kx, ky = x @ k0, y @ k0
    xx = (kx * x).sum(axis=1)
    yy = (ky * y).sum(axis=1)
    xy = (kx * y).sum(axis=1)
    return xx / (m * (m - 1)) + yy / (n * (n - 1)) - 2.0 * xy / (m * n)


class MMDResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    statistic: float  # sum over prompts of the unbiased MMD²
    p_value: float
    permutations: int
    prompts: int
    baseline_samples: int  # per prompt
    candidate_samples: int
    kernel: str
    per_prompt: dict[str, float]


def mmd_test(baseline: Mapping[str, Sequence[str]], candidate: Mapping[str, Sequence[str]], *,
             kernel: str = "char3", permutations: int = 1000, seed: int = 0) -> MMDResult:
    """Two-sample MMD test, permuting samples within each prompt; p = (1 + #{T_perm >= T}) / (1 + B)."""
    import numpy as np

    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r} (known: {sorted(KERNELS)})")
    if set(baseline) != set(candidate) or not baseline:
        raise ValueError("baseline and candidate must sample the same, non-empty set of prompts")
    rng = np.random.default_rng(seed)
    observed = 0.0
    null = np.zeros(permutations)
    per_prompt = {}
    sizes = set()
    for prompt_id in sorted(baseline):
        xs, ys = list(baseline[prompt_id]), list(candidate[prompt_id])
        if len(xs) < 2 or len(ys) < 2:
            raise ValueError(f"prompt {prompt_id}: at least 2 samples per side are needed (1 is degenerate)")
        sizes.add((len(xs), len(ys)))
        gram = KERNELS[kernel](xs + ys)
        truth = np.concatenate([np.ones(len(xs)), np.zeros(len(ys))])[None, :]
        value = float(_mmd2_for_labels(gram, truth)[0])
        per_prompt[prompt_id] = value
        observed += value
        shuffled = np.array([rng.permutation(truth[0]) for _ in range(permutations)])
        null += _mmd2_for_labels(gram, shuffled)
    # A tolerance so that float summation order never turns a tie into a "smaller" value.
    exceed = int(np.sum(null >= observed - 1e-12 * max(1.0, abs(observed))))
    m, n = max(sizes) if sizes else (0, 0)
    return MMDResult(statistic=observed, p_value=(1 + exceed) / (1 + permutations), permutations=permutations,
                     prompts=len(baseline), baseline_samples=m, candidate_samples=n, kernel=kernel,
                     per_prompt=per_prompt)


# --------------------------------------------------------------------------- endpoint sampling


@dataclass(frozen=True)
class Endpoint:
    """A deployed endpoint to check (configuration): what it is and which registry version it claims."""

    name: str
    base_url: str  # e.g. http://10.0.0.5:8000 (the /v1/completions path is appended)
    model: str  # the "model" field the server expects
    claims: str  # org/name@version the deployment says it serves
    token_env: str | None = None  # environment variable holding a bearer token (never the token itself)


def redact(url: str) -> str:
    """``url`` without credentials, query or fragment, for messages and reports."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _target(endpoint: Endpoint) -> tuple[str, dict[str, str]]:
    """The completions URL without credentials, and the headers carrying them (Basic from the URL's
    userinfo, or a bearer token read from the environment variable the configuration names)."""
    parts = urlsplit(endpoint.base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError(f"endpoint {endpoint.name}: base URL must be http(s)://host[:port][/path]")
    netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/v1/completions", parts.query, ""))
    headers = {"Content-Type": "application/json"}
    if parts.username is not None:
        raw = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
    if endpoint.token_env:
        token = os.environ.get(endpoint.token_env)
        if not token:
            raise EndpointError(f"endpoint {endpoint.name}: environment variable {endpoint.token_env} is not set")
        headers["Authorization"] = f"Bearer {token}"
    return url, headers


def _complete(endpoint: Endpoint, prompt: str, *, max_tokens: int, seed: int, timeout_s: float) -> str:
    body = {
        "model": endpoint.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 1.0, "top_p": 1.0,
        "n": 1, "seed": seed,
        # transformers serve samples only with do_sample in generation_config (temperature alone is greedy);
        # top_k 0 disables its default top-k truncation so samples follow the model's distribution.
        "generation_config": json.dumps({"do_sample": True, "top_k": 0, "top_p": 1.0, "temperature": 1.0}),
    }
    url, headers = _target(endpoint)
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise EndpointError(f"endpoint {endpoint.name} ({redact(endpoint.base_url)}): HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EndpointError(f"endpoint {endpoint.name} ({redact(endpoint.base_url)}): {reason}") from None
    except ValueError:
        raise EndpointError(f"endpoint {endpoint.name}: answer is not JSON") from None
    try:
        text = answer["choices"][0]["text"]
    except (KeyError, IndexError, TypeError):
        raise EndpointError(f"endpoint {endpoint.name}: answer has no choices[0].text") from None
    if not isinstance(text, str):
        raise EndpointError(f"endpoint {endpoint.name}: choices[0].text is not a string")
    return text


class SampleSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["airlock.endpoint-samples/v1"] = Field(SAMPLES_SCHEMA, alias="schema")
    source: str  # endpoint name, or "verified-copy"
    claims: str
    prompt_set_sha256: str
    max_tokens: int
    seed_base: int
    samples: dict[str, list[str]]


def sample_endpoint(endpoint: Endpoint, prompts: Sequence[Prompt], *, prompt_set_sha256: str,
                    samples_per_prompt: int = 30, max_tokens: int = 32, seed_base: int = 0,
                    timeout_s: float = 60.0) -> SampleSet:
    """``samples_per_prompt`` completions per prompt; each request gets its own seed (a request's seed
    resets the server's global RNG, so a constant seed would return the same text every time)."""
    if samples_per_prompt < 2:
        raise ValueError("at least 2 samples per prompt are needed")
    samples: dict[str, list[str]] = {}
    for p_index, prompt in enumerate(prompts):
        samples[prompt.id] = [
            _complete(endpoint, prompt.text, max_tokens=max_tokens,
                      seed=seed_base + p_index * samples_per_prompt + s, timeout_s=timeout_s)
            for s in range(samples_per_prompt)
        ]
    return SampleSet(source=endpoint.name, claims=endpoint.claims, prompt_set_sha256=prompt_set_sha256,
                     max_tokens=max_tokens, seed_base=seed_base, samples=samples)


class EndpointComparison(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["airlock.endpoint-comparison/v1"] = Field(ENDPOINT_COMPARISON_SCHEMA, alias="schema")
    baseline_source: str
    candidate_source: str
    claims: str
    alpha: float
    test: MMDResult
    verdict: Literal["match", "deviation"]

    @property
    def reason(self) -> str:
        t = self.test
        return (f"{self.verdict}: MMD ({t.kernel}) p = {t.p_value:.3g} over {t.prompts} prompts x "
                f"{t.candidate_samples} samples (alpha {self.alpha})")


def compare_samples(baseline: SampleSet, candidate: SampleSet, *, alpha: float = 0.05, permutations: int = 1000,
                    kernel: str = "char3", seed: int = 0) -> EndpointComparison:
    """Deviation when the MMD permutation test rejects at ``alpha``."""
    if baseline.prompt_set_sha256 != candidate.prompt_set_sha256 or baseline.max_tokens != candidate.max_tokens:
        raise ValueError("sample sets differ in prompt set or completion length: not comparable")
    if not 0 < alpha < 1 or not math.isfinite(alpha):
        raise ValueError("alpha must be in (0, 1)")
    result = mmd_test(baseline.samples, candidate.samples, kernel=kernel, permutations=permutations, seed=seed)
    return EndpointComparison(baseline_source=baseline.source, candidate_source=candidate.source,
                              claims=candidate.claims, alpha=alpha, test=result,
                              verdict="deviation" if result.p_value < alpha else "match")
