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
        ("s3://Bad_Bucket/drop", None, "not a valid S3 bucket name"),
        ("s3://bucket/a//b", None, "empty, '.' or '..' segments"),
        ("s3://bucket/a/../b", None, "empty, '.' or '..' segments"),
        ("s3://bucket/drop?foo=1", None, "the only query parameter allowed"),
        ("s3://bucket/drop?version=main", None, "sha256:<64 hex>"),
        ("s3://bucket/drop?version=sha256:" + "a" * 64, "sha256:" + "b" * 64, "conflicts with revision"),
        ("file://host/srv/drop", None, "expected file:///absolute/path"),
        ("file:///srv/../etc", None, "not normalized"),
        ("file:///srv/drop\\x", None, "backslashes"),
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
        location="demo/x",
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


@pytest.mark.parametrize(
    ("uri", "revision", "scheme", "location", "expected_revision"),
    [
        ("s3://vendor-drops/acme/model-x", None, "s3", "vendor-drops/acme/model-x/", None),
        ("s3://vendor-drops/acme/model-x/", None, "s3", "vendor-drops/acme/model-x/", None),
        ("s3://vendor-drops", None, "s3", "vendor-drops/", None),
        ("s3://b1b/x?version=sha256:" + "a" * 64, None, "s3", "b1b/x/", "sha256:" + "a" * 64),
        ("s3://b1b/x", "sha256:" + "c" * 64, "s3", "b1b/x/", "sha256:" + "c" * 64),
        ("file:///srv/drops/model", None, "file", "/srv/drops/model", None),
        ("file:///srv/drops/my%20model/", None, "file", "/srv/drops/my model", None),
    ],
)
def test_parses_drop_uris(uri, revision, scheme, location, expected_revision) -> None:
    ref = parse_source_uri(uri, revision)
    assert (ref.scheme, ref.location, ref.requested_revision) == (scheme, location, expected_revision)


# --------------------------------------------------------------------------- pinning


class FakeHfApi:
    """Records what the resolver asks the hub; answers as a hub whose main is at COMMIT."""

    COMMIT = "1" * 40
    calls: list[tuple[str, str]] = []

    def __init__(self, endpoint: str, token) -> None:
        assert token is False or token == "hf_secret"  # never a token from the developer's HF config
        FakeHfApi.calls = []

    def model_info(self, repo_id: str, revision: str):
        FakeHfApi.calls.append(("model_info", revision))
        return type("Info", (), {"sha": self.COMMIT})()

    def list_repo_tree(self, repo_id: str, revision: str, recursive: bool):
        from huggingface_hub.hf_api import RepoFile

        FakeHfApi.calls.append(("list_repo_tree", revision))
        return [RepoFile(path="config.json", size=2, oid="2" * 40, blob_id="2" * 40)]


def test_the_hub_resolver_pins_the_commit_and_lists_at_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    resolved = resolve("hf://demo/x@main", None, endpoint="http://hub")
    assert resolved.revision == FakeHfApi.COMMIT and resolved.requested_revision == "main"
    assert FakeHfApi.calls == [("model_info", "main"), ("list_repo_tree", FakeHfApi.COMMIT)]
    with pytest.raises(SourceError, match="hub answered with a different commit"):
        resolve("hf://demo/x", "9" * 40, endpoint="http://hub")


def test_the_hub_token_never_reaches_xcom_or_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import huggingface_hub

    from airlock.connections import HubAccess
    from airlock.sources import fetcher_for

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    resolved = resolve("hf://demo/x", None, endpoint="http://hub", token="hf_secret")
    fetcher = fetcher_for(resolved, hub=HubAccess(endpoint="http://hub", token="hf_secret"))
    assert fetcher.token == "hf_secret"
    for text in (json.dumps(resolved.to_json_dict()), repr(resolved), repr(fetcher)):
        assert "hf_secret" not in text


