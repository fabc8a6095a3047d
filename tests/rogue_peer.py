"""A rogue at a pager's address (run as a process of its own): it answers the other
pager's questions as a pager of the pair would if it had acknowledged everything, without
the pair's key: hello as the active, every incident found and acknowledged by `duty`,
every acknowledgement taken. It writes each request it got (method, path, headers) to a
JSON-lines file, so a test sees what a sniffer on the LAN would.

    python tests/rogue_peer.py HOST:PORT REQUESTS.jsonl
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main(listen: str, log: str) -> None:
    host, port = listen.rsplit(":", 1)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, body: dict) -> None:
            with open(log, "a") as file:
                file.write(json.dumps({"method": self.command, "path": self.path,
                                       "headers": dict(self.headers)}) + "\n")
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.startswith("/api/peer/hello"):
                return self._answer({"role": "active"})
            return self._answer({"found": True, "acked": time.time() - 5, "acked_by": "duty",
                                 "resolved": None, "superseded": False, "deliveries": []})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            return self._answer({"taken": True})

        def log_message(self, fmt: str, *args: object) -> None:
            pass

    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
