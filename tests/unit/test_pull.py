"""``airlock pull`` against a filesystem registry: verified, atomic, read-only, recorded; refused otherwise."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from airlock import pull as pull_module
from airlock.cli import EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, build_parser, main
from airlock.pull import STAGING_PREFIX, PullError, PullRefused, pull, staged_path
from airlock.registry import FilesystemStore, PulledEvent, Registry, RegistryIndexError, Status
from airlock.registry.base import Layout, ModelName
from airlock.registry.index import check_append
from airlock.registry.promotion import PlannedObject
from airlock.signing import LocalKeySigner
from airlock.trust import TrustStore
from airlock.verify import verify_model
from tests.pull_fixtures import MODEL, VERSION, promote_signed, tree_of
from tests.signing_fixtures import trust_store_for

REFERENCE = f"{MODEL}@{VERSION}"


@pytest.fixture(scope="module")
def signer() -> LocalKeySigner:
    return LocalKeySigner.generate(key_name="airlock-model-signing", version=1)


@pytest.fixture()
def registry_root(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture()
def trust(signer: LocalKeySigner) -> TrustStore:
    return trust_store_for(signer)


@pytest.fixture()
def registry(registry_root: Path, signer: LocalKeySigner, trust: TrustStore) -> Registry:
    # The pipeline's side: it signs index checkpoints with the same key as models.
    return Registry(FilesystemStore(registry_root), workers=4, signer=signer, trust=trust)


@pytest.fixture()
def trust_file(tmp_path: Path, trust: TrustStore) -> Path:
    path = tmp_path / "trust.pem"
    trust.write(path)
    return path


@pytest.fixture()
def serving(tmp_path: Path) -> Path:
    """The serving host's model directory parent; a pull lands in ``serving/llm``."""
    path = tmp_path / "serving"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def _host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The serving host: who pulls, its own state directory, and no trust store configured unless a test says."""
    monkeypatch.setenv("AIRLOCK_ACTOR", "ops@serving-1")
    monkeypatch.setenv("AIRLOCK_HOST_STATE", str(tmp_path / "host-state"))
    for name in ("AIRLOCK_TRUST_STORE", "AIRLOCK_TRUST_STORE_SHA256"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("airlock.config.DEFAULT_TRUST_STORE", tmp_path / "etc-airlock-trust.pem")


def _cli(registry_root: Path, *args: str) -> int:
    return main(["pull", "--registry", str(registry_root), *args])


def _assert_untouched(serving: Path) -> None:
    """Nothing landed, and no staging directory was left behind."""
    assert not (serving / "llm").exists()
    assert [p.name for p in serving.iterdir() if p.name.startswith(STAGING_PREFIX)] == []


# --------------------------------------------------------------------------- success


def test_pull_places_exactly_the_verified_version_read_only(registry: Registry, signer: LocalKeySigner,
                                                            trust: TrustStore, tmp_path: Path,
                                                            serving: Path) -> None:
    promoted = promote_signed(registry, tmp_path, signer)
    dest = serving / "llm"
    result = pull(registry, REFERENCE, dest, trust=trust, host="serving-1")

    assert tree_of(dest) == promoted.expected_tree()  # every object, byte for byte, and nothing else
    for path in [dest, *dest.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o555 if path.is_dir() else 0o444), path
    assert os.listdir(serving) == ["llm"]
    assert (result.model, result.version, result.dest, result.status) == (MODEL, VERSION, dest, "approved")
    assert result.root_digest == promoted.manifest.root_digest
    assert result.key_id == signer.key_id and result.warnings == ()
    # The copy is what `airlock verify` and the load-time helpers accept.
    assert verify_model(dest / "files", dest / "model.sig", trust, expected_model_name=REFERENCE).ok


def test_the_pull_is_recorded_without_changing_the_status(registry: Registry, signer: LocalKeySigner,
                                                          trust: TrustStore, tmp_path: Path, serving: Path) -> None:
    promote_signed(registry, tmp_path, signer)
    before = registry.model_state(MODEL)
    pull(registry, REFERENCE, serving / "llm", trust=trust, host="serving-1")

    state = registry.model_state(MODEL)
    (event,) = state.pulls(VERSION)
    assert isinstance(event, PulledEvent)
    assert (event.kind, event.actor, event.host, event.dest) == ("pulled", "ops@serving-1", "serving-1",
                                                                 str(serving / "llm"))
    assert (event.root_digest, event.key_id) == (before.versions[0].root_digest, signer.key_id)
    assert state.versions == before.versions and state.updated_at == before.updated_at
    assert [e.kind for e in state.history] == ["promoted", "pulled"]


def test_cli_pull_with_the_host_trust_store_and_show_lists_pulls(
        registry: Registry, registry_root: Path, signer: LocalKeySigner, trust_file: Path, tmp_path: Path,
        serving: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    promote_signed(registry, tmp_path, signer)
    monkeypatch.setenv("AIRLOCK_TRUST_STORE", str(trust_file))  # the host's configuration, no --trust-store
    assert _cli(registry_root, REFERENCE, "--dest", str(serving / "llm")) == EXIT_OK
    assert f"pulled {REFERENCE} (approved) into {serving / 'llm'}" in capsys.readouterr().out

    assert main(["registry", "show", REFERENCE, "--registry", str(registry_root)]) == EXIT_OK
    text = capsys.readouterr().out
    assert "ops@serving-1" in text and str(serving / "llm") in text
    assert main(["registry", "show", REFERENCE, "--registry", str(registry_root), "--format", "json"]) == EXIT_OK
    (recorded,) = json.loads(capsys.readouterr().out)["pulls"]
    assert (recorded["kind"], recorded["dest"]) == ("pulled", str(serving / "llm"))
    assert main(["registry", "show", MODEL, "--registry", str(registry_root)]) == EXIT_OK
    assert f"pulled {VERSION} by ops@serving-1 to" in capsys.readouterr().out


def test_deprecated_is_pulled_with_a_warning(registry: Registry, registry_root: Path, signer: LocalKeySigner,
                                             trust_file: Path, tmp_path: Path, serving: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    promote_signed(registry, tmp_path, signer)
    registry.deprecate(MODEL, VERSION, reason="superseded by 2", actor="alice")
    assert _cli(registry_root, REFERENCE, "--dest", str(serving / "llm"), "--trust-store", str(trust_file)) == EXIT_OK
    assert "is deprecated: superseded by 2" in capsys.readouterr().err
    assert registry.model_state(MODEL).version(VERSION).status is Status.DEPRECATED


def test_an_empty_dest_directory_is_replaced(registry: Registry, signer: LocalKeySigner, trust: TrustStore,
                                             tmp_path: Path, serving: Path) -> None:
    promoted = promote_signed(registry, tmp_path, signer)
    (serving / "llm").mkdir()
    pull(registry, REFERENCE, serving / "llm", trust=trust)
    assert tree_of(serving / "llm") == promoted.expected_tree()


# --------------------------------------------------------------------------- refusals (exit 1), DEST untouched


def _refused(registry_root: Path, serving: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert _cli(registry_root, REFERENCE, "--dest", str(serving / "llm"), *extra) == EXIT_NEGATIVE
    _assert_untouched(serving)
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_a_tampered_stored_file_is_refused_by_name(registry: Registry, registry_root: Path, signer: LocalKeySigner,
                                                   trust_file: Path, tmp_path: Path, serving: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    promote_signed(registry, tmp_path, signer)
    stored = registry_root / Layout.key(ModelName.parse(MODEL), VERSION, "files/tokenizer.json")
    stored.chmod(0o644)
    data = bytearray(stored.read_bytes())
    data[0] ^= 1
    stored.write_bytes(bytes(data))
    reason = _refused(registry_root, serving, capsys, "--trust-store", str(trust_file))
    assert reason.startswith("refused: files/tokenizer.json: stored object") and "released as" in reason
    assert registry.model_state(MODEL).pulls() == []  # nothing deployed, nothing recorded


def test_stored_bytes_the_signature_does_not_cover_are_refused(registry: Registry, registry_root: Path,
                                                               signer: LocalKeySigner, trust_file: Path,
                                                               tmp_path: Path, serving: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # The plan matches the stored bytes, but they are not what was signed.
    promote_signed(registry, tmp_path, signer, tamper_after_signing="config.json")
    reason = _refused(registry_root, serving, capsys, "--trust-store", str(trust_file))
    assert "model.sig: invalid (file-changed)" in reason and "'config.json'" in reason


def test_a_signature_for_another_subject_is_refused(registry: Registry, registry_root: Path, signer: LocalKeySigner,
                                                    trust_file: Path, tmp_path: Path, serving: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # Signed without the version: could be replayed under any version, so it is not accepted.
    promote_signed(registry, tmp_path, signer, subject=MODEL)
    reason = _refused(registry_root, serving, capsys, "--trust-store", str(trust_file))
    assert "(other-model)" in reason and f"expected '{REFERENCE}'" in reason


def test_revoked_is_refused_with_the_reason(registry: Registry, registry_root: Path, signer: LocalKeySigner,
                                            trust_file: Path, tmp_path: Path, serving: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    promote_signed(registry, tmp_path, signer)
    registry.revoke(MODEL, VERSION, reason="CVE-2026-0001 in the tokenizer", actor="security")
    reason = _refused(registry_root, serving, capsys, "--trust-store", str(trust_file))
    assert reason.startswith(f"refused: {REFERENCE} is revoked: CVE-2026-0001 in the tokenizer (by security")


def test_a_revocation_during_the_pull_is_refused(registry: Registry, signer: LocalKeySigner, trust: TrustStore,
                                                 tmp_path: Path, serving: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    promote_signed(registry, tmp_path, signer)
    verify = pull_module._verify_staged

    def verify_then_revoke(*args, **kwargs):
        key_id = verify(*args, **kwargs)
        registry.revoke(MODEL, VERSION, reason="revoked mid-pull", actor="security")
        return key_id

    monkeypatch.setattr(pull_module, "_verify_staged", verify_then_revoke)
    with pytest.raises(PullRefused, match="was revoked during the pull: revoked mid-pull"):
        pull(registry, REFERENCE, serving / "llm", trust=trust)
    _assert_untouched(serving)
    assert registry.model_state(MODEL).pulls() == []


def test_without_released_it_is_refused(registry: Registry, registry_root: Path, signer: LocalKeySigner,
                                        trust_file: Path, tmp_path: Path, serving: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    promote_signed(registry, tmp_path, signer)
    # What a crash before the commit point leaves: every object, no RELEASED marker.
    (registry_root / Layout.key(ModelName.parse(MODEL), VERSION, Layout.RELEASED)).unlink()
    reason = _refused(registry_root, serving, capsys, "--trust-store", str(trust_file))
    assert reason == f"refused: {REFERENCE} is not released in {registry.url} (no RELEASED marker)"
    assert main(["pull", "--registry", str(registry_root), f"{MODEL}@9", "--dest", str(serving / "llm"),
                 "--trust-store", str(trust_file)]) == EXIT_NEGATIVE


def test_an_unknown_signing_key_is_refused(registry: Registry, registry_root: Path, signer: LocalKeySigner,
                                           trust_file: Path, tmp_path: Path, serving: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    # The index is signed by the trusted key; the model is not.
    promote_signed(registry, tmp_path, LocalKeySigner.generate(key_name="vendor", version=1))
    reason = _refused(registry_root, serving, capsys, "--trust-store", str(trust_file))
    assert "model.sig: invalid (unknown-key)" in reason
    # And a host that does not trust the index key does not believe the index either.
    other = tmp_path / "other-trust.pem"
    trust_store_for(LocalKeySigner.generate(key_name="vendor", version=1)).write(other)
    reason = _refused(registry_root, serving, capsys, "--trust-store", str(other))
    assert "checkpoint signature not trusted: unknown key" in reason


def test_a_revoked_signing_key_is_refused(registry: Registry, registry_root: Path, signer: LocalKeySigner,
                                          tmp_path: Path, serving: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    old = LocalKeySigner.generate(key_name="airlock-model-signing", version=0)
    promote_signed(registry, tmp_path, old)  # the model signed with v0, the index checkpoint with v1
    revoked = tmp_path / "revoked-trust.pem"
    trust_store_for(old, signer, revoked={old.key_id: "key leaked"}).write(revoked)
    reason = _refused(registry_root, serving, capsys, "--trust-store", str(revoked))
    assert "(revoked-key)" in reason and "key leaked" in reason
    # A checkpoint signed by a revoked key is not believed either.
    trust_store_for(old, signer, revoked={signer.key_id: "index key leaked"}).write(revoked)
    reason = _refused(registry_root, serving, capsys, "--trust-store", str(revoked))
    assert "checkpoint signature not trusted" in reason and "index key leaked" in reason


def test_no_trust_store_anywhere_cannot_run_and_says_how_to_configure_one(
        registry: Registry, registry_root: Path, signer: LocalKeySigner, tmp_path: Path, serving: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    promote_signed(registry, tmp_path, signer)
    assert _cli(registry_root, REFERENCE, "--dest", str(serving / "llm")) == EXIT_ERROR
    _assert_untouched(serving)
    message = capsys.readouterr().err
    assert "no trust store configured" in message
    assert "--trust-store" in message and "AIRLOCK_TRUST_STORE" in message and "AIRLOCK_TRUST_STORE_SHA256" in message
    assert registry.model_state(MODEL).pulls() == []


def _publish_in_registry(registry_root: Path, store: TrustStore) -> bytes:
    """What anyone with write access to registry storage can do: put a trust store beside the versions."""
    (registry_root / "trust").mkdir(exist_ok=True)
    store.write(registry_root / Layout.TRUST_STORE)
    return (registry_root / Layout.TRUST_STORE).read_bytes()


def test_a_trust_store_published_in_the_registry_is_not_an_authority(
        registry: Registry, registry_root: Path, tmp_path: Path, serving: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # The attack: a version signed with the attacker's key, and the attacker's key published beside it.
    attacker = LocalKeySigner.generate(key_name="airlock-model-signing", version=7)
    attackers_registry = Registry(registry.store, signer=attacker, trust=trust_store_for(attacker))
    promote_signed(attackers_registry, tmp_path, attacker)
    _publish_in_registry(registry_root, trust_store_for(attacker))
    assert _cli(registry_root, REFERENCE, "--dest", str(serving / "llm")) == EXIT_ERROR
    assert "no trust store configured" in capsys.readouterr().err
    _assert_untouched(serving)


def test_a_pinned_registry_trust_store_is_used(registry: Registry, registry_root: Path, signer: LocalKeySigner,
                                              trust: TrustStore, tmp_path: Path, serving: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    promote_signed(registry, tmp_path, signer)
    published = _publish_in_registry(registry_root, trust)
    monkeypatch.setenv("AIRLOCK_TRUST_STORE_SHA256", hashlib.sha256(published).hexdigest())
    assert _cli(registry_root, REFERENCE, "--dest", str(serving / "llm")) == EXIT_OK
    assert f"pulled {REFERENCE} (approved)" in capsys.readouterr().out


def test_a_registry_trust_store_that_is_not_the_pinned_one_is_refused(
        registry: Registry, registry_root: Path, signer: LocalKeySigner, trust: TrustStore, tmp_path: Path,
        serving: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib

    promote_signed(registry, tmp_path, signer)
    pinned = hashlib.sha256(trust.dumps().encode()).hexdigest()
    # Swapped by someone with storage access: the attacker's key added next to the real one.
    _publish_in_registry(registry_root, trust_store_for(signer, LocalKeySigner.generate(key_name="evil", version=1)))
    assert _cli(registry_root, REFERENCE, "--dest", str(serving / "llm"), "--trust-store-sha256", pinned) == EXIT_ERROR
    assert f"but this host pins sha256:{pinned}" in capsys.readouterr().err
    _assert_untouched(serving)
    # A pin also checks a host file: a trust store that is not the pinned one is never used.
    other = tmp_path / "other.pem"
    trust_store_for(LocalKeySigner.generate(key_name="x", version=1)).write(other)
    assert _cli(registry_root, REFERENCE, "--dest", str(serving / "llm"), "--trust-store", str(other),
                "--trust-store-sha256", pinned) == EXIT_ERROR
    assert "but this host pins" in capsys.readouterr().err


def test_an_aibom_signed_by_an_untrusted_key_is_refused(registry: Registry, registry_root: Path,
                                                        signer: LocalKeySigner, trust_file: Path, tmp_path: Path,
                                                        serving: Path, capsys: pytest.CaptureFixture[str]) -> None:
    promote_signed(registry, tmp_path, signer, aibom_signer=LocalKeySigner.generate(key_name="rogue", version=1))
    reason = _refused(registry_root, serving, capsys, "--trust-store", str(trust_file))
    assert reason.startswith("refused: AI-BOM signature invalid: aibom.sig: unknown key")


def test_an_unsigned_aibom_is_refused(registry: Registry, registry_root: Path, signer: LocalKeySigner,
                                      trust_file: Path, tmp_path: Path, serving: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    promote_signed(registry, tmp_path, signer, sign_bom=False)
    assert "has no signed AI-BOM" in _refused(registry_root, serving, capsys, "--trust-store", str(trust_file))


@pytest.mark.parametrize("key, role", [("files/../../escape", "file"), ("reports/../model.sig", "report"),
                                       ("files/x", "signature"), ("elsewhere/x", "file")])
def test_plan_keys_outside_the_layout_are_refused(tmp_path: Path, key: str, role: str) -> None:
    obj = PlannedObject(key=key, size=0, sha256="0" * 64, role=role)
    with pytest.raises(PullRefused, match="promotion.json lists"):
        staged_path(tmp_path, obj)


# --------------------------------------------------------------------------- could not run (exit 2)


def test_a_non_empty_dest_is_an_error_and_left_alone(registry: Registry, registry_root: Path,
                                                     signer: LocalKeySigner, trust_file: Path, tmp_path: Path,
                                                     serving: Path, capsys: pytest.CaptureFixture[str]) -> None:
    promote_signed(registry, tmp_path, signer)
    (serving / "llm").mkdir()
    (serving / "llm" / "old.bin").write_bytes(b"previous copy")
    assert _cli(registry_root, REFERENCE, "--dest", str(serving / "llm"), "--trust-store",
                str(trust_file)) == EXIT_ERROR
    assert "is not empty" in capsys.readouterr().err
    assert tree_of(serving / "llm") == {"old.bin": b"previous copy"}
    assert registry.model_state(MODEL).pulls() == []
    with pytest.raises(PullError, match="not a directory"):
        pull(registry, REFERENCE, serving / "llm" / "old.bin", trust=trust_store_for(signer))


def test_a_malformed_trust_store_file_cannot_run(registry_root: Path, tmp_path: Path, serving: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a trust store\n")
    assert _cli(registry_root, REFERENCE, "--dest", str(serving / "llm"), "--trust-store", str(bad)) == EXIT_ERROR
    assert "bad.pem line 1" in capsys.readouterr().err


def test_there_is_no_option_that_skips_verification() -> None:
    parser = build_parser()
    pull_parser = parser._subparsers._group_actions[0].choices["pull"]  # type: ignore[union-attr]
    options = {opt for action in pull_parser._actions for opt in action.option_strings}
    assert options == {"-h", "--help", "--dest", "--trust-store", "--trust-store-sha256", "--registry"}


# --------------------------------------------------------------------------- the index rule


def test_the_index_refuses_a_pull_of_a_revoked_or_unknown_version(registry: Registry, signer: LocalKeySigner,
                                                                  tmp_path: Path) -> None:
    promoted = promote_signed(registry, tmp_path, signer)
    registry.revoke(MODEL, VERSION, reason="bad", actor="security")
    events = registry.index.events(ModelName.parse(MODEL))
    event = PulledEvent(seq=2, model=MODEL, version=VERSION, at=events[-1].at, actor="x", host="h", dest="/d",
                        root_digest=promoted.manifest.root_digest, key_id=signer.key_id)
    with pytest.raises(RegistryIndexError, match="revoked"):
        check_append(ModelName.parse(MODEL), events, event)
    with pytest.raises(RegistryIndexError, match="not in the index"):
        check_append(ModelName.parse(MODEL), [], event)
