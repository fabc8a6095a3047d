"""RAID over SNMP against a real snmpd serving the iDRAC and MegaRAID tables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.config import ConfigError, parse
from probes import raid
from tests.conftest import render
from tests.snmp_agent import COMMUNITY, V3_AUTH, V3_PRIV, V3_USER, SnmpAgent

IDRAC = "1.3.6.1.4.1.674.10892.5.5.1.20"
IDRAC_VD_NAME, IDRAC_VD_STATE = f"{IDRAC}.140.1.1.2", f"{IDRAC}.140.1.1.4"
IDRAC_PD_STATE = f"{IDRAC}.130.4.1.4"
MEGARAID = "1.3.6.1.4.1.3582.4.1.4"
MR_VD_STATE, MR_PD_STATE = f"{MEGARAID}.3.1.2.1.5", f"{MEGARAID}.2.1.2.1.10"


def idrac_table(vd_state: int, pd_states: list[int]) -> dict[str, tuple[str, object]]:
    table = {f"{IDRAC_VD_NAME}.1": ("string", "settlement"),
             f"{IDRAC_VD_STATE}.1": ("integer", vd_state)}
    table |= {f"{IDRAC_PD_STATE}.{i}": ("integer", s) for i, s in enumerate(pd_states, 1)}
    return table


@pytest.fixture
def idrac(tmp_path: Path) -> Iterator[SnmpAgent]:
    agent = SnmpAgent(tmp_path, IDRAC, idrac_table(2, [3, 3, 3]))
    yield agent
    agent.stop()


def snmp_check(address: str, profile: str, auth: dict) -> raid.Config:
    return raid.Config(name="array", kind="raid", interval=10, timeout=3, source={
        "type": "snmp", "address": address, "profile": profile, "auth": auth,
        "retries": 0})


V2C = {"version": "2c", "community": {"value": COMMUNITY}}


async def test_idrac_disk_failure_and_recovery(idrac: SnmpAgent) -> None:
    config = snmp_check(idrac.address, "idrac", V2C)
    status, series = await render(config, "insmon_raid_")
    assert status == "# ok: settlement clean, all disks\n"
    assert 'insmon_raid_array_state{array="settlement",check="array",source="snmp",' \
           'state="clean"} 1.0' in series

    idrac.set(idrac_table(4, [3, 7, 3]))  # a disk fails, the virtual disk degrades
    status, series = await render(config, "insmon_raid_")
    assert status == "# failed: settlement degraded, all disks (1 failed, 0 missing)\n"
    assert 'state="degraded"} 1.0' in series
    assert 'insmon_raid_disks{array="all",check="array",source="snmp",state="failed"} 1.0' \
        in series
    assert 'insmon_raid_disks{array="all",check="array",source="snmp",state="active"} 2.0' \
        in series


async def test_megaraid_over_v3_authpriv(tmp_path: Path) -> None:
    (tmp_path / "auth").write_text(V3_AUTH + "\n")
    agent = SnmpAgent(tmp_path, MEGARAID, {
        f"{MR_VD_STATE}.0": ("integer", 3),
        f"{MR_PD_STATE}.0": ("integer", 24), f"{MR_PD_STATE}.1": ("integer", 24),
        f"{MR_PD_STATE}.2": ("integer", 2), f"{MR_PD_STATE}.3": ("integer", 0)})
    try:
        status, series = await render(snmp_check(agent.address, "megaraid", {
            "version": "3", "user": V3_USER, "auth_key": {"file": str(tmp_path / "auth")},
            "priv_key": {"value": V3_PRIV}}), "insmon_raid_")
    finally:
        agent.stop()
    assert status == "# ok: vd0 clean, all disks\n"
    assert 'insmon_raid_disks{array="all",check="array",source="snmp",state="spare"} 1.0' \
        in series  # the unconfigured disk (0) is no member and not counted
    assert 'insmon_raid_disks{array="all",check="array",source="snmp",state="active"} 2.0' \
        in series


async def test_wrong_community_is_a_clear_failure(idrac: SnmpAgent) -> None:
    secret = "not-the-community"
    status, series = await render(snmp_check(idrac.address, "idrac", {
        "version": "2c", "community": {"value": secret}}), "insmon_raid_")
    assert status == ("# failed: no response (agent down, unreachable, or wrong "
                      "community/credentials)\n")
    assert secret not in status and series == ""


async def test_garbage_state_is_a_failure_with_reason(idrac: SnmpAgent) -> None:
    idrac.set({f"{IDRAC_VD_STATE}.1": ("string", "on fire")})
    status, _ = await render(snmp_check(idrac.address, "idrac", V2C), "insmon_raid_")
    assert status == (f"# failed: expected an integer state under {IDRAC_VD_STATE}, "
                      "got 'on fire'\n")


async def test_wrong_profile_says_so(idrac: SnmpAgent) -> None:
    status, _ = await render(snmp_check(idrac.address, "megaraid", V2C), "insmon_raid_")
    assert status == (f"# failed: no virtual disks under {MR_VD_STATE}: wrong profile, or "
                      "the agent does not serve that table\n")


def test_custom_map_states_are_checked() -> None:
    text = ("checks:\n- name: array\n  kind: raid\n  source:\n    type: snmp\n"
            "    address: 127.0.0.1\n    auth: {community: {env: ARRAY_COMMUNITY}}\n"
            "    oids:\n      virtual_disk_state:\n        oid: 1.3.6.1.4.1.9999.1.2\n"
            "        states: {1: clean, 2: broken}\n")
    with pytest.raises(ConfigError) as info:
        parse(text, "site.yaml")
    assert info.value.problems == ("site.yaml:9: checks[0].source.oids: unknown "
                                   "state 'broken'; allowed: clean, active, degraded, "
                                   "resyncing, recovering, checking, reshaping, inactive, "
                                   "failed, unknown",)
