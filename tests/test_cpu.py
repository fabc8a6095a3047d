"""The cpu probe: /proc/stat and /proc/loadavg fixtures (two snapshots per case),
malformed files, and the live host (whatever its load)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.runner import undeclared
from ops.lab.cpu import SimulatedCpu
from probes import cpu
from tests.conftest import FIXTURES, render

CASES = FIXTURES / "cpu"


def reading(path: Path) -> cpu.Reading:
    return cpu.read_times(path, per_core=True)


def values(result: cpu.ProbeResult) -> dict[tuple[str, tuple], float]:
    return {(s.metric, tuple(s.labels.items())): s.value for s in result.samples}


def test_saturated_server_reads_98_percent() -> None:
    """The reference incident's console: the core server at 98 % CPU."""
    before = reading(CASES / "saturated" / "before")
    after = reading(CASES / "saturated" / "after")
    assert before.logical == after.logical == 2
    ratios = cpu.mode_ratios(before.overall, after.overall)
    assert ratios is not None
    assert cpu.busy(ratios) == pytest.approx(0.98)
    assert ratios == pytest.approx({"user": 0.70, "nice": 0.0, "system": 0.25, "idle": 0.01,
                                    "iowait": 0.01, "irq": 0.0, "softirq": 0.02,
                                    "steal": 0.01})
    assert sum(ratios.values()) == pytest.approx(1.0)
    assert cpu.core_usage(before.cores, after.cores) == pytest.approx({"0": 0.98, "1": 0.98})
    # the kernel counts USER_HZ ticks: the times are seconds
    assert after.overall.user == 5405 / os.sysconf("SC_CLK_TCK")


def test_counters_that_go_backwards_give_no_figure() -> None:
    before = reading(CASES / "calm" / "before")
    after = reading(CASES / "calm" / "after")
    # cpu1's idle counter restarted: that core has no figure this time, cpu0 does.
    assert cpu.core_usage(before.cores, after.cores) == pytest.approx({"0": 30 / 990})
    # The overall line went backwards too (it is the sum of the cores).
    assert cpu.mode_ratios(before.overall, after.overall) is None
    assert cpu.mode_ratios(before.overall, before.overall) is None  # no time passed
    assert cpu.read_times(CASES / "calm" / "after", per_core=False).cores == {}


async def test_probe_between_two_snapshots(tmp_path: Path) -> None:
    """The probe end to end on a proc folder of its own (`root`): stat and loadavg."""
    proc = tmp_path / "proc"
    proc.mkdir()
    for name in ("stat", "loadavg"):
        shutil.copy(CASES / "saturated" / "before" / name, proc / name)
    probe = cpu.Probe(cpu.Config(name="cpu", kind="cpu", root=tmp_path, per_core=True,
                                 interval=5))
    first = await probe.run()  # a frozen file: no CPU time passed in its short window
    assert first.status == "failed" and "did not advance" in first.detail
    await asyncio.sleep(cpu.SHORT_WINDOW_SECONDS)  # a reading this recent is re-taken
    for name in ("stat", "loadavg"):
        shutil.copy(CASES / "saturated" / "after" / name, proc / name)
    result = await probe.run()
    assert result.status == "ok", result.detail
    got = values(result)
    assert got[("insmon_cpu_usage_ratio", ())] == pytest.approx(0.98)
    assert got[("insmon_cpu_core_usage_ratio", (("core", "1"),))] == pytest.approx(0.98)
    assert [got[("insmon_cpu_load_average", (("window", w),))] for w in ("1m", "5m", "15m")
            ] == [2.04, 1.76, 1.15]
    assert got[("insmon_cpu_logical_cpus", ())] == 2
    assert result.detail.startswith("usage 98.0% (user 70.0%, system 25.0%")
    assert result.detail.endswith("load 2.04 1.76 1.15 on 2 CPUs")


GOOD_STAT = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 10 0 10 80 0 0 0 0 0 0\n"


@pytest.mark.parametrize(("stat", "loadavg", "reason"), [
    ("", "0.10 0.20 0.30 1/100 42\n", "stat: not the kernel's CPU times: no cpu line"),
    ("intr 1 2\nctxt 3\n", "0.10 0.20 0.30 1/100 42\n", "no cpu line"),
    ("cpu  1 2 3 4\ncpu0 1 2 3 4\n", "0.1 0.2 0.3 1/1 1\n", "the 8 counters user..steal"),
    ("cpu  1 2 x 4 5 6 7 8\ncpu0 1 2 3 4 5 6 7 8\n", "0.1 0.2 0.3 1/1 1\n", "'cpu  1 2 x"),
    ("cpu  1 2 3 4 5 6 7 8\n", "0.1 0.2 0.3 1/1 1\n", "no cpuN line"),
    ("cpu  1 2 3 4 5 6 7 8\ncpuX 1 2 3 4 5 6 7 8\n", "0.1 0.2 0.3 1/1 1\n", "'cpuX 1"),
    ("cpu  " + "9" * 4400 + " 0 0 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n", "0.1 0.2 0.3 1/1 1\n",
     "not the kernel's CPU times"),  # not a 64-bit counter (int() itself would refuse it)
    ("cpu  1 2 3 4 5 6 7 8\n" * 70_000, "0.1 0.2 0.3 1/1 1\n", "larger than 1048576 bytes"),
    (GOOD_STAT, "0.10 0.20\n", "loadavg: not the kernel's load averages: '0.10 0.20"),
    (GOOD_STAT, "nan 0.2 0.3 1/1 1\n", "not the kernel's load averages"),
    (GOOD_STAT, "-1 0.2 0.3 1/1 1\n", "not the kernel's load averages"),
    (GOOD_STAT, None, "loadavg: No such file"),
], ids=["empty", "no-cpu-line", "short-line", "not-a-number", "no-cpuN", "bad-core-name",
        "huge-number", "over-1-MiB", "short-loadavg", "nan-load", "negative-load",
        "no-loadavg"])
