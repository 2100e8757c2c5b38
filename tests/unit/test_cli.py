from __future__ import annotations

import pytest

from airlock.cli import EXIT_ERROR, main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("airlock ")


def test_bad_source_exits_2_with_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", "ftp://x/y"]) == EXIT_ERROR
    assert "unsupported scheme 'ftp'" in capsys.readouterr().err


def test_unreachable_hub_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", "hf://demo/x", "--endpoint", "http://127.0.0.1:9"]) == EXIT_ERROR
    assert "hub unreachable" in capsys.readouterr().err
