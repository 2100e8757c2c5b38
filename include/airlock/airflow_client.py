"""A small client for Airflow's REST API (v2), used by `make demo` and the end-to-end tests.

It speaks HTTP only, so it works against any Airflow 3 deployment, not just
the local one, and never imports Airflow itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import requests

from airlock.errors import AirlockError, ConfigurationError

TERMINAL_RUN_STATES = {"success", "failed"}


class AirflowApiError(AirlockError):
    """The API answered with an error or not at all; the message names the call.

    ``status`` is the HTTP status, or None when no answer came (connection refused, timeout).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class AirflowClient:
    base_url: str
    username: str
    password: str = field(repr=False)
    timeout: float = 30.0
    _token: str | None = field(default=None, init=False, repr=False)

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            self._token = self._login()
        return {"Authorization": f"Bearer {self._token}"}

    def _login(self) -> str:
        url = f"{self.base_url}/auth/token"
        try:
            response = requests.post(
                url, json={"username": self.username, "password": self.password}, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise AirflowApiError(f"POST {url}: {type(exc).__name__}") from None
        if response.status_code not in (200, 201):
            raise AirflowApiError(f"POST {url}: HTTP {response.status_code} (check the username and password)",
                                  response.status_code)
        return response.json()["access_token"]

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}/api/v2{path}"
        try:
            response = requests.request(method, url, headers=self._headers(), timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise AirflowApiError(f"{method} {url}: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise AirflowApiError(f"{method} {url}: HTTP {response.status_code}: {response.text[:500]}",
                                  response.status_code)
        return response.json() if response.content else None

    def import_errors(self) -> list[dict]:
        return self.request("GET", "/importErrors")["import_errors"]

    def wait_for_dag(self, dag_id: str, timeout: float = 180.0) -> dict:
        """Wait until the DAG processor has parsed ``dag_id``; fail early on an import error."""
        deadline = time.monotonic() + timeout
        while True:
            errors = self.import_errors()
            if errors:
                details = "; ".join(f"{e['filename']}: {e['stack_trace'].strip().splitlines()[-1]}" for e in errors)
                raise AirflowApiError(f"DAG import errors: {details}")
            try:
                return self.request("GET", f"/dags/{dag_id}")
            except AirflowApiError:
                if time.monotonic() > deadline:
                    raise AirflowApiError(f"DAG {dag_id} did not appear within {timeout:.0f}s") from None
                time.sleep(2)

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict, note: str | None = None) -> str:
        body: dict[str, Any] = {"logical_date": None, "conf": conf}
        if note:
            body["note"] = note
        return self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900.0, poll: float = 2.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            run = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            if time.monotonic() > deadline:
                raise AirflowApiError(f"run {run_id} of {dag_id} still {run['state']} after {timeout:.0f}s")
            time.sleep(poll)

    def wait_for_task(
        self, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float = 600.0, poll: float = 2.0
    ) -> dict:
        """Wait until ``task_id`` is in one of ``states``; fail early if the run ends first."""
        deadline = time.monotonic() + timeout
        while True:
            ti = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
            if ti["state"] in states:
                return ti
            run = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in TERMINAL_RUN_STATES:
                raise AirflowApiError(f"run {run_id} ended {run['state']} before {task_id} reached {sorted(states)}")
            if time.monotonic() > deadline:
                raise AirflowApiError(f"{task_id} of {run_id} still {ti['state']} after {timeout:.0f}s")
            time.sleep(poll)

    def respond(
        self, dag_id: str, run_id: str, task_id: str, options: list[str], map_index: int = -1, settle_s: float = 5.0
    ) -> dict:
        """Answer a human-in-the-loop task (what a user does under Required Actions in the UI).

        ``settle_s``: an answer that arrives within milliseconds of the task pausing can
        race the executor's report of that pause (Airflow 3.3 then marks the task failed);
        no human is that fast, so a scripted answer waits a moment first.
        """
        time.sleep(settle_s)
        return self.request(
            "PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails",
            json={"chosen_options": options, "params_input": {}},
        )

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> Any:
        """Mark a task instance (what an operator does with "Mark as success/failed" in the UI)."""
        return self.request("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}",
                            json={"new_state": state})

    def clear_tasks(self, dag_id: str, run_id: str, task_ids: list[str], downstream: bool = False) -> Any:
        """Clear task instances so they run again (the UI's "Clear")."""
        return self.request("POST", f"/dags/{dag_id}/clearTaskInstances", json={
            "dry_run": False, "dag_run_id": run_id, "task_ids": task_ids, "include_downstream": downstream,
            "only_failed": False, "reset_dag_runs": True,
        })

    def set_xcom(self, dag_id: str, run_id: str, task_id: str, value: Any, key: str = "return_value") -> Any:
        """Create (or replace) a task's XCom entry, as an operator can through the API."""
        base = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries"
        try:
            return self.request("POST", base, json={"key": key, "value": value})
        except AirflowApiError as exc:
            if exc.status != 409:  # already there: replace it
                raise
            return self.request("PATCH", f"{base}/{key}", json={"value": value})

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        """The task's log of one try as text (structured log lines joined)."""
        body = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                            params={"full_content": "true"})
        content = body.get("content") if isinstance(body, dict) else body
        if not isinstance(content, list):
            return str(content)
        lines = []
        for line in content:
            if not isinstance(line, dict):
                lines.append(str(line))
                continue
            lines.append(str(line.get("event", "")))
            # A task's exception is logged as structured detail: keep its type and message.
            for error in line.get("error_detail") or ():
                if isinstance(error, dict):
                    lines.append(f"{error.get('exc_type', '')}: {error.get('exc_value', '')}")
        return "\n".join(lines)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        entry = self.request(
            "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"deserialize": "true"},
        )
        return entry["value"]


def client_from_connection(conn_id: str) -> AirflowClient | None:
    """A client for the Airflow API the ``conn_id`` connection (type http: host, port, schema, login, password)
    names; None when that connection is not configured."""
    from airlock.connections import _airflow_connection

    conn = _airflow_connection(conn_id)
    if conn is None or not conn.host:
        return None
    if not conn.login or not conn.password:
        raise ConfigurationError(f"connection {conn_id} needs the login and password of an Airflow API user")
    port = f":{conn.port}" if conn.port else ""
    return AirflowClient(f"{conn.schema or 'https'}://{conn.host}{port}", conn.login, conn.password)
