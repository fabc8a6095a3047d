"""The probe kinds, one module each. This map is the only list of them: the config's
tagged union on `kind` and the exporter's metric declarations are derived from it."""

from types import ModuleType

from probes import cpu

PROBES: dict[str, ModuleType] = {
    "cpu": cpu,
}
