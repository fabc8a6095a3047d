"""The latest results: one state per configured check, read as a consistent snapshot.

The runner writes from the event loop; scrapes and the status page read from HTTP
threads. A lock guards the state, and `snapshot()` hands out copies, so a scrape renders
one moment in time and never holds the lock while it formats text.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from monitor.probe import MetricSpec, Sample

if TYPE_CHECKING:
    from monitor.runner import Check

STATUSES = ("ok", "failed", "timeout", "error")

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]  # metric name, sorted label pairs


@dataclass(frozen=True)
class RunRecord:
    status: str  # one of STATUSES
    started: float  # Unix time the run began
    duration: float  # seconds
    detail: str


@dataclass(frozen=True)
class HistogramValue:
    bounds: tuple[float, ...]  # upper bounds, +Inf not included
    counts: tuple[int, ...]  # per bucket, not cumulative; one more than bounds (+Inf)
    sum: float

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass
class _State:
    check: Check
    last: RunRecord | None = None
    runs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    skipped: int = 0
    gauges: dict[SeriesKey, float] = field(default_factory=dict)
    counters: dict[SeriesKey, float] = field(default_factory=dict)
    histograms: dict[SeriesKey, HistogramValue] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckView:
    """A copy of one check's state at snapshot time."""

    name: str
    kind: str
    interval: float
    metrics: Mapping[str, MetricSpec]
    last: RunRecord | None
    runs: Mapping[str, int]
    skipped: int
    gauges: Mapping[SeriesKey, float]
    counters: Mapping[SeriesKey, float]
    histograms: Mapping[SeriesKey, HistogramValue]


@dataclass(frozen=True)
class Snapshot:
    checks: tuple[CheckView, ...]
    config_source: str
    config_sha256: str
    reload_ok: bool
    reload_success_at: float


def series_key(sample: Sample) -> SeriesKey:
    return sample.metric, tuple(sorted(sample.labels.items()))


class ResultStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}
        self._config_source = ""
        self._config_sha256 = ""
        self._reload_ok = False
        self._reload_success_at = 0.0

    def configure(self, checks: Iterable[Check], source: str, sha256: str = "") -> None:
        """Adopt a new set of checks after a successful (re)load.

        A check that keeps its name and kind keeps its history, so its counters do not
        reset under Prometheus' feet; a removed check's series disappear.
        """
        with self._lock:
            states = {}
            for check in checks:
                old = self._states.get(check.name)
                if old is not None and old.check.kind == check.kind:
                    old.check = check
                    states[check.name] = old
                else:
                    states[check.name] = _State(check)
            self._states = states
            self._config_source = source
            self._config_sha256 = sha256
            self._reload_ok = True
            self._reload_success_at = time.time()

    def reload_failed(self) -> None:
        with self._lock:
            self._reload_ok = False

    def record(self, check: Check, run: RunRecord, samples: Iterable[Sample] = ()) -> None:
        """Store a run's outcome. Samples must be declared by the check (the runner
        verifies that). Gauges show the latest run only: after a timeout or error they
        are dropped rather than left stale; counters and histograms accumulate."""
        with self._lock:
            state = self._states.get(check.name)
            if state is None or state.check is not check:  # replaced by a reload meanwhile
                return
            state.last = run
            state.runs[run.status] += 1
            state.gauges = {}
            specs = state.check.metrics
            for sample in samples:
                key = series_key(sample)
                spec = specs[sample.metric]
                if spec.type == "gauge":
                    state.gauges[key] = sample.value
                elif spec.type == "counter":
                    state.counters[key] = state.counters.get(key, 0.0) + max(0.0, sample.value)
                else:
                    state.histograms[key] = _observe(state.histograms.get(key),
                                                     spec.buckets, sample.value)

    def record_skip(self, check: Check) -> None:
        with self._lock:
            state = self._states.get(check.name)
            if state is not None and state.check is check:
                state.skipped += 1

    def snapshot(self) -> Snapshot:
        with self._lock:
            views = tuple(
                CheckView(name, s.check.kind, s.check.cfg.interval, s.check.metrics, s.last,
                          dict(s.runs),
                          s.skipped, dict(s.gauges), dict(s.counters), dict(s.histograms))
                for name, s in self._states.items()
            )
            return Snapshot(views, self._config_source, self._config_sha256,
                            self._reload_ok, self._reload_success_at)


def _observe(old: HistogramValue | None, bounds: tuple[float, ...],
             value: float) -> HistogramValue:
    counts = list(old.counts) if old else [0] * (len(bounds) + 1)
    counts[bisect.bisect_left(bounds, value)] += 1  # le: a value on a bound counts in it
    return HistogramValue(bounds, tuple(counts), (old.sum if old else 0.0) + value)
