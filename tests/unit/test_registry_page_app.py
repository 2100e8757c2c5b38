"""The Registry page's routes (FastAPI TestClient, authentication injected): login redirect, admins-only revoke,
CSRF and same-origin checks for cookie sessions, downloads, security headers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from airlock.registry import FilesystemStore, Registry
from airlock.signing import LocalKeySigner
from airlock.ui.app import Principal, RegistryAppConfig, create_app
from airlock.ui.security import csrf_token, csrf_valid, origin_of, same_origin, ui_actor
from tests.registry_page_fixtures import promote_version
from tests.signing_fixtures import trust_store_for

MODEL = "demo/tiny-gpt2"
SIGNER = LocalKeySigner.generate(key_name="airlock-model-signing", version=1)
TRUST = trust_store_for(SIGNER)
SECRET = b"test-secret"
ORIGIN = "http://testserver"
VERSION_PAGE = "/models/demo/tiny-gpt2/versions/1"
USERS = {"admin": True, "operator": False}  # name -> may revoke


async def _authenticate(request: Request) -> Principal | None:
    """Stands for Airflow's get_user: a ``session`` cookie names the user; a bearer token too, without CSRF."""
    bearer = request.headers.get("authorization", "")
    if bearer.startswith("Bearer ") and bearer[7:] in USERS:
        return Principal(bearer[7:], True, USERS[bearer[7:]], session=None)
    cookie = request.cookies.get("_token")
    if cookie and cookie.split(":")[0] in USERS:
        name = cookie.split(":")[0]
        return Principal(name, True, USERS[name], session=cookie)
    if cookie == "viewer-without-access":
        return Principal("nobody", False, False, session=cookie)
    return None


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    registry = Registry(FilesystemStore(tmp_path / "registry"), signer=SIGNER, trust=TRUST)
    promote_version(registry, tmp_path, SIGNER, model=MODEL, version="1")
    return registry


@pytest.fixture()
def client(registry: Registry) -> TestClient:
    reader = Registry(registry.store, trust=TRUST)
    app = create_app(RegistryAppConfig(
        authenticate=_authenticate, login_url=lambda next_path: f"/auth/login?next={next_path}",
        open_registry=lambda: reader, open_signing_registry=lambda: registry, csrf_secret=lambda: SECRET,
    ))
    return TestClient(app, base_url=ORIGIN, follow_redirects=False)


def _login(client: TestClient, user: str) -> str:
    session = f"{user}:session-1"
    client.cookies.set("_token", session)
    return session


def _form_token(client: TestClient) -> str:
    page = client.get(VERSION_PAGE, headers={"accept": "text/html"})
    assert page.status_code == 200
    found = re.search(r'name="csrf_token" value="([0-9a-f]{64})"', page.text)
    assert found, "the admin's page carries the revoke form"
    return found.group(1)


