"""Airflow cluster policy for the KubernetesExecutor: a task's Celery queue picks its pod template.

The DAGs say where a task must run the way the CeleryExecutor understands it (``queue="gpu"``). The
KubernetesExecutor has no queues: it starts one pod per task from ``[kubernetes_executor] pod_template_file``,
unless the task's ``executor_config`` names another template. This policy keeps the queue the one source of
truth: every task on a queue listed in QUEUE_POD_TEMPLATES gets that queue's template, so the same DAG files run
on Celery and on Kubernetes unchanged.

Install: put this file on the scheduler's and DAG processor's PYTHONPATH (e.g. /opt/airflow/config/) and the
templates where AIRLOCK_POD_TEMPLATE_DIR points (default /opt/airflow/pod_templates).
"""

from __future__ import annotations

import os
from pathlib import Path

POD_TEMPLATE_DIR = Path(os.environ.get("AIRLOCK_POD_TEMPLATE_DIR", "/opt/airflow/pod_templates"))
# queue -> pod template file name (in POD_TEMPLATE_DIR). Queues not listed use the executor's default template.
QUEUE_POD_TEMPLATES = {"gpu": "pod-template-gpu.yaml"}


def pod_template_for(queue: str | None) -> Path | None:
    name = QUEUE_POD_TEMPLATES.get(queue or "")
    return POD_TEMPLATE_DIR / name if name else None


def task_policy(task) -> None:
    """Airflow calls this for every task when a DAG is parsed."""
    template = pod_template_for(getattr(task, "queue", None))
    if template is None:
        return
    config = dict(task.executor_config or {})
    # A DAG author's explicit template wins: the policy only fills in what the queue implies.
    config.setdefault("pod_template_file", str(template))
    task.executor_config = config
