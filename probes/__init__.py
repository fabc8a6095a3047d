"""The probe kinds, one module each. `PROBES` is the only list of them: the config's
tagged union on `kind` and the exporter's metric declarations are derived from it.

It is built on first use, so importing the contract (`probes.base`) stays light for the
commands that run no probe (`insmon --version`, review, drill)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from probes.base import Kind

    PROBES: dict[str, Kind]


def __getattr__(name: str) -> object:
    if name != "PROBES":
        raise AttributeError(f"module 'probes' has no attribute {name!r}")
    from probes import (
        calendar,
        cpu,
        disk_io,
        http,
        icmp,
        raid,
        settlement,
        snmp,
        storage_latency,
        tcp,
        vpn,
    )

    kinds = (cpu, disk_io, storage_latency, raid, icmp, vpn, settlement, tcp, http, snmp,
             calendar)
    globals()["PROBES"] = registry = {module.KIND.name: module.KIND for module in kinds}
    return registry
