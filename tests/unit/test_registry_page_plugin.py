"""The Airflow glue of the Registry page: the plugin loads, mounts where Airflow allows, and only admins revoke."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def plugin():
    from airflow import plugins_manager

    plugins, errors = plugins_manager._get_plugins()
    assert not [path for path in errors if "airlock_registry" in path], errors
    found = [p for p in plugins if p.name == "airlock_registry"]
    assert found, f"plugin not loaded from the plugins folder: {[p.name for p in plugins]}"
    return found[0]


def test_fastapi_app_is_mounted_outside_airflows_reserved_prefixes(plugin) -> None:
    from fastapi import FastAPI

    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES

    [entry] = plugin.fastapi_apps
    assert isinstance(entry["app"], FastAPI)
    assert entry["url_prefix"] == "/registry"
    assert not any(entry["url_prefix"].startswith(prefix) for prefix in RESERVED_URL_PREFIXES)


def test_nav_entry_is_a_valid_external_view_framing_the_app(plugin) -> None:
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    [view] = plugin.external_views
    parsed = ExternalViewResponse.model_validate(view)
    assert (parsed.name, parsed.destination, parsed.url_route) == ("Model Registry", "nav", "registry")
    # Relative to the UI's <base href>, so the frame loads the mounted app under any base URL.
    assert parsed.href == "registry/" and not parsed.href.startswith("/")


@pytest.mark.parametrize(("role", "allowed"), [("admin", True), ("ADMIN", True), ("op", False), ("user", False),
                                               ("viewer", False), (None, False)])
def test_only_the_admin_role_may_revoke_with_the_simple_auth_manager(plugin, role: str | None,
                                                                     allowed: bool) -> None:
    import importlib

    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    module = importlib.import_module(type(plugin).__module__)
    user = SimpleAuthManagerUser(username="someone", role=role)
    assert module.may_revoke(SimpleAuthManager(), user) is allowed


def test_other_auth_managers_decide_through_the_custom_view_permission(plugin) -> None:
    import importlib

    module = importlib.import_module(type(plugin).__module__)
    asked = []

    class Manager:
        def is_authorized_custom_view(self, *, method: str, resource_name: str, user: object) -> bool:
            asked.append((method, resource_name))
            return user == "granted"

    assert module.may_revoke(Manager(), "granted") is True
    assert module.may_revoke(Manager(), "someone") is False
    assert asked == [("DELETE", "Model Registry")] * 2
