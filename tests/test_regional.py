"""Past one site: two hospitals' Prometheus, each with its own `site` external label,
remote-write (examples/regional/remote_write.yml) to a real single-node VictoriaMetrics
on loopback. The center's queries see both sites apart, and the project's alert rules,
evaluated at the center by vmalert over the merged history, page for the right site.
Then the region as the README sets it up (ops/lab/region.py): simulated hospitals through
vmagent, a cut line to the center, faults at five hospitals.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from ops.history import PrometheusAPI
from ops.lab.cpu import SimulatedCpu
from ops.lab.region import (
    FAULT_ALERTS,
    Center,
    Region,
    center_rules,
    collector,
    cut_line,
    inject_faults,
)
from ops.recorder import Recorder
from ops.stack import (
    Alertmanager,
    Insmon,
    Prometheus,
    Server,
    Victoria,
    alerting_config,
    free_port,
    stop_all,
    wait_for,
)
from tests.conftest import FIXTURES, ROOT

pytestmark = pytest.mark.timeout(300)
SITES = {"hospital-a": "clean", "hospital-b": "failed"}  # each one's md array


def query(center: Server, expr: str) -> list[dict]:
    return PrometheusAPI(center.url).query(expr, time.time())


@pytest.fixture
def region(tmp_path: Path) -> Iterator[tuple[Server, Recorder]]:
    started: list = []
    recorder = Recorder()
    cpus = ExitStack()  # each hospital's settlement server CPU, calm: only RAID pages
    try:
        center = Victoria(tmp_path / "vm", "victoria-metrics",
                          f"-storageDataPath={tmp_path / 'vm' / 'data'}", "-retentionPeriod=1",
                          "-search.latencyOffset=1s")
        started.append(center)
        remote = yaml.safe_load((ROOT / "examples/regional/remote_write.yml").read_text())
        remote["remote_write"][0]["url"] = f"{center.url}/api/v1/write"
        for site, raid in SITES.items():
            port = free_port()
            cpu = cpus.enter_context(SimulatedCpu(tmp_path / site / "settlement-server"))
            started.append(Insmon(tmp_path / site, f"""\
listen: "127.0.0.1:{port}"
checks:
  - {{name: settlement-md-raid, kind: raid, interval: 1s,
      source: {{type: md, root: {FIXTURES / 'raid/md' / raid}}}}}
  - {{name: settlement-server-cpu, kind: cpu, interval: 1s, root: {cpu.root}}}
