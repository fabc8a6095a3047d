"""Webhook receivers for Alertmanager: one HTTP server, a path per team, recording every
notification with the time it arrived."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Page:
    team: str
    received: float  # time.time()
    body: dict

    @property
    def alertnames(self) -> set[str]:
        return {a["labels"]["alertname"] for a in self.body["alerts"]}


class Recorder:
    def __init__(self) -> None:
        self.pages: list[Page] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with recorder._lock:
                    recorder.pages.append(Page(self.path.strip("/"), time.time(), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, fmt: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def received(self, status: str | None = None) -> list[Page]:
        with self._lock:
            return [p for p in self.pages if status is None or p.body["status"] == status]

    def teams(self, alertname: str, status: str = "firing") -> set[str]:
        return {p.team for p in self.received(status) if alertname in p.alertnames}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
