"""No secret reaches any output: logs, metrics, the status page, `insmon once`, config
errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests

from monitor.config import ConfigError, parse
from ops.stack import Insmon
from tests.conftest import INSMON, free_port, wait_for
from tests.snmp_agent import free_udp_port

COMMUNITY, AUTH_KEY, PRIV_KEY, TOKEN, PASSWORD, PAAS = (
    "community-7d1c", "auth-key-52e9", "priv-key-0b4a", "token-93f0", "password-5e1d",
    "paas-token-61aa")
SECRETS = (COMMUNITY, AUTH_KEY, PRIV_KEY, TOKEN, PASSWORD, PAAS)


def config(tmp_path: Path, port: int) -> str:
    (tmp_path / "priv").write_text(PRIV_KEY)
    silent = free_udp_port()  # nothing answers there: the checks fail, with reasons
    return f"""\
listen: "127.0.0.1:{port}"
checks:
  - name: edge-switch
    kind: snmp
    timeout: 2s
    address: 127.0.0.1:{silent}
    retries: 0
    interfaces: [1]
    auth: {{community: {{value: {COMMUNITY}}}}}
  - name: idrac
    kind: raid
    timeout: 2s
    source:
      type: snmp
      address: 127.0.0.1:{silent}
      retries: 0
      profile: idrac
      auth: {{version: "3", user: insmon, auth_key: {{env: INSMON_TEST_AUTH}},
             priv_key: {{file: {tmp_path / 'priv'}}}}}
  - name: front-end
    kind: http
    url: http://127.0.0.1:{free_port()}/health
    headers: {{Authorization: "Bearer {TOKEN}"}}
  - name: portal
    kind: http
    url: http://insmon:{PASSWORD}@127.0.0.1:{free_port()}/health
  - name: settle
    kind: settlement
    interval: 10s
    url: http://127.0.0.1:{free_port()}/fsi/api/fsi/signIn
    fixmedins_code: H32010200001
    fixmedins_name: 一院
    mdtrtarea_admvs: "320102"
    opter: "001"
    opter_name: 收费员
    gateway: {{dialect: x-tif, key: paas-1, secret: {{value: {PAAS}}}}}
    state_file: {tmp_path / "sessions.json"}
"""


def assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} leaked into {where}"


def test_no_secret_in_once_validate_metrics_status_page_or_log(tmp_path: Path,
                                                               monkeypatch) -> None:
    monkeypatch.setenv("INSMON_TEST_AUTH", AUTH_KEY)
    port = free_port()
    text = config(tmp_path, port)
    (tmp_path / "site.yaml").write_text(text)
    for command in (["once", "-c"], ["validate"]):
        result = subprocess.run([INSMON, "--log-level", "debug", *command,
                                 str(tmp_path / "site.yaml")],
                                capture_output=True, text=True, timeout=60)
        assert_clean(result.stdout + result.stderr, f"insmon {command[0]}")
    assert "failed" in result.stdout or "ok" in result.stdout
    monitor = Insmon(tmp_path / "run", text)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: 'check="idrac"' in requests.get(f"{url}/metrics", timeout=5).text
                 and "runs_total" in requests.get(f"{url}/metrics", timeout=5).text, 20,
                 "the checks to run")
        wait_for(lambda: 'check="edge-switch",kind="snmp",status="failed"} 1' in
                 requests.get(f"{url}/metrics", timeout=5).text, 20, "a failed SNMP run")
        assert_clean(requests.get(f"{url}/metrics", timeout=5).text, "/metrics")
        assert_clean(requests.get(f"{url}/", timeout=5).text, "the status page")
    finally:
        monitor.stop()
    assert_clean(monitor.log_file.read_text(), "the log")


@pytest.mark.parametrize("auth", [
    f"{{community: {COMMUNITY}}}",  # a plain string where {value: ...} belongs
    f"{{community: {{value: [{COMMUNITY}]}}}}",
    f"{{version: '3', user: u, auth_key: {AUTH_KEY}, priv_key: {{value: x}}}}",
    f"{{community: {{value: !!int {COMMUNITY}}}}}",  # a tag whose failure would repeat it
    f"{{community: {{value: !!binary {COMMUNITY}}}}}",
])
def test_config_errors_do_not_repeat_secrets(auth: str) -> None:
    text = (f"checks:\n- name: sw\n  kind: snmp\n  address: 127.0.0.1\n  interfaces: [1]\n"
            f"  auth: {auth}\n")
    with pytest.raises(ConfigError) as info:
        parse(text, "site.yaml")
    assert_clean(str(info.value), "a config error")


@pytest.mark.parametrize(("extra", "error"), [
    (f"gateway: {{dialect: x-ca, key: k, secret: {PAAS}}}",  # plain, not {value: ...}
     "checks[0].gateway.secret: Input should be a valid dictionary or instance of Secret"),
    (f"gateway: {{dialect: csb, key: k, secret: {{value: [{PAAS}]}}}}", "secret.value"),
    (f"url: http://gw:{PASSWORD}@127.0.0.1/fsi",
     "expected an http:// or https:// URL with a host and no password in it, got "
     "'http://gw:***@127.0.0.1/fsi'"),
])
def test_settlement_config_errors_do_not_repeat_secrets(extra: str, error: str) -> None:
    text = ("checks:\n- name: settle\n  kind: settlement\n  fixmedins_code: H32010200001\n"
            "  fixmedins_name: 一院\n  mdtrtarea_admvs: '320102'\n  opter: '001'\n"
            f"  opter_name: 收费员\n  {extra}\n")
    if not extra.startswith("url:"):
        text += "  url: http://127.0.0.1/fsi\n"
    with pytest.raises(ConfigError) as info:
        parse(text, "site.yaml")
    assert error in str(info.value)
    assert_clean(str(info.value), "a config error")


@pytest.mark.parametrize(("check", "error"), [
    (f'url: http://127.0.0.1/\n  headers: {{Authorization: "Bearer {TOKEN}\\r\\nX-Injected: 1"}}',
     "the value of header Authorization holds a line break or NUL"),
    (f"url: ftp://insmon:{PASSWORD}@127.0.0.1/",
     "expected an http:// or https:// URL with a host, got 'ftp://insmon:***@127.0.0.1/'"),
])
def test_a_header_with_a_line_break_or_a_bad_url_is_refused_without_its_secret(
        check: str, error: str) -> None:
    text = f"checks:\n- name: web\n  kind: http\n  {check}\n"
    with pytest.raises(ConfigError) as info:
        parse(text, "site.yaml")
    assert error in str(info.value)
    assert_clean(str(info.value), "a config error")
