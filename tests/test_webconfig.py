"""TLS and basic auth on the endpoint, with real curl and a real Prometheus scraping it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import yaml

from monitor.config import ConfigError, load_web_config
from ops.stack import Insmon, Prometheus
from tests.certs import Authority
from tests.conftest import free_port, wait_for

PASSWORD = "scrape-Secret-42"


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "10", "-o", "/dev/null",
                           "-w", "%{http_code}", *args], capture_output=True, text=True,
                          timeout=30)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[str, Authority, Insmon, Path]]:
    ca = Authority(tmp_path)
    cert, key = ca.issue("insmon", ip="127.0.0.1")
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": str(cert), "key_file": str(key),
                              "client_auth_type": "VerifyClientCertIfGiven",
                              "client_ca_file": str(ca.file)},
        "basic_auth_users": {"prometheus": bcrypt.hashpw(PASSWORD.encode(),
                                                         bcrypt.gensalt(8)).decode()}}))
    port = free_port()
    monitor = Insmon(tmp_path / "insmon",
                     f'listen: "127.0.0.1:{port}"\nchecks:\n- {{name: cpu, kind: cpu, '
                     'interval: 1s}\n', extra=["--web-config", str(web)])
    url = f"https://127.0.0.1:{port}"
    wait_for(lambda: curl("--cacert", str(ca.file), f"{url}/healthz").stdout == "200", 20,
             "insmon over TLS")
    yield url, ca, monitor, tmp_path
    monitor.stop()


def test_tls_and_basic_auth_with_curl(secured) -> None:
    url, ca, monitor, _ = secured
    ca_opt = ("--cacert", str(ca.file))
    assert curl(*ca_opt, "-u", f"prometheus:{PASSWORD}", f"{url}/metrics").stdout == "200"
    assert curl(*ca_opt, "-u", "prometheus:guess", f"{url}/metrics").stdout == "401"
    assert curl(*ca_opt, f"{url}/metrics").stdout == "401"
    assert curl(*ca_opt, f"{url}/").stdout == "401"  # the status page too
    assert curl(*ca_opt, f"{url}/healthz").stdout == "200"  # liveness stays open
    plain = curl(f"http://127.0.0.1:{url.rsplit(':', 1)[1]}/metrics")
    assert plain.stdout in ("000", "400") or plain.returncode != 0  # no plain HTTP
    unknown_ca = curl(f"{url}/healthz")  # the system CAs do not know this server
    assert unknown_ca.returncode != 0
    monitor.stop()
    log = (monitor.log_file).read_text()
    assert "rejected basic auth for user 'prometheus' from 127.0.0.1" in log
    assert "guess" not in log and PASSWORD not in log


def test_client_certificates_when_required(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    cert, key = ca.issue("insmon", ip="127.0.0.1")
    client_cert, client_key = ca.issue("prometheus-client", client=True)
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({"tls_server_config": {
        "cert_file": str(cert), "key_file": str(key),
        "client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": str(ca.file)}}))
    port = free_port()
    monitor = Insmon(tmp_path / "insmon", f'listen: "127.0.0.1:{port}"\nchecks:\n'
                     "- {name: cpu, kind: cpu}\n", extra=["--web-config", str(web)])
    url = f"https://127.0.0.1:{port}/metrics"
    try:
        wait_for(lambda: curl("--cacert", str(ca.file), "--cert", str(client_cert), "--key",
                              str(client_key), url).stdout == "200", 20, "mutual TLS")
        assert curl("--cacert", str(ca.file), url).returncode != 0  # no certificate
    finally:
        monitor.stop()


def test_prometheus_scrapes_through_https_and_basic_auth(secured) -> None:
    url, ca, _, tmp_path = secured
    target = url.removeprefix("https://")
    tls = {"ca_file": str(ca.file)}
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [
        {"job_name": "good", "scheme": "https", "tls_config": tls,
         "basic_auth": {"username": "prometheus", "password": PASSWORD},
         "static_configs": [{"targets": [target]}]},
        {"job_name": "wrong-password", "scheme": "https", "tls_config": tls,
         "basic_auth": {"username": "prometheus", "password": "not-it"},
         "static_configs": [{"targets": [target]}]}]}
    prometheus = Prometheus(tmp_path / "prometheus", config)
    try:
        def up() -> dict[str, str]:
            return {r["metric"]["job"]: r["value"][1] for r in prometheus.query("up")}

        values = wait_for(lambda: (u := up()) and len(u) == 2 and u, 30, "two scrapes")
        assert values == {"good": "1", "wrong-password": "0"}
    finally:
        prometheus.stop()


def test_a_bad_web_config_is_named(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  prometheus: hunter2\ntls_server_config:\n"
                   "  cert_file: /etc/insmon/tls.crt\n")
    with pytest.raises(ConfigError) as info:
        load_web_config(web)
    assert info.value.problems == (
        f"{web}:2: basic_auth_users: the password of 'prometheus' must be a bcrypt hash "
        "($2b$...)",
        f"{web}:4: tls_server_config.key_file: required key is missing")


def test_a_malformed_hash_or_a_missing_file_is_named_at_start(tmp_path: Path) -> None:
    from exporters.webconfig import TlsServerConfig, tls_context

    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  prometheus: $2b$12$not-a-real-hash\n")
    with pytest.raises(ConfigError) as info:
        load_web_config(web)
    assert "the password of 'prometheus' is not a valid bcrypt hash" in str(info.value)
    with pytest.raises(OSError, match=r"^tls_server_config.cert_file: no such file /nope.crt$"):
        tls_context(TlsServerConfig(cert_file="/nope.crt", key_file="/nope.key"))


def test_a_brute_force_is_throttled_and_an_unknown_user_costs_a_real_check() -> None:
    import base64
    import time

    from exporters.http import make_app
    from exporters.webconfig import FAILURES, BasicAuth

    auth = BasicAuth({"prometheus": bcrypt.hashpw(PASSWORD.encode(),
                                                  bcrypt.gensalt(12)).decode()})
    app = make_app(lambda: None, lambda: True, auth)

    def get(user: str, password: str, client: str) -> tuple[str, float]:
        """The answer, and the CPU time it cost this thread (bcrypt runs on it): the cost,
        whatever else keeps the host busy meanwhile."""
        codes = []
        header = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        start = time.thread_time()
        app({"PATH_INFO": "/nope", "HTTP_AUTHORIZATION": header, "REMOTE_ADDR": client},
            lambda status, headers: codes.append(status))
        return codes[0].split()[0], time.thread_time() - start

    assert get("prometheus", PASSWORD, "10.0.0.9")[0] == "404"  # Prometheus, verified once
    known, known_took = get("prometheus", "wrong", "10.0.0.1")
    unknown, unknown_took = get("nobody-here", "wrong", "10.0.0.2")
    assert known == unknown == "401"
    assert unknown_took > known_took / 3  # a bcrypt check too: no user enumeration by time
    for _ in range(FAILURES - 1):
        assert get("prometheus", "wrong", "10.0.0.1")[0] == "401"
    throttled, took = get("prometheus", "wrong", "10.0.0.1")
    assert throttled == "429" and took < known_took / 10  # no bcrypt spent on it
    assert get("prometheus", "other", "10.0.0.4")[0] == "429"  # the user waits a minute
    # ... but the Prometheus already verified is not locked out by the attacker
    assert get("prometheus", PASSWORD, "10.0.0.9")[0] == "404"
    assert get("nobody-here", "wrong", "10.0.0.3")[0] == "401"  # others: as ever


def test_attempts_arriving_together_cost_no_more_bcrypt_checks_than_the_threshold(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """20 clients guessing at once for a user that exists: only the threshold's worth of
    attempts in the minute reach bcrypt (each counted before its check), the rest are
    429 without one."""
    import base64
    import threading

    from exporters import webconfig

    auth = webconfig.BasicAuth({"prometheus": bcrypt.hashpw(PASSWORD.encode(),
                                                            bcrypt.gensalt(10)).decode()})
    checks, real = [], bcrypt.checkpw
    monkeypatch.setattr(webconfig.bcrypt, "checkpw",
                        lambda *args: checks.append(1) or real(*args))
    start, results = threading.Barrier(20), []

    def guess(n: int) -> None:
        header = "Basic " + base64.b64encode(f"prometheus:guess-{n}".encode()).decode()
        start.wait(timeout=10)
        results.append(auth.check(header, f"10.0.1.{n}"))

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(set(results)) == ["denied", "throttled"] and len(results) == 20
    assert len(checks) == results.count("denied") == webconfig.FAILURES