async def test_malformed_files_are_a_failed_run_with_the_reason(
        tmp_path: Path, stat: str, loadavg: str | None, reason: str) -> None:
    """Through the real runner: `failed` with what is wrong and where, never `error`."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "stat").write_text(stat)
    if loadavg is not None:
        (proc / "loadavg").write_text(loadavg)
    status, series = await render(cpu.Config(name="cpu", kind="cpu", root=tmp_path,
                                             interval=5), "insmon_cpu_")
    assert status.startswith("# failed: ") and f"{proc}/" in status, status
    assert reason in status
    assert series == ""  # no figure from a file it could not read


def test_samples_are_all_declared_and_named() -> None:
    ratios = dict.fromkeys(cpu.MODES, 0.0) | {"idle": 0.5, "user": 0.5}
    samples = cpu.samples(ratios, {"0": 0.5}, (1.0, 0.5, 0.25), 2)
    declared = {m.name: m for m in cpu.METRICS}
    assert {s.metric for s in samples} == set(declared)  # every declared series is emitted
    assert undeclared(cpu.ProbeResult("ok", tuple(samples)), declared) is None


async def test_live_host() -> None:
    """This host's /proc, whatever its load: only what holds on any host is checked."""
    probe = cpu.Probe(cpu.Config(name="host", kind="cpu", per_core=True, interval=5))
    first = await probe.run()
    second = await probe.run()
    for result in (first, second):
        assert result.status == "ok", result.detail
        got = values(result)
        assert 0.0 <= got[("insmon_cpu_usage_ratio", ())] <= 1.0
        modes = [v for (m, _), v in got.items() if m == "insmon_cpu_mode_ratio"]
        assert len(modes) == len(cpu.MODES) and sum(modes) == pytest.approx(1.0)
        cores = [k for k in got if k[0] == "insmon_cpu_core_usage_ratio"]
        assert len(cores) == os.cpu_count()
        assert got[("insmon_cpu_logical_cpus", ())] == os.cpu_count()
        assert all(got[("insmon_cpu_load_average", (("window", w),))] >= 0
                   for w in ("1m", "5m", "15m"))
        assert result.detail.startswith("usage ")


async def test_live_saturation_is_seen() -> None:
    """Busy-loop every CPU between two runs, the window starting once every burner
    runs: the probe must see it (on a busy host too: that only adds to it)."""
    probe = cpu.Probe(cpu.Config(name="host", kind="cpu", interval=5))
    await probe.run()
    code = ("import sys, time\nprint(flush=True)\nend = time.monotonic() + 60\n"
            "while time.monotonic() < end: pass\n")
    burners = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                stdin=subprocess.DEVNULL) for _ in range(os.cpu_count() or 1)]
    try:
        for burner in burners:  # started, however long the interpreter took to load
            assert burner.stdout.readline() == b"\n"
        await probe.run()  # resets the window to start with the burners running
        await asyncio.sleep(1.0)
        result = await probe.run()
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    usage = next(s.value for s in result.samples if s.metric == "insmon_cpu_usage_ratio")
    assert usage > 0.8, result.detail


async def test_the_lab_s_simulated_cpu_is_as_busy_as_it_is_told(tmp_path: Path) -> None:
    """ops/lab/cpu.py: calm by default, busy on demand, whatever this host does."""
    with SimulatedCpu(tmp_path / "server", cpus=3) as simulated:
        probe = cpu.Probe(cpu.Config(name="lab", kind="cpu", root=simulated.root,
                                     per_core=True, interval=5))
        calm = await probe.run()
        assert calm.status == "ok", calm.detail
        got = values(calm)
        assert got[("insmon_cpu_usage_ratio", ())] < 0.15, calm.detail
        assert got[("insmon_cpu_logical_cpus", ())] == 3
        assert {c for (m, labels) in got if m == "insmon_cpu_core_usage_ratio"
                for _, c in labels} == {"0", "1", "2"}
        simulated.busy = 0.97
        await asyncio.sleep(2 * simulated.period)  # written at that share
        await probe.run()  # the window of the next run starts here
        await asyncio.sleep(1.0)
        busy = await probe.run()
        assert values(busy)[("insmon_cpu_usage_ratio", ())] > 0.9, busy.detail
        # every file read whole, while they are being replaced
        for _ in range(200):
            assert cpu.read_times(simulated.proc, per_core=True).logical == 3
            assert len(cpu.read_load(simulated.proc)) == 3
    assert not simulated._thread.is_alive()
    with pytest.raises(ValueError, match="between 0 and 1"):
        simulated.busy = 1.5
