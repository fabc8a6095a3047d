"""The vpn probe through real links in the namespace lab (ops/lab): failover, a lost
gateway, a stopped front-end, a standby backup, the WireGuard handshake, and `insmon once`
over the whole chain. Every test here builds namespaces: root only."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ops.lab import FRONT_END, Lab, sweep_stale_labs
from probes import vpn
from tests.conftest import INSMON, render, value

pytestmark = pytest.mark.root


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


async def test_a_lab_left_by_a_killed_owner_is_removed_by_the_next_lab() -> None:
    """kill -9 leaves the namespace, the links and their routes to the front-end behind;
    the next lab must still build (in CI this machine may have run an interrupted suite)."""
    owner = subprocess.Popen(
        [sys.executable, "-c", "import time; from ops.lab import Lab\n"
         "lab = Lab(); lab.start_front_end(8080); print(lab.ns, flush=True); time.sleep(60)"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        stale = owner.stdout.readline().strip()
    finally:
        owner.kill()
        owner.wait()
    assert stale in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                   text=True).stdout
    lab = Lab()
    try:
        assert stale not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                           text=True).stdout
        assert f"ip{owner.pid}p" not in os.listdir("/sys/class/net")
        lab.start_front_end(8080)  # the stale front-end no longer holds the port
        _, series = await render(vpn_check(lab), "insmon_")
        assert path(series) == (1, "primary")
    finally:
        lab.close()
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    assert f"ip{owner.pid}p" not in routes and f"ip{lab.ns.rsplit('-', 1)[1]}p" not in routes
    if not sweep_stale_labs():  # no lab of a test beside this one: the guard went too
        assert "198.18" not in routes
