"""Where stages find their collaborators: an Airflow connection inside a task, the environment elsewhere.

Airflow is imported lazily so the library stays usable (and testable) without
it. Secrets read here are returned to the caller and never logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from airlock.config import load_settings

HUB_CONN_ID = "airlock_hub"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubAccess:
    endpoint: str
    token: str | None = field(default=None, repr=False)
    origin: str = "environment"


def _airflow_connection(conn_id: str):
    """The Airflow connection ``conn_id``, or None outside Airflow or when it is not defined."""
    try:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:
        return None
    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
    except RuntimeError:
        # Outside a task and without a metadata DB (e.g. the CLI next to an Airflow install).
        return None


def hub_access(conn_id: str = HUB_CONN_ID) -> HubAccess:
    """The Hugging Face endpoint and token: Airflow connection ``conn_id`` first, then the environment."""
    conn = _airflow_connection(conn_id)
    if conn is not None and conn.host:
        scheme = conn.schema or "https"
        port = f":{conn.port}" if conn.port else ""
        endpoint = f"{scheme}://{conn.host}{port}"
        return HubAccess(endpoint=endpoint, token=conn.password or None, origin=f"connection {conn_id}")
    return hub_access_from_env()


def hub_access_from_env() -> HubAccess:
    """The hub from AIRLOCK_HUB_ENDPOINT and AIRLOCK_HUB_TOKEN/HF_TOKEN (the CLI's path: no Airflow import)."""
    settings = load_settings()
    return HubAccess(endpoint=settings.hub_endpoint, token=settings.hub_token)
