"""CPU of this host: usage over the last probe interval, per mode, per core, load.

The plans' console showed "CPU of the core server at 98 %": that figure is
`insmon_cpu_usage_ratio`. Usage is measured between two readings of the kernel's
cumulative CPU times (like `top` and node_exporter + rate()), so it is the average since
the previous run, with no gap between runs. A run with no usable previous reading (the
first one) measures over a short window instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from typing import Literal, NamedTuple

import psutil

from probes.base import Baseline, CheckBase, Kind, MetricSpec, ProbeResult, Sample, run_blocking

# Modes as the kernel reports them (/proc/stat). guest and guest_nice are already
# counted inside user and nice, so they are not modes of their own.
MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
# With no recent reading (a check's first run, `insmon once`), measure over this window.
SHORT_WINDOW_SECONDS = 0.5


class Config(CheckBase):
    kind: Literal["cpu"]
    per_core: bool = False  # one usage series per logical CPU


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

    @classmethod
    def of(cls, raw: object) -> Times:
        # psutil's tuple has other fields on other systems; absent modes count as 0.
        return cls(*(float(getattr(raw, mode, 0.0)) for mode in MODES))


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


class Reading(NamedTuple):
    overall: Times
    cores: tuple[Times, ...]


def read_times(per_core: bool) -> Reading:
    overall = Times.of(psutil.cpu_times())
    cores = tuple(Times.of(t) for t in psutil.cpu_times(percpu=True)) if per_core else ()
    return Reading(overall, cores)


class Probe:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._baseline: Baseline[Reading] = Baseline()

    async def run(self) -> ProbeResult:
        window = min(SHORT_WINDOW_SECONDS, self.cfg.timeout / 2)
        prev, cur, _ = await self._baseline.pair(
            partial(run_blocking, read_times, self.cfg.per_core), window)
        load = await run_blocking(psutil.getloadavg)
        logical = os.cpu_count() or len(cur.cores) or 1
        ratios = mode_ratios(prev.overall, cur.overall)
        if ratios is None:
            return ProbeResult("failed", detail="CPU time counters went backwards (a CPU "
                                                "was re-added); measuring again next run")
        return ProbeResult("ok", tuple(samples(ratios, core_usage(prev.cores, cur.cores),
                                               load, logical)),
                           detail=describe(ratios, load, logical))


def core_usage(prev: Sequence[Times], cur: Sequence[Times]) -> dict[str, float]:
    usage = {}
    for core, (p, c) in enumerate(zip(prev, cur, strict=False)):  # CPUs may come and go
        ratios = mode_ratios(p, c)
        if ratios is not None:
            usage[str(core)] = busy(ratios)
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
