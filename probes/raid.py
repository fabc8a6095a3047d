"""RAID state from three sources behind one series shape.

  md       Linux software RAID: /proc/mdstat (+ /sys/block/md*/md/array_state)
  storcli  MegaRAID/PERC controllers: storcli64 or perccli64 JSON
  snmp     storage arrays and server management cards: OID tables with value->state maps,
           shipped for the LSI MegaRAID MIB and Dell iDRAC

The probe fails when any array is not healthy (degraded, rebuilding, failed, ...) or its
state cannot be read; the series say which array and how.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from probes.base import (
    CheckBase,
    Kind,
    MetricSpec,
    ProbeResult,
    Sample,
    one_hot,
    run_command,
)
from probes.lib import raid_md, raid_storcli
from probes.lib.kernel_files import KernelReads, read_capped
from probes.lib.raid_model import ARRAY_STATES, DISK_STATES, Array, FormatError
from probes.lib.snmp_client import NUMERIC_OID, SnmpError, SnmpSession, SnmpTarget


class MdSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["md"]
    root: Path = Path("/")  # where proc/ and sys/ are (a container: the host's mount)


class StorcliSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["storcli"]
    command: str = "storcli64"  # a path, or a name on PATH; perccli64 works the same


class StateColumn(BaseModel):
    """An SNMP table column of states, and what each value means."""

    model_config = ConfigDict(extra="forbid")
    oid: str = Field(pattern=NUMERIC_OID)
    states: dict[int, str]


class OidMap(BaseModel):
    model_config = ConfigDict(extra="forbid")
    virtual_disk_state: StateColumn  # values -> ARRAY_STATES
    virtual_disk_name: str | None = Field(default=None, pattern=NUMERIC_OID)
    physical_disk_state: StateColumn | None = None  # values -> DISK_STATES or "none"

    @model_validator(mode="after")
    def _known_states(self) -> OidMap:
        for column, allowed in ((self.virtual_disk_state, ARRAY_STATES),
                                (self.physical_disk_state, (*DISK_STATES, "none"))):
            bad = sorted({s for s in (column.states.values() if column else ())} - set(allowed))
            if bad:
                raise ValueError(f"unknown state {bad[0]!r}; allowed: {', '.join(allowed)}")
        return self


# Shipped maps. LSI-MegaRAID-SAS-MIB: virtualDriveTable state (.3.1.2.1.5) and
# physicalDriveTable pdState (.2.1.2.1.10). IDRAC-MIB-SMIv2: virtualDiskTable
# (.140.1.1.2 name, .4 state) and physicalDiskTable (.130.4.1.4 state).
PROFILES = {
    "megaraid": OidMap(
        virtual_disk_state=StateColumn(oid="1.3.6.1.4.1.3582.4.1.4.3.1.2.1.5", states={
            0: "failed", 1: "degraded", 2: "degraded", 3: "clean"}),
        physical_disk_state=StateColumn(oid="1.3.6.1.4.1.3582.4.1.4.2.1.2.1.10", states={
            0: "none", 1: "failed", 2: "spare", 16: "failed", 17: "failed", 20: "missing",
            24: "active", 32: "active", 64: "none", 128: "none", 130: "spare",
            144: "active"})),
    "idrac": OidMap(
        virtual_disk_state=StateColumn(oid="1.3.6.1.4.1.674.10892.5.5.1.20.140.1.1.4", states={
            1: "unknown", 2: "clean", 3: "failed", 4: "degraded"}),
        virtual_disk_name="1.3.6.1.4.1.674.10892.5.5.1.20.140.1.1.2",
        physical_disk_state=StateColumn(oid="1.3.6.1.4.1.674.10892.5.5.1.20.130.4.1.4",
                                        states={1: "failed", 2: "none", 3: "active",
                                                4: "none", 5: "failed", 6: "failed",
                                                7: "failed", 8: "none", 9: "missing",
                                                10: "active"})),
}


class SnmpSource(SnmpTarget):
    type: Literal["snmp"]
    profile: Literal["megaraid", "idrac"] | None = None
    oids: OidMap | None = None  # your own map, for other arrays

    @model_validator(mode="after")
    def _one_map(self) -> SnmpSource:
        if (self.profile is None) == (self.oids is None):
            raise ValueError("give either profile (megaraid, idrac) or oids")
        return self

    @property
    def map(self) -> OidMap:
        return self.oids or PROFILES[self.profile or ""]


class Config(CheckBase):
    kind: Literal["raid"]
    source: Annotated[Union[MdSource, StorcliSource, SnmpSource],  # noqa: UP007
                      Field(discriminator="type")]
    # The arrays this host must have, by name: one that vanishes (a controller that no
    # longer reports it, an md array stopped) fails the check instead of reading healthy.
    expected: list[str] = Field(default_factory=list, max_length=64)


IDS = ("array", "source")
METRICS = (
    MetricSpec("insmon_raid_array_state", "gauge",
               "1 for the array's current state, 0 for the others: clean, active, degraded, "
               "resyncing, recovering, checking, reshaping, inactive, failed, unknown.",
               (*IDS, "state")),
    MetricSpec("insmon_raid_array_info", "gauge",
               "Always 1; the level label says the array's RAID level.", (*IDS, "level")),
    MetricSpec("insmon_raid_disks", "gauge",
               "Member disks of the array by state: active (in sync), failed, spare, "
               "missing (a slot with no in-sync disk, absent or being rebuilt).",
               (*IDS, "state")),
    MetricSpec("insmon_raid_sync_progress_ratio", "gauge",
               "Progress of the resync, recovery, rebuild, check or reshape under way.",
               IDS, "ratio"),
    MetricSpec("insmon_raid_sync_speed_bytes_per_second", "gauge",
               "Speed of the sync under way, where the source tells it.", IDS),
    MetricSpec("insmon_raid_sync_remaining_seconds", "gauge",
               "Estimated time until the sync under way finishes, where the source tells it.",
               IDS, "seconds"),
    MetricSpec("insmon_raid_array_present", "gauge",
               "For each array the check expects (its `expected` names): 1 if the source "
               "reports it, 0 if it has vanished.", IDS),
)


class Probe:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        source = cfg.source
        self._snmp = SnmpSession(source) if isinstance(source, SnmpSource) else None
        self._md = KernelReads(source.root / "proc", source.root / "sys") \
            if isinstance(source, MdSource) else None

    async def run(self) -> ProbeResult:
        source = self.cfg.source
        if isinstance(source, MdSource):
            assert self._md is not None
            arrays = await self._md.run(read_md, source.root)
        elif isinstance(source, StorcliSource):
            arrays = await read_storcli(source.command)
        else:
            assert self._snmp is not None
            arrays = await read_snmp(self._snmp, source.map, self.cfg.timeout)
        return result(arrays, source.type, self.cfg.expected)


def read_md(root: Path) -> list[Array]:
    try:
        text = read_capped(root / "proc" / "mdstat")
    except FileNotFoundError:
        raise FormatError(f"no {root / 'proc' / 'mdstat'}: the md driver is not "
                          "loaded") from None
    sysfs = root / "sys" / "block"
    return raid_md.parse(text, sysfs if sysfs.is_dir() else None)


async def read_storcli(command: str) -> list[Array]:
    vall = await run_command([command, *raid_storcli.VALL])
    pds = await run_command([command, *raid_storcli.PDS])
    rebuild = None
    if '"Rbld"' in pds:  # the third call only while a drive rebuilds
        rebuild = await run_command([command, *raid_storcli.REBUILD])
    return raid_storcli.parse(vall, pds, rebuild)


async def read_snmp(session: SnmpSession, oids: OidMap, timeout: float) -> list[Array]:
    # Each walk gets a share of the run's deadline; retries come out of it too.
    per_walk = max(0.2, timeout / 3 / (session.target.retries + 1))
    states = await session.walk(oids.virtual_disk_state.oid, per_walk)
    if not states:
        raise SnmpError(f"no virtual disks under {oids.virtual_disk_state.oid}: wrong "
                        "profile, or the agent does not serve that table")
    names = await session.walk(oids.virtual_disk_name, per_walk) if oids.virtual_disk_name \
        else {}
    disks: Counter[str] = Counter()
    if oids.physical_disk_state:
        for value in (await session.walk(oids.physical_disk_state.oid, per_walk)).values():
            state = _mapped(oids.physical_disk_state, value, "failed")
            if state != "none":
                disks[state] += 1
    arrays = []
    prefix = oids.virtual_disk_state.oid.lstrip(".") + "."
    for oid, value in sorted(states.items()):
        index = oid.removeprefix(prefix)
        name_oid = f"{oids.virtual_disk_name.lstrip('.')}.{index}" if oids.virtual_disk_name \
            else ""
        name = names.get(name_oid) or f"vd{index}"
        arrays.append(Array(str(name), "unknown",
                            _mapped(oids.virtual_disk_state, value, "unknown")))
    if oids.physical_disk_state:
        # SNMP tables do not say which disk belongs to which virtual disk: the physical
        # disks are counted together, as array "all".
        arrays.append(Array("all", "", None, {s: disks[s] for s in DISK_STATES}))
    return arrays


def _mapped(column: StateColumn, value: object, default: str) -> str:
    if not isinstance(value, int):
        raise SnmpError(f"expected an integer state under {column.oid}, got {value!r:.40}")
    return column.states.get(value, default)


def result(arrays: list[Array], source: str, expected: list[str] | None = None
           ) -> ProbeResult:
    samples: list[Sample] = []
    names = {array.name for array in arrays}
    missing = [name for name in expected or () if name not in names]
    samples += [Sample("insmon_raid_array_present", float(name in names),
                       {"array": name, "source": source}) for name in expected or ()]
    for array in arrays:
        ids = {"array": array.name, "source": source}
        if array.state is not None:
            samples += one_hot("insmon_raid_array_state", "state", ARRAY_STATES, array.state,
                               ids)
            samples.append(Sample("insmon_raid_array_info", 1.0,
                                  {**ids, "level": array.level}))
        if array.disks:
            samples += [Sample("insmon_raid_disks", float(array.disks.get(state, 0)),
                               {**ids, "state": state}) for state in DISK_STATES]
        sync = array.sync
        if sync is not None:
            samples.append(Sample("insmon_raid_sync_progress_ratio", sync.progress, ids))
            if sync.speed is not None:
                samples.append(Sample("insmon_raid_sync_speed_bytes_per_second", sync.speed,
                                      ids))
            if sync.remaining is not None:
                samples.append(Sample("insmon_raid_sync_remaining_seconds", sync.remaining,
                                      ids))
    unhealthy = [a for a in arrays if not a.healthy]
    gone = "; ".join(f"expected array {name} is missing" for name in missing)
    if not arrays:
        return ProbeResult("failed", tuple(samples), gone) if gone else \
            ProbeResult("ok", (), "no arrays")
    described = ", ".join(_describe(a) for a in (unhealthy or arrays))
    if unhealthy or missing:
        return ProbeResult("failed", tuple(samples),
                           "; ".join(filter(None, (gone, described if unhealthy else ""))))
    return ProbeResult("ok", tuple(samples), described)


def _describe(array: Array) -> str:
    text = f"{array.name} {array.state or 'disks'}"
    missing, failed = array.disks.get("missing", 0), array.disks.get("failed", 0)
    if missing or failed:
        text += f" ({failed} failed, {missing} missing)"
    if array.sync is not None:
        text += f", {array.sync.action} {array.sync.progress:.1%}"
        if array.sync.remaining is not None:
            text += f" ({array.sync.remaining / 60:.0f} min left)"
    return text


KIND = Kind(Config, METRICS, Probe)
