"""What every RAID source (md, storcli, SNMP) reports: arrays in one shape."""

from __future__ import annotations

from dataclasses import dataclass, field

from probes.base import ProbeFailure

# One-hot states of an array. clean/active: healthy (md's clean has no writes pending);
# unknown: the controller itself says it does not know.
ARRAY_STATES = ("clean", "active", "degraded", "resyncing", "recovering", "checking",
                "reshaping", "inactive", "failed", "unknown")
# Member disks: active (in sync), failed, spare (hot spare available to the array),
# missing (a slot of the array with no in-sync disk: absent, or being rebuilt).
DISK_STATES = ("active", "failed", "spare", "missing")


class FormatError(ProbeFailure):
    """Device output that does not have the expected shape: a failed probe, with why."""


@dataclass(frozen=True)
class Sync:
    action: str  # resync, recovery, check, repair, reshape, rebuild
    progress: float  # 0..1
    speed: float | None = None  # bytes per second
    remaining: float | None = None  # seconds


@dataclass(frozen=True)
class Array:
    name: str
    level: str  # raid1, raid5, ... as the source names it
    state: str | None  # one of ARRAY_STATES; None for a group of disks that is no array
    disks: dict[str, int] = field(default_factory=dict)  # DISK_STATES -> count
    sync: Sync | None = None

    @property
    def healthy(self) -> bool:
        if self.state is None:
            return not (self.disks.get("failed") or self.disks.get("missing"))
        return self.state in ("clean", "active", "checking")
