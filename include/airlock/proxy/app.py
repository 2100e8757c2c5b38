"""The proxy's ASGI application: the Hub routes model downloads use, each request authenticated and gated.

Every route except ``/healthz`` needs a consumer's bearer token
(:mod:`airlock.proxy.auth`). Every route that names a revision re-checks the
model's signed index first (:meth:`RegistryView.model`), so a revocation
applies to the next request. ``resolve`` additionally checks the stored file
against its signed sha256 before the first byte (cached per stored object,
:class:`~airlock.proxy.verification.FileChecks`) and, for GET, records the
pull before sending (:mod:`airlock.proxy.records`). Bytes are streamed in
chunks from the store, never buffered whole. Blocking work (storage, hashing,
signature checks) runs on worker threads so parallel clients progress together.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from airlock.errors import AirlockError
from airlock.proxy import hub
from airlock.proxy.auth import TokenFileError, TokenStore, Unauthorized
from airlock.proxy.objects import ObjectChanged, ObjectReader, OpenedObject
from airlock.proxy.records import PullRecorder, TamperReporter
from airlock.proxy.verification import FileChecks, ModelView, Refusal, RegistryView, Tampered, VerifiedVersion
from airlock.registry import ModelName, RegistryError

_log = logging.getLogger("airlock.proxy")
_T = TypeVar("_T")


@dataclass
class Proxy:
    """Everything a request needs; built by :func:`airlock.proxy.server.build_proxy`."""

    view: RegistryView
    tokens: TokenStore
    objects: ObjectReader
    files: FileChecks
    pulls: PullRecorder
    tamper: TamperReporter
    chunk_size: int = 4 << 20


async def _run(func: Callable[..., _T], *args: Any) -> _T:
    return await anyio.to_thread.run_sync(func, *args)


def _error(status: int, code: str | None, reason: str, *, head: bool = False,
           extra: dict[str, str] | None = None) -> Response:
    headers = {**hub.error_headers(code, reason), **(extra or {})}
    if head:
        return Response(status_code=status, headers=headers)
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def _guarded(handler: Callable[[Proxy, Request], Awaitable[Response]], proxy: Proxy
             ) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate, then turn refusals and failures into Hub-shaped errors (never a traceback to the client)."""

    async def endpoint(request: Request) -> Response:
        head = request.method == "HEAD"
        try:
            request.state.consumer = await _run(proxy.tokens.consumer, request.headers.get("authorization"))
            return await handler(proxy, request)
        except Unauthorized as exc:
            return _error(401, None, str(exc), head=head)
        except Refusal as exc:
            _log.info("refused %s %s: %s", request.method, request.url.path, _safe(exc.reason))
            return _error(exc.status, exc.code, exc.reason, head=head)
        except (TokenFileError, RegistryError, AirlockError) as exc:
            _log.error("cannot serve %s %s: %s", request.method, request.url.path, _safe(str(exc)))
            return _error(503, None, f"the proxy cannot serve this now: {exc}", head=head)

    return endpoint


def _safe(text: str) -> str:
    from airlock.redact import one_line

    return one_line(text)


def _model(request: Request) -> ModelName:
    org, name = request.path_params["org"], request.path_params["name"]
    try:
        return ModelName.parse(f"{org}/{name}")
    except RegistryError:
        raise Refusal(404, hub.ERROR_REPO, f"{org}/{name} is not a model name the registry can hold") from None


async def _version(proxy: Proxy, request: Request, revision: str) -> tuple[ModelView, VerifiedVersion]:
    model = _model(request)
    view = await _run(proxy.view.model, model)
    version = proxy.view.select(view, revision)
    return view, await _run(proxy.view.version, view, version)


# --------------------------------------------------------------------------- API routes


async def model_info(proxy: Proxy, request: Request) -> Response:
    revision = request.path_params.get("revision", "main")
    _, version = await _version(proxy, request, revision)
    return JSONResponse(hub.model_info(version.model, version.commit, [version.files[p] for p in sorted(version.files)],
                                       version=version.version, status=version.status,
                                       root_digest=version.root_digest, key_id=version.key_id,
                                       promoted_at=version.promoted_at))


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


async def tree(proxy: Proxy, request: Request) -> Response:
    _, version = await _version(proxy, request, request.path_params["revision"])
    path = request.path_params.get("path", "")
    try:
        entries = hub.tree(version.files, path, recursive=_flag(request.query_params.get("recursive")))
    except hub.NoSuchPath:
        raise Refusal(404, hub.ERROR_ENTRY, f"{version.model}@{version.version} has no file or folder {path!r}") \
            from None
    return JSONResponse(entries, headers={hub.HEADER_COMMIT: version.commit})


