"""Running one check: deadline, isolation, and the four statuses.

  ok / failed  what the probe itself said (or a ProbeFailure it raised, with the reason);
  timeout      no result within the check's timeout (the run is abandoned);
  error        the probe raised something unexpected, or returned series it did not
               declare: a bug, and the monitor goes on.

A check whose blocking work from an earlier run is still stuck (a dead disk in fsync) is
not started again: the run is skipped and counted, so stuck threads never pile up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from exporters.snapshot import RunRecord
from monitor.store import ResultStore
from probes import PROBES
from probes.base import (
    CheckBase,
    MetricSpec,
    Probe,
    ProbeFailure,
    ProbeResult,
    Workers,
    current_workers,
)
from vocabulary import format_duration

log = logging.getLogger("insmon.runner")


@dataclass(eq=False)
class Check:
    """A configured check: its config, its probe (with any state it keeps between runs),
    the series it declares, and the worker threads its blocking calls run on."""

    cfg: CheckBase
    probe: Probe
    metrics: Mapping[str, MetricSpec]
    workers: Workers = field(default_factory=Workers)
    last_status: str | None = None  # of the last run, or "skipped", for logging changes

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def interval(self) -> float:
        return self.cfg.interval

    @property
    def kind(self) -> str:
        return self.cfg.kind  # type: ignore[attr-defined]  (every kind's Config has one)

    @property
    def stuck(self) -> bool:
        return self.workers.stuck


def build_checks(configs: Iterable[CheckBase], previous: Iterable[Check] = ()) -> list[Check]:
    """Checks for a config. An unchanged check keeps its probe (and the probe's state,
    such as the previous CPU reading) across a reload."""
    old = {check.name: check for check in previous}
    checks = []
    for cfg in configs:
        kept = old.get(cfg.name)
        if kept is not None and kept.cfg == cfg:
            checks.append(kept)
            continue
        kind = PROBES[cfg.kind]  # type: ignore[attr-defined]
        checks.append(Check(cfg, kind.probe(cfg), {m.name: m for m in kind.metrics}))
    return checks


async def run_check(check: Check, store: ResultStore) -> RunRecord | None:
    """Run a check once within its deadline and record the outcome; None if skipped."""
    if check.stuck:
        store.record_skip(check)
        if check.last_status != "skipped":  # once per stuck spell, not on every run
            log.warning("check %s skipped: its previous run is still stuck in blocking "
                        "work", check.name)
            check.last_status = "skipped"
        return None
    started, t0 = time.time(), time.perf_counter()
    token = current_workers.set(check.workers)
    deadline = None
    samples: Iterable = ()
    try:
        async with asyncio.timeout(check.cfg.timeout) as deadline:
            result = await check.probe.run()
        status, detail = result.status, result.detail
        problem = undeclared(result, check.metrics)
        if problem:
            status, detail = "error", problem
        else:
            samples = result.samples
    except TimeoutError:
        if deadline is not None and deadline.expired():
            status = "timeout"
            detail = f"no result within the timeout of {format_duration(check.cfg.timeout)}"
        else:  # the probe's own TimeoutError escaped: a bug, not the deadline
            status, detail = "error", "TimeoutError raised inside the probe"
            log.exception("check %s: probe raised", check.name)
    except ProbeFailure as exc:
        status, detail = "failed", str(exc)
    except asyncio.CancelledError:
        # insmon is stopping: the run is abandoned, with a line, not a traceback (a
        # blocking call left on its worker thread does not hold up the exit)
        log.info("check %s: run abandoned, insmon is stopping", check.name)
        return None
    except Exception as exc:
        status, detail = "error", f"{type(exc).__name__}: {exc}"
        log.exception("check %s: probe raised", check.name)
    finally:
        current_workers.reset(token)
    record = RunRecord(status, started, time.perf_counter() - t0, detail)
    store.record(check, record, samples)
    _log_change(check, record)
    return record


def undeclared(result: ProbeResult, metrics: Mapping[str, MetricSpec]) -> str | None:
    """Why a result cannot be exported, or None: every series must be declared, with
    exactly the declared label names (a probe bug must not produce a broken scrape)."""
    label_sets = {name: frozenset(spec.labels) for name, spec in metrics.items()}
    for sample in result.samples:
        spec = metrics.get(sample.metric)
        if spec is None:
            return f"probe returned undeclared metric {sample.metric}"
        if sample.labels.keys() != label_sets[sample.metric]:
            return (f"probe returned {sample.metric} with labels {sorted(sample.labels)}, "
                    f"declared {sorted(spec.labels)}")
    return None


def _log_change(check: Check, record: RunRecord) -> None:
    """Log when a check changes status, not on every run: a log an engineer can read."""
    if record.status == check.last_status:
        return
    if record.status == "ok":
        if check.last_status is not None:
            log.info("check %s is ok again: %s", check.name, record.detail)
    else:
        log.warning("check %s %s: %s", check.name, record.status, record.detail)
    check.last_status = record.status


async def run_all(checks: Iterable[Check], store: ResultStore) -> None:
    """Every check once, concurrently (for `insmon once`)."""
    await asyncio.gather(*(run_check(check, store) for check in checks))
