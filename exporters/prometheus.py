"""Prometheus exposition of the latest results, rendered at scrape time.

A custom collector on its own registry (no global default registry, nothing registered
on import): each scrape takes one snapshot of the store and renders it, like
node_exporter's collectors. Every check gets the same health series from here, whatever
its kind; the kind's own series come from its declared METRICS.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from monitor import __version__
from monitor.probe import MetricSpec
from monitor.store import STATUSES, HistogramValue, ResultStore, Snapshot
from probes import PROBES

HEALTH = ("check", "kind")

CORE_METRICS = (
    MetricSpec("insmon_probe_success", "gauge",
               "1 if the check's last run was ok, 0 if it failed, timed out or errored.",
               HEALTH),
    MetricSpec("insmon_probe_duration_seconds", "gauge",
               "How long the check's last run took.", HEALTH, unit="seconds"),
    MetricSpec("insmon_probe_last_run_timestamp_seconds", "gauge",
               "Unix time the check's last run started.", HEALTH, unit="seconds"),
    MetricSpec("insmon_probe_interval_seconds", "gauge",
               "Configured interval between runs: a last run older than a few intervals "
               "means the monitor has gone blind on this check.", HEALTH, unit="seconds"),
    MetricSpec("insmon_probe_runs_total", "counter",
               "Runs of the check by outcome: ok, failed (target unhealthy), timeout "
               "(no result by the deadline), error (the probe broke).",
               (*HEALTH, "status")),
    MetricSpec("insmon_probe_runs_skipped_total", "counter",
               "Runs not started because the previous run was still stuck in blocking "
               "work.", HEALTH),
    MetricSpec("insmon_build_info", "gauge",
               "Always 1; the labels say which insmon and Python are running.",
               ("version", "python_version")),
    MetricSpec("insmon_config_last_reload_successful", "gauge",
               "1 if the last config load or reload succeeded, 0 if it was rejected "
               "(the previous config is still in use)."),
    MetricSpec("insmon_config_last_reload_success_timestamp_seconds", "gauge",
               "Unix time of the last successful config load.", unit="seconds"),
    MetricSpec("insmon_config_info", "gauge",
               "Always 1; the labels say which config file runs and its SHA-256.",
               ("source", "sha256")),
)


def declared() -> tuple[MetricSpec, ...]:
    """Every series insmon can emit: the health series and each kind's own."""
    return CORE_METRICS + tuple(m for module in PROBES.values() for m in module.METRICS)


class InsmonCollector:
    def __init__(self, store: ResultStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        snap = self._store.snapshot()
        yield from _health(snap)
        yield from _probe_series(snap)


def make_registry(store: ResultStore) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(InsmonCollector(store))
    return registry


def _family(spec: MetricSpec, labels: tuple[str, ...]) -> Metric:
    # prometheus_client appends _total to counters itself; the spec names it in full.
    name = spec.name.removesuffix("_total") if spec.type == "counter" else spec.name
    cls = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily,
           "histogram": HistogramMetricFamily}[spec.type]
    return cls(name, spec.help, labels=labels, unit=spec.unit)


def _health(snap: Snapshot) -> Iterator[Metric]:
    specs = {spec.name: spec for spec in CORE_METRICS}
    fam = {name: _family(spec, spec.labels) for name, spec in specs.items()}
    for view in snap.checks:
        ids = [view.name, view.kind]
        fam["insmon_probe_interval_seconds"].add_metric(ids, view.interval)
        for status in STATUSES:
            fam["insmon_probe_runs_total"].add_metric([*ids, status], view.runs[status])
        fam["insmon_probe_runs_skipped_total"].add_metric(ids, view.skipped)
        if view.last is not None:  # before the first run there is nothing to tell
            fam["insmon_probe_success"].add_metric(ids, float(view.last.status == "ok"))
            fam["insmon_probe_duration_seconds"].add_metric(ids, view.last.duration)
            fam["insmon_probe_last_run_timestamp_seconds"].add_metric(ids, view.last.started)
    fam["insmon_build_info"].add_metric([__version__, platform.python_version()], 1)
    fam["insmon_config_last_reload_successful"].add_metric([], float(snap.reload_ok))
    fam["insmon_config_last_reload_success_timestamp_seconds"].add_metric(
        [], snap.reload_success_at)
    if snap.config_sha256:
        fam["insmon_config_info"].add_metric([snap.config_source, snap.config_sha256], 1)
    yield from fam.values()


def _probe_series(snap: Snapshot) -> Iterator[Metric]:
    """Each kind's own series, one family per declared name, in declaration order."""
    families: dict[str, tuple[MetricSpec, Metric]] = {}
    for view in snap.checks:
        for series in (view.gauges, view.counters, view.histograms):
            for (metric, pairs), value in series.items():
                spec = view.metrics[metric]
                if metric not in families:
                    families[metric] = (spec, _family(spec, ("check", *spec.labels)))
                labels = dict(pairs)
                label_values = [view.name, *(labels[name] for name in spec.labels)]
                if spec.type == "histogram":
                    families[metric][1].add_metric(label_values, _buckets(value), value.sum)
                else:
                    families[metric][1].add_metric(label_values, value)
    for _, family in families.values():
        yield family


def _buckets(value: HistogramValue) -> list[tuple[str, float]]:
    cumulative, buckets = 0, []
    for bound, count in zip((*value.bounds, float("inf")), value.counts, strict=True):
        cumulative += count
        buckets.append((floatToGoString(bound), cumulative))
    return buckets
