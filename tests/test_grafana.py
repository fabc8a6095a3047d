"""The Grafana dashboards: generated from grafana/dashboards.py and committed; valid for
Grafana; naming only series insmon declares; and every panel's PromQL returning data from
a real Prometheus that scrapes a real `insmon run` on a healthy site (the namespace lab,
a real snmpd, this host's disks, a calm simulated settlement server CPU, an md array from
a fixture), so no panel of the wall shows "No data" on a healthy site.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from exporters.prometheus import declared
from ops.lab import Lab
from ops.lab.cpu import SimulatedCpu
from ops.stack import Insmon, Prometheus, alerting_config, free_port
from tests.conftest import FIXTURES, ROOT
from tests.snmp_agent import COMMUNITY, SnmpAgent

GRAFANA = ROOT / "grafana"
SITE = "grafana-lab"


def generator():
    spec = importlib.util.spec_from_file_location("dashboards", GRAFANA / "dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text())
            for p in sorted((GRAFANA / "dashboards").glob("*.json"))}


def queries(board: dict) -> list[tuple[str, str]]:
    """(where, expr) of every panel target, variable query and annotation."""
    found = [(f"{board['uid']}: {panel['title']}", t["expr"])
             for panel in board["panels"] for t in panel["targets"]]
    found += [(f"{board['uid']}: annotation {a['name']}", a["expr"])
              for a in board.get("annotations", {}).get("list", []) if "expr" in a]
    for var in board["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.*), (\w+)\)", var["query"]["query"])
        assert match, var["query"]
        found.append((f"{board['uid']}: variable {var['name']}",
                      f"group by ({match[2]}) ({match[1]})"))
    return found


def concrete(expr: str) -> str:
    """The expression as Grafana sends it with every site and check selected."""
    return (expr.replace("$site", ".*").replace("$check", ".*")
            .replace("$__rate_interval", "1m"))


def test_committed_json_is_generated_from_the_code() -> None:
    rendered = generator().render()
    committed = {p.name: p.read_text() for p in (GRAFANA / "dashboards").glob("*.json")}
    assert set(committed) == set(rendered)
    for name, text in rendered.items():
        assert committed[name] == text, f"{name} is stale: run python grafana/dashboards.py"


def test_the_wall_counts_faults_not_the_alerts_that_fire_without_one() -> None:
    """The heartbeat and the calendar's hours fire on a healthy site: the wall's "what is
    firing" leaves out every one of them."""
    from alert_rules import NOT_FAULTS

    faults = generator().FAULTS
    assert all(name in faults for name in NOT_FAULTS) and "alertname!~" in faults


