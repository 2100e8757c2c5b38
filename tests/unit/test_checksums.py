"""Published checksums: vendor manifest parsing and the comparison that blocks, naming files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from airlock.checksums import (
    check_published,
    parse_model_signing_bundle,
    parse_sha256sums,
    vendor_expectations,
)
from airlock.errors import IntegrityError
from airlock.manifest import FileDigest, hash_tree
from airlock.policy import policy_for
from airlock.sources import PublishedFile, ResolvedSource


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _digest(path: str, data: bytes) -> FileDigest:
    return FileDigest(path=path, size=len(data), sha256=_sha256(data), git_sha1=_git_sha1(data))


# --------------------------------------------------------------------------- SHA256SUMS


def test_sha256sums_in_gnu_format() -> None:
    text = f"{'a' * 64}  config.json\n{'B' * 64} *weights/model.bin\n# comment\n\n{'c' * 64}  ./README.md\n"
    assert parse_sha256sums(text) == {"config.json": "a" * 64, "weights/model.bin": "b" * 64, "README.md": "c" * 64}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nothing here\n", r"line 1: not '<sha256>  <path>'"),
        (f"{'a' * 64}  x\n{'b' * 64}  x\n", r"line 2: 'x' is listed twice"),
        (f"{'a' * 63}  x\n", "line 1"),
        ("# only comments\n", "lists no files"),
    ],
)
def test_sha256sums_that_cannot_be_read_are_errors(text: str, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        parse_sha256sums(text)


# --------------------------------------------------------------------------- model_signing bundles


@pytest.fixture()
def signed_model(tmp_path: Path) -> tuple[Path, Path]:
    """A model directory and a model_signing bundle for it, signed by upstream model_signing with an EC key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from model_signing import signing

    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_bytes(b"{}")
    (model / "sub" / "weights.bin").write_bytes(b"w" * 1000)
    key = tmp_path / "key.pem"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    bundle = tmp_path / "model.sig"
    signing.Config().use_elliptic_key_signer(private_key=key).sign(model, bundle)
    return model, bundle


def test_model_signing_bundle_digests_are_read(signed_model: tuple[Path, Path]) -> None:
    model, bundle = signed_model
    digests = parse_model_signing_bundle(bundle.read_bytes())
    assert digests == {d.path: d.sha256 for d in hash_tree(model)}


