"""The latest results: one state per configured check, read as a consistent snapshot.

The runner writes from the event loop; scrapes and the status page read from HTTP
threads. Each write builds a new immutable view of the check and renders its exposition
once (`render`), so a scrape only joins bytes: it never formats a number and never holds
the lock for longer than it takes to collect the views.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from exporters.prometheus import render_check
from exporters.snapshot import CheckView, HistogramValue, RunRecord, SeriesKey, Snapshot
from probes.base import STATUSES, MetricSpec, Sample


class Checked(Protocol):
    """What the store needs of a configured check (monitor.runner.Check)."""

    name: str
    kind: str
    metrics: Mapping[str, MetricSpec]

    @property
    def interval(self) -> float: ...


@dataclass
class _State:
    check: Checked
    view: CheckView | None = None
    last: RunRecord | None = None
    runs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    skipped: int = 0
    gauges: dict[SeriesKey, float] = field(default_factory=dict)
    counters: dict[SeriesKey, float] = field(default_factory=dict)
    histograms: dict[SeriesKey, HistogramValue] = field(default_factory=dict)


def series_key(sample: Sample) -> SeriesKey:
    labels = sample.labels
    return sample.metric, tuple(sorted(labels.items()) if len(labels) > 1 else labels.items())


class ResultStore:
    def __init__(self, render: Callable[[CheckView], Mapping[str, bytes]] = render_check
                 ) -> None:
        self._render = render
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}
        self._config_source = ""
        self._config_sha256 = ""
        self._reload_ok = False
        self._reload_success_at = 0.0
        self._calendar: tuple[float, bool] | None = None
        self._audit_head: tuple[str, int, int] | None = None

    def configure(self, checks: Iterable[Checked], source: str, sha256: str = "") -> None:
        """Adopt a new set of checks after a successful (re)load.

        A check that keeps its name and kind keeps its history, so its counters do not
        reset under Prometheus' feet; a removed check's series disappear.
        """
        states = {}
        for check in checks:
            old = self._states.get(check.name)
            if old is not None and old.check.kind == check.kind:
                state = _State(check, None, old.last, old.runs, old.skipped, old.gauges,
                               old.counters, old.histograms)
            else:
                state = _State(check)
            state.view = self._view(state)
            states[check.name] = state
        with self._lock:
            self._states = states
            self._config_source = source
            self._config_sha256 = sha256
            self._reload_ok = True
            self._reload_success_at = time.time()

    def audit_head(self, head: tuple[str, int, int] | None) -> None:
        """The audit trail's head for the witness: its id, sequence number and the part
        of its hash a metric carries (monitor.audit.witness_value)."""
        with self._lock:
            self._audit_head = head

    def reload_failed(self) -> None:
        with self._lock:
            self._reload_ok = False

    def set_calendar(self, known_until: float, provisional: bool) -> None:
        """insmon's own working calendar: until when its data is known (Unix time), and
        whether today is past it."""
        with self._lock:
            self._calendar = (known_until, provisional)

    def record(self, check: Checked, run: RunRecord, samples: Iterable[Sample] = ()) -> None:
        """Store a run's outcome. Samples must be declared by the check (the runner
        verifies that). Gauges show the latest run only: after a timeout or error they
        are dropped rather than left stale; counters and histograms accumulate."""
        state = self._current(check)
        if state is None:  # replaced by a reload meanwhile
            return
        state.last = run
        state.runs[run.status] += 1
        state.gauges = {}
        specs = check.metrics
        for sample in samples:
            key = series_key(sample)
            spec = specs[sample.metric]
            if spec.type == "gauge":
                state.gauges[key] = sample.value
            elif spec.type == "counter":
                state.counters[key] = state.counters.get(key, 0.0) + max(0.0, sample.value)
            else:
                state.histograms[key] = _observe(state.histograms.get(key), spec.buckets,
                                                 sample.value)
        self._publish(state)

    def record_skip(self, check: Checked) -> None:
        state = self._current(check)
        if state is not None:
            state.skipped += 1
            self._publish(state)

    def snapshot(self) -> Snapshot:
        with self._lock:
            views = tuple(state.view for state in self._states.values())
            return Snapshot(views, self._config_source, self._config_sha256,  # type: ignore[arg-type]
                            self._reload_ok, self._reload_success_at, self._calendar,
                            audit_head=self._audit_head)

    def _current(self, check: Checked) -> _State | None:
        state = self._states.get(check.name)
        return state if state is not None and state.check is check else None

    def _publish(self, state: _State) -> None:
        # Writers are the event loop alone; readers take whole views, so swapping one
        # reference is all that needs the lock.
        view = self._view(state)
        with self._lock:
            state.view = view

    def _view(self, state: _State) -> CheckView:
        check = state.check
        view = CheckView(check.name, check.kind, check.interval, check.metrics, state.last,
                         dict(state.runs), state.skipped, state.gauges, dict(state.counters),
                         dict(state.histograms))
        return replace(view, exposition=self._render(view))


def _observe(old: HistogramValue | None, bounds: tuple[float, ...],
             value: float) -> HistogramValue:
    counts = list(old.counts) if old else [0] * (len(bounds) + 1)
    counts[bisect.bisect_left(bounds, value)] += 1  # le: a value on a bound counts in it
    return HistogramValue(bounds, tuple(counts), (old.sum if old else 0.0) + value)
