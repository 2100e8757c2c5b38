"""The integrity watch on the filesystem registry: what it plans, what it finds, what it records.

Versions are really signed (a local key; its trust store stands for the host's)
and promoted through the registry API; tampering is done the way an attacker
with write access to the storage or the serving host would.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from airlock.cli import main
from airlock.errors import ConfigurationError
from airlock.pull import pull
from airlock.registry import FilesystemStore, HostState, Registry
from airlock.signing import LocalKeySigner, sign_manifest
from airlock.manifest import manifest_for_directory
from airlock.watch import (
    PathMappings,
    WatchTarget,
    check_deployed_copy,
    check_target,
    check_version,
    load_path_mappings,
    load_reference,
    plan_watch,
    record_result,
)
from airlock.watch.run import run_outcome
from tests.pull_fixtures import MODEL, promote_signed
from tests.registry_contract import SIGNER, TRUST

HOST = "serving-test"


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    return Registry(FilesystemStore(tmp_path / "registry"), signer=SIGNER, trust=TRUST)


@pytest.fixture()
def version_dir(registry: Registry, tmp_path: Path) -> Path:
    promote_signed(registry, tmp_path, SIGNER)
    return tmp_path / "registry" / "models" / "acme" / "tiny" / "1"


def _writable(path: Path) -> Path:
    """Undo the registry's/pull's read-only modes, as an attacker with the storage's permissions would."""
    for parent in [path, *path.parents][:6]:
        if parent.exists():
            os.chmod(parent, 0o755 if parent.is_dir() else 0o644)
    return path


def _remove_tree(root: Path) -> None:
    for directory, _dirs, _files in os.walk(root):
        os.chmod(directory, 0o755)
    shutil.rmtree(root)


def _pull(registry: Registry, tmp_path: Path, name: str = "copy", version: str = "1", host: str = HOST) -> Path:
    dest = tmp_path / name
    pull(registry, f"{MODEL}@{version}", dest, trust=TRUST, host=host, actor="ops@serving-test")
    return dest


# --------------------------------------------------------------------------- registry copies


def test_an_intact_version_passes_and_says_what_it_cost(registry: Registry, version_dir: Path) -> None:
    result = check_version(registry, f"{MODEL}@1", TRUST)
    assert result.verdict == "pass", result.summary()
    stored = sum(p.stat().st_size for p in version_dir.rglob("*") if p.is_file()
                 and p.name not in ("RELEASED", "promotion.json"))
    assert result.bytes_hashed == stored
    assert result.objects_checked == len(registry.released(MODEL, "1").plan.objects)
    assert result.key_id == SIGNER.key_id and result.root_digest == registry.released(MODEL, "1").root_digest
    assert "bytes re-hashed in" in result.summary()


def test_modified_added_and_removed_files_are_each_reported(registry: Registry, version_dir: Path) -> None:
    _writable(version_dir / "files" / "config.json").write_text('{"model_type": "evil"}')
    (version_dir / "files" / "backdoor.py").write_text("import os")
    _writable(version_dir / "files" / "tokenizer.json").unlink()
    (version_dir / "reports" / "extra.json").write_text("{}")
    result = check_version(registry, f"{MODEL}@1", TRUST)
    assert result.verdict == "fail"
    assert result.modified == ["files/config.json"]
    assert result.added == ["files/backdoor.py", "reports/extra.json"]
    assert result.removed == ["files/tokenizer.json"]
    assert "modified files/config.json" in result.summary() and "removed files/tokenizer.json" in result.summary()


def test_the_summary_is_one_line_whatever_the_file_names(registry: Registry, version_dir: Path) -> None:
    (version_dir / "files" / "x\nINFO all intact\x1b[2J").write_text("forged log line")
    result = check_version(registry, f"{MODEL}@1", TRUST)
    assert result.added == ["files/x\nINFO all intact\x1b[2J"]  # the record keeps the name as it is
    summary = result.summary()
    assert "\n" not in summary and "\x1b" not in summary and "files/x\\x0aINFO all intact\\x1b[2J" in summary


