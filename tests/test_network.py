"""Network probes against real namespaces, veth links, a TUN impairment, real servers.

Traffic goes only to loopback and to the lab's own namespace (ops/lab).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.lab import FRONT_END, Lab
from probes import http, icmp, pinger, snmp, tcp, vpn
from probes.base import CheckBase
from tests.conftest import INSMON, render
from tests.snmp_agent import COMMUNITY, V3_AUTH, V3_PRIV, V3_USER, SnmpAgent


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab()
    try:
        lab.start_front_end(8080)
        yield lab
    finally:
        lab.close()


def value(series: str, name_and_labels: str) -> float:
    for line in series.splitlines():
        if line.startswith(name_and_labels + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name_and_labels} not in:\n{series}")


# ------------------------------------------------------------------------------ icmp

async def test_ping_loopback_v4_and_v6() -> None:
    config = icmp.Config(name="lo", kind="icmp", targets=["127.0.0.1", "::1", "127.0.0.2"],
                         count=4, packet_interval=0.01, interval=5)
    status, series = await render(config, "insmon_ping_")
    assert status.startswith("# ok: 3 targets, loss 0.0%, rtt avg ")
    for target in ("127.0.0.1", "::1", "127.0.0.2"):
        labels = f'{{check="lo",target="{target}"}}'
        assert value(series, f"insmon_ping_loss_ratio{labels}") == 0.0
        assert value(series, f"insmon_ping_packets_received_total{labels}") == 4
        assert 0 < value(series, f"insmon_ping_rtt_max_seconds{labels}") < 0.05
        assert value(series, f"insmon_ping_rtt_seconds_count{labels}") == 4


async def test_ping_timeout_is_a_failure_naming_the_target(lab: Lab) -> None:
    config = icmp.Config(name="line", kind="icmp", targets=["198.18.1.2", "198.18.1.3"],
                         count=2, packet_interval=0.05, packet_timeout=0.5, interval=5)
    status, series = await render(config, "insmon_ping_")
    assert status.startswith("# failed: request timeout from 198.18.1.3; 2 targets, loss 50.0%")
    assert value(series, 'insmon_ping_loss_ratio{check="line",target="198.18.1.3"}') == 1.0
    assert value(series, 'insmon_ping_loss_ratio{check="line",target="198.18.1.2"}') == 0.0


async def test_measured_latency_and_loss_match_the_impairment(lab: Lab) -> None:
    """A 50 ms, 20 % lossy stretch made in user space behind a TUN device."""
    lab.start_impairment(delay=0.05, loss=0.2, seed=7)
    targets = [f"198.18.50.{i}" for i in range(1, 11)]
    config = icmp.Config(name="impaired", kind="icmp", targets=targets, count=20,
                         packet_interval=0.02, packet_timeout=1, interval=10)
    status, series = await render(config, "insmon_ping_")
    received = sum(value(series, f'insmon_ping_packets_received_total{{check="impaired",'
                                 f'target="{t}"}}') for t in targets)
    loss = 1 - received / 200
    assert 0.12 <= loss <= 0.28, status
    for target in targets:
        avg = value(series, f'insmon_ping_rtt_avg_seconds{{check="impaired",target="{target}"}}')
        assert 0.048 <= avg <= 0.075, (target, avg)
    # every reply lands in the 50-100 ms bucket, none below
    below = sum(value(series, f'insmon_ping_rtt_seconds_bucket{{check="impaired",le="0.05",'
                              f'target="{t}"}}') for t in targets)
    assert below == 0


def test_without_icmp_permission_the_error_says_what_to_do(tmp_path: Path) -> None:
    """As an unprivileged user (no CAP_NET_RAW) with ping_group_range excluding it."""
    script = ("import asyncio\nfrom probes.lib import pinger\n"
              "try:\n    asyncio.run(pinger.ping(['127.0.0.1'], 1))\n"
              "except pinger.PingError as e:\n    print(e)\n")
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
         "--bounding-set=-all", sys.executable, "-c", script],
        capture_output=True, text=True, timeout=30, cwd=Path(__file__).parent.parent)
    assert "ICMP is not allowed for this process: it needs CAP_NET_RAW" in result.stdout, \
        result.stderr
    assert "net.ipv4.ping_group_range covering its group 65534" in result.stdout


def test_unprivileged_icmp_through_ping_group_range() -> None:
    """The same user pings once ping_group_range includes its group (datagram sockets)."""
    sysctl = Path("/proc/sys/net/ipv4/ping_group_range")
    before = sysctl.read_text()
    sysctl.write_text("0 65534")
    try:
        script = ("import asyncio\nfrom probes.lib import pinger\n"
                  "r = asyncio.run(pinger.ping(['127.0.0.1'], 2, 0.01))\n"
                  "print(r['127.0.0.1'].received)\n")
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-c", script],
            capture_output=True, text=True, timeout=30, cwd=Path(__file__).parent.parent)
    finally:
        sysctl.write_text(before)
    assert result.stdout.strip() == "2", result.stderr


# ------------------------------------------------------------------------------ vpn

def vpn_check(lab: Lab, backup_standby: bool = False) -> vpn.Config:
    return vpn.Config(name="private-network", kind="vpn", interval=5, timeout=3,
                      front_end=f"{FRONT_END}:8080", ping_count=2, packet_interval=0.05,
                      packet_timeout=0.5, links=[
                          {"name": "private-line", "role": "primary",
                           "interface": lab.primary, "gateway": "198.18.1.2"},
                          {"name": "4g-backup", "role": "backup", "interface": lab.backup,
                           "gateway": "198.18.2.2", "standby": backup_standby}])


def path(series: str) -> tuple[float, str]:
    up = value(series, 'insmon_settlement_path_up{check="private-network"}')
    roles = [r for r in ("primary", "backup", "none") if value(
        series, f'insmon_settlement_active_role{{check="private-network",role="{r}"}}') == 1]
    assert len(roles) == 1
    return up, roles[0]


def link_up(series: str, link: str, role: str) -> float:
    return value(series, f'insmon_vpn_link_up{{check="private-network",link="{link}",'
                         f'role="{role}"}}')


async def test_vpn_failover_primary_cut_then_both(lab: Lab) -> None:
    config = vpn_check(lab)
    status, series = await render(config, "insmon_")
    assert status.startswith("# ok: settlement path via primary; private-line (primary) up")
    assert path(series) == (1.0, "primary")
    assert value(series, 'insmon_vpn_front_end_up{check="private-network",'
                         'link="4g-backup",role="backup"}') == 1.0

    lab.cut("primary")  # municipal works cut the fibre
    status, series = await render(config, "insmon_")
    assert path(series) == (1.0, "backup")  # grade II: the backup carries settlement
    assert link_up(series, "private-line", "primary") == 0.0
    assert link_up(series, "4g-backup", "backup") == 1.0
    assert status.startswith("# failed: settlement path via backup; private-line (primary) "
                             f"DOWN: interface {lab.primary} has no carrier")

    lab.cut("backup")
    status, series = await render(config, "insmon_")
    assert path(series) == (0.0, "none")  # grade I: no settlement path at all
    assert status.startswith("# failed: no settlement path: every link is down")

    lab.restore("primary")
    lab.restore("backup")
    status, series = await render(config, "insmon_")
    assert path(series) == (1.0, "primary")


async def test_vpn_gateway_gone_and_front_end_stopped(lab: Lab) -> None:
    config = vpn_check(lab, backup_standby=True)
    lab.ns_ip("addr", "del", "198.18.1.2/30", "dev", lab.primary_far)
    status, series = await render(config, "insmon_")
    assert "private-line (primary) DOWN: gateway 198.18.1.2 does not answer" in status
    assert value(series, 'insmon_vpn_gateway_loss_ratio{check="private-network",'
                         'link="private-line",role="primary"}') == 1.0
    assert path(series) == (1.0, "backup")

    lab.stop("front-end")  # the front-end process dies: both links lose it
    status, series = await render(config, "insmon_")
    assert path(series) == (0.0, "none")
    assert f"4g-backup (backup) DOWN: front-end: {FRONT_END}:8080 refused the connection" \
        in status


async def test_standby_backup_down_is_not_a_failure(lab: Lab) -> None:
    lab.cut("backup")
    status, series = await render(vpn_check(lab, backup_standby=True), "insmon_")
    assert status.startswith("# ok: settlement path via primary")
    assert link_up(series, "4g-backup", "backup") == 0.0


# ------------------------------------------------------------------------------ tcp

async def test_tcp_connect_and_refusal(lab: Lab) -> None:
    config = tcp.Config(name="kiosks", kind="tcp", interval=5, timeout=2,
                        targets=[f"{FRONT_END}:8080", f"{FRONT_END}:8081"])
    status, series = await render(config, "insmon_tcp_")
    assert status == f"# failed: {FRONT_END}:8081 refused the connection\n"
    assert value(series, f'insmon_tcp_up{{check="kiosks",target="{FRONT_END}:8080"}}') == 1
    assert value(series, f'insmon_tcp_failures_total{{check="kiosks",reason="refused",'
                         f'target="{FRONT_END}:8081"}}') == 1


async def test_tcp_unreachable_when_every_line_is_cut(lab: Lab) -> None:
    lab.cut("primary")
    lab.cut("backup")
    config = tcp.Config(name="front-end", kind="tcp", interval=5, timeout=1,
                        targets=[f"{FRONT_END}:8080"])
    status, series = await render(config, "insmon_tcp_")
    assert status == ("# failed: cannot connect to 198.18.100.1:8080: No route to host\n")
    assert value(series, f'insmon_tcp_failures_total{{check="front-end",reason="unreachable",'
                         f'target="{FRONT_END}:8080"}}') == 1


async def test_tcp_timeout_when_the_far_side_drops_everything(lab: Lab) -> None:
    lab.ns_ip("route", "add", "blackhole", "198.18.60.0/24")
    subprocess.run(["ip", "route", "add", "198.18.60.0/24", "via", "198.18.1.2", "dev",
                    lab.primary], check=True)
    config = tcp.Config(name="front-end", kind="tcp", interval=5, timeout=1,
                        targets=["198.18.60.1:8080"])
    status, series = await render(config, "insmon_tcp_")
    assert status == "# failed: no answer from 198.18.60.1:8080 within 0.9s\n"
    assert value(series, 'insmon_tcp_failures_total{check="front-end",reason="timeout",'
                         'target="198.18.60.1:8080"}') == 1


# ------------------------------------------------------------------------------ http

def http_check(url: str, **extra: object) -> http.Config:
    return http.Config(name="front-end-http", kind="http", url=url, interval=5, timeout=2,
                       **extra)


async def test_http_health_status_and_body(lab: Lab) -> None:
    status, series = await render(http_check(f"http://{FRONT_END}:8080/health",
                                             body_regex="front-end ok"), "insmon_http_")
    assert status.startswith("# ok: status 200 in ")
    assert value(series, 'insmon_http_status_code{check="front-end-http"}') == 200
    for phase in ("connect", "processing", "transfer"):
        assert value(series, f'insmon_http_phase_seconds{{check="front-end-http",'
                             f'phase="{phase}"}}') >= 0

    status, series = await render(http_check(f"http://{FRONT_END}:8080/maintenance"),
                                  "insmon_http_")
    assert status == f"# failed: status 503 from http://{FRONT_END}:8080/maintenance\n"
    assert value(series, 'insmon_http_failures_total{check="front-end-http",'
                         'reason="status"}') == 1

    status, _ = await render(http_check(f"http://{FRONT_END}:8080/health",
                                        body_regex='"status": *"UP"'), "insmon_http_")
    assert status.startswith("# failed: body of http://198.18.100.1:8080/health does not "
                             "match")


async def test_http_slow_answer_times_out(lab: Lab) -> None:
    status, series = await render(http_check(f"http://{FRONT_END}:8080/slow"),
                                  "insmon_http_")
    assert status.startswith("# failed: no complete answer from 198.18.100.1:8080 within")
    assert value(series, 'insmon_http_failures_total{check="front-end-http",'
                         'reason="timeout"}') == 1


def self_signed(directory: Path, days: int) -> tuple[Path, Path, datetime.datetime]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "settlement front-end")])
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    expiry = now + datetime.timedelta(days=days)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(expiry)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(FRONT_END))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "front-end.pem", directory / "front-end.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file, expiry


async def test_https_certificate_expiry_and_trust(lab: Lab, tmp_path: Path) -> None:
    cert, key, expiry = self_signed(tmp_path, days=20)
    lab.start_front_end(8443, tls=(cert, key), name="front-end-tls")
    url = f"https://{FRONT_END}:8443/health"

    status, series = await render(http_check(url, ca_file=cert), "insmon_http_")
    assert status.startswith("# ok: status 200 in ") and "certificate valid 20 more days" \
        in status
    assert value(series, 'insmon_http_tls_cert_expiry_timestamp_seconds'
                         '{check="front-end-http"}') == expiry.timestamp()
    assert value(series, 'insmon_http_phase_seconds{check="front-end-http",phase="tls"}') > 0

    status, series = await render(http_check(url), "insmon_http_")  # not trusted
    assert status.startswith("# failed: TLS with 198.18.100.1:8443 failed: "
                             "CERTIFICATE_VERIFY_FAILED")
    assert value(series, 'insmon_http_failures_total{check="front-end-http",'
                         'reason="tls"}') == 1


def test_configs_reject_bad_addresses() -> None:
    bad: list[tuple[type[CheckBase], dict]] = [
        (icmp.Config, {"targets": ["frontend.local"]}),
        (tcp.Config, {"targets": [FRONT_END]}),
        (http.Config, {"url": "ftp://198.18.100.1/"}),
    ]
    for model, fields in bad:
        with pytest.raises(ValueError):
            model(name="x", kind=model.model_fields["kind"].annotation.__args__[0], **fields)


# ------------------------------------------------------------------------------ snmp

def switch_check(address: str, interfaces: list, auth: dict | None = None) -> snmp.Config:
    return snmp.Config(name="edge-switch", kind="snmp", address=address, retries=0,
                       interval=10, timeout=4, interfaces=interfaces,
                       auth=auth or {"community": {"value": COMMUNITY}})


async def test_snmp_interface_goes_down_with_the_line(lab: Lab, tmp_path: Path) -> None:
    """snmpd serves this host's real IF-MIB; the lab's primary line is one interface."""
    agent = SnmpAgent(tmp_path)
    try:
        config = switch_check(agent.address, [lab.primary, "lo"])
        probe_status, series = await render(config, "insmon_snmp_")
        assert probe_status.startswith("# ok: 2 interfaces up; up ")
        ids = f'check="edge-switch",interface="{lab.primary}"'
        assert value(series, f"insmon_snmp_interface_up{{{ids}}}") == 1
        assert value(series, "insmon_snmp_uptime_seconds{check=\"edge-switch\"}") > 0

        lab.cut("primary")
        for _ in range(40):  # snmpd caches its interface table for a few seconds
            probe_status, series = await render(config, "insmon_snmp_")
            if probe_status.startswith("# failed"):
                break
            await asyncio.sleep(0.5)
        assert probe_status.startswith(f"# failed: interface {lab.primary} down; up ")
        assert value(series, f"insmon_snmp_interface_up{{{ids}}}") == 0
        assert value(series, f"insmon_snmp_interface_admin_up{{{ids}}}") == 1
    finally:
        agent.stop()


async def test_snmp_counters_grow_with_traffic(lab: Lab, tmp_path: Path) -> None:
    agent = SnmpAgent(tmp_path)
    try:
        probe = snmp.Probe(switch_check(agent.address, [lab.primary], {
            "version": "3", "user": V3_USER, "auth_key": {"value": V3_AUTH},
            "priv_key": {"value": V3_PRIV}}))
        first = await probe.run()
        await pinger.ping(["198.18.1.2"], count=20, interval=0.0, payload_size=1000)
        grown = {"in": 0.0, "out": 0.0}
        for _ in range(40):  # until snmpd's interface cache refreshes
            for sample in (await probe.run()).samples:
                if sample.metric == "insmon_snmp_interface_bytes_total":
                    grown[sample.labels["direction"]] += sample.value
            if min(grown.values()) >= 20 * 1000:
                break
            await asyncio.sleep(0.5)
    finally:
        agent.stop()
    assert first.status == "ok"
    # the first run only takes the device's counters as a baseline
    assert {s.value for s in first.samples if s.metric.endswith("_total")} == {0.0}
    assert min(grown.values()) >= 20 * 1000  # 20 pings of 1000 bytes each way


async def test_snmp_no_such_interface_and_wrong_community(tmp_path: Path) -> None:
    agent = SnmpAgent(tmp_path)
    try:
        status, _ = await render(switch_check(agent.address, ["GigabitEthernet0/9"]),
                                 "insmon_snmp_")
        assert status == f"# failed: {agent.address} has no interface 'GigabitEthernet0/9'\n"
        status, _ = await render(switch_check(agent.address, ["lo"], {
            "community": {"value": "guessed"}}), "insmon_snmp_")
        assert status == ("# failed: no response (agent down, unreachable, or wrong "
                          "community/credentials)\n")
    finally:
        agent.stop()


# ------------------------------------------------------------------------------ the CLI

def test_insmon_once_against_the_lab(lab: Lab, tmp_path: Path) -> None:
    """What an engineer types at the console: the whole chain in one table."""
    config = tmp_path / "lab.yaml"
    config.write_text(f"""\
