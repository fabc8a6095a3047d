"""Disk IO of this host, passively, from the kernel's /proc/diskstats.

Per device and over the interval since the previous run, what iostat -x shows: average
latency of completed reads and writes (r_await, w_await), IOPS, throughput, busy share
(%util), average queue depth (aqu-sz), and IOs in flight now. In the reference incident
the console showed storage IO latency above 2000 ms: that is `insmon_disk_*_await_seconds`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, NamedTuple

from probes.base import Baseline, CheckBase, Kind, MetricSpec, ProbeResult, Sample
from probes.lib.kernel_files import KernelReads, read_capped

SECTOR_BYTES = 512  # /proc/diskstats counts 512-byte sectors whatever the device's size
SHORT_WINDOW_SECONDS = 0.5
# Partitions and virtual devices, as node_exporter leaves them out by default.
DEFAULT_EXCLUDE = r"(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p|mmcblk\d+p)\d+"


class Config(CheckBase):
    kind: Literal["disk_io"]
    devices: re.Pattern[str] = re.compile(r".*")  # device names to watch (full match)
    exclude: re.Pattern[str] = re.compile(DEFAULT_EXCLUDE)  # and to leave out
    root: Path = Path("/")  # where proc/ is: a container may mount the host's at /host


LABELS = ("device",)
METRICS = (
    MetricSpec("insmon_disk_read_await_seconds", "gauge",
               "Average time a read completed since the previous run spent queued and in "
               "service (iostat r_await); 0 when no read completed.", LABELS, "seconds"),
    MetricSpec("insmon_disk_write_await_seconds", "gauge",
               "Average time a write completed since the previous run spent queued and in "
               "service (iostat w_await); 0 when no write completed.", LABELS, "seconds"),
    MetricSpec("insmon_disk_read_ops_per_second", "gauge",
               "Reads completed per second since the previous run.", LABELS),
    MetricSpec("insmon_disk_write_ops_per_second", "gauge",
               "Writes completed per second since the previous run.", LABELS),
    MetricSpec("insmon_disk_read_bytes_per_second", "gauge",
               "Bytes read per second since the previous run.", LABELS),
    MetricSpec("insmon_disk_write_bytes_per_second", "gauge",
               "Bytes written per second since the previous run.", LABELS),
    MetricSpec("insmon_disk_busy_ratio", "gauge",
               "Share of time the device had IO in flight since the previous run "
               "(iostat %util).", LABELS, "ratio"),
    MetricSpec("insmon_disk_queue_depth", "gauge",
               "Average number of requests queued or in service since the previous run "
               "(iostat aqu-sz).", LABELS),
    MetricSpec("insmon_disk_ios_in_progress", "gauge",
               "IOs in flight at the moment of the run.", LABELS),
)


class Counters(NamedTuple):
    """The /proc/diskstats fields used here (see the kernel's iostats documentation)."""

    reads: int
    read_sectors: int
    read_ms: int
    writes: int
    write_sectors: int
    write_ms: int
    in_progress: int  # a gauge, not a counter
    io_ms: int
    weighted_ms: int


IN_PROGRESS = Counters._fields.index("in_progress")


def parse_diskstats(text: str) -> dict[str, Counters]:
    """Parse /proc/diskstats; lines that do not have the 14+ fields are skipped."""
    devices = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 14 or not all(f.isascii() and f.isdigit() for f in fields[3:14]):
            continue
        f = [int(x) for x in fields[3:14]]
        devices[fields[2]] = Counters(reads=f[0], read_sectors=f[2], read_ms=f[3],
                                      writes=f[4], write_sectors=f[6], write_ms=f[7],
                                      in_progress=f[8], io_ms=f[9], weighted_ms=f[10])
    return devices


def counter_delta(prev: int, cur: int) -> int | None:
    """How much a kernel counter grew, or None when it was reset (device re-added).

    Some of these counters are 32-bit on some kernels and architectures: a value that
    falls back after being past 2^31 has wrapped, and the delta goes through 2^32.
    """
    if cur >= prev:
        return cur - prev
    if 2**31 <= prev < 2**32:
        return cur + 2**32 - prev
    return None


class Rates(NamedTuple):
    read_await: float
    write_await: float
    read_ops: float
    write_ops: float
    read_bytes: float
    write_bytes: float
    busy: float
    queue: float
    in_progress: int


def rates(prev: Counters, cur: Counters, seconds: float) -> Rates | None:
    """Per-second figures between two readings of one device; None after a reset."""
    deltas = [counter_delta(p, c) for p, c in zip(prev, cur, strict=True)]
    deltas[IN_PROGRESS] = cur.in_progress  # a gauge, not a counter
    if None in deltas:
        return None
    d = Counters._make(deltas)
    return Rates(
        read_await=d.read_ms / d.reads / 1000 if d.reads else 0.0,
        write_await=d.write_ms / d.writes / 1000 if d.writes else 0.0,
        read_ops=d.reads / seconds,
        write_ops=d.writes / seconds,
        read_bytes=d.read_sectors * SECTOR_BYTES / seconds,
        write_bytes=d.write_sectors * SECTOR_BYTES / seconds,
        busy=min(1.0, d.io_ms / 1000 / seconds),
        queue=d.weighted_ms / 1000 / seconds,
        in_progress=cur.in_progress,
    )


class Probe:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._baseline: Baseline[dict[str, Counters]] = Baseline()
        self._reads = KernelReads(cfg.root / "proc")

    async def _read(self) -> dict[str, Counters]:
        return await self._reads.run(self._parse, self.cfg.root / "proc" / "diskstats")

    def _parse(self, path: Path) -> dict[str, Counters]:
        return {name: c for name, c in parse_diskstats(read_capped(path)).items()
                if self.cfg.devices.fullmatch(name) and not self.cfg.exclude.fullmatch(name)}

    async def run(self) -> ProbeResult:
        window = min(SHORT_WINDOW_SECONDS, self.cfg.timeout / 2)
        try:
            prev, cur, seconds = await self._baseline.pair(self._read, window)
        except OSError as exc:
            return ProbeResult("failed", detail=f"cannot read diskstats: {exc}")
        if not cur:
            return ProbeResult("failed", detail=(
                f"no device matches devices '{self.cfg.devices.pattern}' "
                f"(exclude '{self.cfg.exclude.pattern}')"))
        figures = {name: r for name in sorted(cur) if name in prev
                   and (r := rates(prev[name], cur[name], seconds)) is not None}
        return ProbeResult("ok", tuple(samples(figures)), describe(figures, len(cur)))


def samples(figures: Mapping[str, Rates]) -> list[Sample]:
    out = []
    for device, r in figures.items():
        labels = {"device": device}
        out += [Sample(spec.name, value, labels) for spec, value in zip(METRICS, r, strict=True)]
    return out


def describe(figures: Mapping[str, Rates], devices: int) -> str:
    if not figures:
        return f"{devices} devices, first reading (counters were reset)"
    worst = max(figures, key=lambda d: max(figures[d].read_await, figures[d].write_await))
    w = figures[worst]
    return (f"{devices} devices; slowest {worst}: read {w.read_await * 1000:.1f} ms, "
            f"write {w.write_await * 1000:.1f} ms, {w.read_ops + w.write_ops:.0f} IOPS, "
            f"busy {w.busy:.0%}")


KIND = Kind(Config, METRICS, Probe)