def test_a_file_swapped_for_a_symlink_is_a_modification_and_never_followed(registry: Registry,
                                                                          version_dir: Path,
                                                                          tmp_path: Path) -> None:
    original = version_dir / "files" / "config.json"
    copy = tmp_path / "same-bytes.json"
    shutil.copy(original, copy)
    _writable(original).unlink()
    original.symlink_to(copy)  # same bytes behind it: only a check that refuses to follow sees the swap
    result = check_version(registry, f"{MODEL}@1", TRUST)
    assert result.verdict == "fail"
    assert result.modified == ["files/config.json"]
    assert "files/config.json: is a symlink" in result.problems


def test_a_bundle_from_an_untrusted_key_is_reported_and_the_files_still_judged(registry: Registry,
                                                                              version_dir: Path) -> None:
    forger = LocalKeySigner.generate(key_name="airlock-model-signing", version=9)
    forged = sign_manifest(manifest_for_directory(version_dir / "files"), forger, model_name=f"{MODEL}@1")
    _writable(version_dir / "model.sig").write_bytes(forged.bundle_bytes)
    _writable(version_dir / "files" / "config.json").write_text("{}")
    result = check_version(registry, f"{MODEL}@1", TRUST)
    assert result.verdict == "fail"
    assert any(p.startswith("model.sig: unknown key") for p in result.problems), result.problems
    # The signed plan still says what each file must be: the change is found without the signature.
    assert result.modified == ["files/config.json", "model.sig"]


def test_a_valid_signature_of_another_version_is_not_a_reference(registry: Registry, version_dir: Path,
                                                                tmp_path: Path) -> None:
    promote_signed(registry, tmp_path, SIGNER, version="2")
    other = tmp_path / "registry" / "models" / "acme" / "tiny" / "2"
    # Version 2's files and its (valid, trusted) bundle copied over version 1: consistent with each other.
    for name in ("files", "model.sig"):
        target = version_dir / name
        _writable(target)
        if target.is_dir():
            for path in sorted(target.rglob("*"), reverse=True):
                _writable(path).unlink() if path.is_file() else path.rmdir()
            target.rmdir()
            shutil.copytree(other / name, target)
        else:
            target.unlink()
            shutil.copy(other / name, target)
    result = check_version(registry, f"{MODEL}@1", TRUST)
    assert result.verdict == "fail"
    assert any("signed for 'acme/tiny@2', expected 'acme/tiny@1'" in p for p in result.problems), result.problems
    assert "model.sig" in result.modified


def test_an_edited_index_event_is_a_deviation(registry: Registry, version_dir: Path, tmp_path: Path) -> None:
    event = tmp_path / "registry" / "index" / "acme" / "tiny" / "events" / "0000000000.json"
    data = json.loads(event.read_text())
    data["approver"] = "mallory"
    _writable(event).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    result = check_version(registry, f"{MODEL}@1", TRUST)
    assert result.verdict == "fail"
    assert any(p.startswith("index: ") for p in result.problems), result.problems


def test_a_removed_released_marker_is_a_deviation(registry: Registry, version_dir: Path) -> None:
    _writable(version_dir / "RELEASED").unlink()
    result = check_version(registry, f"{MODEL}@1", TRUST)
    assert result.verdict == "fail"
    assert any(p.startswith("RELEASED: missing") for p in result.problems)


