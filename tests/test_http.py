"""The http probe against the lab's front-end program served on loopback (no root):
status, body, a slow answer, HTTPS trust and certificate expiry."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509

from ops.lab import FRONT_END
from probes import http, icmp, tcp
from probes.base import CheckBase
from tests.certs import Authority
from tests.conftest import ROOT, free_port, render, value, wait_for

FRONT_END_PROGRAM = ROOT / "ops" / "lab" / "frontend.py"


@pytest.fixture
def front_end() -> Iterator[Callable[..., str]]:
    """Starts the lab's front-end program on a loopback port: returns its base URL."""
    started: list[subprocess.Popen] = []

    def start(tls: tuple[Path, Path] | None = None) -> str:
        port = free_port()
        argv = [sys.executable, str(FRONT_END_PROGRAM), "127.0.0.1", str(port)]
        started.append(subprocess.Popen([*argv, *map(str, tls or ())],
                                        stdin=subprocess.DEVNULL))
        wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close()
                 or True, 15, "the front-end to listen")
        return f"{'https' if tls else 'http'}://127.0.0.1:{port}"

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


def http_check(url: str, **extra: object) -> http.Config:
    return http.Config(name="front-end-http", kind="http", url=url, interval=5, timeout=2,
                       **extra)


async def test_http_health_status_and_body(front_end: Callable[..., str]) -> None:
    base = front_end()
    status, series = await render(http_check(f"{base}/health", body_regex="front-end ok"),
                                  "insmon_http_")
    assert status.startswith("# ok: status 200 in ")
    assert value(series, 'insmon_http_status_code{check="front-end-http"}') == 200
    for phase in ("connect", "processing", "transfer"):
        assert value(series, f'insmon_http_phase_seconds{{check="front-end-http",'
                             f'phase="{phase}"}}') >= 0

    status, series = await render(http_check(f"{base}/maintenance"), "insmon_http_")
    assert status == f"# failed: status 503 from {base}/maintenance\n"
    assert value(series, 'insmon_http_failures_total{check="front-end-http",'
                         'reason="status"}') == 1

    status, series = await render(http_check(f"{base}/health", body_regex='"status": *"UP"'),
                                  "insmon_http_")
    assert status.startswith(f"# failed: body of {base}/health does not match")
    assert value(series, 'insmon_http_failures_total{check="front-end-http",'
                         'reason="body"}') == 1


async def test_http_refused_and_slow_answer(front_end: Callable[..., str]) -> None:
    port = free_port()
    status, series = await render(http_check(f"http://127.0.0.1:{port}/health"),
                                  "insmon_http_")
    assert status == f"# failed: 127.0.0.1:{port} refused the connection\n"
    assert value(series, 'insmon_http_failures_total{check="front-end-http",'
                         'reason="refused"}') == 1

    base = front_end()
    status, series = await render(http_check(f"{base}/slow"), "insmon_http_")
    assert status.startswith(f"# failed: no complete answer from {base[7:]} within")
    assert value(series, 'insmon_http_failures_total{check="front-end-http",'
                         'reason="timeout"}') == 1


@pytest.mark.dates
async def test_https_certificate_expiry_and_trust(front_end: Callable[..., str],
                                                  tmp_path: Path) -> None:
    authority = Authority(tmp_path)
    cert, key = authority.issue("front-end", ip="127.0.0.1", days=20)
    expiry = x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc
    base = front_end(tls=(cert, key))

    status, series = await render(http_check(f"{base}/health", ca_file=authority.file),
                                  "insmon_http_")
    assert status.startswith("# ok: status 200 in ") and "certificate valid 20 more days" \
        in status
    assert value(series, 'insmon_http_tls_cert_expiry_timestamp_seconds'
                         '{check="front-end-http"}') == expiry.timestamp()
    assert value(series, 'insmon_http_phase_seconds{check="front-end-http",phase="tls"}') > 0

    status, series = await render(http_check(f"{base}/health"), "insmon_http_")  # not trusted
    assert status.startswith(f"# failed: TLS with {base[8:]} failed: unknown issuer: the "
                             "server's certificate is not signed by a CA this check trusts")
    assert value(series, 'insmon_http_failures_total{check="front-end-http",'
                         'reason="tls"}') == 1