def test_anonymous_browser_is_sent_to_login_and_api_gets_401(client: TestClient) -> None:
    page = client.get("/?q=tiny", headers={"accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/auth/login?next=/?q=tiny"
    assert client.get("/api/models").status_code == 401
    assert client.post(f"{VERSION_PAGE}/revoke", data={"reason": "x"}).status_code == 401
    assert client.get(f"{VERSION_PAGE}/download", params={"key": "x"}).status_code == 401


def test_a_user_without_view_access_is_refused(client: TestClient) -> None:
    client.cookies.set("_token", "viewer-without-access")
    assert client.get("/", headers={"accept": "text/html"}).status_code == 403
    assert client.get("/api/models").status_code == 403


def test_page_lists_the_model_with_security_headers(client: TestClient) -> None:
    _login(client, "operator")
    page = client.get("/", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert 'data-model="demo/tiny-gpt2"' in page.text and "approved" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert 'href="/static/registry.css"' in page.text
    assert client.get("/static/registry.css").headers["content-type"].startswith("text/css")
    data = client.get("/api/models").json()
    [version] = data["models"][0]["versions"]
    assert (version["status"], version["signing_key"]) == ("approved", "airlock-model-signing:v1")
    assert version["ingest_run_id"] == "manual__2026-05-01T00:00:00+00:00"


def test_links_follow_the_mount_point(registry: Registry) -> None:
    from fastapi import FastAPI

    reader = Registry(registry.store, trust=TRUST)
    parent = FastAPI()
    parent.mount("/registry", create_app(RegistryAppConfig(
        authenticate=_authenticate, login_url=lambda next_path: f"/auth/login?next={next_path}",
        open_registry=lambda: reader, open_signing_registry=lambda: registry, csrf_secret=lambda: SECRET)))
    client = TestClient(parent, base_url=ORIGIN, follow_redirects=False)
    assert client.get("/registry/", headers={"accept": "text/html"}).headers["location"] == (
        "/auth/login?next=/registry/")
    _login(client, "admin")
    page = client.get("/registry/", headers={"accept": "text/html"}).text
    assert 'href="/registry/static/registry.css"' in page
    assert 'href="/registry/models/demo/tiny-gpt2/versions/1"' in page
    version = client.get("/registry/models/demo/tiny-gpt2/versions/1", headers={"accept": "text/html"}).text
    assert 'action="/registry/models/demo/tiny-gpt2/versions/1/revoke"' in version


def test_non_admin_gets_403_on_revoke_with_cookie_or_bearer(client: TestClient, registry: Registry) -> None:
    session = _login(client, "operator")
    refused = client.post(f"{VERSION_PAGE}/revoke", headers={"origin": ORIGIN},
                          data={"reason": "x", "csrf_token": csrf_token(SECRET, session)})
    assert refused.status_code == 403
    client.cookies.clear()
    refused = client.post(f"{VERSION_PAGE}/revoke", json={"reason": "x"},
                          headers={"authorization": "Bearer operator"})
    assert refused.status_code == 403 and "administrators" in refused.json()["detail"]
    assert registry.model_state(MODEL).version("1").status.value == "approved"
    assert "<form class=\"revoke\"" not in client.get(VERSION_PAGE, headers={
        "accept": "text/html", "authorization": "Bearer operator"}).text


def test_admin_cookie_post_needs_the_form_token(client: TestClient, registry: Registry) -> None:
    _login(client, "admin")
    missing = client.post(f"{VERSION_PAGE}/revoke", data={"reason": "x"}, headers={"origin": ORIGIN})
    assert missing.status_code == 403 and "token" in missing.json()["detail"]
    other_session = client.post(f"{VERSION_PAGE}/revoke", headers={"origin": ORIGIN},
                                data={"reason": "x", "csrf_token": csrf_token(SECRET, "admin:another-session")})
    assert other_session.status_code == 403
    assert registry.model_state(MODEL).version("1").status.value == "approved"


def test_admin_cookie_post_from_another_origin_is_refused(client: TestClient, registry: Registry) -> None:
    _login(client, "admin")
    token = _form_token(client)
    for headers in ({"origin": "https://evil.example"}, {"origin": "null"},
                    {"referer": "https://evil.example/page"}):
        refused = client.post(f"{VERSION_PAGE}/revoke", data={"reason": "x", "csrf_token": token}, headers=headers)
        assert refused.status_code == 403, headers
    assert registry.model_state(MODEL).version("1").status.value == "approved"


def test_admin_revokes_from_the_page_and_sees_it(client: TestClient, registry: Registry) -> None:
    _login(client, "admin")
    token = _form_token(client)
    done = client.post(f"{VERSION_PAGE}/revoke", data={"reason": "leaked weights", "csrf_token": token},
                       headers={"origin": ORIGIN})
    assert done.status_code == 303 and done.headers["location"] == f"{VERSION_PAGE}?revoked=1"
    state = Registry(registry.store, trust=TRUST).verify_index(MODEL).state.version("1")
    assert (state.status.value, state.reason, state.updated_by) == ("revoked", "leaked weights", "airflow-ui:admin")
    page = client.get(done.headers["location"], headers={"accept": "text/html"})
    assert '<span class="status bad" id="status">revoked</span>' in page.text
    assert "<form class=\"revoke\"" not in page.text
    again = client.post(f"{VERSION_PAGE}/revoke", data={"reason": "other", "csrf_token": token},
                        headers={"origin": ORIGIN})
    assert again.status_code == 409 and "revoked" in again.text


def test_admin_bearer_revokes_without_form_token(client: TestClient, registry: Registry) -> None:
    done = client.post(f"{VERSION_PAGE}/revoke", json={"reason": "incident 42"},
                       headers={"authorization": "Bearer admin"})
    assert done.status_code == 200
    assert done.json() | {"seq": 0} == {"model": MODEL, "version": "1", "status": "revoked", "seq": 0,
                                        "actor": "airflow-ui:admin", "reason": "incident 42"}


def test_revoke_input_errors(client: TestClient) -> None:
    bearer = {"authorization": "Bearer admin"}
    assert client.post(f"{VERSION_PAGE}/revoke", json={"reason": " "}, headers=bearer).status_code == 400
    assert client.post("/models/demo/tiny-gpt2/versions/9/revoke", json={"reason": "x"},
                       headers=bearer).status_code == 404
    assert client.post("/models/demo/..%2Fx/versions/1/revoke", json={"reason": "x"},
                       headers=bearer).status_code in (400, 404)


def test_downloads(client: TestClient, registry: Registry) -> None:
    _login(client, "operator")
    key = "models/demo/tiny-gpt2/1/aibom.cdx.json"
    bom = client.get(f"{VERSION_PAGE}/download", params={"key": key})
    assert bom.status_code == 200 and bom.content == registry.store.read(key)
    assert bom.headers["content-disposition"] == 'attachment; filename="aibom.cdx.json"'
    assert "sandbox" in bom.headers["content-security-policy"]
    scan = client.get(f"{VERSION_PAGE}/download", params={"key": "models/demo/tiny-gpt2/1/reports/scan.json"})
    assert scan.status_code == 200 and scan.headers["content-disposition"].startswith("inline")
    assert client.get(f"{VERSION_PAGE}/download", params={"key": "models/demo/tiny-gpt2/1/promotion.json"}
                      ).status_code == 404
    assert client.get("/models/demo/tiny-gpt2/versions/7", headers={"accept": "text/html"}).status_code == 404


def test_csrf_and_origin_helpers() -> None:
    token = csrf_token(SECRET, "s1")
    assert csrf_valid(SECRET, "s1", token)
    assert not csrf_valid(SECRET, "s2", token) and not csrf_valid(b"other", "s1", token)
    assert not csrf_valid(SECRET, None, token) and not csrf_valid(SECRET, "s1", None) and not csrf_valid(b"", "s1", token)
    assert origin_of("HTTP://LocalHost:80/x") == "http://localhost"
    assert origin_of("https://a.example:8443/") == "https://a.example:8443"
    assert origin_of("javascript:alert(1)") is None and origin_of("null") is None
    allowed = {"http://127.0.0.1:8080"}
    assert same_origin(allowed, "http://127.0.0.1:8080", None)
    assert not same_origin(allowed, "http://127.0.0.1:8081", "http://127.0.0.1:8080/")  # Origin decides
    assert same_origin(allowed, None, "http://127.0.0.1:8080/registry/")
    assert same_origin(allowed, None, None)  # left to the token
    assert ui_actor(" admin\n") == "airflow-ui:admin"
    with pytest.raises(ValueError):
        ui_actor("  ")
