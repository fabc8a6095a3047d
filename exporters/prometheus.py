"""Prometheus exposition of the latest results, rendered when a run lands.

`render_check` turns one check's view into text lines grouped by family, once per run
(the store calls it); `exposition` serves a scrape by joining those bytes under each
family's HELP and TYPE lines, in the classic text format or OpenMetrics. A scrape costs
a copy, not formatting: like node_exporter, it never waits on a probe. Every check gets
the same health series from here, whatever its kind; the kind's own series come from
its declared METRICS.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Mapping

from prometheus_client.utils import floatToGoString

from exporters.snapshot import CheckView, SeriesKey, Snapshot
from probes.base import STATUSES, MetricSpec
from vocabulary import VERSION

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

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
               "work, or missed while insmon was stopped or its loop stalled.", HEALTH),
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
    MetricSpec("insmon_calendar_known_until_timestamp_seconds", "gauge",
               "End of the last day insmon's working calendar knows (the chinesecalendar "
               "package and the site's calendar file), Unix time: past it the days are "
               "provisional.", unit="seconds"),
    MetricSpec("insmon_calendar_provisional", "gauge",
               "1 when today (Asia/Shanghai) is past the calendar data: statutory holidays "
               "come from the law's fixed rules and make-up working days are unknown, for "
               "the calendar check and the recurring maintenance windows alike."),
    MetricSpec("insmon_audit_head_sequence", "gauge",
               "The audit trail's last record: its sequence number (a witness of the "
               "trail outside its folder, which insmon audit --verify compares).",
               ("trail",)),
    MetricSpec("insmon_audit_head_hash", "gauge",
               "The audit trail's last record: the first 52 bits of its hash, as a number.",
               ("trail",)),
)


def declared() -> tuple[MetricSpec, ...]:
    """Every series insmon can emit: the health series and each kind's own."""
    from probes import PROBES

    return CORE_METRICS + tuple(m for kind in PROBES.values() for m in kind.metrics)


CORE = {spec.name: spec for spec in CORE_METRICS}
PER_CHECK = tuple(spec.name for spec in CORE_METRICS if spec.labels[:2] == HEALTH)


def render_check(view: CheckView) -> dict[str, bytes]:
    """The check's sample lines by family name: its health series, then its own."""
    ids = f'check="{_escape(view.name)}",kind="{_escape(view.kind)}"'
    health = {
        "insmon_probe_interval_seconds": [f"{{{ids}}} {_value(view.interval)}\n"],
        "insmon_probe_runs_total": [f'{{{ids},status="{status}"}} {_value(view.runs[status])}\n'
                                    for status in STATUSES],
        "insmon_probe_runs_skipped_total": [f"{{{ids}}} {_value(view.skipped)}\n"],
    }
    if view.last is not None:  # before the first run there is nothing to tell
        health["insmon_probe_success"] = [f"{{{ids}}} {_value(view.last.status == 'ok')}\n"]
        health["insmon_probe_duration_seconds"] = [f"{{{ids}}} {_value(view.last.duration)}\n"]
        health["insmon_probe_last_run_timestamp_seconds"] = [
            f"{{{ids}}} {_value(view.last.started)}\n"]
    out = {name: "".join(name + line for line in lines).encode()
           for name, lines in health.items()}

    lines: dict[str, list[str]] = {}
    for series in (view.gauges, view.counters):
        for key, value in series.items():
            lines.setdefault(key[0], []).append(f"{_prefix(view.name, key)}{_value(value)}\n")
    for key, hist in view.histograms.items():
        prefixes, cumulative, text = _histogram_prefixes(view.name, key, hist.bounds), 0, []
        for prefix, count in zip(prefixes, hist.counts, strict=False):
            cumulative += count
            text.append(f"{prefix}{_value(cumulative)}\n")
        text.append(f"{prefixes[-2]}{_value(cumulative)}\n{prefixes[-1]}{_value(hist.sum)}\n")
        lines.setdefault(key[0], []).extend(text)
    out.update((metric, "".join(text).encode()) for metric, text in lines.items())
    return out


