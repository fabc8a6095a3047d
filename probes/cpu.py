"""CPU of a host: usage over the last probe interval, per mode, per core, load.

The plans' console showed "CPU of the core server at 98 %": that figure is
`insmon_cpu_usage_ratio`. Usage is measured between two readings of the kernel's
cumulative CPU times in /proc/stat (like `top` and node_exporter + rate()), so it is the
average since the previous run, with no gap between runs. A run with no usable previous
reading (the first one) measures over a short window instead. The load average comes
from /proc/loadavg, the logical CPUs from the cpuN lines of /proc/stat (online CPUs).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, NamedTuple, TypeVar

from probes.base import Baseline, CheckBase, Kind, MetricSpec, ProbeFailure, ProbeResult, Sample
from probes.lib.kernel_files import KernelReads, read_capped

# Modes as the kernel reports them (/proc/stat), in its order. guest and guest_nice
# follow them and are already counted inside user and nice, so they are left out.
MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
# With no recent reading (a check's first run, `insmon once`), measure over this window.
SHORT_WINDOW_SECONDS = 0.5
# /proc/stat counts USER_HZ ticks (100 a second on every Linux architecture but alpha)
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")

T = TypeVar("T")


class Config(CheckBase):
    kind: Literal["cpu"]
    per_core: bool = False  # one usage series per logical CPU
    root: Path = Path("/")  # where proc/ is: a container may mount the host's at /host


METRICS = (
    MetricSpec("insmon_cpu_usage_ratio", "gauge",
               "Share of CPU time spent busy (not idle, not waiting for IO) since the "
               "previous run, over all logical CPUs.", unit="ratio"),
    MetricSpec("insmon_cpu_mode_ratio", "gauge",
               "Share of CPU time spent in each mode since the previous run, over all "
               "logical CPUs.", labels=("mode",), unit="ratio"),
    MetricSpec("insmon_cpu_core_usage_ratio", "gauge",
               "Share of one logical CPU's time spent busy since the previous run "
               "(per_core: true).", labels=("core",), unit="ratio"),
    MetricSpec("insmon_cpu_load_average", "gauge",
               "System load average (runnable and uninterruptible tasks) over the window.",
               labels=("window",)),
    MetricSpec("insmon_cpu_logical_cpus", "gauge",
               "Logical CPUs, to read the load average against."),
)


class Times(NamedTuple):
    """Cumulative seconds per mode for one CPU (or all of them)."""

    user: float
    nice: float
    system: float
    idle: float
    iowait: float
    irq: float
    softirq: float
    steal: float


class Reading(NamedTuple):
    overall: Times
    cores: Mapping[str, Times]  # by the kernel's CPU number; empty unless per_core
    logical: int                # online logical CPUs (cpuN lines)


def parse_stat(text: str, per_core: bool) -> Reading:
    """The "cpu" and "cpuN" lines of /proc/stat. A text without a "cpu" line or a "cpuN"
    line, or with a CPU line that is not eight counters, is a ProbeFailure saying so."""
    overall: Times | None = None
    cores: dict[str, Times] = {}
    logical = 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu"):
            continue
        number = name[3:]
        fields = rest.split()[:len(MODES)]
        if (number and not _counter(number)) or len(fields) < len(MODES) or not all(
                _counter(f) for f in fields):
            raise ProbeFailure(f"not the kernel's CPU times: {line[:60]!r} is not a CPU "
                               f"with the {len(MODES)} counters user..steal")
        times = Times(*(int(f) / TICKS_PER_SECOND for f in fields))
        if not number:
            overall = times
            continue
        logical += 1
        if per_core:
            cores[number] = times
    if overall is None or not logical:
        raise ProbeFailure(f"not the kernel's CPU times: no {'cpuN' if overall else 'cpu'} "
                           "line")
    return Reading(overall, cores, logical)


def _counter(field: str) -> bool:
    """A kernel counter: ASCII digits, at most a 64-bit number's 20."""
    return len(field) <= 20 and field.isascii() and field.isdigit()


