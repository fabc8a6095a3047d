"""Metric history from the Prometheus HTTP API, for the post-incident review and the drill:
raw samples over a window, the periods each alert fired, and when a component first
went wrong and when it came back."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import statistics
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from alert_rules import NOT_FAULTS
from monitor.audit import Witness, WitnessError
from vocabulary import GRADES


class HistoryError(Exception):
    """Prometheus cannot answer, or the window holds nothing to review."""


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]]  # (unix time, value), oldest first


class PrometheusAPI:
    def __init__(self, url: str, timeout: float = 30) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, str]) -> dict:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            try:
                detail = json.load(exc).get("error", exc.reason)
            except ValueError:
                detail = exc.reason
            raise HistoryError(f"Prometheus at {self.url} refused the query: {detail}") from exc
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HistoryError(f"cannot reach Prometheus at {self.url}: {reason}") from exc
        if not isinstance(body, dict):
            raise HistoryError(f"{self.url} answered {type(body).__name__} JSON, not "
                               "Prometheus' API: is it Prometheus?")
        if body.get("status") != "success":
            raise HistoryError(f"Prometheus at {self.url}: {body.get('error', body)}")
        return body.get("data")

    def query(self, expr: str, at: float) -> list[dict]:
        """An instant query at time `at`: the API's result list, each item with a
        `metric` mapping (checked: a wrong answer is a HistoryError, not a crash)."""
        data = self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, list) or not all(
                isinstance(item, dict) and isinstance(item.get("metric"), dict)
                for item in result):
            raise self._shape(f"no list of results with metrics for {expr[:60]!r}")
        return result

    def samples(self, selector: str, start: float, end: float) -> list[Series]:
        """Every raw sample of `selector` in [start, end]: a range selector evaluated at
        `end`, so the times are the scrapes' and evaluations' own."""
        seconds = max(1, int(end - start + 0.999))
        found = []
        for item in self.query(f"{selector}[{seconds}s]", end):
            try:
                points = [(float(t), float(v)) for t, v in item["values"]
                          if float(t) >= start]
            except (KeyError, TypeError, ValueError):
                raise self._shape(f"no [time, value] samples for {selector[:60]!r}") from None
            if points:
                found.append(Series(item["metric"], points))
        return found

    def range(self, expr: str, start: float, end: float, step: float = 60.0
              ) -> list[Series]:
        """`expr` evaluated every `step` in [start, end] (query_range, asked a week at a
        time: servers cap the points of one answer), the pieces joined per series."""
        joined: dict[tuple, Series] = {}
        week = step * 10000
        at = start
        while at <= end:
            until = min(end, at + week)
            data = self._get("/api/v1/query_range", {"query": expr, "start": f"{at:.3f}",
                                                     "end": f"{until:.3f}",
                                                     "step": f"{step:g}"})
            result = data.get("result") if isinstance(data, dict) else None
            if not isinstance(result, list):
                raise self._shape(f"no list of results for {expr[:60]!r}")
            for item in result:
                try:
                    key = tuple(sorted(item["metric"].items()))
                    points = [(float(t), float(v)) for t, v in item["values"]]
                except (KeyError, TypeError, ValueError, AttributeError):
                    raise self._shape(f"no [time, value] series for {expr[:60]!r}") from None
                joined.setdefault(key, Series(dict(item["metric"]), [])).points.extend(points)
            at = until + step
        return list(joined.values())

    def _shape(self, what: str) -> HistoryError:
        return HistoryError(f"Prometheus at {self.url} answered in an unexpected shape: "
                            f"{what}")


def selector(name: str, site: str | None, **matchers: str) -> str:
    """name{matchers, site="..."}; a matcher value starting with ~ is a regex."""
    parts = [f'{k}=~"{v[1:]}"' if v.startswith("~") else f'{k}="{v}"'
             for k, v in matchers.items()]
    if site:
        parts.append(f'site="{site}"')
    return name + "{" + ",".join(parts) + "}" if parts else name


def spacing(points: list[tuple[float, float]], default: float = 5.0) -> float:
    """The usual step between samples (scrape or evaluation interval)."""
    steps = [b[0] - a[0] for a, b in itertools.pairwise(points)]
    return statistics.median(steps) if steps else default


@dataclass
class AlertPeriod:
    labels: dict[str, str]
    start: float       # the first evaluation that found it firing
    end: float | None  # the first evaluation that no longer did; None: firing at the end

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "?")

    @property
    def grade(self) -> str:
        return self.labels.get("grade", "?")

    @property
    def teams(self) -> list[str]:
        also = [t for t in self.labels.get("also", "").split(",") if t]
        return [self.labels.get("team", "?"), *also]


def alert_periods(api: PrometheusAPI, start: float, end: float,
                  site: str | None = None) -> list[AlertPeriod]:
    """When each alert fired in the window, from the ALERTS series Prometheus writes at
    every rule evaluation while an alert fires (not the heartbeat nor the calendar's hours,
    which fire without a fault)."""
    periods = []
    for series in api.samples(selector("ALERTS", site, alertstate="firing"), start, end):
        labels = {k: v for k, v in series.labels.items()
                  if k not in ("__name__", "alertstate")}
        if labels.get("alertname") in NOT_FAULTS:
            continue
        step = spacing(series.points)
        for first, last in runs(series.points, lambda v: True, step):
            resolved = last + step if end - last > 2 * step else None
            periods.append(AlertPeriod(labels, first, resolved))
    return sorted(periods, key=lambda p: (p.start, GRADES.index(p.grade)
                                          if p.grade in GRADES else 9, p.name))


def runs(points: list[tuple[float, float]], bad: Callable[[float], bool],
         step: float) -> list[tuple[float, float]]:
    """(first, last) sample times of each run of consecutive samples where `bad(value)`;
    a gap longer than 2.5 steps ends a run."""
    found: list[tuple[float, float]] = []
    first = last = None
    for t, v in points:
        if bad(v) and first is not None and t - last <= 2.5 * step:
            last = t
        elif bad(v):
            if first is not None:
                found.append((first, last))
            first = last = t
        elif first is not None:
            found.append((first, last))
            first = last = None
    if first is not None:
        found.append((first, last))
    return found


@dataclass
class Component:
    """A link of the settlement chain, and how its series show a fault."""

    name: str
    name_zh: str
    metric: str
    matchers: dict[str, str]
    bad: Callable[[float], bool]
    services: tuple[str, ...]  # the `service` label of the alerts that report it
    series: list[Series] = field(default_factory=list)

    def anomalies(self) -> list[tuple[float, float | None]]:
        """(start, recovered) per run of bad samples; recovered None: still bad."""
        found = []
        for s in self.series:
            step = spacing(s.points)
            last_time = s.points[-1][0]
            for first, last in runs(s.points, self.bad, step):
                after = next((t for t, _ in s.points if t > last), None)
                found.append((first, after if last < last_time else None))
        return sorted(found, key=lambda a: a[0])


def components() -> list[Component]:
    """The chain's components, in the order a settlement crosses them (private network,
    front-end, storage, server), as docs/architecture.md lists them."""
    return [
        Component("private line", "医保专网主线路", "insmon_vpn_link_up",
                  {"role": "primary"}, lambda v: v == 0, ("private_network",)),
        Component("backup channel", "备用通道", "insmon_vpn_link_up",
                  {"role": "backup"}, lambda v: v == 0, ("private_network",)),
        Component("settlement path", "结算通道", "insmon_settlement_path_up", {},
                  lambda v: v == 0, ("private_network", "settlement_chain")),
        Component("front-end", "医保前置机", "insmon_vpn_front_end_up", {},
                  lambda v: v == 0, ("front_end",)),
        Component("platform transactions", "医保平台交易", "insmon_settlement_possible", {},
                  lambda v: v == 0, ("settlement_platform",)),
        Component("private network ping", "专网 ping", "insmon_ping_loss_ratio", {},
                  lambda v: v > 0.05, ("private_network",)),
        Component("storage IO", "存储读写", "insmon_probe_success",
                  {"kind": "storage_latency"}, lambda v: v == 0,
                  ("storage", "settlement_chain")),
        Component("storage latency", "存储延迟", "insmon_storage_last_latency_seconds",
                  {"phase": "total"}, lambda v: v > 2.0, ("storage",)),
        Component("RAID", "RAID 阵列", "insmon_raid_array_state",
                  {"state": "~degraded|recovering|resyncing|reshaping|failed|inactive|unknown"},
                  lambda v: v == 1, ("raid", "settlement_chain")),
        Component("settlement server CPU", "结算服务器 CPU", "insmon_cpu_usage_ratio", {},
                  lambda v: v > 0.95, ("settlement_server",)),
    ]


def pager_incidents(url: str, query: str, timeout: float) -> list[dict]:
    """insmon pager's /api/incidents?<query>, with the token of INSMON_PAGER_TOKEN_FILE
    when set (a pager with auth.token_file answers nobody else)."""
    headers = {}
    token_file = os.environ.get("INSMON_PAGER_TOKEN_FILE")
    if token_file:
        with open(token_file) as file:
            headers["Authorization"] = f"Bearer {file.read().strip()}"
    request = urllib.request.Request(f"{url.rstrip('/')}/api/incidents?{query}",
                                     headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


WITNESS_DAYS = 200  # Prometheus keeps 190 days at a site
RECENT = 86400.0    # every scraped head of the last day; before it, views at a step


def audit_witness(url: str, trail_id: str, now: float | None = None) -> Witness:
    """What Prometheus (or VictoriaMetrics) kept of an audit trail's head, the witness
    `Trail.verify` compares with the chain: every sample of the last day, a view at each
    step (some 29 minutes) before it, and the highest sequence number of each step."""
    if not re.fullmatch(r"[0-9a-f]{1,64}", trail_id):
        raise WitnessError(f"{trail_id!r} is not a trail's id")
    api = PrometheusAPI(url)
    end = time.time() if now is None else now
    start = end - WITNESS_DAYS * 86400
    step = max(60.0, float(math.ceil((end - start) / 10000)))
    which = f'{{trail="{trail_id}"}}'
    try:
        views = _views(api.range(f"insmon_audit_head_sequence{which}", start, end, step),
                       api.range(f"insmon_audit_head_hash{which}", start, end, step))
        views += _views(api.samples(f"insmon_audit_head_sequence{which}", end - RECENT, end),
                        api.samples(f"insmon_audit_head_hash{which}", end - RECENT, end))
        peaks = [(t, int(v)) for series in api.range(
            f"max_over_time(insmon_audit_head_sequence{which}[{step:.0f}s])", start, end, step)
            for t, v in series.points]
    except HistoryError as exc:
        raise WitnessError(str(exc)) from None
    return Witness(f"Prometheus at {url}", sorted(set(views)), peaks)


def _views(sequences: list[Series], hashes: list[Series]) -> list[tuple[float, int, int]]:
    """(time, sequence number, hash bits) where both series have a sample at one time."""
    def key(series: Series) -> tuple:
        return tuple(sorted((k, v) for k, v in series.labels.items() if k != "__name__"))

    bits = {(key(s), t): int(v) for s in hashes for t, v in s.points}
    return [(t, int(v), bits[key(s), t]) for s in sequences for t, v in s.points
            if (key(s), t) in bits]