@pytest.fixture()
def drop(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AIRLOCK_QUARANTINE_ROOT", str(tmp_path / "quarantine"))
    monkeypatch.delenv("AIRLOCK_FILE_DROP_ROOTS", raising=False)
    root = tmp_path / "drop"
    (root / "weights").mkdir(parents=True)
    (root / "config.json").write_bytes(b"{}")
    (root / "weights" / "model.bin").write_bytes(b"weights")
    (root / "SHA256SUMS").write_text("")
    return root


def test_a_local_drop_is_pinned_by_its_file_digests(drop) -> None:
    import hashlib

    resolved = resolve(drop.as_uri())
    assert resolved.kind == "file" and resolved.revision.startswith("sha256:")
    assert [f.path for f in resolved.files] == ["config.json", "weights/model.bin"]
    assert [f.path for f in resolved.vendor_manifests] == ["SHA256SUMS"]
    assert resolved.files[1].sha256 == hashlib.sha256(b"weights").hexdigest()
    assert resolve(drop.as_uri(), resolved.revision).revision == resolved.revision
    (drop / "weights" / "model.bin").write_bytes(b"weightz")
    with pytest.raises(SourceError, match="the drop changed since it was pinned"):
        resolve(drop.as_uri(), resolved.revision)


def test_a_local_drop_with_a_symlink_is_refused_naming_it(drop) -> None:
    (drop / "weights" / "link.bin").symlink_to("/etc/hostname")
    with pytest.raises(SourceError, match="weights/link.bin: is a symlink"):
        resolve(drop.as_uri())


def test_local_drops_are_confined(drop, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRLOCK_ENV", "production")
    with pytest.raises(SourceError, match="disabled in production until AIRLOCK_FILE_DROP_ROOTS"):
        resolve(drop.as_uri())
    monkeypatch.setenv("AIRLOCK_FILE_DROP_ROOTS", str(drop.parent / "elsewhere"))
    with pytest.raises(SourceError, match="outside AIRLOCK_FILE_DROP_ROOTS"):
        resolve(drop.as_uri())
    monkeypatch.setenv("AIRLOCK_FILE_DROP_ROOTS", str(drop.parent))
    assert resolve(drop.as_uri()).files


@pytest.fixture()
def s3_drop(monkeypatch: pytest.MonkeyPatch):
    """An in-process moto S3 (no server) with a versioned bucket holding a drop."""
    from moto import mock_aws

    from airlock.connections import S3Access

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        access = S3Access(endpoint=None, region="us-east-1", origin="test")
        client = access.client()
        client.create_bucket(Bucket="vendor-drops")
        client.put_bucket_versioning(Bucket="vendor-drops", VersioningConfiguration={"Status": "Enabled"})
        client.put_object(Bucket="vendor-drops", Key="acme/model-x/", Body=b"")  # a console folder marker
        client.put_object(Bucket="vendor-drops", Key="acme/model-x/config.json", Body=b"{}")
        client.put_object(Bucket="vendor-drops", Key="acme/model-x/SHA256SUMS", Body=b"sums")
        client.put_object(Bucket="vendor-drops", Key="acme/model-x2/other.bin", Body=b"not ours")
        yield access, client


def test_an_s3_drop_is_pinned_by_versions_and_etags(s3_drop) -> None:
    access, client = s3_drop
    resolved = resolve("s3://vendor-drops/acme/model-x", s3=access)
    assert [f.path for f in resolved.files] == ["config.json"]  # not model-x2, not the folder marker
    assert [f.path for f in resolved.vendor_manifests] == ["SHA256SUMS"]
    (config,) = resolved.files
    assert config.version_id and config.version_id != "null" and config.etag
    assert resolved.model_name == "vendor-drops/acme/model-x"
    client.put_object(Bucket="vendor-drops", Key="acme/model-x/config.json", Body=b"{ }")
    moved = resolve("s3://vendor-drops/acme/model-x", s3=access)
    assert moved.revision != resolved.revision
    with pytest.raises(SourceError, match="the drop changed since it was pinned"):
        resolve(f"s3://vendor-drops/acme/model-x?version={resolved.revision}", s3=access)


def test_an_s3_object_replaced_after_pinning_is_refused_by_the_fetch(s3_drop) -> None:
    from airlock.sources import fetcher_for

    access, client = s3_drop
    client.put_bucket_versioning(Bucket="vendor-drops", VersioningConfiguration={"Status": "Suspended"})
    client.put_object(Bucket="vendor-drops", Key="acme/model-x/config.json", Body=b"{}")
    resolved = resolve("s3://vendor-drops/acme/model-x", s3=access)
    (config,) = resolved.files
    assert config.version_id == "null"  # unversioned: only the ETag pins it
    client.put_object(Bucket="vendor-drops", Key="acme/model-x/config.json", Body=b"[]")

    class Sink(bytearray):
        def write(self, data):
            self.extend(data)
            return len(data)

    with pytest.raises(SourceError, match="changed or removed since the drop was pinned"):
        fetcher_for(resolved, s3=access).fetch(config, Sink(), 0)


def test_a_missing_bucket_is_a_source_error(s3_drop) -> None:
    access, _ = s3_drop
    with pytest.raises(SourceError, match="cannot list the drop"):
        resolve("s3://no-such-bucket/x", s3=access)