async def paths_info(proxy: Proxy, request: Request) -> Response:
    _, version = await _version(proxy, request, request.path_params["revision"])
    form = await request.form()
    paths = [str(p) for p in form.getlist("paths")]
    return JSONResponse(hub.paths_info(version.files, paths), headers={hub.HEADER_COMMIT: version.commit})


# --------------------------------------------------------------------------- file downloads


async def resolve(proxy: Proxy, request: Request) -> Response:
    head = request.method == "HEAD"
    _, version = await _version(proxy, request, request.path_params["revision"])
    path = request.path_params["path"]
    file = version.files.get(path)
    if file is None:
        return _error(404, hub.ERROR_ENTRY, f"{version.model}@{version.version} has no file {path!r}", head=head,
                      extra={hub.HEADER_COMMIT: version.commit})
    obj = await _run(proxy.objects.open, version.key(path))
    if obj is None:
        reason = f"{version.model}@{version.version} files/{path}: signed and released, but missing from the registry"
        await _run(proxy.tamper.report, version, path, ("missing",), reason)
        raise Tampered(reason)
    try:
        await _verified(proxy, version, path, obj)
        headers = hub.file_headers(file, version.commit)
        if head:
            obj.close()
            return Response(status_code=200, headers={**headers, "Content-Length": str(file.size)})
        try:
            span = hub.parse_range(request.headers.get("range"), file.size)
        except hub.UnsatisfiableRange:
            obj.close()
            return _error(416, None, f"range {request.headers.get('range')!r} is outside files/{path} "
                                     f"({file.size} bytes)", extra={"Content-Range": f"bytes */{file.size}"})
        client = request.client.host if request.client else "unknown"
        await _run(proxy.pulls.record, version, path, request.state.consumer, client)
    except BaseException:
        obj.close()
        raise
    start, end = span if span is not None else (0, file.size - 1)
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{file.size}"
    headers["Content-Length"] = str(end - start + 1 if file.size else 0)
    return StreamingResponse(_stream(proxy, version, path, obj, start, end), status_code=206 if span else 200,
                             headers=headers)


async def _verified(proxy: Proxy, version: VerifiedVersion, path: str, obj: OpenedObject) -> None:
    try:
        hashed = await _run(proxy.files.ensure, version, path, obj)
    except Tampered as exc:
        await _run(proxy.tamper.report, version, path, obj.identity, exc.reason)
        raise
    if hashed:
        _log.info("verified %s@%s files/%s: %d bytes match sha256:%s", version.model, version.version, path,
                  obj.size, version.files[path].sha256)


async def _stream(proxy: Proxy, version: VerifiedVersion, path: str, obj: OpenedObject, start: int,
                  end: int) -> AsyncIterator[bytes]:
    """The verified object's bytes; if it changes mid-transfer the transfer stops (incomplete, never wrong)."""
    if end < start:
        obj.close()
        return
    chunks = obj.chunks(start, end, proxy.chunk_size)
    try:
        while True:
            data = await _run(next, chunks, None)
            if data is None:
                return
            yield data
    except ObjectChanged as exc:
        reason = f"{version.model}@{version.version} files/{path}: {exc}; transfer stopped"
        await _run(proxy.tamper.report, version, path, ("changed-mid-transfer", obj.identity), reason)
        raise
    finally:
        chunks.close()
        obj.close()


# --------------------------------------------------------------------------- the app


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def build_app(proxy: Proxy) -> Starlette:
    def route(path: str, handler: Callable[[Proxy, Request], Awaitable[Response]], methods: list[str]) -> Route:
        return Route(path, _guarded(handler, proxy), methods=methods)

    repo = "/api/models/{org}/{name}"
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        route(repo, model_info, ["GET"]),
        route(repo + "/revision/{revision}", model_info, ["GET"]),
        route(repo + "/tree/{revision}", tree, ["GET"]),
        route(repo + "/tree/{revision}/", tree, ["GET"]),
        route(repo + "/tree/{revision}/{path:path}", tree, ["GET"]),
        route(repo + "/paths-info/{revision}", paths_info, ["POST"]),
        route("/{org}/{name}/resolve/{revision}/{path:path}", resolve, ["GET", "HEAD"]),
    ]
    app = Starlette(routes=routes)
    app.state.proxy = proxy
    return app