checks:
  - name: private-network
    kind: vpn
    timeout: 4s
    front_end: {FRONT_END}:8080
    links:
      - {{name: private-line, role: primary, interface: {lab.primary}, gateway: 198.18.1.2}}
      - {{name: 4g-backup, role: backup, interface: {lab.backup}, gateway: 198.18.2.2}}
  - name: line-ping
    kind: icmp
    targets: [198.18.1.2, {FRONT_END}]
  - name: front-end-http
    kind: http
    url: http://{FRONT_END}:8080/health
  - name: kiosks
    kind: tcp
    targets: ["{FRONT_END}:8080"]
""")
    lab.cut("primary")
    result = subprocess.run([INSMON, "once", "-c", str(config)], capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert result.returncode == 1  # not everything is ok: the primary line is cut
    assert " failed " in rows["private-network"]
    assert "settlement path via backup; private-line (primary) DOWN" in rows["private-network"]
    assert " ok " in rows["front-end-http"] and "status 200" in rows["front-end-http"]
    assert " ok " in rows["kiosks"]
    assert " failed " in rows["line-ping"] and "request timeout from 198.18.1.2" \
        in rows["line-ping"]


async def test_wireguard_handshake_age(lab: Lab, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """This kernel has no WireGuard, so `wg` is a stand-in printing what
    `wg show IF latest-handshakes` prints: one peer key and Unix time per line."""
    handshake = int(time.time()) - 42
    wg = tmp_path / "wg"
    wg.write_text("#!/bin/sh\n"
                  f'[ "$2" = "{lab.primary}" ] || {{ echo "Unable to access interface" >&2; '
                  "exit 1; }\n"
                  f"printf 'xTIrpH9yh5pCtd3/94z4a+2gF9GDBNLzCw4x1JZEeWs=\\t{handshake}\\n"
                  "hAH/3Ot7jlc0Ze3LV7g/0zBPQRzxGGvGfKdu2Eixwmo=\\t0\\n'\n")
    wg.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    _, series = await render(vpn_check(lab), "insmon_vpn_handshake")
    age = value(series, 'insmon_vpn_handshake_age_seconds{check="private-network",'
                        'link="private-line",role="primary"}')
    assert 42 <= age < 50
    assert "4g-backup" not in series  # `wg` does not know that interface: no series
