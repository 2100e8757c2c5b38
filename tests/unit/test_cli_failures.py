"""Every failure is one line with the right exit code (ARCHITECTURE.md: 0 ok, 1 negative verdict, 2 could not run).

These run the installed ``airlock`` console script in a subprocess, as an
operator would, so what is checked is the whole path: argument parsing, the
verb, the top-level error mapping, the terminal's encoding and the exit status.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from airlock.cli import EXIT_ERROR, EXIT_OK, main

AIRLOCK = Path(sys.executable).with_name("airlock")
SECRET = "sekrit-TOKEN-42"
DEAD_S3 = f"http://ak:{SECRET}@127.0.0.1:1"  # nobody listens on port 1


def airlock(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRLOCK_", "AWS_", "PYTHONIO", "LC_", "LANG"))}
    base.update({
        # No developer credentials, config files or instance metadata: the test decides what boto3 sees.
        "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    })
    base.update(env or {})
    # bytes, not text: the output under test may be in any encoding, and must be judged as it is.
    done = subprocess.run([str(AIRLOCK), *args], env=base, cwd=cwd, capture_output=True, timeout=timeout)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode("utf-8", "backslashreplace"),
                                       done.stderr.decode("utf-8", "backslashreplace"))


def assert_one_line_failure(result: subprocess.CompletedProcess[str], *, contains: str = "") -> str:
    assert result.returncode == EXIT_ERROR, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert contains in lines[0], lines[0]
    assert SECRET not in result.stderr + result.stdout
    return lines[0]


# --------------------------------------------------------------------------- unreachable services


@pytest.mark.parametrize("args", [
    ("registry", "list"),
    ("registry", "show", "demo/tiny"),
    ("registry", "show", "demo/tiny@1"),
    ("registry", "check"),
    ("registry", "revoke", "demo/tiny@1", "--reason", "x", "--by", "me"),
], ids=lambda args: " ".join(args[:2]))
def test_an_unreachable_s3_registry_is_exit_2_with_one_redacted_line(args: tuple[str, ...]) -> None:
    result = airlock(*args, env={"AIRLOCK_REGISTRY": "s3://airlock-registry/prefix", "AIRLOCK_S3_ENDPOINT": DEAD_S3})
    line = assert_one_line_failure(result, contains="127.0.0.1:1")
    assert "***@127.0.0.1:1" in line


def test_pull_from_an_unreachable_s3_registry_is_an_error_not_a_refusal(tmp_path: Path) -> None:
    from airlock.signing import LocalKeySigner
    from tests.signing_fixtures import trust_store_for

    trust = tmp_path / "trust.pem"
    trust_store_for(LocalKeySigner.generate()).write(trust)
    result = airlock("pull", "demo/tiny@1", "--dest", str(tmp_path / "dest"), "--trust-store", str(trust),
                     env={"AIRLOCK_REGISTRY": "s3://airlock-registry/prefix", "AIRLOCK_S3_ENDPOINT": DEAD_S3})
    assert_one_line_failure(result, contains="127.0.0.1:1")
    assert not (tmp_path / "dest").exists()


def test_missing_s3_credentials_are_exit_2_with_one_line() -> None:
    result = airlock("registry", "list", env={
        "AIRLOCK_REGISTRY": "s3://airlock-registry/prefix", "AIRLOCK_S3_ENDPOINT": "http://127.0.0.1:1",
        "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    assert_one_line_failure(result, contains="credentials")


# --------------------------------------------------------------------------- options refused at parse time


@pytest.mark.parametrize(("args", "option"), [
    (("hash", "--workers", "-3"), "--workers"),
    (("hash", "--workers", "0"), "--workers"),
    (("hash", "--workers", "many"), "--workers"),
    (("scan", "--time-budget", "nan"), "--time-budget"),
    (("scan", "--time-budget", "inf"), "--time-budget"),
    (("scan", "--time-budget", "-1"), "--time-budget"),
    (("scan", "--time-budget", "0"), "--time-budget"),
    (("keys", "revoke", "--trust-store", "t.pem", "--version", "-1", "--reason", "r"), "--version"),
])
def test_invalid_options_are_refused_at_parse_time(args: tuple[str, ...], option: str, tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    verb_args = [*args[:1], str(tmp_path / "model"), *args[1:]] if args[0] in ("hash", "scan") else list(args)
    result = airlock(*verb_args)
    assert_one_line_failure(result, contains=option)
    assert result.stdout == ""  # refused before anything ran


def test_hashing_refuses_a_nonpositive_worker_count_in_the_library_too(tmp_path: Path) -> None:
    from airlock.errors import ManifestError
    from airlock.manifest import manifest_for_directory

    (tmp_path / "a").write_bytes(b"x")
    with pytest.raises(ManifestError, match="at least one worker"):
        manifest_for_directory(tmp_path, workers=0)


# --------------------------------------------------------------------------- untrusted names, strict terminals


@pytest.fixture()
def hostile_names(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_bytes(b"{}")
    # Not UTF-8, and a terminal escape (clear screen + set title) in a name.
    for name, data in ((b"\xff-weights.bin", b"\x00" * 8), (b"evil\x1b[2J\x1b]0;pwned\x07.txt", b"hello")):
        with open(os.path.join(os.fsencode(model), name), "wb") as out:
            out.write(data)
    (model / "modèle.txt").write_text("x")
    return model


@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "ascii:strict"}, {"LC_ALL": "C", "PYTHONUTF8": "0"}],
                         ids=["ascii-strict", "C-locale"])
@pytest.mark.parametrize("verb", ["hash", "scan"])
def test_undecodable_and_control_names_print_escaped_and_keep_the_exit_code(
        verb: str, env: dict[str, str], hostile_names: Path) -> None:
    result = airlock(verb, str(hostile_names), env=env)
    assert result.returncode == EXIT_OK, result.stderr
    assert "Traceback" not in result.stderr
    assert "\\xff-weights.bin" in result.stdout
    assert "evil\\x1b[2J\\x1b]0;pwned\\x07.txt" in result.stdout
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout


def test_json_output_survives_a_strict_terminal(hostile_names: Path) -> None:
    import json

    result = airlock("hash", str(hostile_names), "--format", "json", env={"PYTHONIOENCODING": "ascii:strict"})
    assert result.returncode == EXIT_OK, result.stderr
    paths = [f["path"] for f in json.loads(result.stdout)["files"]]
    assert "\udcff-weights.bin" in paths  # JSON keeps the exact name (escaped \udcff), nothing lost


def test_an_undecodable_path_argument_is_named_escaped(tmp_path: Path) -> None:
    missing = os.fsdecode(os.fsencode(tmp_path) + b"/\xfe\x1b[31mred")
    result = airlock("hash", missing, env={"PYTHONIOENCODING": "ascii:strict"})
    line = assert_one_line_failure(result, contains="\\xfe\\x1b[31mred")
    assert "\x1b" not in line


def test_verify_with_a_missing_bundle_or_directory_could_not_run_rather_than_invalid(tmp_path: Path) -> None:
    from airlock.signing import LocalKeySigner

    key = tmp_path / "key.pem"
    key.write_text(LocalKeySigner.generate().public_key_pem)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    missing = airlock("verify", str(model), "--signature", str(tmp_path / "nope.sig"), "--public-key", str(key))
    assert_one_line_failure(missing, contains="--signature")
    assert missing.stdout == ""  # no "invalid ..." verdict line
    no_model = airlock("verify", str(tmp_path / "gone"), "--signature", str(key), "--public-key", str(key))
    assert_one_line_failure(no_model, contains="PATH")
    # A bundle that is there but is not a bundle stays a verdict: invalid, exit 1.
    garbage = tmp_path / "model.sig"
    garbage.write_text("not json")
    invalid = airlock("verify", str(model), "--signature", str(garbage), "--public-key", str(key))
    assert invalid.returncode == 1 and invalid.stdout.strip().splitlines()[-1].startswith("invalid")


# --------------------------------------------------------------------------- registry locations that are not registries


def test_a_registry_location_that_is_not_a_registry_is_exit_2(tmp_path: Path) -> None:
    plain = tmp_path / "plain-file"
    plain.write_text("not a registry")
    for verb in ("list", "check"):
        assert_one_line_failure(airlock("registry", verb, "--registry", str(plain)), contains="not a directory")
        assert_one_line_failure(airlock("registry", verb, "--registry", str(tmp_path / "missing")),
                                contains="does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    listed = airlock("registry", "list", "--registry", str(empty))
    assert listed.returncode == EXIT_OK and "no versions" in listed.stdout


def test_registry_names_from_storage_print_escaped() -> None:
    from airlock.commands import registry as registry_command

    row = type("Row", (), {})()
    row.model, row.version, row.risk_tier, row.owner, row.approver = "demo/tiny", "1", "medium", "ev\x1b[2Jil", "x"
    row.status = type("S", (), {"value": "approved"})()
    row.promoted_at = row.updated_at = None
    row.reason = "line1\nline2"
    cells = registry_command._version_row(row)
    assert "ev\\x1b[2Jil" in cells and "line1\\x0aline2" in cells
    assert not any("\x1b" in cell or "\n" in cell for cell in cells)


# --------------------------------------------------------------------------- the top-level mapping


def test_any_exception_in_a_verb_is_exit_2_never_1(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from airlock.commands import scan as scan_command

    def boom(_args):
        raise RuntimeError("scanner fell over\nwith a second line")

    monkeypatch.setattr(scan_command, "run", boom)
    assert main(["scan", "/tmp"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected RuntimeError: scanner fell over\\x0awith a second line" in err


def test_botocore_errors_become_one_redacted_line(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from botocore.exceptions import EndpointConnectionError

    from airlock.commands import registry as registry_command

    def unreachable(_args):
        raise EndpointConnectionError(endpoint_url=f"{DEAD_S3}/bucket?list-type=2&X-Amz-Signature={SECRET}")

    monkeypatch.setattr(registry_command, "run_list", unreachable)
    assert main(["registry", "list"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err == "airlock registry: cannot reach the S3 endpoint http://***@127.0.0.1:1/bucket " \
                  "(EndpointConnectionError)\n"


def test_os_errors_name_the_file(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from airlock.commands import hash as hash_command

    def denied(_args):
        raise PermissionError(13, "Permission denied", "/models/x/\udcff\x1b.bin")

    monkeypatch.setattr(hash_command, "run", denied)
    assert main(["hash", "/models/x"]) == EXIT_ERROR
    assert capsys.readouterr().err == "airlock hash: /models/x/\\xff\\x1b.bin: Permission denied\n"
