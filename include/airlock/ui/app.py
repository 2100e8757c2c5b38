"""The Registry page as a FastAPI application; Airflow mounts it (``plugins/airlock_registry.py``).

Routes (relative to where it is mounted, ``/registry`` in Airflow)::

    GET  /                                               every model and version (``?q=`` filters models)
    GET  /models/{org}/{name}/versions/{version}         one version: facts, checks, pulls, history, revoke form
    GET  /models/{org}/{name}/versions/{version}/download?key=K   an artefact the page links (AI-BOM, reports)
    POST /models/{org}/{name}/versions/{version}/revoke  revoke (admins only), form or JSON ``{"reason": ...}``
    GET  /api/models                                     the same view models as JSON (``?q=``)
    GET  /static/registry.css, /static/icon.svg          the only assets (no CDN, no script)

Authentication is injected (:class:`RegistryAppConfig`): in Airflow it is the
UI's session (JWT cookie ``_token``) or a bearer token, resolved by Airflow's
own dependencies. Every route but the two static assets needs a signed-in user
allowed to view the page; an anonymous browser is sent to the login page.
Revoking needs ``Principal.may_revoke`` (else 403) and, for a cookie session,
the form's CSRF token and a same-origin request (:mod:`airlock.ui.security`).
The revocation itself is :meth:`Registry.revoke`: a signed index checkpoint
with the user as actor and the reason given.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from airlock.errors import AirlockError
from airlock.redact import one_line
from airlock.registry.base import ModelName, RegistryError, VersionNotFoundError, check_version
from airlock.ui import render, security, views

log = logging.getLogger(__name__)

RESOURCE_NAME = "Model Registry"
HTML_HEADERS = {
    # No script at all; styles and images only from here; forms post only here; framed only by Airflow's UI.
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                                "frame-ancestors 'self'; base-uri 'none'"),
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
DOWNLOAD_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Principal:
    """The signed-in user as the page needs it."""

    name: str
    may_view: bool
    may_revoke: bool
    session: str | None  # the session cookie's value when it authenticated this request (CSRF applies); else None


@dataclass(frozen=True)
class RegistryAppConfig:
    authenticate: Callable[[Request], Awaitable[Principal | None]]  # None: nobody is signed in
    login_url: Callable[[str], str]  # the login page that returns to the given path
    open_registry: Callable[[], Any]  # a Registry for reading (trust: the host's)
    open_signing_registry: Callable[[], Any]  # a Registry that can sign index checkpoints (revoke)
    csrf_secret: Callable[[], bytes]
    airflow_base: Callable[[], str] = lambda: "/"  # the Airflow UI's base path, with a trailing slash
    extra_origins: Callable[[], set[str]] = set  # origins besides the request's own (a proxy's public URL)


def create_app(config: RegistryAppConfig) -> FastAPI:
    app = FastAPI(title="Airlock model registry", docs_url=None, redoc_url=None, openapi_url=None)

    def context(request: Request, principal: Principal) -> render.PageContext:
        token = None
        if principal.session and principal.may_revoke:
            secret = config.csrf_secret()
            token = security.csrf_token(secret, principal.session) if secret else None
        return render.PageContext(base=str(request.scope.get("root_path", "")).rstrip("/"),
                                  airflow_base=config.airflow_base(), user=principal.name,
                                  may_revoke=principal.may_revoke, csrf_token=token)

    async def signed_in(request: Request) -> Principal | Response:
        """The principal, or the response that refuses the request (login redirect, 401, 403)."""
        principal = await config.authenticate(request)
        wants_html = request.method == "GET" and "text/html" in request.headers.get("accept", "")
        if principal is None:
            if wants_html:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(config.login_url(target), status_code=303)
            return JSONResponse({"detail": "Not authenticated"}, status_code=401)
        if not principal.may_view:
            return _refuse(wants_html, 403, f"{principal.name} may not view the {RESOURCE_NAME}")
        return principal

    @app.get("/static/registry.css", include_in_schema=False)
    def stylesheet() -> Response:
        return Response(render.STYLESHEET, media_type="text/css", headers={"Cache-Control": "max-age=300"})

    @app.get("/static/icon.svg", include_in_schema=False)
    def icon() -> Response:
        return Response(render.ICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=300"})

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request, q: str = "") -> Response:
        principal = await signed_in(request)
        if isinstance(principal, Response):
            return principal
        ctx = context(request, principal)
        try:
            view = await run_in_threadpool(lambda: views.build_registry_view(config.open_registry(), query=q))
        except AirlockError as exc:
            return _html(render.render_message(ctx, f"cannot open the registry: {one_line(str(exc))}"), 503)
        return _html(render.render_index(view, ctx))

    @app.get("/api/models")
    async def api_models(request: Request, q: str = "") -> Response:
        principal = await signed_in(request)
        if isinstance(principal, Response):
            return principal
        try:
            view = await run_in_threadpool(lambda: views.build_registry_view(config.open_registry(), query=q))
        except AirlockError as exc:
            return JSONResponse({"detail": f"cannot open the registry: {one_line(str(exc))}"}, status_code=503)
        return JSONResponse(jsonable_encoder(_as_json(view)), headers={"Cache-Control": "no-store"})

    @app.get("/models/{org}/{name}/versions/{version}", response_class=HTMLResponse)
    async def version_page(request: Request, org: str, name: str, version: str) -> Response:
        principal = await signed_in(request)
        if isinstance(principal, Response):
            return principal
        ctx = context(request, principal)
        found = await _find(config, org, name, version)
        if isinstance(found, str):
            return _html(render.render_message(ctx, found), 404)
        model, current = found
        notice = "Revoked; the signed index records who and why." if request.query_params.get("revoked") else None
        return _html(render.render_version(model, current, ctx, notice=notice))

    @app.get("/models/{org}/{name}/versions/{version}/download")
    async def download(request: Request, org: str, name: str, version: str, key: str = "") -> Response:
        principal = await signed_in(request)
        if isinstance(principal, Response):
            return principal
        found = await _find(config, org, name, version)
        if isinstance(found, str):
            return _text(found, 404)
        _, current = found
        try:
            served = await run_in_threadpool(lambda: views.read_artifact(current, key, config.open_registry()))
        except views.NotServed as exc:
            return _text(str(exc), exc.status)
        disposition = "attachment" if served.artifact.kind in ("aibom", "aibom-signature", "signature") else "inline"
        return Response(served.data, media_type=served.media_type, headers={
            **DOWNLOAD_HEADERS, "Content-Disposition": f'{disposition}; filename="{served.filename}"'})

    @app.post("/models/{org}/{name}/versions/{version}/revoke")
    async def revoke(request: Request, org: str, name: str, version: str) -> Response:
        principal = await config.authenticate(request)
        if principal is None:
            return JSONResponse({"detail": "Not authenticated"}, status_code=401)
        if not (principal.may_view and principal.may_revoke):
            return JSONResponse({"detail": f"{principal.name} may not revoke: revoking a version is for "
                                           f"administrators"}, status_code=403)
        fields = await _fields(request)
        if principal.session is not None:  # a cookie session: the browser would send it from any site
            allowed = {security.origin_of(str(request.base_url)), *config.extra_origins()} - {None}
            if not security.same_origin(allowed, request.headers.get("origin"), request.headers.get("referer")):
                return JSONResponse({"detail": "cross-origin request refused"}, status_code=403)
            if not security.csrf_valid(config.csrf_secret(), principal.session, fields.get("csrf_token")):
                return JSONResponse({"detail": "missing or stale form token: reload the page and try again"},
                                    status_code=403)
        try:
            model = ModelName.parse(f"{org}/{name}")
            check_version(version)
            reason = views.clean_reason(fields.get("reason") or "")
            actor = security.ui_actor(principal.name)
        except (RegistryError, ValueError) as exc:
            return _revoke_failed(request, config, principal, org, name, version, str(exc), 400)
        try:
            event = await run_in_threadpool(lambda: views.revoke(config.open_signing_registry(), str(model), version,
                                                                 reason=reason, actor=actor))
        except VersionNotFoundError as exc:
            return _revoke_failed(request, config, principal, org, name, version, one_line(str(exc)), 404)
        except RegistryError as exc:
            return _revoke_failed(request, config, principal, org, name, version, one_line(str(exc)), 409)
        except AirlockError as exc:  # the signer (Vault) or the trust store: nothing was recorded
            return _revoke_failed(request, config, principal, org, name, version,
                                  f"could not revoke: {one_line(str(exc))}", 503)
        log.info("registry page: %s revoked %s@%s (index event %d)", actor, model, version, event.seq)
        if principal.session is None:
            return JSONResponse({"model": str(model), "version": version, "status": event.kind, "seq": event.seq,
                                 "actor": event.actor, "reason": event.reason})
        page = render.version_url(context(request, principal), str(model), version)
        return RedirectResponse(f"{page}?revoked=1", status_code=303)

    return app


async def _find(config: RegistryAppConfig, org: str, name: str,
                version: str) -> tuple[views.ModelView, views.VersionView] | str:
    """The model and version views, or the one-line reason there are none."""
    try:
        model = ModelName.parse(f"{org}/{name}")
        check_version(version)
    except RegistryError as exc:
        return one_line(str(exc))
    try:
        view = await run_in_threadpool(lambda: views.build_model_view(config.open_registry(), model))
    except AirlockError as exc:
        return f"cannot open the registry: {one_line(str(exc))}"
    current = view.version(version)
    if current is None:
        return f"{model}@{version} is not in the registry"
    return view, current


async def _fields(request: Request) -> dict[str, str]:
    """The posted fields: a form (the page) or a JSON object (REST clients); anything else is no fields."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            body = json.loads(await request.body())
        except ValueError:
            return {}
        return {k: v for k, v in body.items() if isinstance(v, str)} if isinstance(body, dict) else {}
    if kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form()
        return {k: v for k, v in form.items() if isinstance(v, str)}
    return {}


