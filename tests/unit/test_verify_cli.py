"""`airlock verify`: exit 0 valid, 1 invalid, the reason on the last line; no switch skips any check."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from airlock.cli import EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, build_parser, main
from airlock.signing import LocalKeySigner, sign_directory
from tests.signing_fixtures import make_model, trust_store_for


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    signer = LocalKeySigner.generate(key_name="airlock-model-signing", version=3)
    model = make_model(tmp_path / "m")
    sign_directory(model, signer, output=tmp_path / "model.sig")
    trust_store_for(signer).write(tmp_path / "trust.pem")
    (tmp_path / "pub.pem").write_text(signer.public_key_pem)
    return model, tmp_path / "model.sig", tmp_path / "trust.pem", tmp_path / "pub.pem"


def _last_line(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_valid_with_trust_store_and_with_public_key(setup, capsys) -> None:
    model, sig, trust, pub = setup
    assert main(["verify", str(model), "--signature", str(sig), "--trust-store", str(trust)]) == EXIT_OK
    assert _last_line(capsys).startswith("valid: 6 files of 'm'")
    assert main(["verify", str(model), "--signature", str(sig), "--public-key", str(pub)]) == EXIT_OK
    assert "signed by" in _last_line(capsys)


def test_invalid_exits_1_with_the_file_on_the_last_line(setup, capsys) -> None:
    model, sig, trust, _ = setup
    (model / "tokenizer.json").write_bytes(b"tampered")
    assert main(["verify", str(model), "--signature", str(sig), "--trust-store", str(trust)]) == EXIT_NEGATIVE
    assert _last_line(capsys).startswith("invalid (file-changed): file changed: 'tokenizer.json'")


def test_wrong_public_key_is_invalid(setup, tmp_path: Path, capsys) -> None:
    model, sig, _, _ = setup
    (tmp_path / "other.pem").write_text(LocalKeySigner.generate().public_key_pem)
    assert main(["verify", str(model), "--signature", str(sig), "--public-key", str(tmp_path / "other.pem")]) == 1
    assert _last_line(capsys).startswith("invalid (unknown-key): unknown key: hint sha256:")


def test_unusable_trust_store_is_an_error(setup, tmp_path: Path, capsys) -> None:
    model, sig, _, _ = setup
    (tmp_path / "bad.pem").write_text("garbage\n")
    assert main(["verify", str(model), "--signature", str(sig), "--trust-store", str(tmp_path / "bad.pem")]) == \
        EXIT_ERROR
    assert "unexpected line 'garbage'" in capsys.readouterr().err


def test_one_key_source_is_required(setup) -> None:
    model, sig, trust, pub = setup
    with pytest.raises(SystemExit):
        main(["verify", str(model), "--signature", str(sig)])
    with pytest.raises(SystemExit):
        main(["verify", str(model), "--signature", str(sig), "--trust-store", str(trust), "--public-key", str(pub)])


SKIP_WORDS = ("skip", "insecure", "no-verify", "unsafe", "force", "allow-unsigned", "ignore")


def _all_options(parser: argparse.ArgumentParser) -> list[str]:
    options = [o for action in parser._actions for o in action.option_strings]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options += _all_options(sub)
    return options


def _verb(name: str) -> argparse.ArgumentParser:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[name]


@pytest.mark.parametrize("verb", ["verify", "sign", "keys"])
def test_no_command_line_switch_relaxes_verification(verb: str) -> None:
    options = _all_options(_verb(verb))
    assert not [o for o in options if any(word in o for word in SKIP_WORDS)]


@pytest.mark.parametrize("variable", ["AIRLOCK_SKIP_VERIFY", "AIRLOCK_VERIFY", "AIRLOCK_INSECURE",
                                      "AIRLOCK_ALLOW_UNSIGNED", "AIRLOCK_DEV_MODE"])
def test_production_mode_cannot_be_talked_out_of_verifying(setup, monkeypatch, capsys, variable: str) -> None:
    model, sig, trust, _ = setup
    monkeypatch.setenv("AIRLOCK_ENV", "production")
    monkeypatch.setenv(variable, "0" if variable == "AIRLOCK_VERIFY" else "1")
    (model / "config.json").write_text("{}")
    assert main(["verify", str(model), "--signature", str(sig), "--trust-store", str(trust)]) == EXIT_NEGATIVE
    assert "file changed: 'config.json'" in _last_line(capsys)


def test_the_library_reads_no_environment_switch() -> None:
    # Verification code must not consult the environment at all: nothing there can change a verdict.
    import inspect

    import airlock.bundle
    import airlock.load
    import airlock.trust
    import airlock.verify

    for module in (airlock.verify, airlock.load, airlock.trust, airlock.bundle):
        source = inspect.getsource(module)
        assert "environ" not in source and "getenv" not in source, module.__name__


def test_result_is_json_ready(setup) -> None:
    import json

    from airlock.trust import TrustStore
    from airlock.verify import verify_model

    model, sig, trust, _ = setup
    (model / "config.json").write_text("{}")
    data = verify_model(model, sig, TrustStore.read(trust)).to_json_dict()
    assert json.loads(json.dumps(data))["failure"] == "file-changed" and data["ok"] is False
