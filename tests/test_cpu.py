"""The cpu probe: psutil's real parsing of /proc/stat fixtures, and the live host."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from monitor.runner import undeclared
from probes import cpu
from tests.conftest import FIXTURES

CASES = FIXTURES / "cpu"


def reading(monkeypatch: pytest.MonkeyPatch, path: Path) -> cpu.Reading:
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(path))
    return cpu.read_times(per_core=True)


def test_saturated_server_reads_98_percent(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference incident's console: the core server at 98 % CPU."""
    before = reading(monkeypatch, CASES / "saturated" / "before")
    after = reading(monkeypatch, CASES / "saturated" / "after")
    ratios = cpu.mode_ratios(before.overall, after.overall)
    assert ratios is not None
    assert cpu.busy(ratios) == pytest.approx(0.98)
    assert ratios == pytest.approx({"user": 0.70, "nice": 0.0, "system": 0.25, "idle": 0.01,
                                    "iowait": 0.01, "irq": 0.0, "softirq": 0.02,
                                    "steal": 0.01})
    assert sum(ratios.values()) == pytest.approx(1.0)
    assert cpu.core_usage(before.cores, after.cores) == pytest.approx({"0": 0.98, "1": 0.98})


def test_counters_that_go_backwards_give_no_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    before = reading(monkeypatch, CASES / "calm" / "before")
    after = reading(monkeypatch, CASES / "calm" / "after")
    # cpu1's idle counter restarted: that core has no figure this time, cpu0 does.
    assert cpu.core_usage(before.cores, after.cores) == pytest.approx({"0": 30 / 990})
    # The overall line went backwards too (it is the sum of the cores).
    assert cpu.mode_ratios(before.overall, after.overall) is None
    assert cpu.mode_ratios(before.overall, before.overall) is None  # no time passed


def test_samples_are_all_declared_and_named() -> None:
    ratios = dict.fromkeys(cpu.MODES, 0.0) | {"idle": 0.5, "user": 0.5}
    samples = cpu.samples(ratios, {"0": 0.5}, (1.0, 0.5, 0.25), 2)
    declared = {m.name: m for m in cpu.METRICS}
    assert {s.metric for s in samples} == set(declared)  # every declared series is emitted
    assert undeclared(cpu.ProbeResult("ok", tuple(samples)), declared) is None


async def test_live_host() -> None:
    probe = cpu.Probe(cpu.Config(name="host", kind="cpu", per_core=True, interval=5))
    first = await probe.run()
    second = await probe.run()
    for result in (first, second):
        assert result.status == "ok", result.detail
        values = {(s.metric, tuple(s.labels.items())): s.value for s in result.samples}
        assert 0.0 <= values[("insmon_cpu_usage_ratio", ())] <= 1.0
        modes = [v for (m, _), v in values.items() if m == "insmon_cpu_mode_ratio"]
        assert len(modes) == len(cpu.MODES) and sum(modes) == pytest.approx(1.0)
        cores = [k for k in values if k[0] == "insmon_cpu_core_usage_ratio"]
        assert len(cores) == psutil.cpu_count()
        assert values[("insmon_cpu_logical_cpus", ())] == psutil.cpu_count()
        assert result.detail.startswith("usage ")


async def test_live_saturation_is_seen() -> None:
    """Busy-loop every CPU for a second between two runs: the probe must see it."""
    probe = cpu.Probe(cpu.Config(name="host", kind="cpu", interval=5))
    await probe.run()
    burners = [subprocess.Popen([sys.executable, "-c",
                                 "import time\nend = time.time() + 1.5\n"
                                 "while time.time() < end: pass"])
               for _ in range(psutil.cpu_count())]
    try:
        await probe.run()  # resets the window to start with the burners running
        time.sleep(1.0)
        result = await probe.run()
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    usage = next(s.value for s in result.samples if s.metric == "insmon_cpu_usage_ratio")
    assert usage > 0.8, result.detail
