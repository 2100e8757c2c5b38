from __future__ import annotations

import pytest

from airlock.errors import SourceError
from airlock.sources import PublishedFile, ResolvedSource, parse_source_uri, resolve


@pytest.mark.parametrize(
    ("uri", "revision", "repo_id", "expected_revision"),
    [
        ("hf://demo/tiny-gpt2", None, "demo/tiny-gpt2", "main"),
        ("hf://demo/tiny-gpt2@v1.0", None, "demo/tiny-gpt2", "v1.0"),
        ("hf://demo/tiny-gpt2", "refs/pr/1", "demo/tiny-gpt2", "refs/pr/1"),
        ("hf://Org-1/Name_2.x@" + "a" * 40, "a" * 40, "Org-1/Name_2.x", "a" * 40),
    ],
)
def test_parses_hf_uris(uri: str, revision: str | None, repo_id: str, expected_revision: str) -> None:
    ref = parse_source_uri(uri, revision)
    assert (ref.scheme, ref.repo_id, ref.requested_revision) == ("hf", repo_id, expected_revision)
    assert ref.uri == f"hf://{repo_id}"


@pytest.mark.parametrize(
    ("uri", "revision", "message"),
    [
        ("demo/tiny-gpt2", None, "expected SCHEME://LOCATION"),
        ("ftp://demo/tiny-gpt2", None, "unsupported scheme 'ftp'"),
        ("hf://tiny-gpt2", None, "is not a Hugging Face repo id"),
        ("hf://demo/tiny/gpt2", None, "is not a Hugging Face repo id"),
        ("hf://../etc", None, "is not a Hugging Face repo id"),
        ("hf://demo/x@main", "dev", "conflicts with revision 'dev'"),
        ("hf://demo/x", "../../main", "not a valid branch, tag or commit sha"),
        ("hf://demo/x", "-rf", "not a valid branch, tag or commit sha"),
        ("hf://demo/x", "main branch", "not a valid branch, tag or commit sha"),
    ],
)
def test_rejects_bad_sources_naming_the_rule(uri: str, revision: str | None, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        parse_source_uri(uri, revision)


def test_unreachable_hub_is_a_source_error_naming_the_endpoint() -> None:
    with pytest.raises(SourceError, match=r"http://127\.0\.0\.1:9/?: hub unreachable|127\.0\.0\.1:9: hub unreachable"):
        resolve("hf://demo/x", None, endpoint="http://127.0.0.1:9")


def test_resolved_source_round_trips_through_json() -> None:
    resolved = ResolvedSource(
        uri="hf://demo/x",
        kind="hf",
        repo_id="demo/x",
        requested_revision="main",
        revision="b" * 40,
        endpoint="http://hub",
        files=(
            PublishedFile(path="config.json", size=10, git_sha1="c" * 40),
            PublishedFile(path="model.safetensors", size=99, git_sha1="d" * 40, lfs_sha256="e" * 64),
        ),
    )
    data = resolved.to_json_dict()
    assert data["schema"] == "airlock.resolved-source/v1"
    assert ResolvedSource.model_validate(data) == resolved
    assert resolved.total_size == 109
