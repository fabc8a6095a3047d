"""The HTTP endpoint: /metrics for Prometheus, /healthz for liveness, / for people.

A threaded WSGI server of its own, off the event loop: a slow or stuck scrape never
delays a probe, and the probes never delay a scrape.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from exporters import prometheus, status
from exporters.snapshot import Snapshot
from exporters.webconfig import BasicAuth

log = logging.getLogger("insmon.http")


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: tuple) -> None:
        # A failed TLS handshake (no client certificate, plain HTTP on the TLS port) or a
        # client gone mid-request: worth a line, not a traceback.
        log.info("connection from %s failed: %s", client_address[0],
                 sys.exc_info()[1] or "unknown error")


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    timeout = 15  # seconds a client may take to send its request (and TLS handshake)

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("%s " + fmt, self.address_string(), *args)


def make_app(snapshot: Callable[[], Snapshot], alive: Callable[[], bool],
             auth: BasicAuth | None = None) -> Callable:
    """The WSGI app over the results store's `snapshot` and the loop's liveness."""

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        verdict = "ok" if auth is None or path == "/healthz" else auth.check(
            environ.get("HTTP_AUTHORIZATION"), environ.get("REMOTE_ADDR", "?"))
        if verdict == "throttled":
            start_response("429 Too Many Requests", [
                ("Content-Type", "text/plain; charset=utf-8"), ("Retry-After", "60")])
            return [b"too many failed attempts; try again in a minute\n"]
        if verdict == "denied":
            start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                                ("WWW-Authenticate", 'Basic realm="insmon"')])
            return [b"unauthorized\n"]
        if path == "/metrics":
            openmetrics = "application/openmetrics-text" in environ.get("HTTP_ACCEPT", "")
            body = prometheus.exposition(snapshot(), openmetrics)
            start_response("200 OK", [
                ("Content-Type", prometheus.OPENMETRICS if openmetrics else prometheus.TEXT),
                ("Content-Length", str(len(body)))])
            return [body]
        if path == "/healthz":
            ok = alive()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n" if ok else b"scheduler not responding\n"]
        if path == "/":
            body = status.page(snapshot()).encode()
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics, /healthz or /\n"]

    return app


class HttpServer:
    """Serves the app on a background thread until `close()`."""

    def __init__(self, host: str, port: int, app: Callable,
                 tls: ssl.SSLContext | None = None) -> None:
        server_class = _Server6 if ":" in host else _Server
        self._server = make_server(host, port, app, server_class=server_class,
                                   handler_class=_QuietHandler)
        if tls is not None:
            # The handshake happens on the request's own thread (first read), so a slow
            # or broken client never holds up accepting the next one.
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True,
                                                  do_handshake_on_connect=False)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
