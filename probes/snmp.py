"""Network devices on the private-network edge over SNMP (IF-MIB by numeric OID).

Per configured interface: oper and admin status, in/out octets, errors and discards
(64-bit ifX counters where the device has them, else the 32-bit ifTable ones); per device:
sysUpTime, to see a reboot. The check fails when the device does not answer or a
configured interface is not up. Device counters become insmon counters by their
increase between runs, so a wrap or a device reboot never makes them go backwards.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from probes.base import CheckBase, Kind, MetricSpec, ProbeResult, Sample
from probes.lib.snmp_client import SnmpError, SnmpSession, SnmpTarget

SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
IF_NAME = "1.3.6.1.2.1.31.1.1.1.1"
IF_ADMIN = "1.3.6.1.2.1.2.2.1.7"
IF_OPER = "1.3.6.1.2.1.2.2.1.8"
# (our counter, 64-bit ifXTable column, 32-bit ifTable column or None)
COUNTERS = (
    ("in_bytes", "1.3.6.1.2.1.31.1.1.1.6", "1.3.6.1.2.1.2.2.1.10"),  # ifHC*Octets, if*Octets
    ("out_bytes", "1.3.6.1.2.1.31.1.1.1.10", "1.3.6.1.2.1.2.2.1.16"),
    ("in_errors", None, "1.3.6.1.2.1.2.2.1.14"),
    ("out_errors", None, "1.3.6.1.2.1.2.2.1.20"),
    ("in_discards", None, "1.3.6.1.2.1.2.2.1.13"),
    ("out_discards", None, "1.3.6.1.2.1.2.2.1.19"),
)
OPER_STATES = {1: "up", 2: "down", 3: "testing", 4: "unknown", 5: "dormant",
               6: "notPresent", 7: "lowerLayerDown"}


class Config(CheckBase, SnmpTarget):
    kind: Literal["snmp"]
    # interfaces to watch: ifIndex numbers, or names matched against ifName then ifDescr
    interfaces: list[int | str] = Field(min_length=1)

    @field_validator("interfaces")
    @classmethod
    def _unique(cls, values: list[int | str]) -> list[int | str]:
        if len(set(values)) != len(values):
            raise ValueError("an interface is listed twice")
        return values


IF = ("interface",)
METRICS = (
    MetricSpec("insmon_snmp_uptime_seconds", "gauge",
               "The device's sysUpTime: a drop means it rebooted.", (), "seconds"),
    MetricSpec("insmon_snmp_interface_up", "gauge",
               "1 if the interface's operational status is up.", IF),
    MetricSpec("insmon_snmp_interface_admin_up", "gauge",
               "1 if the interface is administratively up.", IF),
    MetricSpec("insmon_snmp_interface_bytes_total", "counter",
               "Bytes (octets) through the interface since insmon started watching, by "
               "direction.", (*IF, "direction"), "bytes"),
    MetricSpec("insmon_snmp_interface_errors_total", "counter",
               "Packets with errors, by direction.", (*IF, "direction")),
    MetricSpec("insmon_snmp_interface_discards_total", "counter",
               "Packets discarded without error (e.g. buffer full), by direction.",
               (*IF, "direction")),
)


class Probe:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._session = SnmpSession(cfg)
        self._last: dict[tuple[str, str], int] = {}  # (interface, counter) -> raw value
        self._uptime: float | None = None

    async def run(self) -> ProbeResult:
        per_walk = max(0.2, self.cfg.timeout / 12 / (self.cfg.retries + 1))
        walk = self._session.walk
        ticks = await self._session.get(SYS_UPTIME, per_walk)
        if not isinstance(ticks, int):
            raise SnmpError(f"no sysUpTime from {self.cfg.address} (got {ticks!r:.40})")
        uptime = ticks / 100
        rebooted = self._uptime is not None and uptime < self._uptime
        self._uptime = uptime

        names = {**_by_index(await walk(IF_DESCR, per_walk), IF_DESCR),
                 **_by_index(await walk(IF_NAME, per_walk), IF_NAME)}
        wanted = {}
        for item in self.cfg.interfaces:
            index = item if isinstance(item, int) else next(
                (i for i, n in names.items() if n == item), None)
            if index is None or (isinstance(item, int) and index not in names):
                raise SnmpError(f"{self.cfg.address} has no interface {item!r}")
            wanted[index] = names.get(index) or str(index)

        oper_column = await walk(IF_OPER, per_walk)
        admin_column = await walk(IF_ADMIN, per_walk)
        counters = {}  # name -> (column, values, counter bits)
        for name, wide, narrow in COUNTERS:
            values = await walk(wide, per_walk) if wide else {}
            counters[name] = (wide, values, 64) if values else (
                narrow, await walk(narrow, per_walk), 32)

        samples = [Sample("insmon_snmp_uptime_seconds", uptime)]
        down = []
        for index, label in wanted.items():
            ids = {"interface": label}
            oper = _at(oper_column, IF_OPER, index)
            admin = _at(admin_column, IF_ADMIN, index)
            samples += [Sample("insmon_snmp_interface_up", float(oper == 1), ids),
                        Sample("insmon_snmp_interface_admin_up", float(admin == 1), ids)]
            if oper != 1:
                down.append(f"{label} {OPER_STATES.get(oper or 0, oper)}")
            for name, (column, values, bits) in counters.items():
                raw = _at(values, column, index)
                if raw is None:
                    continue
                direction, what = name.split("_")
                samples.append(Sample(f"insmon_snmp_interface_{what}_total",
                                      float(self._increase((label, name), raw, bits, rebooted)),
                                      {**ids, "direction": direction}))
        detail = f"up {uptime / 86400:.1f} days" + (" (rebooted since last run)"
                                                   if rebooted else "")
        if down:
            return ProbeResult("failed", tuple(samples),
                               f"interface {', '.join(down)}; {detail}")
        return ProbeResult("ok", tuple(samples),
                           f"{len(wanted)} interfaces up; {detail}")

    def _increase(self, key: tuple[str, str], raw: int, bits: int, rebooted: bool) -> int:
        """How much a device counter grew since the last run; 0 the first time, and
        after a reboot the new value itself (it counted up from 0)."""
        last = self._last.get(key)
        self._last[key] = raw
        if last is None:
            return 0
        if rebooted:
            return raw
        if raw >= last:
            return raw - last
        return raw + (1 << bits) - last  # wrapped


def _by_index(values: dict[str, object], column: str) -> dict[int, str]:
    out = {}
    for oid, value in values.items():
        suffix = oid.removeprefix(column + ".")
        if suffix.isdigit() and value is not None:
            out[int(suffix)] = value if isinstance(value, str) else repr(value)
    return out


def _at(values: dict[str, object], column: str, index: int) -> int | None:
    value = values.get(f"{column}.{index}")
    if value is None:
        return None
    if not isinstance(value, int):
        raise SnmpError(f"expected an integer at {column}.{index}, got {value!r:.40}")
    return value


KIND = Kind(Config, METRICS, Probe)