def test_dashboards_have_what_grafana_needs() -> None:
    boards = dashboards()
    assert set(boards) == {"wall.json", "network.json", "storage.json", "incident.json",
                           "region.json"}
    assert len({b["uid"] for b in boards.values()}) == 5
    datasource = yaml.safe_load(
        (GRAFANA / "provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    for name, board in boards.items():
        assert board["title"] and board["uid"].startswith("insmon-")
        assert board["schemaVersion"] >= 36
        assert board["templating"]["list"][0]["name"] == "site"
        assert board["panels"], name
        for panel in board["panels"]:
            where = f"{name}: {panel['title']}"
            assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}
            assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"])
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, where
    wall = boards["wall.json"]
    assert wall["style"] == "dark" and wall["refresh"] == "5s"
    tiles = [p for p in wall["panels"] if p["gridPos"]["y"] == 0]
    assert [t["title"].split(" ")[0] for t in tiles] == [
        "Private", "4G", "Front-end", "Storage", "RAID", "Settlement"]
    for tile in tiles:  # green / amber / red
        colours = {m["color"] for m in tile["fieldConfig"]["defaults"]["mappings"][0][
            "options"].values()}
        assert colours == {"green", "orange", "red"}
        assert tile["options"]["colorMode"] == "background"
    units = {p["fieldConfig"]["defaults"]["unit"] for b in boards.values() for p in b["panels"]}
    assert {"s", "percentunit"} <= units
    incident = boards["incident.json"]
    assert "ALERTS" in incident["annotations"]["list"][0]["expr"]
    # the regional center's board: states worst first, each hospital linked to its wall
    region = {p["title"]: p for p in boards["region.json"]["panels"]}
    hospitals = region["Hospitals, worst first 各院状态（最差在前）"]
    assert hospitals["options"]["sortBy"] == [{"displayName": "state 状态", "desc": True}]
    assert "var-site=${__data.fields.site}" in hospitals["fieldConfig"]["defaults"]["links"][
        0]["url"]
    states = hospitals["fieldConfig"]["overrides"][0]["properties"][0]["value"][0]["options"]
    assert [states[k]["text"].split(" ")[0] for k in "0123"] == ["can", "on", "cannot", "insmon"]


def test_every_series_named_is_declared_by_insmon() -> None:
    names = {m.name for m in declared()}
    recorded = {r["record"] for g in yaml.safe_load(
        (ROOT / "alert_rules/recording.yml").read_text())["groups"] for r in g["rules"]
        if "record" in r}
    for board in dashboards().values():
        for where, expr in queries(board):
            for name in re.findall(r"\b((?:insmon_|[a-z]+:insmon)[a-z0-9_:]*)", expr):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                assert name in names | recorded or base in names, f"{where}: {name}"


@pytest.fixture(scope="module")
def healthy_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    work = tmp_path_factory.mktemp("grafana")
    # the settlement server's CPU, calm: the wall's CPU tile is green however busy this
    # host is
    with SimulatedCpu(work / "settlement-server") as cpu:
        yield from _healthy_site(work, cpu)


def _healthy_site(work: Path, cpu: SimulatedCpu) -> Iterator[Prometheus]:
    lab = Lab()
    started: list = []
    try:
        lab.start_front_end(8080)
        (work / "snmp").mkdir()
        agent = SnmpAgent(work / "snmp")
        started.append(agent)
        (work / "cache").mkdir()
        port = free_port()
        config = lab.insmon_config(port) + f"""\
  - {{name: line-ping, kind: icmp, interval: 1s, count: 2, packet_interval: 50ms,
      packet_timeout: 300ms, targets: [198.18.1.2, 198.18.2.2]}}
  - {{name: edge-switch, kind: snmp, interval: 2s, timeout: 1500ms, address: "{agent.address}",
      interfaces: [lo], auth: {{community: {{value: {COMMUNITY}}}}}}}
  - {{name: settlement-disks, kind: disk_io, interval: 1s, exclude: "ram.*"}}
  - {{name: settlement-cache-io, kind: storage_latency, interval: 1s, path: {work / 'cache'}}}
  - {{name: settlement-md-raid, kind: raid, interval: 2s,
      source: {{type: md, root: {FIXTURES / 'raid/md/clean'}}}}}
  - {{name: settlement-server-cpu, kind: cpu, interval: 1s, root: {cpu.root}}}
""" + lab.settlement_check(lab.start_platform(work / "platform.json"))
        started.append(Insmon(work / "insmon", config))
        prometheus = Prometheus(work / "prometheus", alerting_config(
            work / "prometheus", [f"127.0.0.1:{port}"], SITE, "127.0.0.1:9"))
        started.append(prometheus)
        yield prometheus
    finally:
        for thing in reversed(started):
            thing.stop()
        lab.close()


@pytest.mark.timeout(600)  # the site first: slot 0 (up to 5 minutes), snmpd, insmon, Prometheus
def test_every_panel_returns_data_on_a_healthy_site(healthy_site: Prometheus) -> None:
    # what is empty on a healthy site: the annotations (no alert fires) and the region's
    # list of open Level I incidents
    quiet = ("annotation", "Open Level I")
    exprs = [(where, concrete(expr)) for board in dashboards().values()
             for where, expr in queries(board) if not any(q in where for q in quiet)]
    deadline = time.monotonic() + 60  # rates and 2-minute averages need a few scrapes
    while True:
        empty = [where for where, expr in exprs if not healthy_site.query(expr)]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert empty == []
    values = {where: healthy_site.query(expr) for where, expr in exprs}
    # a healthy site: every wall tile is green (0), no grade fires, nobody is paged
    for where, result in values.items():
        if not where.startswith("insmon-wall") or "variable" in where:
            continue
        if "Since" in where:  # never an incident here
            assert [float(r["value"][1]) for r in result] == [-1]
        else:
            if "Settlement over" in where:
                assert [r["metric"]["role"] for r in result] == ["primary"]
            elif "Teams" in where:
                assert [r["metric"].get("team") for r in result] == ["none 无"]
            elif "path" not in where:
                assert {float(r["value"][1]) for r in result} == {0.0}, where
    # the region board: one hospital, able to settle (0), no grade firing (0)
    hospitals = next(p for p in dashboards()["region.json"]["panels"]
                     if p["title"].startswith("Hospitals, worst first"))
    for state in hospitals["targets"]:
        assert [(r["metric"]["site"], float(r["value"][1])) for r in healthy_site.query(
            concrete(state["expr"]))] == [(SITE, 0.0)], state["refId"]
    # annotations parse (no alert fires, so they return nothing), nor any Level I
    for board in dashboards().values():
        for where, expr in queries(board):
            if any(q in where for q in quiet):
                assert healthy_site.query(concrete(expr)) == [], where


def test_the_layout_picture_draws_from_the_json(tmp_path) -> None:
    from matplotlib import image

    layout = importlib.util.spec_from_file_location("layout", GRAFANA / "layout.py")
    module = importlib.util.module_from_spec(layout)
    layout.loader.exec_module(module)
    module.draw(dashboards()["wall.json"], tmp_path / "wall-layout.png", value=2)
    pixels = image.imread(tmp_path / "wall-layout.png")[:, :, :3]
    red = ((pixels[:, :, 0] > 0.7) & (pixels[:, :, 1] < 0.15) & (pixels[:, :, 2] < 0.25)).sum()
    assert red > 50_000  # six status tiles drawn at "DOWN"
