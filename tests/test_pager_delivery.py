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
        self.registry = CollectorRegistry()
        self.worker = Worker(self.engine, Metrics(self.registry), send=send or self.take,
                             inline=True, **worker)

    def take(self, channel, people, message: Message) -> None:
        self.got.append((channel.type, tuple(p.name for p in people), message))

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
