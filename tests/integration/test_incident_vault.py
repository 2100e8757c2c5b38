"""model_incident with the real OpenBao: dag.test() revokes through the `airlock_vault` connection (no test seam).

tests/conftest.py defines the connection from the stack's AppRole (what `airflow standalone` gets); the
version is promoted with the CLI's signer identity, and every reader verifies with the `airlock keys export`
trust store, as a host does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airlock.cli import EXIT_OK, main
from airlock.pull import PullRefused, pull
from airlock.registry import FilesystemStore, Registry, Status
from airlock.signing import VaultTransitSigner
from airlock.trust import TrustStore
from tests.conftest import require_env
from tests.pull_fixtures import MODEL, promote_signed

REPO = Path(__file__).resolve().parents[2]


def test_model_incident_revokes_with_the_vault_key(airflow_db, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    require_env("AIRLOCK_VAULT_TOKEN")
    require_env("AIRFLOW_CONN_AIRLOCK_VAULT")
    trust_file = tmp_path / "trust.pem"
    assert main(["keys", "export", "--output", str(trust_file)]) == EXIT_OK
    for name, value in {"AIRLOCK_TRUST_STORE": str(trust_file), "AIRLOCK_REGISTRY": str(tmp_path / "registry"),
                        "AIRLOCK_HOST_STATE": str(tmp_path / "host-state")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AIRLOCK_TRUST_STORE_SHA256", raising=False)
    monkeypatch.delenv("AIRLOCK_INCIDENT_NOTIFY", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_AIRLOCK_INCIDENT_WEBHOOK", raising=False)
    trust = TrustStore.read(trust_file)
    signer = VaultTransitSigner.from_env()
    registry = Registry(FilesystemStore(tmp_path / "registry"), signer=signer, trust=trust)
    promote_signed(registry, tmp_path, signer)

    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags" / "model_incident.py")).dags["model_incident"]
    run = dag.test(run_conf={"model": MODEL, "version": "1", "reason": "reported by the vendor",
                             "source": "manual", "evidence": {"ticket": "SEC-42"}})
    assert run.state == "success"

    state = Registry(FilesystemStore(tmp_path / "registry"), trust=trust).model_state(MODEL, verified=True)
    assert state.version("1").status is Status.REVOKED
    assert state.version("1").updated_by == f"airflow:model_incident/{run.run_id}"
    heads = sorted((tmp_path / "registry" / "index" / "acme" / "tiny" / "heads").iterdir())
    keyid = json.loads(heads[-1].read_bytes())["dsseEnvelope"]["signatures"][0]["keyid"]
    assert keyid.startswith("airlock-model-signing:v")
    with pytest.raises(PullRefused, match="reported by the vendor"):
        pull(registry, f"{MODEL}@1", tmp_path / "dest", trust=trust)
    [report] = [p for p in (tmp_path / "registry" / "incidents" / "acme" / "tiny" / "1").iterdir()
                if p.suffix == ".json"]
    assert json.loads(report.read_text())["evidence"] == {"ticket": "SEC-42"}
