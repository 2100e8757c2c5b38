"""The model.sig bundle: its exact shape, and every way of tampering with a model or its bundle being refused.

A local EC key stands in for Vault here; it goes through the same bundle code
as the Vault signer (tests/integration/test_signing_vault.py covers Vault).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from airlock.bundle import (
    BUNDLE_MEDIA_TYPE,
    DEFAULT_IGNORE_PATHS,
    IN_TOTO_PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    BundleFormatError,
    FileDigest,
    assemble_bundle,
    dump_bundle,
    pae,
    public_key_fingerprint,
    root_digest,
)
from airlock.digests import hash_model_dir
from airlock.signing import LocalKeySigner, sign_directory, sign_files
from airlock.trust import TrustStore
from airlock.verify import Failure, verify_model
from tests.signing_fixtures import RANDOM_FILES, make_model, trust_store_for


@pytest.fixture(scope="module")
def signer() -> LocalKeySigner:
    return LocalKeySigner.generate(key_name="airlock-test", version=1)


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    return make_model(tmp_path / "tiny-model")


@pytest.fixture()
def signed(model: Path, signer: LocalKeySigner, tmp_path: Path) -> Path:
    """The bundle, written outside the model directory (the registry layout)."""
    sign_directory(model, signer, output=tmp_path / "model.sig")
    return tmp_path / "model.sig"


@pytest.fixture()
def trust(signer: LocalKeySigner) -> TrustStore:
    return trust_store_for(signer)


def _bundle(path: Path) -> dict:
    return json.loads(path.read_text())


def _statement(bundle: dict) -> dict:
    return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))


def _resign(path: Path, statement: dict, signer: LocalKeySigner, payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> None:
    """Replace the bundle with ``statement`` genuinely signed by ``signer`` (a trusted key signing the wrong thing)."""
    payload = json.dumps(statement).encode()
    raw = signer.sign(pae(payload_type, payload))
    bundle = assemble_bundle(payload, raw.der, hint=public_key_fingerprint(raw.public_key_pem.encode()),
                             keyid=raw.key_id)
    data = bundle.model_dump(mode="json")
    data["dsseEnvelope"]["payloadType"] = payload_type
    path.write_text(json.dumps(data))


# --------------------------------------------------------------------------- structure


def test_bundle_has_the_model_signing_shape(model: Path, signer: LocalKeySigner, tmp_path: Path) -> None:
    result, output = sign_directory(model, signer, output=tmp_path / "out.sig", model_name="org/tiny")
    bundle = _bundle(output)
    assert list(bundle) == ["mediaType", "verificationMaterial", "dsseEnvelope"]
    assert bundle["mediaType"] == BUNDLE_MEDIA_TYPE
    assert bundle["verificationMaterial"] == {
        "publicKey": {"hint": public_key_fingerprint(signer.public_key_pem.encode())}, "tlogEntries": [],
    }
    envelope = bundle["dsseEnvelope"]
    assert envelope["payloadType"] == IN_TOTO_PAYLOAD_TYPE
    assert [s["keyid"] for s in envelope["signatures"]] == ["airlock-test:v1"]

    statement = _statement(bundle)
    files = hash_model_dir(model)
    assert statement["_type"] == STATEMENT_TYPE
    assert statement["subject"] == [{"name": "org/tiny", "digest": {"sha256": root_digest(files)}}]
    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["predicate"]["serialization"] == {
        "method": "files", "hash_type": "sha256", "allow_symlinks": False,
        "ignore_paths": sorted(DEFAULT_IGNORE_PATHS),
    }
    resources = statement["predicate"]["resources"]
    assert [r["name"] for r in resources] == [f.path for f in files]
    assert all(r["algorithm"] == "sha256" for r in resources)
    assert result.root_digest == statement["subject"][0]["digest"]["sha256"]
    assert result.key_id == "airlock-test:v1" and result.file_count == len(files)


def test_resources_are_in_model_signings_order_and_root_digest_matches_it(model: Path) -> None:
    import model_signing
    from google.protobuf.json_format import MessageToJson
    from model_signing._signing.signing import Payload

    upstream_statement = json.loads(MessageToJson(Payload(model_signing.hashing.hash(model)).statement.pb))
    ours = hash_model_dir(model)
    assert [r["name"] for r in upstream_statement["predicate"]["resources"]] == [f.path for f in ours]
    assert upstream_statement["subject"][0]["digest"]["sha256"] == root_digest(ours)
    # The case that tells component-wise order from string order is present.
    assert [f.path for f in ours].index("weights/a/shard-0.bin") < [f.path for f in ours].index(
        "weights/a-b/shard-1.bin")


def test_bundle_written_inside_the_model_ignores_itself(model: Path, signer: LocalKeySigner, trust) -> None:
    _, output = sign_directory(model, signer)
    assert output == model / "model.sig"
    statement = _statement(_bundle(output))
    assert "model.sig" in statement["predicate"]["serialization"]["ignore_paths"]
    assert "model.sig" not in [r["name"] for r in statement["predicate"]["resources"]]
    assert verify_model(model, output, trust).ok


def test_sign_files_takes_plain_path_digest_pairs(signer: LocalKeySigner) -> None:
    pairs = [("b.bin", "b" * 64), ("a/x.bin", "a" * 64)]
    result = sign_files(pairs, "pairs-model", signer)
    resources = _statement(json.loads(result.bundle_bytes))["predicate"]["resources"]
    assert [r["name"] for r in resources] == ["a/x.bin", "b.bin"]
    assert result.root_digest == root_digest([FileDigest("a/x.bin", "a" * 64), FileDigest("b.bin", "b" * 64)])


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([], "has no files"),
        ([("a", "a" * 64), ("a", "b" * 64)], "appears twice"),
        ([("../escape", "a" * 64)], "'..' component"),
        ([("/abs", "a" * 64)], "not a relative POSIX path"),
        ([("a", "XYZ")], "64 lowercase hex"),
    ],
)
def test_sign_files_rejects_bad_input(pairs, message: str, signer: LocalKeySigner) -> None:
    with pytest.raises(BundleFormatError, match=message):
        sign_files(pairs, "m", signer)


# --------------------------------------------------------------------------- tampering


def test_untampered_model_verifies(model: Path, signed: Path, trust: TrustStore) -> None:
    result = verify_model(model, signed, trust)
    assert result.ok, result.reason
    assert result.failure is None and result.key_id == "airlock-test:v1"
    assert result.reason.startswith("valid: ")


@pytest.mark.parametrize("relative", [*RANDOM_FILES, "config.json", "model.safetensors"])
def test_one_flipped_bit_in_any_file_is_named(model: Path, signed: Path, trust: TrustStore, relative: str) -> None:
    path = model / relative
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = verify_model(model, signed, trust)
    assert not result.ok and result.failure is Failure.FILE_CHANGED
    assert result.reason.startswith(f"file changed: {relative!r}")


def test_added_file(model: Path, signed: Path, trust: TrustStore) -> None:
    (model / "weights" / "extra.py").write_text("import os\n")
    result = verify_model(model, signed, trust)
    assert result.failure is Failure.FILE_UNEXPECTED
    assert "unexpected file" in result.reason and "'weights/extra.py'" in result.reason


def test_removed_file(model: Path, signed: Path, trust: TrustStore) -> None:
    (model / "tokenizer.json").unlink()
    result = verify_model(model, signed, trust)
    assert result.failure is Failure.FILE_MISSING
    assert "file missing" in result.reason and "'tokenizer.json'" in result.reason


def test_renamed_file(model: Path, signed: Path, trust: TrustStore) -> None:
    (model / "tokenizer.json").rename(model / "tokenizer2.json")
    result = verify_model(model, signed, trust)
    assert result.failure is Failure.FILE_RENAMED
    assert "file renamed" in result.reason and "'tokenizer.json' -> 'tokenizer2.json'" in result.reason


def test_signature_of_another_model(model: Path, trust: TrustStore, signer: LocalKeySigner, tmp_path: Path) -> None:
    other = make_model(tmp_path / "other-model")
    sign_directory(other, signer, output=tmp_path / "other.sig")
    result = verify_model(model, tmp_path / "other.sig", trust)
    assert result.failure is Failure.OTHER_MODEL
    assert result.reason.startswith("signature appears to be for another model: only 1 of the 6 files signed for "
                                    "'other-model'")


def test_signature_of_another_model_by_expected_name(model: Path, signed: Path, trust: TrustStore) -> None:
    result = verify_model(model, signed, trust, expected_model_name="org/something-else")
    assert result.failure is Failure.OTHER_MODEL
    assert "expected 'org/something-else'" in result.reason


def test_signature_by_another_key(model: Path, trust: TrustStore, tmp_path: Path) -> None:
    intruder = LocalKeySigner.generate(key_name="intruder", version=1)
    sign_directory(model, intruder, output=tmp_path / "intruder.sig")
    result = verify_model(model, tmp_path / "intruder.sig", trust)
    assert result.failure is Failure.UNKNOWN_KEY
    assert "unknown key" in result.reason and "'intruder:v1'" in result.reason


def test_another_key_claiming_a_trusted_keys_hint_fails_the_signature(
    model: Path, signed: Path, trust: TrustStore, tmp_path: Path
) -> None:
    intruder = LocalKeySigner.generate(key_name="airlock-test", version=1)
    sign_directory(model, intruder, output=tmp_path / "forged.sig")
    forged = _bundle(tmp_path / "forged.sig")
    forged["verificationMaterial"] = _bundle(signed)["verificationMaterial"]  # point at the trusted key
    (tmp_path / "forged.sig").write_text(json.dumps(forged))
    result = verify_model(model, tmp_path / "forged.sig", trust)
    assert result.failure is Failure.BAD_SIGNATURE
    assert result.reason.startswith("bad signature:") and "airlock-test:v1" in result.reason


def test_payload_edited_without_resigning(model: Path, signed: Path, trust: TrustStore) -> None:
    bundle = _bundle(signed)
    statement = _statement(bundle)
    statement["predicate"]["resources"][0]["digest"] = "0" * 64
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    signed.write_text(json.dumps(bundle))
    assert verify_model(model, signed, trust).failure is Failure.BAD_SIGNATURE


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.0])
def test_truncated_bundle(model: Path, signed: Path, trust: TrustStore, keep: float) -> None:
    data = signed.read_bytes()
    signed.write_bytes(data[: int(len(data) * keep)])
    result = verify_model(model, signed, trust)
    assert result.failure is Failure.MALFORMED_BUNDLE
    assert "not valid JSON (truncated?)" in result.reason and str(signed) in result.reason


def test_bundle_missing_a_field_names_it(model: Path, signed: Path, trust: TrustStore) -> None:
    bundle = _bundle(signed)
    del bundle["dsseEnvelope"]["signatures"]
    signed.write_text(json.dumps(bundle))
    result = verify_model(model, signed, trust)
    assert result.failure is Failure.MALFORMED_BUNDLE and "dsseEnvelope.signatures" in result.reason


def test_missing_bundle_file(model: Path, trust: TrustStore, tmp_path: Path) -> None:
    result = verify_model(model, tmp_path / "nope.sig", trust)
    assert result.failure is Failure.MALFORMED_BUNDLE and "cannot read signature" in result.reason


def test_changed_payload_type(model: Path, signed: Path, trust: TrustStore) -> None:
    bundle = _bundle(signed)
    bundle["dsseEnvelope"]["payloadType"] = "application/json"
    signed.write_text(json.dumps(bundle))
    result = verify_model(model, signed, trust)
    assert result.failure is Failure.PAYLOAD_TYPE
    assert "wrong dsseEnvelope.payloadType" in result.reason and "'application/json'" in result.reason


def test_changed_payload_type_even_when_signed_by_a_trusted_key(
    model: Path, signed: Path, trust: TrustStore, signer: LocalKeySigner
) -> None:
    _resign(signed, _statement(_bundle(signed)), signer, payload_type="application/vnd.other+json")
    assert verify_model(model, signed, trust).failure is Failure.PAYLOAD_TYPE


def test_changed_predicate_type_signed_by_a_trusted_key(
    model: Path, signed: Path, trust: TrustStore, signer: LocalKeySigner
) -> None:
    statement = _statement(_bundle(signed))
    statement["predicateType"] = "https://model_signing/Digests/v0.1"
    _resign(signed, statement, signer)
    result = verify_model(model, signed, trust)
    assert result.failure is Failure.PREDICATE_TYPE
    assert "wrong predicateType" in result.reason and "Digests/v0.1" in result.reason


def test_changed_predicate_type_without_resigning(model: Path, signed: Path, trust: TrustStore) -> None:
    bundle = _bundle(signed)
    statement = _statement(bundle)
    statement["predicateType"] = "https://example.com/other/v1"
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    signed.write_text(json.dumps(bundle))
    assert verify_model(model, signed, trust).failure is Failure.BAD_SIGNATURE


def test_changed_statement_type(model: Path, signed: Path, trust: TrustStore, signer: LocalKeySigner) -> None:
    statement = _statement(_bundle(signed))
    statement["_type"] = "https://in-toto.io/Statement/v0.1"
    _resign(signed, statement, signer)
    assert verify_model(model, signed, trust).failure is Failure.STATEMENT_TYPE


def test_changed_media_type(model: Path, signed: Path, trust: TrustStore) -> None:
    bundle = _bundle(signed)
    bundle["mediaType"] = "application/vnd.dev.sigstore.bundle.v0.2+json"
    signed.write_text(json.dumps(bundle))
    assert verify_model(model, signed, trust).failure is Failure.MEDIA_TYPE


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["subject"][0]["digest"].update(sha256="1" * 64), "does not match its resources"),
        (lambda s: s["predicate"]["resources"][0].update(name="../../etc/passwd"), "'..' component"),
        (lambda s: s["subject"].append(s["subject"][0]), "2 subjects"),
        (lambda s: s["predicate"]["serialization"].update(method="shards"), "predicate: field serialization.method"),
    ],
    ids=["inconsistent-root-digest", "path-escape", "two-subjects", "shards"],
)
def test_signed_but_malformed_statement(
    model: Path, signed: Path, trust: TrustStore, signer: LocalKeySigner, edit, message: str
) -> None:
    statement = _statement(_bundle(signed))
    edit(statement)
    _resign(signed, statement, signer)
    result = verify_model(model, signed, trust)
    assert result.failure is Failure.MALFORMED_BUNDLE and message in result.reason


def test_two_signatures_are_refused(model: Path, signed: Path, trust: TrustStore) -> None:
    bundle = _bundle(signed)
    bundle["dsseEnvelope"]["signatures"] *= 2
    signed.write_text(json.dumps(bundle))
    result = verify_model(model, signed, trust)
    assert result.failure is Failure.MALFORMED_BUNDLE and "expected exactly 1" in result.reason


def test_revoked_key_version(model: Path, signed: Path, signer: LocalKeySigner) -> None:
    trust = trust_store_for(signer, revoked={"airlock-test:v1": "key material leaked"})
    result = verify_model(model, signed, trust)
    assert result.failure is Failure.REVOKED_KEY
    assert "airlock-test:v1" in result.reason and "revoked" in result.reason and "key material leaked" in result.reason


def test_revoking_one_version_leaves_the_next_valid(model: Path, signer: LocalKeySigner, tmp_path: Path) -> None:
    v2 = LocalKeySigner.generate(key_name="airlock-test", version=2)
    sign_directory(model, v2, output=tmp_path / "v2.sig")
    trust = trust_store_for(signer, v2, revoked={"airlock-test:v1": "rotated out"})
    assert verify_model(model, tmp_path / "v2.sig", trust).ok


def test_hint_and_keyid_naming_different_keys_is_refused(model: Path, signer: LocalKeySigner,
                                                          signed: Path) -> None:
    other = LocalKeySigner.generate(key_name="airlock-test", version=2)
    bundle = _bundle(signed)
    bundle["dsseEnvelope"]["signatures"][0]["keyid"] = "airlock-test:v2"
    signed.write_text(json.dumps(bundle))
    result = verify_model(signed.parent / "tiny-model", signed, trust_store_for(signer, other))
    assert result.failure is Failure.UNKNOWN_KEY and "key mismatch" in result.reason


def test_every_tampering_case_has_its_own_failure_kind() -> None:
    # One Failure per case listed in the issue; the tests above pin each one.
    cases = {Failure.FILE_CHANGED, Failure.FILE_UNEXPECTED, Failure.FILE_MISSING, Failure.FILE_RENAMED,
             Failure.OTHER_MODEL, Failure.UNKNOWN_KEY, Failure.MALFORMED_BUNDLE, Failure.PAYLOAD_TYPE,
             Failure.PREDICATE_TYPE, Failure.REVOKED_KEY, Failure.BAD_SIGNATURE}
    assert len(cases) == 11


# --------------------------------------------------------------------------- hashing problems fail closed


def test_a_symlink_in_the_model_is_a_failure_not_a_pass(model: Path, signed: Path, trust: TrustStore) -> None:
    (model / "tokenizer.json").unlink()
    os.symlink("config.json", model / "tokenizer.json")
    result = verify_model(model, signed, trust)
    assert not result.ok and result.failure is Failure.UNREADABLE_MODEL
    assert "symlink" in result.reason


def test_a_missing_model_directory_is_a_failure(signed: Path, trust: TrustStore, tmp_path: Path) -> None:
    result = verify_model(tmp_path / "absent", signed, trust)
    assert not result.ok and result.failure is Failure.UNREADABLE_MODEL


def test_hashing_exceptions_are_failures(model: Path, signed: Path, trust: TrustStore, monkeypatch) -> None:
    import airlock.digests

    def explode(*args, **kwargs):
        raise airlock.digests.HashingError("disk on fire")

    monkeypatch.setattr(airlock.digests, "hash_model_dir", explode)
    result = verify_model(model, signed, trust)
    assert not result.ok and "disk on fire" in result.reason


def test_a_file_the_signer_chose_to_ignore_is_still_unexpected(
    model: Path, signer: LocalKeySigner, trust: TrustStore, tmp_path: Path
) -> None:
    sign_directory(model, signer, output=tmp_path / "m.sig", ignore_paths=[*DEFAULT_IGNORE_PATHS, "notes"])
    assert verify_model(model, tmp_path / "m.sig", trust).ok
    (model / "notes").write_text("unsigned")
    result = verify_model(model, tmp_path / "m.sig", trust)
    assert result.failure is Failure.FILE_UNEXPECTED and "'notes'" in result.reason


def test_git_metadata_is_ignored_like_model_signing(model: Path, signed: Path, trust: TrustStore) -> None:
    (model / ".git").mkdir()
    (model / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (model / ".gitattributes").write_text("*.bin filter=lfs\n")
    assert verify_model(model, signed, trust).ok


# --------------------------------------------------------------------------- upstream model_signing (library API)


def test_model_signing_library_verifies_our_bundle(model: Path, signed: Path, signer: LocalKeySigner,
                                                    tmp_path: Path) -> None:
    import model_signing

    (tmp_path / "pub.pem").write_text(signer.public_key_pem)
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=tmp_path / "pub.pem").verify(model, signed)


def test_a_model_signing_bundle_verifies_here(model: Path, tmp_path: Path) -> None:
    import model_signing
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())  # a vendor on another curve
    (tmp_path / "vendor.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    model_signing.signing.Config().use_elliptic_key_signer(private_key=tmp_path / "vendor.key").sign(
        model, tmp_path / "vendor.sig")
    trust = TrustStore.from_public_key_pem(pub, "vendor.pem")
    result = verify_model(model, tmp_path / "vendor.sig", trust)
    assert result.ok, result.reason
    (model / "config.json").write_text("{}")
    assert verify_model(model, tmp_path / "vendor.sig", trust).failure is Failure.FILE_CHANGED


def test_dump_is_stable(signer: LocalKeySigner) -> None:
    result = sign_files([("a", "a" * 64)], "m", signer)
    assert dump_bundle(result.bundle) == result.bundle_bytes


def test_a_bundle_nested_inside_the_model_ignores_itself(model: Path, signer: LocalKeySigner, trust) -> None:
    import model_signing

    (model / "signatures").mkdir()
    _, output = sign_directory(model, signer, output=model / "signatures" / "model.sig")
    assert "signatures/model.sig" in _statement(_bundle(output))["predicate"]["serialization"]["ignore_paths"]
    assert verify_model(model, output, trust).ok
    pub = model.parent / "pub.pem"
    pub.write_text(signer.public_key_pem)
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(model, output)


def test_a_bundle_without_a_hint_verifies_only_against_the_one_key_given(
    model: Path, signed: Path, signer: LocalKeySigner, trust: TrustStore
) -> None:
    bundle = _bundle(signed)
    bundle["verificationMaterial"]["publicKey"] = {}
    bundle["dsseEnvelope"]["signatures"][0]["keyid"] = ""
    signed.write_text(json.dumps(bundle))
    pinned = TrustStore.from_public_key_pem(signer.public_key_pem.encode(), "pub.pem")
    assert verify_model(model, signed, pinned).ok
    # A multi-key store cannot guess: the bundle names no key.
    result = verify_model(model, signed, trust)
    assert result.failure is Failure.UNKNOWN_KEY and "names no key" in result.reason


def test_sign_manifest_signs_the_manifest_stages_digests(model: Path, signer: LocalKeySigner, trust,
                                                          tmp_path: Path) -> None:
    from airlock.manifest import manifest_for_directory
    from airlock.signing import sign_manifest, write_bundle

    manifest = manifest_for_directory(model)
    signed = sign_manifest(manifest, signer, model_name="org/tiny@1")
    assert signed.root_digest == manifest.root_digest and signed.file_count == len(manifest.files)
    write_bundle(signed.bundle_bytes, tmp_path / "from-manifest.sig")
    assert verify_model(model, tmp_path / "from-manifest.sig", trust, expected_model_name="org/tiny@1").ok
