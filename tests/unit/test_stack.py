"""scripts/stack.py: clear port errors, loopback only, PID files that cannot kill a stranger."""

from __future__ import annotations

import json
import os
import socket
import stat

import pytest


@pytest.fixture()
def busy_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_a_busy_port_names_the_port_and_the_variable_that_moves_it(stack, busy_port, monkeypatch) -> None:
    monkeypatch.setenv("AIRLOCK_VAULT_ADDR", f"http://127.0.0.1:{busy_port}")
    with pytest.raises(stack.StackError) as error:
        stack.ensure_port_free(stack.VAULT)
    assert f"port {busy_port}" in str(error.value)
    assert "AIRLOCK_VAULT_ADDR" in str(error.value)


def test_only_loopback_addresses_are_started(stack, monkeypatch) -> None:
    monkeypatch.setenv("AIRLOCK_HUB_ENDPOINT", "http://0.0.0.0:8090")
    with pytest.raises(stack.StackError, match="loopback"):
        stack.ensure_port_free(stack.HUB)


def test_a_pid_file_naming_someone_elses_process_is_ignored(stack, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AIRLOCK_STATE_DIR", str(tmp_path))
    state = stack.State.from_env()
    state.pidfile("vault").write_text(json.dumps({"pid": os.getpid(), "marker": "bao server -dev", "argv": []}))
    assert stack.running_pid(state, "vault") is None
    assert not state.pidfile("vault").exists()
    assert stack.stop_process_tree(state, "vault") is False  # and nothing was signalled: we are still here


def test_env_file_is_private_and_shell_quoted(stack, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AIRLOCK_STATE_DIR", str(tmp_path))
    state = stack.State.from_env()
    stack.write_env_file(state, {"AIRLOCK_VAULT_TOKEN": "tok'en; rm -rf /", "AIRLOCK_HUB_ENDPOINT": "http://x"})
    mode = stat.S_IMODE(state.env_file.stat().st_mode)
    assert mode == 0o600
    text = state.env_file.read_text()
    assert "export AIRLOCK_VAULT_TOKEN='tok'\"'\"'en; rm -rf /'" in text


def test_airflow_processes_get_no_vault_token(stack, tmp_path, monkeypatch) -> None:
    """Tasks authenticate through the `airlock_vault` connection only, never with the CLI's signer token."""
    monkeypatch.setenv("AIRLOCK_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("AIRLOCK_VAULT_TOKEN", "hvs.exported-by-a-developer")
    monkeypatch.setenv("VAULT_TOKEN", "hvs.another")
    state = stack.State.from_env()
    env = stack.airflow_env(state, {"AIRLOCK_VAULT_TOKEN": "hvs.from-env-file", "AIRLOCK_VAULT_ADDR": "http://x"})
    assert not {name for name in env if name in stack.VAULT_TOKEN_VARIABLES}
    assert "hvs." not in json.dumps(env)
    assert env["AIRLOCK_VAULT_ADDR"] == "http://x"


def test_airflow_runs_without_log_servers(stack) -> None:
    """Airflow's log servers bind every interface; the local stack does not start them at all."""
    argv = stack.airflow_components_argv("/venv/bin/airflow")
    script = argv[2]
    assert argv[-1] == stack.AIRFLOW_MARKER
    for component in ("api-server", "scheduler --skip-serve-logs", "dag-processor", "triggerer --skip-serve-logs"):
        assert f"/venv/bin/airflow {component} &" in script
    assert "standalone" not in script
