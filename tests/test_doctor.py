"""`insmon doctor` against endpoints that answer wrongly: each is one FAIL line with what
to do, never a traceback, and an unknown is never called well. (The doctor on a real
installed host: tests/test_bundle.py.)"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from probes.base import SHANGHAI
from tests.conftest import INSMON, ROOT


def serve(answers: dict[str, tuple[int, str]]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code, body = answers.get(self.path.split("?")[0], (404, "not found"))
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    for name in ("hospital.yaml", "pager.yaml", "web.yml"):
        (tmp_path / name).write_text((ROOT / "examples" / name).read_text())
    (tmp_path / "pager-token").write_text("t0ken\n")
    site_calendar(tmp_path)
    return tmp_path


def site_calendar(etc: Path, seen_as: Path | None = None) -> None:
    """The site's calendar file, known for a year past the test's own clock, as a site
    keeps it, named in hospital.yaml (by `seen_as`, the folder as insmon sees it): the
    doctor's calendar line is then OK whatever the day."""
    known = datetime.now(SHANGHAI).date() + timedelta(days=400)
    (etc / "calendar.yaml").write_text(f"known_until: {known}\n")
    hospital = etc / "hospital.yaml"
    hospital.write_text(hospital.read_text().replace(
        "    kind: calendar\n",
        f"    kind: calendar\n    file: {(seen_as or etc) / 'calendar.yaml'}\n", 1))


@pytest.fixture
def odd() -> Iterator[str]:
    """A server that answers HTML, JSON of the wrong shape, and an Alertmanager config
    whose receivers are odd."""
    status = {"config": {"original": "receivers:\n- name: x\n  webhook_configs:\n"
                                     "  - url_file: /etc/secret-url\n- name: y\n"}}
    server = serve({"/api/v1/rules": (200, "<html>a login page</html>"),
                    "/api/v1/targets": (200, json.dumps({"status": "success"})),
                    "/api/v2/status": (200, json.dumps(status))})
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def doctor(etc: Path, prometheus: str, alertmanager: str) -> subprocess.CompletedProcess:
    return subprocess.run([INSMON, "doctor", "--etc", str(etc), "--prometheus", prometheus,
                           "--alertmanager", alertmanager], capture_output=True, text=True,
                          timeout=60)


def test_wrong_answers_are_failures_that_say_what_to_do(etc: Path, odd: str) -> None:
    done = doctor(etc, odd, odd)
    assert "Traceback" not in done.stderr, done.stderr
    assert f"FAIL  {odd} does not answer as Prometheus does\n      → systemctl status " \
           "insmon-prometheus" in done.stdout, done.stdout
    assert f"OK    Alertmanager at {odd}: up, 0 pager address(es)" in done.stdout
    assert done.returncode == 1


def test_a_pager_refusing_alertmanagers_token_is_a_failure(etc: Path, tmp_path: Path) -> None:
    """The pager answers /healthz but refuses the token Alertmanager sends: every page
    would be lost, however healthy both look."""
    token = tmp_path / "alertmanager-token"
    token.write_text("not-the-pagers\n")
    pager = serve({"/healthz": (200, "ok"), "/api/incidents": (401, "")})
    config = ("receivers:\n- name: network\n  webhook_configs:\n  - url: "
              f"http://127.0.0.1:{pager.server_port}/network\n    http_config:\n"
              f"      authorization: {{credentials_file: {token}}}\n")
    manager = serve({"/api/v2/status": (200, json.dumps({"config": {"original": config}}))})
    try:
        done = doctor(etc, "http://127.0.0.1:9", f"http://127.0.0.1:{manager.server_port}")
    finally:
        pager.shutdown()
        manager.shutdown()
    assert f"FAIL  Alertmanager's pager http://127.0.0.1:{pager.server_port} refuses " \
           f"Alertmanager's token ({token}): every page is lost" in done.stdout, done.stdout
    assert done.returncode == 1


def test_an_unknown_is_not_called_well(etc: Path) -> None:
    """Both targets not scraped yet, systemd not running here: nothing failed, but the
    doctor does not say all is well."""
    import yaml

    pager = yaml.safe_load((etc / "pager.yaml").read_text())  # no modem at this site
    del pager["channels"]["sms"]
    for person in pager["people"].values():
        person["channels"] = [c for c in person["channels"] if c != "sms"] or [
            "it-dingtalk"]
    for steps in pager.get("escalation", {}).values():
        for step in steps:
            step.pop("channels", None)
    (etc / "pager.yaml").write_text(yaml.safe_dump(pager, allow_unicode=True))
    targets = {"status": "success", "data": {"activeTargets": [
        {"labels": {"job": job}, "health": "unknown", "scrapeUrl": f"http://x/{job}"}
        for job in ("insmon", "insmon-pager")]}}
    rules = {"status": "success", "data": {"groups": [{"rules": [{}]}]}}
    prometheus = serve({"/api/v1/rules": (200, json.dumps(rules)),
                        "/api/v1/targets": (200, json.dumps(targets))})
    manager = serve({"/api/v2/status": (200, json.dumps({"config": {"original": "{}"}}))})
    try:
        done = doctor(etc, f"http://127.0.0.1:{prometheus.server_port}",
                      f"http://127.0.0.1:{manager.server_port}")
    finally:
        prometheus.shutdown()
        manager.shutdown()
    assert "?     Prometheus scrapes insmon at http://x/insmon: unknown" in done.stdout
    assert "OK    working calendar: dates known until " in done.stdout  # the site's file
    assert "all is well" not in done.stdout and "FAIL" not in done.stdout, done.stdout
    assert done.returncode == 2
