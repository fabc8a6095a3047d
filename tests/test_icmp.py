"""The icmp probe: loopback, the lab's lines (a timeout, a real impairment behind a TUN
device) and the privileges it needs. Traffic goes only to loopback and to the lab's own
namespace (ops/lab)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ops.lab import Lab
from probes import icmp
from tests.conftest import PING_GROUP_RANGE, render, value


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


@pytest.mark.root
async def test_ping_timeout_is_a_failure_naming_the_target(lab: Lab) -> None:
    config = icmp.Config(name="line", kind="icmp", targets=["198.18.1.2", "198.18.1.3"],
                         count=2, packet_interval=0.05, packet_timeout=0.5, interval=5)
    status, series = await render(config, "insmon_ping_")
    assert status.startswith("# failed: request timeout from 198.18.1.3; 2 targets, loss 50.0%")
    assert value(series, 'insmon_ping_loss_ratio{check="line",target="198.18.1.3"}') == 1.0
    assert value(series, 'insmon_ping_loss_ratio{check="line",target="198.18.1.2"}') == 0.0


@pytest.mark.root
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


@pytest.mark.root
@PING_GROUP_RANGE
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


@PING_GROUP_RANGE
@pytest.mark.root
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
