"""What the pager may claim about a delivery (issue 31): `sent` only with the channel's
own evidence (a robot's success code, gammu-smsd's sent folder, the SMTP server's 250),
a storm as a digest rather than a flood, nobody on a rota unreachable in silence, and an
SMS that keeps its acknowledge line whatever the summary holds.

The decisions run in this process on a clock the test moves (the engine and the
delivery worker on a real SQLite store), against the real far ends where the evidence
comes from: gammu-smsd on gammu's dummy phone, the robots' documented answers, an SMTP
server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pager import channels
from pager.clock import Clock
from pager.config import PagerConfig
from pager.delivery import Metrics, Worker
from pager.engine import Engine
from pager.messages import Message, fit
from pager.store import Store

pytestmark = pytest.mark.timeout(120)
MOBILE = {"zhang": "13800000001", "li": "13800000002", "wang": "13800000003"}


def desk_config(**changes: object) -> dict:
    """network: 张三 on call (WeCom, then SMS), 李四 backup (SMS), 王五 lead (SMS)."""
    config = {
        "auth": {"open": True},
        "public_url": "http://10.10.1.20:9095",
        "channels": {"wecom": {"type": "wecom", "url": "http://127.0.0.1:9/x", "retries": 1},
                     "sms": {"type": "sms", "retries": 1},
                     "mail": {"type": "email", "host": "127.0.0.1", "sender": "p@h.test",
                              "retries": 1}},
        "people": {
            "zhang": {"name": "张三", "mobile": MOBILE["zhang"], "wecom": "zhangsan",
                      "channels": ["wecom", "sms"]},
            "li": {"name": "李四", "mobile": MOBILE["li"], "channels": ["sms"]},
            "wang": {"name": "王五", "mobile": MOBILE["wang"], "channels": ["sms"]},
        },
        "teams": {"network": {"name": "网络排查组", "backup": "li", "lead": "wang",
                              "rotation": {"since": "2026-01-01", "order": ["zhang"]}}},
        "fallback_team": "network",
        "escalation": {"I": [], "II": [], "III": [], "IV": []},
        "watchdog": {"timeout": "24h", "notify": ["network"]},
    }
    config.update(changes)
    return config


class Desk:
    """One pager's engine and worker in this process: a real store, a clock the test
    moves, and `send` (by default: every channel takes everything, recorded)."""

    def __init__(self, directory: Path, config: dict, send: Callable | None = None,
                 **worker: object) -> None:
        self.mono, self.wall = 1000.0, 1_790_000_000.0  # 2026-09
        self.config = PagerConfig.model_validate(config)
        directory.mkdir(parents=True, exist_ok=True)
        self.store = Store(directory / "pager.db")
        clock = Clock(None, wall=lambda: self.wall, monotonic=lambda: self.mono, boot="b")
        self.engine = Engine(self.config, self.store, clock)
        self.got: list[tuple[str, tuple[str, ...], Message]] = []
        self.times: list[float] = []  # when each of `got` went, on the pager's clock
        self.registry = CollectorRegistry()
        self.worker = Worker(self.engine, Metrics(self.registry), send=send or self.take,
                             inline=True, **worker)

    def take(self, channel, people, message: Message) -> None:
        self.got.append((channel.type, tuple(p.name for p in people), message))
        self.times.append(self.mono)

    def fire(self, alertname: str = "SettlementPathDown", grade: str = "I",
             site: str = "一院", team: str = "network", summary: str | None = None) -> int:
        labels = {"alertname": alertname, "grade": grade, "site": site, "team": team}
        body = {"version": "4", "status": "firing", "receiver": team,
                "groupKey": f"{{}}:{{site={site!r}, alertname={alertname!r}}}",
                "groupLabels": labels, "commonLabels": labels,
                "commonAnnotations": {"summary_zh": summary or f"{site}：{alertname}"},
                "alerts": [{"status": "firing", "labels": labels, "annotations": {},
                            "startsAt": "2026-09-01T00:00:00Z",
                            "fingerprint": f"{site}{alertname}{grade}"}]}
        return self.engine.intake(team, json.dumps(body).encode()).incident

    def run(self, seconds: float, step: float = 1.0) -> None:
        for _ in range(round(seconds / step)):
            self.mono += step
            self.wall += step
            self.worker.round()

    def rows(self, sql: str, args: tuple = ()) -> list:
        return self.store.query(sql, args)

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Callable[..., Desk]]:
    """Desk(config, ...) in the test's folder, closed after it."""
    made: list[Desk] = []

    def make(config: dict | None = None, **kwargs: object) -> Desk:
        made.append(Desk(tmp_path / str(len(made)), config or desk_config(), **kwargs))
        return made[-1]

    try:
        yield make
    finally:
        for one in made:
            one.close()


# ------------------------------------------------------------------ the SMS's text

