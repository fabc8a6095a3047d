"""Past one site: two hospitals' Prometheus, each with its own `site` external label,
remote-write (examples/regional/remote_write.yml) to a real single-node VictoriaMetrics
on loopback. The center's queries see both sites apart, and the project's alert rules,
evaluated at the center by vmalert over the merged history, page for the right site.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from ops.history import PrometheusAPI
from ops.lab.cpu import SimulatedCpu
from ops.recorder import Recorder
from ops.stack import (
    RULES,
    Alertmanager,
    Insmon,
    Prometheus,
    Server,
    alerting_config,
    free_port,
    stop_all,
    wait_for,
)
from tests.conftest import FIXTURES, ROOT

pytestmark = pytest.mark.timeout(300)
SITES = {"hospital-a": "clean", "hospital-b": "failed"}  # each one's md array


def victoria(workdir: Path, binary: str, *flags: str) -> Server:
    """A VictoriaMetrics binary on a loopback port."""
    port = free_port()
    return Server(workdir, binary, [binary, *flags, f"-httpListenAddr=127.0.0.1:{port}"],
                  f"http://127.0.0.1:{port}", "/health")


def query(center: Server, expr: str) -> list[dict]:
    return PrometheusAPI(center.url).query(expr, time.time())


@pytest.fixture
def region(tmp_path: Path) -> Iterator[tuple[Server, Recorder]]:
    started: list = []
    recorder = Recorder()
    cpus = ExitStack()  # each hospital's settlement server CPU, calm: only RAID pages
    try:
        center = victoria(tmp_path / "vm", "victoria-metrics",
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
        # Debian's vmalert (1.79) predates keep_firing_for (the one-minute hold against
        # flapping): it gets the rules without it. A center running vmalert 1.90 or
        # newer, or Prometheus, takes the shipped file as it is.
        (tmp_path / "vmalert").mkdir(parents=True, exist_ok=True)
        rules = tmp_path / "vmalert" / "alerts.yml"
        rules.write_text(re.sub(r"^ *keep_firing_for: .*\n", "",
                                (RULES / "alerts.yml").read_text(), flags=re.MULTILINE))
        started.append(victoria(
            tmp_path / "vmalert", "vmalert", f"-rule={rules}",
            f"-rule={RULES / 'recording.yml'}", f"-datasource.url={center.url}",
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
    assert {r["metric"]["site"] for r in query(
        center, "count by (site) (instance:insmon_cpu_usage:avg2m)")} == set(SITES)

    # the Level I of hospital-b's failed array, evaluated at the center: its teams, its site
    wait_for(lambda: recorder.teams("RaidArrayFailed") >= {"server_ops", "vendor", "leadership",
                                                       "settlement_center"},
             90, "the center's page for hospital-b")
    pages = [p for p in recorder.received("firing") if p.team != "watchdog"]  # no heartbeat
    assert {a["labels"]["site"] for p in pages for a in p.body["alerts"]} == {"hospital-b"}
    assert {name for p in pages for name in p.alertnames} == {"RaidArrayFailed"}
