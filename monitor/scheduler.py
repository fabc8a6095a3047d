"""Runs each check on its own APScheduler interval job.

Jobs have jitter, max_instances=1 and coalescing: a late loop runs a check once, not
in a burst. Applying a new set of checks (a reload) touches only the jobs of checks
that changed, so an unchanged check keeps its rhythm.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_SUBMITTED,
    JobSubmissionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from monitor.runner import Check, run_check
from monitor.store import ResultStore
from vocabulary import format_duration

log = logging.getLogger("insmon.scheduler")


class CheckScheduler:
    def __init__(self, store: ResultStore) -> None:
        self.store = store
        self.checks: dict[str, Check] = {}
        self._jobs = AsyncIOScheduler(timezone=UTC)
        self._jobs.add_listener(self._on_overlap, EVENT_JOB_MAX_INSTANCES)
        self._jobs.add_listener(self._on_submit, EVENT_JOB_SUBMITTED)
        self._last_due: dict[str, datetime] = {}  # check -> when its last run was due
        self._added: dict[str, datetime] = {}  # check -> when its job was (re)made

    def start(self) -> None:
        """Start running jobs; call from within the running event loop."""
        self._jobs.start()

    def shutdown(self) -> None:
        self._jobs.shutdown(wait=False)

    def apply(self, checks: Iterable[Check], source: str, sha256: str = "") -> None:
        fresh = {check.name: check for check in checks}
        self.store.configure(fresh.values(), source, sha256)
        for name, old in self.checks.items():
            if fresh.get(name) is not old and self._jobs.get_job(name) is not None:
                self._jobs.remove_job(name)
                self._last_due.pop(name, None)
        for name, check in fresh.items():
            if self.checks.get(name) is not check:
                self._add(check)
        self.checks = fresh

    def _add(self, check: Check) -> None:
        interval = check.cfg.interval
        # Spread first runs and later runs a little, so checks do not fire in lockstep.
        first = datetime.now(UTC) + timedelta(seconds=random.uniform(0, min(1.0, interval / 10)))
        self._added[check.name] = datetime.now(UTC)
        self._jobs.add_job(
            run_check, "interval", args=(check, self.store), id=check.name, name=check.name,
            seconds=interval, jitter=min(1.0, interval / 20), next_run_time=first,
            max_instances=1, coalesce=True, misfire_grace_time=max(1, int(interval)))
        log.debug("scheduled %s (%s) every %s, timeout %s", check.name, check.kind,
                  format_duration(interval), format_duration(check.cfg.timeout))

    def late(self, slack: float = 10.0) -> list[str]:
        """Checks whose runs stopped coming: none submitted for two intervals and `slack`
        seconds (a loop or a scheduler that no longer keeps time)."""
        now = datetime.now(UTC)
        return [name for name, check in self.checks.items()
                if (now - self._last_due.get(name, self._added.get(name, now))
                    ).total_seconds() > 2 * check.cfg.interval + slack]

    def _on_submit(self, event: JobSubmissionEvent) -> None:
        """Runs that never happened (the process was stopped, the loop stalled): coalescing
        runs the check once, so they are counted as skipped and said."""
        check = self.checks.get(event.job_id)
        due = event.scheduled_run_times[-1]
        last = self._last_due.get(event.job_id)
        self._last_due[event.job_id] = due
        if check is None or last is None:
            return
        missed = round((due - last).total_seconds() / check.cfg.interval) - 1
        if missed > 0:
            log.warning("%s: %d run(s) missed since %s (the process was stopped or its loop "
                        "stalled); counted as skipped", check.name, missed,
                        last.isoformat(timespec="seconds"))
            for _ in range(missed):
                self.store.record_skip(check)

    def _on_overlap(self, event: JobSubmissionEvent) -> None:
        # Only a probe that ignores cancellation can still be running when it is due
        # again; that run is skipped and counted like a stuck one.
        check = self.checks.get(event.job_id)
        if check is not None:
            self.store.record_skip(check)
