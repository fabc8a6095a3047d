"""The runner and scheduler: deadlines, isolation, statuses, skipped runs.

The probes here are test kinds whose work really blocks (a thread sleeping inside the
call, as a dead disk would sit in fsync) or really raises; they run through the same
`run_blocking`, runner and APScheduler jobs as the shipped kinds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

import pytest

from monitor.runner import Check, build_checks, run_check
from monitor.scheduler import CheckScheduler
from monitor.store import ResultStore
from probes.base import CheckBase, MetricSpec, ProbeResult, Sample, run_blocking


class BlockConfig(CheckBase):
    kind: Literal["block"] = "block"
    seconds: float = 1.0


class BlockProbe:
    """Blocks a worker thread, like an IO call on a hung volume."""

    def __init__(self, cfg: BlockConfig) -> None:
        self.cfg = cfg

    async def run(self) -> ProbeResult:
        await run_blocking(time.sleep, self.cfg.seconds)
        return ProbeResult("ok", detail="slept")


class RaiseConfig(CheckBase):
    kind: Literal["raise"] = "raise"


class RaiseProbe:
    def __init__(self, cfg: RaiseConfig) -> None:
        pass

    async def run(self) -> ProbeResult:
        return await run_blocking(self._parse)

    @staticmethod
    def _parse() -> ProbeResult:
        raise ValueError("unknown token 'xyz' in device output")


class TickConfig(CheckBase):
    kind: Literal["tick"] = "tick"


TICKS = MetricSpec("insmon_test_ticks_total", "counter", "Ticks.")


class TickProbe:
    def __init__(self, cfg: TickConfig, extra_label: bool = False) -> None:
        self.extra_label = extra_label

    async def run(self) -> ProbeResult:
        labels = {"bogus": "x"} if self.extra_label else {}
        return ProbeResult("ok", (Sample(TICKS.name, 1, labels),), detail="tick")


def make(cfg: CheckBase, probe: object, metrics: tuple[MetricSpec, ...] = ()) -> Check:
    return Check(cfg, probe, {m.name: m for m in metrics})  # type: ignore[arg-type]


async def test_hung_probe_times_out_then_is_skipped_until_its_work_returns() -> None:
    store = ResultStore()
    cfg = BlockConfig(name="cache-volume", interval=5, timeout=0.2, seconds=0.8)
    check = make(cfg, BlockProbe(cfg))
    store.configure([check], "test")

    t0 = time.monotonic()
    first = await run_check(check, store)
    assert first is not None and first.status == "timeout"
    assert time.monotonic() - t0 < 0.5  # abandoned at the deadline, not at 0.8 s
    assert first.detail == "no result within the timeout of 200ms"
    assert check.stuck

    assert await run_check(check, store) is None  # still stuck: skipped, not piled up
    view = store.snapshot().checks[0]
    assert view.skipped == 1 and view.runs["timeout"] == 1

    for _ in range(40):  # the blocked call returns after 0.8 s
        if not check.stuck:
            break
        await asyncio.sleep(0.05)
    assert not check.stuck
    again = await run_check(check, store)
    assert again is not None and again.status == "timeout"  # started again, not skipped
    assert store.snapshot().checks[0].runs["timeout"] == 2


async def test_probe_that_raises_is_an_error_with_its_reason() -> None:
    store = ResultStore()
    check = make(RaiseConfig(name="raid"), RaiseProbe(RaiseConfig(name="raid")))
    store.configure([check], "test")
    record = await run_check(check, store)
    assert record is not None
    assert record.status == "error"
    assert record.detail == "ValueError: unknown token 'xyz' in device output"


async def test_undeclared_series_are_an_error_not_a_broken_scrape() -> None:
    store = ResultStore()
    cfg = TickConfig(name="t")
    check = make(cfg, TickProbe(cfg, extra_label=True), (TICKS,))
    store.configure([check], "test")
    record = await run_check(check, store)
    assert record is not None and record.status == "error"
    assert "labels ['bogus'], declared []" in record.detail
    assert store.snapshot().checks[0].counters == {}


async def test_a_hung_and_a_broken_check_do_not_delay_the_others() -> None:
    """Through the real APScheduler jobs: one check hangs in blocking IO on every run,
    one raises on every run; the healthy check keeps its 0.2 s schedule throughout."""
    store = ResultStore()
    scheduler = CheckScheduler(store)
    hung_cfg = BlockConfig(name="dead-disk", interval=0.3, timeout=0.1, seconds=0.5)
    bad_cfg = RaiseConfig(name="broken", interval=0.2)
    tick_cfg = TickConfig(name="front-end", interval=0.2)
    checks = [make(hung_cfg, BlockProbe(hung_cfg)), make(bad_cfg, RaiseProbe(bad_cfg)),
              make(tick_cfg, TickProbe(tick_cfg), (TICKS,))]
    scheduler.start()
    scheduler.apply(checks, "test")
    try:
        await asyncio.sleep(2.5)
    finally:
        scheduler.shutdown()
    views = {v.name: v for v in store.snapshot().checks}

    tick = views["front-end"]
    # 2.5 s at 0.2 s is 12 runs; allow for the start offset and jitter.
    assert tick.runs["ok"] >= 10, tick.runs
    assert tick.counters[(TICKS.name, ())] == tick.runs["ok"]

    hung = views["dead-disk"]
    assert hung.runs["timeout"] >= 2 and hung.skipped >= 2, (hung.runs, hung.skipped)
    assert hung.runs["ok"] == 0

    broken = views["broken"]
    assert broken.runs["error"] >= 10 and broken.runs["ok"] == 0


@pytest.mark.parametrize("kind_changes", [False, True])
async def test_reconfigure_keeps_history_of_unchanged_checks(kind_changes: bool) -> None:
    store = ResultStore()
    cfg = TickConfig(name="t")
    check = make(cfg, TickProbe(cfg), (TICKS,))
    store.configure([check], "a.yaml")
    await run_check(check, store)
    if kind_changes:
        replacement = make(RaiseConfig(name="t"), RaiseProbe(RaiseConfig(name="t")))
    else:
        replacement = make(TickConfig(name="t", interval=30), TickProbe(cfg), (TICKS,))
    store.configure([replacement], "b.yaml")
    await run_check(check, store)  # a run of the replaced check finishing late: ignored
    view = store.snapshot().checks[0]
    assert view.runs["ok"] == (0 if kind_changes else 1)
    assert view.interval == (15 if kind_changes else 30)


def test_healthz_fails_when_a_checks_runs_stop_coming() -> None:
    """The scheduler knows when each check's last run was due: a check with none for two
    intervals (and 10 s) is late, and /healthz says so (monitor/service.py)."""
    from datetime import timedelta

    from probes import cpu

    scheduler = CheckScheduler(ResultStore())
    scheduler.apply(build_checks([cpu.Config(name="core-cpu", kind="cpu", interval=1)]),
                    "test")
    assert scheduler.late() == []
    scheduler._added["core-cpu"] -= timedelta(seconds=11)  # no run submitted for 11 s
    assert scheduler.late() == []  # 2 x 1 s + 10 s not over yet
    scheduler._added["core-cpu"] -= timedelta(seconds=2)
    assert scheduler.late() == ["core-cpu"]
