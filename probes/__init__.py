"""The probe kinds, one module each. This map is the only list of them: the config's
tagged union on `kind` and the exporter's metric declarations are derived from it."""

from types import ModuleType

from probes import cpu, disk_io, http, icmp, raid, snmp, storage_latency, tcp, vpn

PROBES: dict[str, ModuleType] = {
    "cpu": cpu,
    "disk_io": disk_io,
    "storage_latency": storage_latency,
    "raid": raid,
    "icmp": icmp,
    "vpn": vpn,
    "tcp": tcp,
    "http": http,
    "snmp": snmp,
}