"""))
            config = alerting_config(tmp_path / site / "prometheus", [f"127.0.0.1:{port}"],
                                     site, "127.0.0.1:9", external_labels={"site": site})
            started.append(Prometheus(tmp_path / site / "prometheus", config | remote))
        manager = Alertmanager(tmp_path / "center-am", recorder.url)
        started.append(manager)
        started.append(Victoria(
            tmp_path / "vmalert", "vmalert",
            *(f"-rule={rule}" for rule in center_rules(tmp_path / "vmalert")),
            f"-datasource.url={center.url}",
            f"-remoteWrite.url={center.url}", f"-notifier.url={manager.url}",
            "-evaluationInterval=2s"))
        yield center, recorder
    finally:
        stop_all(started)
        cpus.close()
        recorder.close()


def test_the_center_sees_both_hospitals_apart_and_pages_for_the_right_one(region) -> None:
    center, recorder = region
    sites = wait_for(lambda: {r["metric"]["site"] for r in query(
        center, "count by (site) (insmon_probe_success)")} >= set(SITES) and {
        r["metric"]["site"] for r in query(center, "count by (site) (insmon_probe_success)")},
        60, "both hospitals' series at the center")
    assert sites == set(SITES)
    failed = {r["metric"]["site"]: float(r["value"][1]) for r in query(
        center, 'max by (site) (insmon_raid_array_state{state="failed"})')}
    assert failed == {"hospital-a": 0.0, "hospital-b": 1.0}
    # recorded at the center by vmalert (the hospitals send their raw series only)
    wait_for(lambda: {r["metric"]["site"] for r in query(
        center, "count by (site) (instance:insmon_cpu_usage:avg2m)")} == set(SITES), 60,
        "the center's own recording of both hospitals' CPU")

    # the Level I of hospital-b's failed array, evaluated at the center: its teams, its site
    wait_for(lambda: recorder.teams("RaidArrayFailed") >= {"server_ops", "vendor", "leadership",
                                                       "settlement_center"},
             90, "the center's page for hospital-b")
    pages = [p for p in recorder.received("firing") if p.team != "watchdog"]  # no heartbeat
    assert {a["labels"]["site"] for p in pages for a in p.body["alerts"]} == {"hospital-b"}
    assert {name for p in pages for name in p.alertnames} == {"RaidArrayFailed"}


# ---------------------------------------------------------------- the region at scale

CENTER_ROUTING = ROOT / "examples/regional/alertmanager.yml"


def route(*labels: str) -> str:
    done = subprocess.run(["amtool", "config", "routes", "test",
                           f"--config.file={CENTER_ROUTING}", *labels],
                          capture_output=True, text=True, timeout=60)
    return done.stdout.strip()


def test_the_centers_routing_pages_its_on_call_per_hospital() -> None:
    """The center's Alertmanager: every fault of every grade reaches the center's on-call,
    grouped by site (one page per hospital, whatever fails there); the heartbeat goes to
    the dead man's switch; the calendar's hours and a hospital's drill page nobody."""
    check = subprocess.run(["amtool", "check-config", str(CENTER_ROUTING)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    for grade in ("I", "II", "III", "IV"):
        assert route("site=h1", "alertname=RaidArrayDegraded", f"grade={grade}") == \
            "center_oncall"
    assert route("site=h1", "alertname=InsmonSiteMissing", "grade=II") == "center_oncall"
    assert route("alertname=Watchdog") == "watchdog"
    assert route("alertname=OutsideBusinessHours") == "nobody"
    assert route("site=h1", "alertname=SettlementPathDown", "grade=I", "drill=true") == "nobody"
    config = yaml.safe_load(CENTER_ROUTING.read_text())
    assert config["route"]["group_by"] == ["site"]
    # only the heartbeat (no site) is grouped otherwise
    assert [r.get("receiver") for r in config["route"]["routes"] if "group_by" in r] == [
        "watchdog"]


CUT = float(os.environ.get("REGIONAL_CUT_SECONDS", "60"))  # the bench cuts 10 minutes
CUT_HASTEN = 24  # the center's InsmonSiteMissing waits 5 s, not its shipped 2 minutes


@pytest.mark.timeout(CUT + 420)
def test_a_cut_line_to_the_center_loses_no_history(tmp_path: Path) -> None:
    """One hospital's line to the center really cut (a namespace's link down) for CUT
    seconds: the center says the site went missing, and after the heal it holds every
    sample the hospital's own Prometheus took, through its vmagent's disk buffer. The
    center's rules are a test copy of alert_rules/alerts.yml made at test time with every
    `for:` CUT_HASTEN times shorter (ops.stack.hastened_rules), so a one-minute cut shows
    the missing site; the shipped `for:` is promtool's to prove."""
    recorder = Recorder()
    try:
        history = cut_line(tmp_path, CUT, recorder.url, CUT_HASTEN)
    finally:
        recorder.close()
    assert history.at_site > 20 * 500, history  # 20 s and more of a hospital's series
    assert history.missing == [] and history.at_center == history.at_site, history
    assert history.buffered > 0, "nothing was buffered on disk while the line was cut"
    assert history.missing_alert is not None and history.missing_alert < CUT, history


FAULTED = {"hospital-2": "cut", "hospital-4": "cut", "hospital-6": "degraded",
           "hospital-8": "degraded", "hospital-10": "refusing",
           # two more states of the board
           "hospital-11": "backup", "hospital-12": "silent"}
FAULT_HASTEN = 6  # SettlementImpossible's `for: 1m` at the center: 10 s


@pytest.mark.timeout(600)
def test_faults_at_five_hospitals_page_the_center_for_exactly_those(tmp_path: Path) -> None:
    """Twelve hospitals through vmagent into the center; faults at five of them (both
    lines cut, a degraded array, the platform refusing) and two more (on the backup line,
    insmon silent): each fault's alert fires at the center for its site and nowhere else;
    the center's on-call gets its pages grouped by hospital; the region board shows each
    hospital's state. The center's rules are a test copy of alert_rules/alerts.yml made at
    test time with every `for:` FAULT_HASTEN times shorter (ops.stack.hastened_rules):
    this proves where each fault pages, promtool how long each rule waits."""
    recorder = Recorder()
    region = Region(12)
    started: list = []
    try:
        center = Center(tmp_path / "center", recorder.url, hasten=FAULT_HASTEN)
        started.append(center)
        started.append(collector(tmp_path / "vmagent", region, center))
        wait_for(lambda: len(center.query('count by (site) (up{job="insmon"})')) == 12, 120,
                 "every hospital at the center")
        wait_for(lambda: _states(center) == dict.fromkeys(region.hospitals, 0), 60,
                 "every hospital able to settle on the board")
        times = inject_faults(region, center, recorder, FAULTED)
        for site, fault in FAULTED.items():
            assert (site, FAULT_ALERTS[fault]) in times.fired, (site, times)
            assert site in times.paged, (site, times)
        assert times.elsewhere == {}
        # each fault's own alert only where that fault is
        for (site, alert), _ in times.fired.items():
            owners = {s for s, f in FAULTED.items() if FAULT_ALERTS[f] == alert}
            if alert in FAULT_ALERTS.values():
                assert site in owners or FAULTED[site] == "cut", (site, alert)
        # the center's on-call: pages by hospital, never by series
        pages = [p for p in recorder.received("firing") if p.team == "center_oncall"]
        assert {p.body["groupLabels"].get("site") for p in pages} == set(FAULTED)
        for page in pages:
            assert set(page.body["groupLabels"]) == {"site"}
            assert {a["labels"]["site"] for a in page.body["alerts"]} == set(
                page.body["groupLabels"].values())
        # the region board
        wait_for(lambda: _states(center) == {
            **dict.fromkeys(region.hospitals, 0), "hospital-2": 2, "hospital-4": 2,
            "hospital-10": 2, "hospital-11": 1, "hospital-12": 3}, 90, "the board's states")
        level_i = {r["metric"]["site"] for r in center.query(board_query(
            "Open Level I", "A"))}
        assert {"hospital-2", "hospital-4"} <= level_i <= set(FAULTED)
    finally:
        stop_all(started)
        region.close()
        recorder.close()


def board_query(title: str, ref: str) -> str:
    """A panel's query of the region board, as Grafana sends it with every site."""
    board = json.loads((ROOT / "grafana/dashboards/region.json").read_text())
    panel = next(p for p in board["panels"] if p["title"].startswith(title))
    expr = next(t["expr"] for t in panel["targets"] if t["refId"] == ref)
    return expr.replace("$site", ".*")


def _states(center: Center) -> dict[str, int]:
    return {r["metric"]["site"]: int(float(r["value"][1]))
            for r in center.query(board_query("Hospitals, worst first", "A"))}