def test_an_sms_keeps_its_acknowledge_line_when_the_summary_holds_a_bar(desk) -> None:
    """The short text was "head|tail|link" split on "|": a summary with one cut the ack
    line off."""
    config = desk_config()
    config["people"]["zhang"]["channels"] = ["sms"]
    desk = desk(config)
    incident = desk.fire(summary="主线路|备用线路 均中断，无法实时结算")
    desk.run(2)
    [(kind, people, message)] = desk.got
    assert (kind, people) == ("sms", ("张三",))
    text = fit(message.short, 134)
    assert text.startswith("【一级】主线路|备用线路 均中断")
    assert f"回复1确认(ACK {incident})" in text
    assert "/ack/" in text


# ------------------------------------------------------------------ storms

def storm(desk: Desk, seconds: float = 60.0, names: int = 50, sites: int = 20,
          grade: str = "II", extra: Callable[[int], None] | None = None) -> list[int]:
    """names x sites distinct alerts of `grade` for network, spread over `seconds` as
    Alertmanager sends them (one group each), the worker running meanwhile."""
    alerts = [(f"Storm{n:02d}", f"site{s:02d}") for s in range(sites) for n in range(names)]
    per_second = len(alerts) / seconds
    incidents, sent = [], 0.0
    for second in range(int(seconds)):
        sent += per_second
        while len(incidents) < min(len(alerts), round(sent)):
            alertname, site = alerts[len(incidents)]
            incidents.append(desk.fire(alertname, grade, site))
        if extra:
            extra(second)
        desk.run(1)
    for alertname, site in alerts[len(incidents):]:
        incidents.append(desk.fire(alertname, grade, site))
    return incidents


def told(desk: Desk, person: str) -> dict[str, list[Message]]:
    """channel type -> the messages that named the person on it."""
    found: dict[str, list[Message]] = {}
    for kind, people, message in desk.got:
        if desk.config.people[person].name in people:
            found.setdefault(kind, []).append(message)
    return found


def test_a_storm_of_a_thousand_alerts_is_a_few_messages_that_name_or_count_every_one(
        desk) -> None:
    """1,000 grade II alerts in a minute (50 names x 20 sites, one team) gave the on-call
    40 WeCom posts, 49 SMS and 765 e-mails: the robot's minute was spent, the rest failed
    over to SMS and then to mail, one message per alert."""
    config = desk_config()
    config["people"]["zhang"]["channels"] = ["wecom", "sms", "mail"]
    config["people"]["zhang"]["email"] = "zhang@h.test"
    desk = desk(config)
    incidents = storm(desk)
    desk.run(240)
    got = told(desk, "zhang")
    assert set(got) == {"wecom"}  # the robot's minute was never spent: nothing failed over
    assert 2 <= len(got["wecom"]) <= 10
    # every alert named or counted, each once
    news = [n for m in got["wecom"] for n in m.news]
    assert sorted(n[0] for n in news) == sorted(incidents)
    assert all(n[1:] == ("page", 0, "zhang") for n in news)
    assert not desk.rows("SELECT * FROM deliveries WHERE status != 'sent'")
    digests = [m for m in got["wecom"] if m.title.startswith("【告警汇总】")]
    assert digests
    for message in digests:
        named = len(message.news)
        assert f"【告警汇总】{named} 条通知：二级 {named}" == message.title
        assert "/list/" in message.text  # one link to the whole list
        lines = message.text.splitlines()
        assert any(line.startswith("【二级】Storm") and "@ site" in line for line in lines)
        # the lines and the rest add up to what the digest holds
        counts = [int(line.rsplit("（", 1)[1].rstrip("）")) for line in lines
                  if line.startswith("【二级】")]
        rest = [int(line.split()[1]) for line in lines if line.startswith("另有")]
        assert sum(counts) + sum(rest) == named
        assert channels.fits(desk.config.channels["wecom"],
                             [desk.config.people["zhang"]], message)


def test_a_level_one_in_a_storm_is_not_held_a_minute_nor_folded_behind_lower_grades(
        desk) -> None:
    desk = desk()
    opened = {}

    def level_one(second: int) -> None:
        if second == 30:
            opened["at"] = desk.mono
            opened["id"] = desk.fire("SettlementPathDown", "I", "一院")

    storm(desk, grade="III", extra=level_one)
    desk.run(120)
    carrying = [(at, m) for at, m in zip(desk.times, [m for _, _, m in desk.got],
                                           strict=True) if opened["id"] in m.incidents]
    assert len(carrying) == 1
    at, message = carrying[0]
    assert at - opened["at"] <= 15 + 1
    lines = message.text.splitlines()
    named = [i for i, line in enumerate(lines) if "SettlementPathDown" in line]
    # named, on a line of its own, above every lower grade
    assert named and all(named[0] < i for i, line in enumerate(lines)
                         if line.startswith("【三级】"))