def _revoke_failed(request: Request, config: RegistryAppConfig, principal: Principal, org: str, name: str,
                   version: str, message: str, status: int) -> Response:
    if principal.session is None:
        return JSONResponse({"detail": message}, status_code=status)
    # A browser: show the message on a page (escaped there); no redirect carries the text.
    ctx = render.PageContext(base=str(request.scope.get("root_path", "")).rstrip("/"),
                             airflow_base=config.airflow_base(), user=principal.name, may_revoke=False,
                             csrf_token=None)
    return _html(render.render_message(ctx, f"{org}/{name}@{version}: {message}"), status)


def _refuse(wants_html: bool, status: int, message: str) -> Response:
    if wants_html:
        return _text(message, status)
    return JSONResponse({"detail": message}, status_code=status)


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=HTML_HEADERS)


def _text(message: str, status: int) -> Response:
    return Response(message + "\n", status_code=status, media_type="text/plain; charset=utf-8",
                    headers=DOWNLOAD_HEADERS)


def _as_json(view: views.RegistryView) -> dict[str, Any]:
    data = dataclasses.asdict(view)
    for model, source in zip(data["models"], view.models, strict=True):
        for version, v in zip(model["versions"], source.versions, strict=True):
            version["ingest_run_id"] = v.ingest_run_id
            version["revocable"] = v.revocable
    return data
