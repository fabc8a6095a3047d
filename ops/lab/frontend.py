#!/usr/bin/env python3
"""The settlement front-end (前置机) of the test lab: a real HTTP(S) server.

    frontend.py ADDRESS PORT [CERT KEY]

GET /health answers 200 "settlement front-end ok"; /maintenance answers 503; /slow
answers after 5 s. It exits by itself after 10 minutes at the most.
"""

import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_SECONDS = 600


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(5)
        status, body = {"/health": (200, b"settlement front-end ok\n"),
                        "/slow": (200, b"late\n"),
                        "/maintenance": (503, b"platform cutover\n")}.get(
                            self.path, (404, b"not found\n"))
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        pass


def main() -> None:
    address, port = sys.argv[1], int(sys.argv[2])
    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    if len(sys.argv) == 5:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[3], sys.argv[4])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Timer(MAX_SECONDS, server.shutdown).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
