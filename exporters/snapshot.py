"""What the exporters read: immutable views of the latest results, one per check.

`monitor.store` builds a new view each time a check's run lands (and renders its
exposition then); a scrape or the status page takes a `Snapshot`, a tuple of the views of
that moment, without copying or formatting anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from probes.base import MetricSpec

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]  # metric name, sorted label pairs


@dataclass(frozen=True)
class RunRecord:
    status: str  # one of probes.base.STATUSES
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


@dataclass(frozen=True)
class CheckView:
    """One check's state as of its last run (or skip, or reload)."""

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
    # The check's Prometheus text lines by family name, rendered when the view was made.
    exposition: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    checks: tuple[CheckView, ...]
    config_source: str
    config_sha256: str
    reload_ok: bool
    reload_success_at: float
    calendar: tuple[float, bool] | None = None  # known until (Unix time), provisional today
    audit_head: tuple[str, int, int] | None = None  # the audit trail's id, seq, hash's bits
