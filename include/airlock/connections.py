"""Where stages find their collaborators: an Airflow connection inside a task, the environment elsewhere.

Airflow is imported lazily so the library stays usable (and testable) without
it. Secrets read here are returned to the caller and never logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from airlock.config import load_settings
from airlock.redact import redact_url

HUB_CONN_ID = "airlock_hub"
S3_CONN_ID = "airlock_s3"

log = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False)
class HubAccess:
    """The hub's real endpoint (it may carry credentials: only clients see it) and token."""

    endpoint: str
    token: str | None = field(default=None, repr=False)
    origin: str = "environment"

    def __repr__(self) -> str:
        return f"HubAccess(endpoint={redact_url(self.endpoint)!r}, origin={self.origin!r})"


@dataclass(frozen=True, repr=False)
class S3Access:
    """How to reach the S3-compatible store of vendor drops. Credentials stay out of ``repr``.

    ``None`` credentials mean boto3's own chain (environment, instance role, ...).
    """

    endpoint: str | None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    origin: str = "environment"

    def __repr__(self) -> str:
        endpoint = redact_url(self.endpoint) if self.endpoint else None
        return f"S3Access(endpoint={endpoint!r}, region={self.region!r}, origin={self.origin!r})"

    @property
    def where(self) -> str:
        """The endpoint for messages: redacted, or "AWS" for the default endpoints."""
        return redact_url(self.endpoint) if self.endpoint else "AWS"

    def client(self, max_pool_connections: int = 16):
        """A boto3 S3 client with bounded timeouts and standard retries (exponential backoff with jitter)."""
        import boto3
        from botocore.config import Config

        config = Config(
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=max_pool_connections,
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token,
            config=config,
        )


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


def s3_access(conn_id: str = S3_CONN_ID) -> S3Access:
    """S3 endpoint and credentials: Airflow connection ``conn_id`` (type aws) first, then the environment.

    The connection is read directly (login/password and ``endpoint_url``/``region_name``
    in its extra) rather than through the amazon provider's hook, which would pull
    the provider in and may try role assumption we do not want for a vendor drop.
    """
    conn = _airflow_connection(conn_id)
    if conn is not None:
        extra = conn.extra_dejson or {}
        return S3Access(
            endpoint=extra.get("endpoint_url") or None,
            region=extra.get("region_name") or None,
            access_key_id=conn.login or None,
            secret_access_key=conn.password or None,
            session_token=extra.get("aws_session_token") or None,
            origin=f"connection {conn_id}",
        )
    return s3_access_from_env()


def s3_access_from_env() -> S3Access:
    """S3 from AIRLOCK_S3_ENDPOINT; credentials come from boto3's chain (AWS_* variables etc.)."""
    import os

    settings = load_settings()
    return S3Access(endpoint=settings.s3_endpoint, region=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
