"""The Prometheus exposition: declared names, a live scrape over HTTP, promtool."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from typing import Literal

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from exporters import prometheus
from exporters.http import HttpServer, make_app
from monitor.runner import Check, build_checks, run_check
from monitor.store import ResultStore, RunRecord
from probes import PROBES, cpu
from probes.base import CheckBase, MetricSpec, ProbeResult, Sample
from tests.conftest import ROOT, sample_value

NAME = re.compile(r"^insmon_[a-z][a-z0-9_]*[a-z0-9]$")
LABEL = re.compile(r"^[a-z][a-z0-9_]*$")
UNITS = {"seconds", "bytes", "ratio", "celsius", "volts", "amperes", "joules", "grams",
         "meters", "hertz", "packets", "octets"}


@pytest.mark.parametrize("spec", prometheus.declared(), ids=lambda s: s.name)
def test_declared_names_follow_the_convention(spec: MetricSpec) -> None:
    assert NAME.match(spec.name)
    assert spec.help.endswith(".") and len(spec.help) > 20
    assert spec.name.endswith("_total") == (spec.type == "counter")
    base = spec.name.removesuffix("_total")
    if spec.unit:
        assert spec.unit in UNITS and base.endswith("_" + spec.unit)
    else:  # a unit in the name must be declared as the unit
        assert not any(base.endswith("_" + unit) for unit in UNITS)
    assert all(LABEL.match(label) for label in spec.labels)
    assert "check" not in spec.labels or spec in prometheus.CORE_METRICS
    if spec.type == "histogram":
        assert spec.buckets == tuple(sorted(set(spec.buckets))) and spec.buckets


def test_declared_names_are_unique() -> None:
    names = [spec.name for spec in prometheus.declared()]
    assert len(names) == len(set(names))


def test_registry_matches_config_union() -> None:
    """One list of kinds: each registered module's Config is tagged with its key."""
    for name, kind in PROBES.items():
        assert kind.config.model_fields["kind"].annotation == Literal[name]
        assert issubclass(kind.config, CheckBase)
        assert kind.metrics and all(isinstance(spec, MetricSpec) for spec in kind.metrics)


class HistConfig(CheckBase):
    kind: Literal["hist"] = "hist"


LATENCY = MetricSpec("insmon_test_latency_seconds", "histogram", "Latency of a test.",
                     ("phase",), "seconds", (0.001, 0.1, 2.0))
ERRORS = MetricSpec("insmon_test_errors_total", "counter", "Errors of a test.", ("reason",))


class HistProbe:
    def __init__(self, cfg: HistConfig, values: list[float]) -> None:
        self.values = values

    async def run(self) -> ProbeResult:
        return ProbeResult("ok", (
            *(Sample(LATENCY.name, v, {"phase": "write"}) for v in self.values),
            Sample(ERRORS.name, 1, {"reason": "EIO"})))


async def test_histograms_and_counters_accumulate_across_runs() -> None:
    store = ResultStore()
    check = Check(HistConfig(name="cache"), HistProbe(HistConfig(name="cache"), [0.0005, 2.0]),
                  {LATENCY.name: LATENCY, ERRORS.name: ERRORS})
    store.configure([check], "test")
    await run_check(check, store)
    check.probe.values = [2.5]  # type: ignore[attr-defined]
    await run_check(check, store)
    def get(name: str, labels: dict[str, str]) -> float | None:
        return sample_value(store, name, labels)

    labels = {"check": "cache", "phase": "write"}
    # a value on a bucket's bound counts in that bucket (le = less or equal)
    assert [get("insmon_test_latency_seconds_bucket", labels | {"le": le})
            for le in ("0.001", "0.1", "2.0", "+Inf")] == [1, 1, 2, 3]
    assert get("insmon_test_latency_seconds_sum", labels) == pytest.approx(4.5005)
    assert get("insmon_test_latency_seconds_count", labels) == 3
    assert get("insmon_test_errors_total", {"check": "cache", "reason": "EIO"}) == 2


