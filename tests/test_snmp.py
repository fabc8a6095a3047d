"""The snmp probe against a real snmpd (this host's IF-MIB, v2c and v3 authPriv), with a
lab line going down under it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ops.lab import Lab
from probes import snmp
from probes.lib import pinger
from probes.lib.snmp_client import SnmpError, SnmpSession
from tests.conftest import render, value
from tests.snmp_agent import COMMUNITY, V3_AUTH, V3_PRIV, V3_USER, SnmpAgent


def switch_check(address: str, interfaces: list, auth: dict | None = None) -> snmp.Config:
    return snmp.Config(name="edge-switch", kind="snmp", address=address, retries=0,
                       interval=10, timeout=4, interfaces=interfaces,
                       auth=auth or {"community": {"value": COMMUNITY}})


@pytest.mark.root
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


@pytest.mark.root
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


async def test_a_walk_longer_than_its_bound_is_refused(tmp_path: Path) -> None:
    """An agent that answers without end (broken or hostile) is cut at the walk's bound
    with a reason, not read into memory. The bound here is 3 values of the system group."""
    agent = SnmpAgent(tmp_path)
    try:
        session = SnmpSession(switch_check(agent.address, ["lo"]))
        system = await session.walk("1.3.6.1.2.1.1", 2)
        assert len(system) > 3  # what snmpd has: sysDescr, sysObjectID, sysUpTime, ...
        with pytest.raises(SnmpError, match=r"answered more than 3 values under "
                                            r"1\.3\.6\.1\.2\.1\.1: refused"):
            await session.walk("1.3.6.1.2.1.1", 2, max_rows=3)
    finally:
        agent.stop()