def parse_loadavg(text: str) -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages of /proc/loadavg ("0.52 0.58 0.59 1/467 ...")."""
    try:
        load = [float(f) for f in text.split()[:3]]
    except ValueError:
        load = []
    if len(load) != 3 or not all(math.isfinite(v) and v >= 0 for v in load):
        raise ProbeFailure(f"not the kernel's load averages: {text[:40]!r}")
    return load[0], load[1], load[2]


def read_times(proc: Path, per_core: bool) -> Reading:
    """The CPU times in `proc`/stat (`proc`: a /proc, or a fixture's folder)."""
    return _parsed(proc / "stat", lambda text: parse_stat(text, per_core))


def read_load(proc: Path) -> tuple[float, float, float]:
    return _parsed(proc / "loadavg", parse_loadavg)


def _parsed(path: Path, parse: Callable[[str], T]) -> T:
    text = read_capped(path)
    try:
        return parse(text)
    except ProbeFailure as exc:
        raise ProbeFailure(f"{path}: {exc}") from None


def mode_ratios(prev: Times, cur: Times) -> dict[str, float] | None:
    """Share of time per mode between two readings, or None when they cannot tell:
    no time passed, or a counter went backwards (a CPU unplugged and re-added restarts
    its counters), where any figure would be invented."""
    deltas = {mode: c - p for mode, c, p in zip(MODES, cur, prev, strict=True)}
    total = sum(deltas.values())
    if total <= 0 or min(deltas.values()) < 0:
        return None
    return {mode: d / total for mode, d in deltas.items()}


def busy(ratios: dict[str, float]) -> float:
    return max(0.0, 1.0 - ratios["idle"] - ratios["iowait"])


class Probe:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.proc = cfg.root / "proc"
        self._baseline: Baseline[Reading] = Baseline()
        self._reads = KernelReads(self.proc)

    async def _read(self) -> Reading:
        return await self._reads.run(read_times, self.proc, self.cfg.per_core)

    async def run(self) -> ProbeResult:
        window = min(SHORT_WINDOW_SECONDS, self.cfg.timeout / 2)
        try:
            prev, cur, _ = await self._baseline.pair(self._read, window)
            load = await self._reads.run(read_load, self.proc)
        except OSError as exc:
            return ProbeResult("failed", detail=f"cannot read {exc.filename or self.proc}: "
                                                f"{exc.strerror or exc}")
        except ProbeFailure as exc:
            return ProbeResult("failed", detail=str(exc))
        ratios = mode_ratios(prev.overall, cur.overall)
        if ratios is None:
            return ProbeResult("failed", detail="CPU time counters did not advance or went "
                                                "backwards (a CPU was re-added); measuring "
                                                "again next run")
        return ProbeResult("ok", tuple(samples(ratios, core_usage(prev.cores, cur.cores),
                                               load, cur.logical)),
                           detail=describe(ratios, load, cur.logical))


def core_usage(prev: Mapping[str, Times], cur: Mapping[str, Times]) -> dict[str, float]:
    usage = {}
    for core, c in cur.items():  # CPUs may come and go: those in both readings
        ratios = mode_ratios(prev[core], c) if core in prev else None
        if ratios is not None:
            usage[core] = busy(ratios)
    return usage


def samples(ratios: dict[str, float], cores: dict[str, float],
            load: Sequence[float], logical: int) -> list[Sample]:
    out = [Sample("insmon_cpu_usage_ratio", busy(ratios))]
    out += [Sample("insmon_cpu_mode_ratio", r, {"mode": m}) for m, r in ratios.items()]
    out += [Sample("insmon_cpu_core_usage_ratio", u, {"core": c}) for c, u in cores.items()]
    out += [Sample("insmon_cpu_load_average", v, {"window": w})
            for w, v in zip(("1m", "5m", "15m"), load, strict=True)]
    out.append(Sample("insmon_cpu_logical_cpus", float(logical)))
    return out


def describe(ratios: dict[str, float], load: Sequence[float], logical: int) -> str:
    pct = {m: f"{r:.1%}" for m, r in ratios.items()}
    return (f"usage {busy(ratios):.1%} (user {pct['user']}, system {pct['system']}, "
            f"iowait {pct['iowait']}, steal {pct['steal']}), "
            f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {logical} CPUs")


KIND = Kind(Config, METRICS, Probe)