def test_gauges_are_dropped_after_a_timeout_not_left_stale() -> None:
    store = ResultStore()
    [check] = build_checks([cpu.Config(name="host", kind="cpu")])
    store.configure([check], "test")
    store.record(check, RunRecord("ok", time.time(), 0.1, ""),
                 [Sample("insmon_cpu_usage_ratio", 0.98)])
    def get(name: str, labels: dict[str, str]) -> float | None:
        return sample_value(store, name, labels)

    assert get("insmon_cpu_usage_ratio", {"check": "host"}) == 0.98
    store.record(check, RunRecord("timeout", time.time(), 2.0, ""))
    assert get("insmon_cpu_usage_ratio", {"check": "host"}) is None
    assert get("insmon_probe_success", {"check": "host", "kind": "cpu"}) == 0
    assert get("insmon_probe_runs_total",
               {"check": "host", "kind": "cpu", "status": "timeout"}) == 1


@pytest.fixture
async def live() -> Iterator[tuple[str, ResultStore]]:
    """A real HTTP server on a loopback port, after one real run of every check."""
    store = ResultStore()
    checks = build_checks([cpu.Config(name="host-cpu", kind="cpu", per_core=True),
                           cpu.Config(name="idle-cpu", kind="cpu")])
    store.configure(checks, "test.yaml")
    for check in checks[:1]:  # idle-cpu stays "not run yet"
        await run_check(check, store)
    server = HttpServer("127.0.0.1", 0, make_app(store.snapshot, lambda: True))
    yield f"http://127.0.0.1:{server.port}", store
    server.close()


async def test_live_scrape_parses_and_passes_promtool(live: tuple[str, ResultStore]) -> None:
    url, _ = live
    response = requests.get(url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}

    # every cpu series and every health series is on a live scrape
    for spec in (*prometheus.CORE_METRICS, *cpu.METRICS):
        assert spec.name.removesuffix("_total") in families, spec.name
    success = {s.labels["check"]: s.value for s in families["insmon_probe_success"].samples}
    assert success == {"host-cpu": 1.0}  # a check not run yet has no success series...
    runs = [s for s in families["insmon_probe_runs"].samples
            if s.labels["check"] == "idle-cpu" and s.name.endswith("_total")]
    assert {s.labels["status"]: s.value for s in runs} == dict.fromkeys(
        ("ok", "failed", "timeout", "error"), 0.0)  # ...but its counters start at 0

    lint = subprocess.run(["promtool", "check", "metrics"], input=response.text,
                          capture_output=True, text=True, timeout=30)
    assert lint.returncode == 0, lint.stdout + lint.stderr


async def test_openmetrics_negotiation(live: tuple[str, ResultStore]) -> None:
    url, _ = live
    response = requests.get(url + "/metrics", timeout=5,
                            headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    assert "# UNIT insmon_cpu_usage_ratio ratio" in response.text


async def test_health_status_page_and_unknown_paths(live: tuple[str, ResultStore]) -> None:
    url, _ = live
    health = requests.get(url + "/healthz", timeout=5)
    assert (health.status_code, health.text) == (200, "ok\n")
    page = requests.get(url + "/", timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "<h1>insmon: 1 of 2 checks ok, 1 not run yet</h1>" in page.text
    assert "host-cpu" in page.text and "not run yet" in page.text
    assert requests.get(url + "/nope", timeout=5).status_code == 404


def test_healthz_fails_when_the_loop_is_stuck() -> None:
    server = HttpServer("127.0.0.1", 0, make_app(ResultStore().snapshot, lambda: False))
    try:
        response = requests.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        assert response.status_code == 503
    finally:
        server.close()


def test_readme_documents_exactly_the_declared_metrics() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(insmon_[a-z0-9_]+)` \|", readme, re.MULTILINE))
    assert documented == {spec.name for spec in prometheus.declared()}