def test_an_inconsistent_bundle_is_refused(signed_model: tuple[Path, Path]) -> None:
    import base64
    import json

    _, bundle = signed_model
    data = json.loads(bundle.read_bytes())
    statement = json.loads(base64.b64decode(data["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "0" * 64
    data["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(IntegrityError, match="inconsistent bundle"):
        parse_model_signing_bundle(json.dumps(data).encode())
    with pytest.raises(IntegrityError, match="not a model_signing bundle"):
        parse_model_signing_bundle(b"{}")


# --------------------------------------------------------------------------- the comparison


def _hub(files: dict[str, bytes], lfs: set[str]) -> ResolvedSource:
    return ResolvedSource(
        uri="hf://demo/x",
        kind="hf",
        location="demo/x",
        requested_revision="main",
        revision="a" * 40,
        endpoint="http://hub",
        files=tuple(
            PublishedFile(
                path=path,
                size=len(data),
                git_sha1="f" * 40 if path in lfs else _git_sha1(data),
                lfs_sha256=_sha256(data) if path in lfs else None,
            )
            for path, data in sorted(files.items())
        ),
    )


def _drop(files: dict[str, bytes], kind: str = "s3", vendor: tuple[str, ...] = ()) -> ResolvedSource:
    return ResolvedSource(
        uri=f"{kind}://bucket/drop/" if kind == "s3" else "file:///drop",
        kind=kind,
        location="bucket/drop/" if kind == "s3" else "/drop",
        requested_revision=None,
        revision="sha256:" + "0" * 64,
        files=tuple(
            PublishedFile(path=p, size=len(d), sha256=_sha256(d) if kind == "file" else None)
            for p, d in sorted(files.items())
        ),
        vendor_manifests=tuple(PublishedFile(path=name, size=1) for name in vendor),
    )


HUB_FILES = {".gitattributes": b"*.bin lfs", "config.json": b"{}", "model.bin": b"weights"}


def test_hub_files_matching_their_published_checksums_are_allowed() -> None:
    digests = [_digest(p, d) for p, d in HUB_FILES.items()]
    report, published = check_published(_hub(HUB_FILES, {"model.bin"}), digests, vendor={}, policy=policy_for("high"))
    assert report.verdict == "allow" and report.verified == 3
    assert published["model.bin"].by == "hub-lfs" and published["model.bin"].sha256
    assert published["config.json"].by == "hub-git-blob" and published["config.json"].git_sha1


def test_hub_mismatch_missing_and_unexpected_files_block_naming_them() -> None:
    digests = [
        _digest("config.json", b"{}"),
        _digest("model.bin", b"WEIGHTS"),  # altered
        _digest("surprise.py", b"import os"),  # not listed
        # .gitattributes did not arrive
    ]
    report, _ = check_published(_hub(HUB_FILES, {"model.bin"}), digests, vendor={}, policy=policy_for("low"))
    assert report.verdict == "block"
    problems = {(p.path, p.problem) for p in report.problems}
    assert problems == {("model.bin", "mismatch"), ("surprise.py", "unexpected"), (".gitattributes", "missing")}
    summary = report.summary()
    assert "'model.bin' mismatch (hub-lfs" in summary and "surprise.py" in summary and ".gitattributes" in summary


def test_a_non_lfs_file_is_checked_by_its_git_blob_sha1() -> None:
    digests = [_digest(p, d) for p, d in HUB_FILES.items() if p != "config.json"] + [_digest("config.json", b"[]")]
    report, published = check_published(_hub(HUB_FILES, {"model.bin"}), digests, vendor={}, policy=policy_for("low"))
    assert [(p.path, p.by) for p in report.problems] == [("config.json", "hub-git-blob")]
    assert published["config.json"].ok is False


DROP = {"config.json": b"{}", "weights/model.bin": b"weights"}


def test_a_drop_is_checked_against_its_sha256sums() -> None:
    sums = {p: _sha256(d) for p, d in DROP.items()}
    digests = [_digest(p, d) for p, d in DROP.items()]
    report, published = check_published(_drop(DROP), digests, vendor={"SHA256SUMS": sums}, policy=policy_for("high"))
    assert report.verdict == "allow" and report.checked_against == ("SHA256SUMS",)
    assert published["weights/model.bin"].by == "SHA256SUMS"


def test_a_drop_with_extra_missing_or_altered_files_is_blocked() -> None:
    sums = {"config.json": _sha256(b"{}"), "weights/model.bin": _sha256(b"weights"), "tokenizer.json": "a" * 64}
    files = {**DROP, "weights/model.bin": b"weightz", "payload.sh": b"curl evil"}
    digests = [_digest(p, d) for p, d in files.items()]
    report, _ = check_published(_drop(files), digests, vendor={"SHA256SUMS": sums}, policy=policy_for("low"))
    problems = {(p.path, p.problem, p.by) for p in report.problems}
    assert problems == {
        ("weights/model.bin", "mismatch", "SHA256SUMS"),
        ("payload.sh", "unexpected", "SHA256SUMS"),
        ("tokenizer.json", "missing", "SHA256SUMS"),
    }


@pytest.mark.parametrize(
    ("tier", "verdict"), [("low", "allow"), ("medium", "allow"), ("high", "block"), ("critical", "block")]
)
def test_the_tier_decides_whether_a_drop_without_vendor_manifest_proceeds(tier: str, verdict: str) -> None:
    digests = [_digest(p, d) for p, d in DROP.items()]
    report, published = check_published(_drop(DROP), digests, vendor={}, policy=policy_for(tier))
    assert report.verdict == verdict
    if verdict == "allow":
        assert report.unverified == ("config.json", "weights/model.bin") and published == {}
        assert "no vendor manifest" in report.notes[0]


def test_a_local_drop_is_also_checked_against_its_pinned_digests() -> None:
    digests = [_digest("config.json", b"{}"), _digest("weights/model.bin", b"changed")]
    report, _ = check_published(_drop(DROP, kind="file"), digests, vendor={}, policy=policy_for("low"))
    assert [(p.path, p.by) for p in report.problems] == [("weights/model.bin", "drop-resolution")]


def test_vendor_manifest_files_are_read_and_bounded(tmp_path: Path) -> None:
    (tmp_path / "SHA256SUMS").write_text(f"{'a' * 64}  config.json\n")
    resolved = _drop(DROP, vendor=("SHA256SUMS",))
    assert vendor_expectations(resolved, tmp_path) == {"SHA256SUMS": {"config.json": "a" * 64}}
    (tmp_path / "SHA256SUMS").write_bytes(b"\xff\xfe")
    with pytest.raises(IntegrityError, match="not UTF-8"):
        vendor_expectations(resolved, tmp_path)