class Liar:
    """A loopback HTTP server that misbehaves: "trickle" sends its headers, then a byte a
    second for a minute; "short" promises 1000 bytes, sends 10 and closes; "silent"
    reads the request and closes without a word."""

    def __init__(self, mode: str) -> None:
        import threading

        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/health"
        self.mode = mode
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import time

        with contextlib.suppress(OSError):
            conn, _ = self.server.accept()
            with conn:
                conn.recv(4096)
                if self.mode == "silent":
                    return
                length = 1000 if self.mode == "short" else 60
                conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode())
                if self.mode == "short":
                    conn.sendall(b"x" * 10)
                    return
                for _ in range(60):
                    conn.sendall(b"x")
                    time.sleep(1)

    def close(self) -> None:
        self.server.close()


async def test_a_trickling_answer_ends_at_the_deadline_and_a_short_one_fails() -> None:
    import time

    trickle = Liar("trickle")
    try:
        started = time.monotonic()
        status, series = await render(http_check(trickle.url), "insmon_http_")
        # timeout 2 s, for the whole answer (the trickle would take 60 s); a busy host may
        # take its time to get there
        assert time.monotonic() - started < 10
        assert status.startswith("# failed: no complete answer from 127.0.0.1:")
        assert value(series, 'insmon_http_failures_total{check="front-end-http",'
                             'reason="timeout"}') == 1
        def reading() -> list[int]:
            return [t for t, frame in sys._current_frames().items()
                    if any(f.f_code is http.fetch.__code__ for f in _stack(frame))]

        # no thread left reading the trickle (which goes on for a minute): gone within
        # seconds, however busy the host
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not reading(), 5, "the reader thread to end")
        assert reading() == []
    finally:
        trickle.close()
    short = Liar("short")
    try:
        status, series = await render(http_check(short.url), "insmon_http_")
        assert status == (f"# failed: the body of {short.url} ended after 10 of the 1000 "
                          "bytes its Content-Length promised\n")
    finally:
        short.close()


async def test_a_connection_closed_without_an_answer_is_named() -> None:
    silent = Liar("silent")
    try:
        status, series = await render(http_check(silent.url), "insmon_http_")
    finally:
        silent.close()
    assert status.startswith("# failed: 127.0.0.1:"), status
    assert "closed the connection before the whole answer" in status
    assert value(series, 'insmon_http_failures_total{check="front-end-http",'
                         'reason="connection_closed"}') == 1


def _stack(frame):
    while frame is not None:
        yield frame
        frame = frame.f_back


def test_configs_reject_bad_addresses() -> None:
    bad: list[tuple[type[CheckBase], dict]] = [
        (icmp.Config, {"targets": ["frontend.local"]}),
        (tcp.Config, {"targets": [FRONT_END]}),
        (http.Config, {"url": "ftp://198.18.100.1/"}),
    ]
    for model, fields in bad:
        with pytest.raises(ValueError):
            model(name="x", kind=model.model_fields["kind"].annotation.__args__[0], **fields)


def test_a_ca_file_that_cannot_be_read_is_a_failure_not_an_escaped_exception(
        tmp_path: Path) -> None:
    """The shared exchange (probes/lib/net.py) makes the TLS context once connected: a
    CA file gone is the http and the settlement checks' failed run, reason other."""
    import time

    from probes.lib import fsi

    gone = tmp_path / "gone.pem"
    with socket.create_server(("127.0.0.1", 0)) as listening:
        url = f"https://127.0.0.1:{listening.getsockname()[1]}/health"
        outcome = http.fetch(http_check(url, ca_file=gone))
        answer = fsi.exchange(url, {}, b"{}", time.monotonic() + 5, fsi.Tls(ca_file=gone))
    assert (outcome.reason, answer.reason) == ("other", "other")
    assert "No such file or directory" in outcome.detail and \
        "No such file or directory" in answer.detail