# A series' name and labels do not change from run to run: they are formatted once.
# Bounded, so a check whose label values churn cannot grow it without end.
@functools.lru_cache(maxsize=1 << 16)
def _prefix(check: str, key: SeriesKey) -> str:
    metric, pairs = key
    return f"{metric}{_labels(sorted((('check', check), *pairs)))} "


@functools.lru_cache(maxsize=1 << 14)
def _histogram_prefixes(check: str, key: SeriesKey, bounds: tuple[float, ...]
                        ) -> tuple[str, ...]:
    """One prefix per bucket (+Inf last), then _count's and _sum's."""
    metric, pairs = key
    labels = sorted((("check", check), *pairs))
    buckets = tuple(f"{metric}_bucket{_labels(sorted((*labels, ('le', _value(bound)))))} "
                    for bound in (*bounds, float("inf")))
    return (*buckets, f"{metric}_count{_labels(labels)} ", f"{metric}_sum{_labels(labels)} ")


def exposition(snap: Snapshot, openmetrics: bool = False) -> bytes:
    """A whole scrape: insmon's own series, then every family of every check."""
    chunks: dict[str, list[bytes]] = {name: [] for name in PER_CHECK}
    specs: dict[str, MetricSpec] = dict(CORE)
    for view in snap.checks:
        for name, text in view.exposition.items():
            if name not in chunks:
                chunks[name], specs[name] = [], view.metrics[name]
            chunks[name].append(text)
    out = [_own_series(snap, openmetrics)]
    for name, texts in chunks.items():  # insmon's own families even when still empty
        out.append(_header(specs[name], openmetrics))
        out.extend(texts)
    if openmetrics:
        out.append(b"# EOF\n")
    return b"".join(out)


def _own_series(snap: Snapshot, openmetrics: bool) -> bytes:
    values: list[tuple[str, Mapping[str, str] | None, float]] = [
        ("insmon_build_info", {"version": VERSION, "python_version": platform.python_version()},
         1),
        ("insmon_config_last_reload_successful", {}, snap.reload_ok),
        ("insmon_config_last_reload_success_timestamp_seconds", {}, snap.reload_success_at),
    ]
    info = {"source": snap.config_source, "sha256": snap.config_sha256}
    values.append(("insmon_config_info", info if snap.config_sha256 else None, 1))
    known_until, provisional = snap.calendar or (0.0, False)  # absent until it is read
    values += [("insmon_calendar_known_until_timestamp_seconds",
                {} if snap.calendar else None, known_until),
               ("insmon_calendar_provisional", {} if snap.calendar else None, provisional)]
    head = snap.audit_head
    values.append(("insmon_audit_head_sequence", head and {"trail": head[0]},
                   head[1] if head else 0))
    values.append(("insmon_audit_head_hash", head and {"trail": head[0]},
                   head[2] if head else 0))
    return b"".join(
        _header(CORE[name], openmetrics) + (
            b"" if labels is None
            else f"{name}{_labels(sorted(labels.items()))} {_value(value)}\n".encode())
        for name, labels, value in values)


def _header(spec: MetricSpec, openmetrics: bool) -> bytes:
    """HELP and TYPE (and UNIT) lines. OpenMetrics names a counter's family without
    `_total`; the classic format names it with."""
    text = spec.help.replace("\\", r"\\").replace("\n", r"\n")
    if not openmetrics:
        return f"# HELP {spec.name} {text}\n# TYPE {spec.name} {spec.type}\n".encode()
    family = spec.name.removesuffix("_total") if spec.type == "counter" else spec.name
    text = text.replace('"', r'\"')
    unit = f"# UNIT {family} {spec.unit}\n" if spec.unit else ""
    return f"# HELP {family} {text}\n# TYPE {family} {spec.type}\n{unit}".encode()


def _labels(pairs: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in pairs) + "}"


def _escape(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
    return value


def _value(value: float) -> str:
    """Go's formatting of a float, as Prometheus writes it (1.5, 1e+06, +Inf): Python's
    own repr but for large, infinite and not-a-number values."""
    text = repr(float(value))
    dot = text.find(".")
    return text if 0 < dot <= 6 else floatToGoString(value)
