"""Airflow plugin: the "Model Registry" page (FastAPI app at /registry, a nav entry that frames it in the UI).

The page itself is :mod:`airlock.ui` (plain Python, tested without Airflow). This file only binds it to
Airflow: who is signed in (Airflow's own ``get_user`` dependency: the UI's ``_token`` session cookie or a
bearer token), what they may do (the auth manager), where the registry is (``AIRLOCK_REGISTRY``, S3
through the ``airlock_s3`` connection), and the signer for revocations (Vault Transit through the
``airlock_vault`` connection). Everything Airflow is imported inside the functions: every Airflow component
imports this file, and only the API server serves the page.

Who may revoke: with the simple auth manager (local stack), users whose role is ``admin`` -- that manager lets
every role open every custom view, so its custom-view answer cannot tell admins apart. With any other auth
manager, the users it allows ``DELETE`` on the custom view "Model Registry" (FAB: ``can_delete`` on
"Model Registry"). Viewing needs ``GET`` on that view.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import Request

from airlock.ui.app import RESOURCE_NAME, Principal, RegistryAppConfig, create_app

URL_PREFIX = "/registry"


async def _authenticate(request: Request) -> Principal | None:
    from fastapi import HTTPException

    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    credentials = await bearer_scheme(request)
    try:
        user = await get_user(request, None, credentials)
    except HTTPException as exc:
        if exc.status_code in (401, 403):  # no session, expired or invalid token: not signed in
            return None
        raise
    manager = get_auth_manager()
    by_bearer = credentials is not None and credentials.scheme.lower() == "bearer"
    may_view = bool(manager.is_authorized_custom_view(method="GET", resource_name=RESOURCE_NAME, user=user))
    return Principal(name=user.get_name(), may_view=may_view, may_revoke=may_view and may_revoke(manager, user),
                     session=None if by_bearer else request.cookies.get(COOKIE_NAME_JWT_TOKEN))


def may_revoke(manager: Any, user: Any) -> bool:
    """Whether ``user`` may revoke registry versions (see the module docstring); unknown means no."""
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    if isinstance(manager, SimpleAuthManager):
        return str(getattr(user, "role", None) or "").strip().upper() == "ADMIN"
    return bool(manager.is_authorized_custom_view(method="DELETE", resource_name=RESOURCE_NAME, user=user))


def _login_url(next_path: str) -> str:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().get_url_login(next_url=next_path)


def _open_registry(*, signing: bool = False):
    from airlock.connections import s3_access
    from airlock.ingest import open_configured_registry

    if not signing:
        # Trust is looked up by the page when it verifies (the host trust store); a missing one is shown there.
        return open_configured_registry(lambda: s3_access().client())
    from airlock.signing import VaultTransitSigner
    from airlock.trust import host_trust_store

    return open_configured_registry(lambda: s3_access().client(),
                                    signer=VaultTransitSigner.from_airflow_connection(), trust=host_trust_store())


def _csrf_secret() -> bytes:
    from airflow.configuration import conf

    return (conf.get("api", "secret_key", fallback="") or "").encode()


def _airflow_base() -> str:
    from urllib.parse import urlsplit

    from airflow.configuration import conf

    path = urlsplit(conf.get("api", "base_url", fallback="") or "/").path or "/"
    return path if path.endswith("/") else path + "/"


def _extra_origins() -> set[str]:
    from airflow.configuration import conf

    from airlock.ui.security import origin_of

    origin = origin_of(conf.get("api", "base_url", fallback="") or "")
    return {origin} if origin else set()


registry_app = create_app(RegistryAppConfig(
    authenticate=_authenticate,
    login_url=_login_url,
    open_registry=_open_registry,
    open_signing_registry=lambda: _open_registry(signing=True),
    csrf_secret=_csrf_secret,
    airflow_base=_airflow_base,
    extra_origins=_extra_origins,
))


class AirlockRegistryPlugin(AirflowPlugin):
    name = "airlock_registry"
    fastapi_apps = [{"name": "airlock-registry", "app": registry_app, "url_prefix": URL_PREFIX}]
    # Relative hrefs: the UI resolves them against its base URL (<base href>), so they work under a prefix too.
    external_views = [{
        "name": RESOURCE_NAME,
        "href": "registry/",
        "icon": "registry/static/icon.svg",
        "url_route": "registry",
        "destination": "nav",  # no category: its own entry in the navigation bar
    }]
