"""The pager as install.sh leaves it, with no teams yet: it takes and keeps every
notification and pages nobody, and says so (its metrics, its status page, `validate`);
once the site fills in its teams, nothing kept from before goes out later (no escalation
or report reminder of an incident nobody was told of), while a fault still firing pages
at Alertmanager's next repeat, once."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from prometheus_client import CollectorRegistry

from ops.stack import free_port
from pager import records
from pager.clock import Clock
from pager.config import PagerConfig, load
from pager.delivery import Metrics, Worker
from pager.engine import RETRY_WINDOW, Engine
from pager.store import Store
from tests.conftest import INSMON
from tests.debian_root import site_configs
from tests.pager_rig import PagerProcess
from tests.test_pager import notification


def installed(tmp_path: Path) -> Path:
    """install.sh's pager.yaml, with its store and token in the test's folder."""
    path = site_configs(tmp_path / "site") / "pager.yaml"
    (tmp_path / "pager-token").write_text("t0ken-of-the-test\n")
    path.write_text(path.read_text()
                    .replace("/var/lib/insmon-pager/pager.db", str(tmp_path / "pager.db"))
                    .replace("/etc/insmon/pager-token", str(tmp_path / "pager-token"))
                    .replace('"0.0.0.0:9095"', f'"127.0.0.1:{free_port()}"'))
    return path


def filled_in() -> PagerConfig:
    """The site's teams, written in: one person on a channel the test reads."""
    return PagerConfig.model_validate({
        "auth": {"open": True},
        "channels": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/page"}},
        "people": {"zhang": {"name": "张三", "channels": ["hook"]}},
        "teams": {name: {"name": name, "rotation": {"since": "2026-01-01",
                                                     "order": ["zhang"]}, "lead": "zhang"}
                  for name in ("network", "server_ops", "leadership")},
        "escalation": {"I": [{"after": 300, "notify": ["backup", "lead"]},
                             {"after": 600, "notify": ["leadership"]}]},
    })


class Harness:
    """The pager's engine and worker in process on the test's clocks, over one store:
    `start` again is a restart (on another config)."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "pager.db"
        self.mono, self.wall = 1000.0, 1_790_000_000.0

    def start(self, config: PagerConfig) -> tuple[Engine, Worker, list[str]]:
        store = Store(self.path)
        clock = Clock(records.state(store, "clock"), wall=lambda: self.wall,
                      monotonic=lambda: self.mono, boot="boot-1")
        made = Engine(config, store, clock)
        sent: list[str] = []  # who each message reached
        worker = Worker(made, Metrics(CollectorRegistry()), inline=True, send=lambda c, p, m:
                        sent.extend(person.name for person in p))
        return made, worker, sent

    def later(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def deliveries(made: Engine) -> list[dict]:
    return [dict(r) for r in records.deliveries(made.store)]


def test_the_installed_pager_pages_nobody_and_nothing_it_kept_goes_out_later(
        tmp_path: Path) -> None:
    config = load(installed(tmp_path))
    assert not config.configured and config.pair is None
    rig = Harness(tmp_path)
    engine, later = rig.start, rig.later

    first, worker, sent = engine(config)
    level_one = json.dumps(notification(grade="I")).encode()
    taken = first.intake("network", level_one)
    assert taken.status == "accepted" and taken.incident is not None
    later(60)
    first.tick()
    worker.round()
    assert deliveries(first) == [] and sent == []
    events = [e.what for e in records.events(first.store)]
    assert "unconfigured" in events, events
    first.store.close()

    # the site fills in its teams and restarts the pager: hours pass (the Watchdog
    # arriving), past every escalation step and the report reminder: nothing kept goes out
    second, worker, sent = engine(filled_in())
    later(3 * 3600)
    heartbeat = json.dumps(notification(alertname="Watchdog", grade="none")).encode()
    assert second.intake("watchdog", heartbeat).status == "accepted"
    second.tick()
    worker.round()
    assert deliveries(second) == [] and sent == []
    # the fault still fires: Alertmanager's repeat (15 min for grade I) pages it, once
    later(RETRY_WINDOW)
    assert second.intake("network", level_one).status == "repeat"
    worker.round()
    assert sent == ["张三"]
    assert len(deliveries(second)) == 1


def test_it_says_so_on_its_metrics_its_status_page_and_in_validate(tmp_path: Path) -> None:
    path = installed(tmp_path)
    validate = subprocess.run([INSMON, "pager", "validate", str(path)], capture_output=True,
                              text=True, timeout=60)
    assert validate.returncode == 0, validate.stderr
    assert "OK (0 teams, 0 people, 0 channels)" in validate.stdout
    assert "nobody is paged (insmon_pager_configured 0)" in validate.stderr
    pager = PagerProcess(path)
    try:
        assert "insmon_pager_configured 0.0" in pager.get("/metrics").decode()
        assert "not configured: pages nobody" in pager.get("/").decode()
        code, _ = pager.post("/network", notification(grade="I"))
        assert code == 200
        [incident] = pager.incidents()
        assert incident["deliveries"] == [] and incident["pages"] == []
        assert "unconfigured" in [e["what"] for e in incident["events"]]
        assert "未恢复事件 open incidents: 1" in pager.get("/").decode()
    finally:
        pager.stop()


def test_a_level_one_firing_before_the_teams_were_filled_in_escalates_once_paged(
        tmp_path: Path) -> None:
    """A Level I already firing when the site fills in its teams (insmon_pager_configured
    0 -> 1): Alertmanager's repeat pages the on-call, and from that page on the incident
    escalates as any other (it had no timers: nobody had been told)."""
    rig = Harness(tmp_path)
    first, worker, _ = rig.start(load(installed(tmp_path)))
    level_one = json.dumps(notification(grade="I")).encode()
    assert first.intake("network", level_one).status == "accepted"
    first.store.close()

    second, worker, sent = rig.start(filled_in())
    heartbeat = json.dumps(notification(alertname="Watchdog", grade="none")).encode()
    rig.later(15 * 60)  # grade I's repeat_interval
    second.intake("watchdog", heartbeat)
    assert second.intake("network", level_one).status == "repeat"
    worker.round()
    assert sent == ["张三"]
    rig.later(300)  # the first step: unacknowledged after 5 min
    second.intake("watchdog", heartbeat)
    second.tick()
    worker.round()
    kinds = [(d["kind"], d["step"]) for d in deliveries(second)]
    assert ("escalation", 1) in kinds, kinds
    events = [e.what for e in records.events(second.store)]
    assert "escalated" in events, events
    rig.later(600)  # the second step: leadership
    second.intake("watchdog", heartbeat)
    second.tick()
    assert ("escalation", 2) in [(d["kind"], d["step"]) for d in deliveries(second)]