def test_without_a_trust_store_the_check_cannot_run(registry: Registry, version_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AIRLOCK_TRUST_STORE", raising=False)
    monkeypatch.delenv("AIRLOCK_TRUST_STORE_SHA256", raising=False)
    monkeypatch.setattr("airlock.config.DEFAULT_TRUST_STORE", tmp_path / "absent.pem")
    result = check_version(registry, f"{MODEL}@1")
    assert result.verdict == "error" and "no trust store configured" in result.problems[0]


def test_a_trust_store_without_the_signing_key_never_passes(registry: Registry, version_dir: Path) -> None:
    from tests.signing_fixtures import trust_store_for

    other = trust_store_for(LocalKeySigner.generate(key_name="other", version=1))
    result = check_version(registry, f"{MODEL}@1", other)
    assert result.verdict == "fail"


# --------------------------------------------------------------------------- deployed copies


def test_a_pulled_copy_is_checked_against_the_registrys_signature(registry: Registry, version_dir: Path,
                                                                 tmp_path: Path) -> None:
    dest = _pull(registry, tmp_path)
    reference = load_reference(registry, MODEL, "1", TRUST)
    intact = check_deployed_copy(dest, reference)
    assert intact.verdict == "pass", intact.summary()
    _writable(dest / "files" / "config.json").write_text("{}")
    (dest / "files" / "extra.bin").write_bytes(b"x")
    _writable(dest / "aibom.cdx.json").unlink()
    tampered = check_deployed_copy(dest, reference)
    assert (tampered.verdict, tampered.modified, tampered.added, tampered.removed) == (
        "fail", ["files/config.json"], ["files/extra.bin"], ["aibom.cdx.json"])


def test_a_copy_with_a_consistent_forged_signature_still_deviates(registry: Registry, version_dir: Path,
                                                                 tmp_path: Path) -> None:
    """The copy's own model.sig is never the reference: files and bundle swapped together are still caught."""
    dest = _pull(registry, tmp_path)
    _writable(dest / "files" / "config.json").write_text('{"evil": true}')
    forger = LocalKeySigner.generate(key_name="airlock-model-signing", version=1)
    forged = sign_manifest(manifest_for_directory(dest / "files"), forger, model_name=f"{MODEL}@1")
    _writable(dest / "model.sig").write_bytes(forged.bundle_bytes)
    result = check_deployed_copy(dest, load_reference(registry, MODEL, "1", TRUST))
    assert result.verdict == "fail" and result.modified == ["files/config.json", "model.sig"]


def test_a_copy_that_is_gone_could_not_be_checked(registry: Registry, version_dir: Path, tmp_path: Path) -> None:
    result = check_deployed_copy(tmp_path / "nowhere", load_reference(registry, MODEL, "1", TRUST))
    assert result.verdict == "error" and "is not there" in result.problems[0]


def test_a_copy_is_not_judged_against_a_registry_reference_that_does_not_verify(registry: Registry,
                                                                               version_dir: Path,
                                                                               tmp_path: Path) -> None:
    dest = _pull(registry, tmp_path)
    _writable(version_dir / "model.sig").write_text("{}")
    result = check_deployed_copy(dest, load_reference(registry, MODEL, "1", TRUST))
    assert result.verdict == "error" and "does not verify" in result.problems[0]


def test_a_deployed_target_must_be_a_recorded_pull(registry: Registry, version_dir: Path, tmp_path: Path) -> None:
    dest = _pull(registry, tmp_path)
    recorded = WatchTarget(kind="deployed", model=MODEL, version="1", host=HOST, dest=str(dest), path=str(dest))
    assert check_target(registry, recorded, TRUST, host=HOST).verdict == "pass"
    # Targets travel through XCom: one edited to point elsewhere is refused, not checked.
    elsewhere = recorded.model_copy(update={"dest": "/etc", "path": "/etc"})
    refused = check_target(registry, elsewhere, TRUST, host=HOST)
    assert refused.verdict == "error" and "no pull of acme/tiny@1 to serving-test:/etc" in refused.problems[0]
    moved = recorded.model_copy(update={"path": str(tmp_path)})
    assert check_target(registry, moved, TRUST, host=HOST).verdict == "error"


# --------------------------------------------------------------------------- the plan


def test_the_plan_has_every_released_version_and_the_copies_it_can_reach(registry: Registry, version_dir: Path,
                                                                         tmp_path: Path) -> None:
    promote_signed(registry, tmp_path, SIGNER, version="2")
    promote_signed(registry, tmp_path, SIGNER, version="3")
    registry.revoke(MODEL, "3", reason="bad", actor="test")
    here = _pull(registry, tmp_path, "here")
    mounted = _pull(registry, tmp_path, "remote-copy", version="2", host="serving-2")
    _pull(registry, tmp_path, "unreachable", host="serving-3")
    mappings = PathMappings.parse(json.dumps({"serving-2": {str(tmp_path): str(tmp_path / "mnt")}}))
    targets = plan_watch(registry, host=HOST, mappings=mappings)
    assert [(t.kind, t.version, t.label, t.path) for t in targets] == [
        ("registry", "1", "registry", None),
        ("registry", "2", "registry", None),
        ("deployed", "1", f"{HOST}:{here}", str(here)),
        ("deployed", "2", f"serving-2:{mounted}", str(tmp_path / "mnt" / "remote-copy")),
    ]


def test_only_the_newest_pull_into_a_path_is_planned(registry: Registry, version_dir: Path,
                                                     tmp_path: Path) -> None:
    promote_signed(registry, tmp_path, SIGNER, version="2")
    dest = _pull(registry, tmp_path, "serving")
    _remove_tree(dest)
    _pull(registry, tmp_path, "serving", version="2")
    deployed = [t for t in plan_watch(registry, host=HOST, mappings=PathMappings()) if t.kind == "deployed"]
    assert [(t.version, t.path) for t in deployed] == [("2", str(dest))]


def test_path_mappings_match_whole_components_and_the_longest_prefix() -> None:
    mappings = PathMappings.parse(json.dumps({"a": "/mnt/a", "b": {"/srv/models": "/mnt/b", "/srv": "/mnt/b-root"}}))
    assert mappings.local_path("a", "/srv/m/x") == Path("/mnt/a/srv/m/x")
    assert mappings.local_path("b", "/srv/models/x") == Path("/mnt/b/x")
    assert mappings.local_path("b", "/srv/models2/x") == Path("/mnt/b-root/models2/x")
    assert mappings.local_path("c", "/srv/models/x") is None


@pytest.mark.parametrize("raw", ['["a"]', '{"a": "relative"}', '{"a": {"srv": "/mnt"}}', '{"a": "/mnt/../etc"}',
                                 '{" a": "/mnt"}', "{not json"])
def test_bad_path_mappings_are_refused_naming_the_setting(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="AIRLOCK_WATCH_PATHS"):
        load_path_mappings({"AIRLOCK_WATCH_PATHS": raw})


def test_path_mappings_from_a_file(tmp_path: Path) -> None:
    file = tmp_path / "watch-paths.json"
    file.write_text('{"h": "/mnt/h"}')
    assert load_path_mappings({"AIRLOCK_WATCH_PATHS": str(file)}).local_path("h", "/x") == Path("/mnt/h/x")
    assert load_path_mappings({}).hosts == {}


# --------------------------------------------------------------------------- recording and the run's outcome


def test_checks_are_recorded_and_a_run_opens_incidents_for_deviations_only(registry: Registry, version_dir: Path,
                                                                           tmp_path: Path) -> None:
    promote_signed(registry, tmp_path, SIGNER, version="2")
    record_result(registry, check_version(registry, f"{MODEL}@1", TRUST), actor="watch", run_id="run-1")
    _writable(version_dir.parent / "2" / "files" / "config.json").write_text("{}")
    record_result(registry, check_version(registry, f"{MODEL}@2", TRUST), actor="watch", run_id="run-1")
    record_result(registry, check_version(registry, f"{MODEL}@2", TRUST), actor="watch", run_id="run-0")
    checks = registry.model_state(MODEL).checks(check="integrity")
    assert [(c.version, c.verdict, c.target, c.run_id) for c in checks] == [
        ("1", "pass", "registry", "run-1"), ("2", "fail", "registry", "run-1"), ("2", "fail", "registry", "run-0")]
    outcome = run_outcome(registry, "run-1", TRUST)
    assert outcome.verdicts == {"pass": 1, "fail": 1}
    [conf] = outcome.incidents
    assert (conf["model"], conf["version"], conf["source"]) == (MODEL, "2", "integrity_watch")
    assert "modified files/config.json" in conf["reason"]
    assert [c["seq"] for c in conf["evidence"]["checks"]] == [checks[1].seq]


def test_a_run_opens_incidents_when_an_index_no_longer_verifies(registry: Registry, version_dir: Path,
                                                                tmp_path: Path) -> None:
    checkpoint = next((tmp_path / "registry" / "index" / "acme" / "tiny" / "heads").iterdir())
    _writable(checkpoint).unlink()
    [conf] = run_outcome(registry, "run-1", TRUST).incidents
    assert conf["version"] == "1" and "does not verify" in conf["reason"]


def test_a_rolled_back_index_is_a_deviation_for_a_host_that_saw_more(registry: Registry, version_dir: Path,
                                                                     tmp_path: Path) -> None:
    watcher = Registry(registry.store, trust=TRUST, host_state=HostState(tmp_path / "host-state"))
    assert check_version(watcher, f"{MODEL}@1", TRUST).verdict == "pass"
    registry.deprecate(MODEL, "1", reason="superseded", actor="test")
    assert check_version(watcher, f"{MODEL}@1", TRUST).verdict == "pass"  # the newer checkpoint is remembered
    index = tmp_path / "registry" / "index" / "acme" / "tiny"
    for newest in (index / "events" / "0000000001.json", index / "heads" / "0000000001.json"):
        _writable(newest).unlink()
    rolled_back = check_version(watcher, f"{MODEL}@1", TRUST)
    assert rolled_back.verdict == "fail" and any("rolled back" in p for p in rolled_back.problems)


# --------------------------------------------------------------------------- airlock watch


@pytest.fixture()
def cli_env(registry: Registry, version_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    trust_file = tmp_path / "trust.pem"
    trust_file.write_text(TRUST.dumps())
    monkeypatch.setenv("AIRLOCK_TRUST_STORE", str(trust_file))
    monkeypatch.setenv("AIRLOCK_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("AIRLOCK_ACTOR", "cron@serving")
    monkeypatch.setenv("AIRLOCK_HOST_STATE", str(tmp_path / "host-state"))
    monkeypatch.setattr("airlock.pull.default_host", lambda: HOST)
    return trust_file


def test_airlock_watch_checks_this_hosts_copies_and_reports_back(registry: Registry, cli_env: Path,
                                                                tmp_path: Path, capsys) -> None:
    dest = _pull(registry, tmp_path)
    _pull(registry, tmp_path, "other-host", host="serving-9")
    assert main(["watch"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("intact") and str(dest) in out and "other-host" not in out
    _writable(dest / "files" / "config.json").write_text("{}")
    assert main(["watch", "--dest", str(dest), "--format", "json"]) == 1
    [copy] = json.loads(capsys.readouterr().out)["copies"]
    assert (copy["verdict"], copy["modified"]) == ("fail", ["files/config.json"])
    checks = registry.model_state(MODEL).checks(check="integrity")
    assert [(c.verdict, c.target, c.actor) for c in checks] == [
        ("pass", f"{HOST}:{dest}", "cron@serving"), ("fail", f"{HOST}:{dest}", "cron@serving")]
    assert main(["registry", "show", MODEL]) == 0  # the history lists check records
    assert f"checked 1 by cron@serving: integrity fail on {HOST}:{dest}" in capsys.readouterr().out


def test_airlock_watch_refuses_a_path_nobody_pulled_and_flags_revoked_copies(registry: Registry, cli_env: Path,
                                                                            tmp_path: Path, capsys) -> None:
    assert main(["watch", "--dest", str(tmp_path / "never-pulled")]) == 2
    assert "no pull to serving-test:" in capsys.readouterr().err
    dest = _pull(registry, tmp_path)
    registry.revoke(MODEL, "1", reason="CVE-2099-1", actor="secops")
    assert main(["watch", "--dest", str(dest)]) == 1
    assert "REVOKED   acme/tiny@1" in capsys.readouterr().out


def test_airlock_watch_without_a_trust_store_cannot_run(registry: Registry, cli_env: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _pull(registry, tmp_path)
    monkeypatch.setenv("AIRLOCK_TRUST_STORE", str(tmp_path / "absent.pem"))
    assert main(["watch"]) == 2
    assert "cannot read trust store" in capsys.readouterr().err
