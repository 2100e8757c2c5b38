"""Fault injection on real network paths for tests/integration/test_faults*.py.

* :class:`TcpForwarder` -- a loopback TCP forwarder in front of a real service (OpenBao, an S3 server). ``cut()``
  makes the service unreachable for its clients (open connections are dropped, new ones refused) without
  touching the service itself; ``heal()`` restores it. ``cut_after_requests`` cuts it automatically once the
  n-th request whose first bytes match a prefix (e.g. ``b"PUT "``) has gone through.
* :class:`FaultyHub` -- an HTTP forwarder in front of the demo hub that answers 500 (or stalls) for the files
  whose path matches, and counts every request per file.
* :func:`moto_server` -- a private S3 (moto) server on a port of its own.
"""

from __future__ import annotations

import http.client
import http.server
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit


class TcpForwarder:
    """127.0.0.1:<port> -> upstream host:port, with an off switch."""

    def __init__(self, port: int, upstream: tuple[str, int]) -> None:
        self.port, self.upstream = port, upstream
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut_after: tuple[bytes, int, Callable[[], None] | None] | None = None
        self.matched = 0
        self.cuts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def heal(self) -> None:
        """Accept connections again (start)."""
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones: the service is unreachable."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
            self.cuts += 1
        for sock in ([listener] if listener else []) + list(sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def cut_after_requests(self, prefix: bytes, count: int, then: Callable[[], None] | None = None) -> None:
        """Cut the forwarder right after the ``count``-th client request starting with ``prefix`` arrives
        (the request itself is not forwarded); ``then`` runs after the cut (e.g. to look at the service)."""
        with self._lock:
            self.matched = 0
            self._cut_after = (prefix, count, then)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_client and self._should_cut(data):
                    self.cut()
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _should_cut(self, data: bytes) -> bool:
        with self._lock:
            if self._cut_after is None or not data.startswith(self._cut_after[0]):
                return False
            self.matched += 1
            prefix, count, then = self._cut_after
            if self.matched < count:
                return False
            self._cut_after = None
        if then is not None:
            threading.Thread(target=then, daemon=True).start()
        return True


@contextmanager
def forwarder(port: int, upstream_url: str) -> Iterator[TcpForwarder]:
    parts = urlsplit(upstream_url)
    forward = TcpForwarder(port, (parts.hostname or "127.0.0.1", parts.port or 80))
    forward.heal()
    try:
        yield forward
    finally:
        forward.cut()


class FaultyHub:
    """An HTTP forwarder to a Hugging Face-compatible hub that fails the requests for chosen files.

    ``fail`` (a substring of the request path) answers 500; ``stall`` holds the response for ``stall_s`` seconds
    before forwarding (a timeout for a client with a shorter read timeout); ``throttle`` streams the body at
    ``throttle_bps``. ``requests`` counts the requests per rule.
    """

    def __init__(self, port: int, upstream_url: str, *, fail: str | None = None, stall: str | None = None,
                 stall_s: float = 30.0, throttle: str | None = None, throttle_bps: int = 32 * 1024) -> None:
        self.port, self.upstream = port, urlsplit(upstream_url)
        self.fail, self.stall, self.stall_s = fail, stall, stall_s
        self.throttle, self.throttle_bps = throttle, throttle_bps
        self.ranges: list[str] = []  # Range headers of throttled requests (a resumed download asks for a range)
        self.requests: Counter[str] = Counter()
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultyHub:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self._forward("HEAD")

            def do_GET(self) -> None:
                self._forward("GET")

            def _forward(self, method: str) -> None:
                path = self.path
                if hub.fail and hub.fail in path:
                    hub.requests["fail"] += 1
                    body = b'{"error": "injected 500"}'
                    self.send_response(500)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if method == "GET":
                        self.wfile.write(body)
                    return
                if hub.stall and hub.stall in path:
                    hub.requests["stall"] += 1
                    time.sleep(hub.stall_s)
                hub.requests["forwarded"] += 1
                upstream = http.client.HTTPConnection(hub.upstream.hostname, hub.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host", "connection"}}
                upstream.request(method, path, headers=headers)
                response = upstream.getresponse()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() in {"connection", "transfer-encoding", "keep-alive"}:
                        continue
                    if name.lower() == "location":
                        value = value.replace(f"{hub.upstream.scheme}://{hub.upstream.netloc}", hub.url)
                    self.send_header(name, value)
                body = response.read() if method == "GET" else b""
                if not any(n.lower() == "content-length" for n, _ in response.getheaders()):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if method == "GET" and hub.throttle and hub.throttle in path:
                    hub.requests["throttled"] += 1
                    hub.ranges.append(self.headers.get("Range") or "")
                    chunk = max(1, hub.throttle_bps // 8)
                    try:
                        for start in range(0, len(body), chunk):
                            self.wfile.write(body[start:start + chunk])
                            self.wfile.flush()
                            time.sleep(chunk / hub.throttle_bps)
                    except OSError:  # the client went away (a killed worker)
                        pass
                elif method == "GET":
                    self.wfile.write(body)
                upstream.close()

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@contextmanager
def moto_server(port: int, log: Path) -> Iterator[str]:
    """A private moto S3 server on 127.0.0.1:``port`` (its own state, gone when it stops)."""
    moto = Path(sys.executable).parent / "moto_server"
    with log.open("ab") as out:
        process = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):  # noqa: S310 - loopback
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server on {port} did not start; see {log}") from None
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
