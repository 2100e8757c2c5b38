"""The KubernetesExecutor shape under deploy/kubernetes: pod templates and the queue -> template policy.

No cluster needed: the templates are parsed as the executor reads them (YAML -> a v1 Pod whose task container is
named "base"), and the cluster policy is applied to the real model_ingest DAG.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"
GPU_TASKS = {"evaluate", "fingerprint_baseline"}


def _pod(name: str) -> dict:
    pod = yaml.safe_load((K8S / name).read_text())
    assert pod["apiVersion"] == "v1" and pod["kind"] == "Pod"
    return pod


def _base(pod: dict) -> dict:
    (base,) = [c for c in pod["spec"]["containers"] if c["name"] == "base"]
    return base


@pytest.fixture(scope="module")
def policy():
    spec = importlib.util.spec_from_file_location("airlock_k8s_local_settings", K8S / "airflow_local_settings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_template_requests_exactly_one_nvidia_gpu_and_gpu_nodes() -> None:
    pod = _pod("pod-template-gpu.yaml")
    resources = _base(pod)["resources"]
    # An extended resource cannot be overcommitted: request and limit must both be there and equal.
    assert int(resources["limits"]["nvidia.com/gpu"]) == 1
    assert int(resources["requests"]["nvidia.com/gpu"]) == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["spec"]["tolerations"])
    assert pod["spec"]["nodeSelector"]


def test_the_default_template_asks_for_no_gpu() -> None:
    resources = _base(_pod("pod-template.yaml"))["resources"]
    assert not any("gpu" in key for part in resources.values() for key in part)


@pytest.mark.parametrize("name", ["pod-template.yaml", "pod-template-gpu.yaml"])
def test_task_pods_share_what_compose_workers_share(name: str) -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    worker = compose["services"]["airflow-worker-gpu" if "gpu" in name else "airflow-worker"]
    env = worker["environment"]
    mounts = {m["name"]: m for m in _base(_pod(name))["volumeMounts"]}
    assert mounts["quarantine"]["mountPath"] == env["AIRLOCK_QUARANTINE_ROOT"]
    assert mounts["trust"]["mountPath"] == str(Path(env["AIRLOCK_TRUST_STORE"]).parent)
    assert mounts["trust"]["readOnly"] is True
    volumes = {v["name"]: v for v in _pod(name)["spec"]["volumes"]}
    assert "persistentVolumeClaim" in volumes["quarantine"]  # every task of a run sees the same quarantine
    assert _pod(name)["spec"]["restartPolicy"] == "Never"


def test_the_policy_sends_gpu_queue_tasks_to_the_gpu_template(policy, monkeypatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags" / "model_ingest.py")).dags["model_ingest"]
    for task in dag.tasks:
        policy.task_policy(task)
    templated = {t.task_id: (t.executor_config or {}).get("pod_template_file") for t in dag.tasks}
    assert {task_id for task_id, template in templated.items() if template} == GPU_TASKS
    for task_id in GPU_TASKS:
        assert Path(templated[task_id]).name == "pod-template-gpu.yaml"
    # Every template the policy can name ships in deploy/kubernetes.
    assert all((K8S / name).is_file() for name in policy.QUEUE_POD_TEMPLATES.values())


def test_every_queue_the_dags_use_has_a_pod_template(policy) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    queues = {t.queue for dag in bag.dags.values() for t in dag.tasks}
    assert queues - {"default"} <= set(policy.QUEUE_POD_TEMPLATES), queues


def test_an_explicit_template_in_the_dag_wins(policy) -> None:
    class Task:
        queue = "gpu"
        executor_config = {"pod_template_file": "/custom.yaml"}

    task = Task()
    policy.task_policy(task)
    assert task.executor_config == {"pod_template_file": "/custom.yaml"}
