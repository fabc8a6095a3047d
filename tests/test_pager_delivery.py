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
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pager import channels, records
from pager.channels import Message, fit
from pager.clock import Clock
from pager.config import PagerConfig
from pager.delivery import Metrics, Worker
from pager.engine import Engine
from pager.records import Status
from pager.store import Store
from tests.pager_harness import MovedClock
from tests.pager_rig import MailServer, Phone
from tests.robots import DingTalkRobot, FeishuRobot, WeComRobot

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


class Desk(MovedClock):
    """One pager's engine and worker in this process: a real store, a clock the test
    moves, and `send` (by default: every channel takes everything, recorded).
    `advance` (here `run`) and `follow`: tests/pager_harness.py's."""

    run = MovedClock.advance

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
             site: str = "一院", team: str = "network", summary: str | None = None,
             description: str = "") -> int:
        labels = {"alertname": alertname, "grade": grade, "site": site, "team": team}
        body = {"version": "4", "status": "firing", "receiver": team,
                "groupKey": f"{{}}:{{site={site!r}, alertname={alertname!r}}}",
                "groupLabels": labels, "commonLabels": labels,
                "commonAnnotations": {"summary_zh": summary or f"{site}：{alertname}",
                                      "description": description},
                "alerts": [{"status": "firing", "labels": labels, "annotations": {},
                            "startsAt": "2026-09-01T00:00:00Z",
                            "fingerprint": f"{site}{alertname}{grade}"}]}
        return self.engine.intake(team, json.dumps(body).encode()).incident

    def deliveries(self, status: str | None = None) -> list[records.Delivery]:
        return [d for d in records.deliveries(self.store) if status in (None, d.status)]

    def events(self, what: str) -> list[records.Event]:
        return [e for e in records.events(self.store) if e.what == what]

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

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
    assert all(d.status == Status.SENT for d in desk.deliveries())
    digests = [m for m in got["wecom"] if m.title.startswith("【告警汇总】")]
    assert digests
    for message in digests:
        named = len(message.news)
        assert f"【告警汇总】{named} 条通知：二级 {named}" == message.title
        assert "/list/" in message.text  # one link to the whole list
        lines = message.text.splitlines()
        assert any(line.startswith("【二级】Storm") and "@ site" in line for line in lines)
        # the lines and the rest add up to what the digest holds
        counts = [int(re.search(r"（(\d+)）", line).group(1)) for line in lines
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


def test_a_level_one_by_sms_in_a_storm_is_its_own_sms_with_its_acknowledge_line(
        desk) -> None:
    """A Level I in a storm went folded into the SMS digest: "【告警汇总】…一级 1 …" and a
    link, neither its alert, its site nor how to acknowledge it by reply (SMS is the
    last resort, without the intranet the link needs)."""
    config = desk_config()
    config["people"]["zhang"]["channels"] = ["sms"]
    desk = desk(config)
    opened = {}

    def level_one(second: int) -> None:
        if second == 30:
            opened["at"] = desk.mono
            opened["id"] = desk.fire("SettlementPathDown", "I", "一院",
                                     summary="一院：医保专网中断")

    storm(desk, grade="III", extra=level_one)
    desk.run(120)
    carrying = [(at, m) for at, (_, _, m) in zip(desk.times, desk.got, strict=True)
                if opened["id"] in m.incidents]
    assert len(carrying) == 1
    at, message = carrying[0]
    assert message.incidents == {opened["id"]}, message.short  # its own, not a digest
    assert at - opened["at"] <= 1
    text = fit(message.short, 134)
    assert text.startswith("【一级】一院：医保专网中断") and f"ACK {opened['id']}" in text
    assert len([m for _, _, m in desk.got]) <= 10 + 1  # the storm's bound, and the Level I


def test_a_reply_1_in_a_storm_acknowledges_the_level_one_it_answers(desk) -> None:
    """"回复1确认" acknowledged the newest incident paged to the number: in a storm, a
    grade III that opened after the Level I and reached the person only counted in a
    digest, while the Level I they answered escalated on. A reply answers the newest
    page that reached them as a message of its own."""
    config = desk_config()
    config["people"]["zhang"]["channels"] = ["sms"]
    desk = desk(config)
    for site in range(12):
        desk.fire("Storm00", "III", f"site{site:02d}")
    desk.run(2)
    level_one = desk.fire("SettlementPathDown", "I", "一院")
    desk.run(2)
    for site in range(12, 24):
        desk.fire("Storm00", "III", f"site{site:02d}")
    desk.run(90)
    assert [m.incidents for _, _, m in desk.got][3] == {level_one}  # after the first 3
    assert len(desk.got) > 4  # the digests of what opened after it
    assert desk.engine.sms_reply(f"+86{MOBILE['zhang']}", "1") == level_one
    assert desk.engine.incident(level_one)["acked_by"] == "zhang"


def test_a_storm_retried_across_a_restart_is_still_a_digest(desk) -> None:
    """A storm's digest that failed (the mail server down) is retried; the pager restarted
    meanwhile (kill -9, systemd) forgot the storm, and sent every retried page as a mail
    of its own: 100 mails."""
    config = desk_config()
    config["channels"]["mail"]["retries"] = 5
    config["people"]["zhang"] |= {"email": "zhang@h.test", "channels": ["mail"]}
    down = [True]

    def send(channel, people, message: Message) -> None:
        if down[0]:
            raise channels.Failed("connection refused")
        desk.take(channel, people, message)

    desk = desk(config, send=send)
    for site in range(100):
        desk.fire("Storm00", "III", f"site{site:03d}")
    desk.run(20)  # the first 3 and the digest of the rest failed: retries waiting
    assert not desk.got and [d for d in desk.deliveries(Status.PENDING) if d.attempts > 0]
    desk.worker = Worker(desk.engine, Metrics(CollectorRegistry()), send=send, inline=True)
    down[0] = False
    desk.run(180)
    assert len(desk.deliveries(Status.SENT)) == 100
    assert len(desk.got) <= 10, [m.title for _, _, m in desk.got][:12]


def test_a_storm_by_mail_is_one_digest_mail_not_one_a_page(desk, tmp_path: Path) -> None:
    """765 e-mails for the storm on main: one per page that failed over to mail."""
    mail = MailServer(tmp_path)
    try:
        config = desk_config()
        config["channels"]["mail"] |= {"port": mail.port, "ca_file": str(mail.ca_file)}
        config["people"]["zhang"] |= {"email": "zhang@h.test", "channels": ["mail"]}
        desk = desk(config, send=channels.send)
        incidents = storm(desk)
        desk.run(200)
        mails = mail.to("zhang@h.test")
        assert 2 <= len(mails) <= 10
        assert len(desk.deliveries(Status.SENT)) == len(incidents)
        digests = [m for m in mails if "【告警汇总】" in m.splitlines()[0]]  # the subject
        held = 0
        for digest in digests:  # a mail has room to name every alert of what it holds
            lines = digest.splitlines()
            named = [line for line in lines if line.startswith("【二级】Storm")]
            assert not [line for line in lines if line.startswith("另有")]
            count = int(re.search(r"起 (\d+) 条通知", digest).group(1))
            assert sum(int(re.search(r"（(\d+)）", line).group(1)) for line in named) == count
            held += count
        assert held == len(incidents) - (len(mails) - len(digests))
    finally:
        mail.close()


def test_a_storm_by_sms_is_a_few_sms_each_with_the_list_link(desk, tmp_path: Path) -> None:
    phone = Phone(tmp_path / "gammu", "true")
    try:
        config = sms_config(phone)
        config["people"]["zhang"]["channels"] = ["sms"]
        desk = desk(config, send=channels.send)
        for site in range(20):
            for name in range(50):
                desk.fire(f"Storm{name:02d}", "II", f"site{site:02d}")
        desk.follow(lambda: len(desk.deliveries(Status.SENT)) == 3, 60, "the first three SMS")
        desk.run(60)  # a digest interval, on the pager's clock
        desk.follow(lambda: len(desk.deliveries(Status.SENT)) == 1000, 60, "the digest SMS")
        texts = phone.to(MOBILE["zhang"])
        assert len(texts) == 4
        assert texts[-1].startswith("【告警汇总】997条:二级 997 http://10.10.1.20:9095/list/")
        assert all(len(text) <= 134 for text in texts)
    finally:
        phone.close()


# ------------------------------------------------------------------ evidence before sent

ROBOTS = {"wecom": (WeComRobot, ""), "dingtalk": (DingTalkRobot, "SECd1n9"),
          "feishu": (FeishuRobot, "f3i5hu")}


@pytest.mark.parametrize("kind", ROBOTS)
@pytest.mark.parametrize("mode", ["proxy", "empty"])
def test_a_robots_200_without_its_success_code_is_no_evidence(desk, kind: str,
                                                              mode: str) -> None:
    """A proxy or captive portal answering 200 for the robot (or an empty JSON object)
    was taken as sent: only the robot's own errcode / code 0 is."""
    robot_class, secret = ROBOTS[kind]
    robot = robot_class(secret=secret)
    try:
        config = desk_config()
        config["channels"]["robot"] = {"type": kind, "url": robot.url, "retries": 5,
                                       **({"secret": secret} if secret else {})}
        config["people"]["zhang"]["channels"] = ["robot"]
        desk = desk(config, send=channels.send)
        robot.mode = mode
        desk.fire()
        desk.run(3)
        [row] = desk.deliveries()
        assert row["status"] == "pending" and row["attempts"] >= 1
        assert "answered with" in row["error"]
        assert desk.metric("insmon_pager_deliveries_total", team="network", channel="robot",
                           result="sent") is None
        robot.mode = "ok"
        desk.run(10)
        [row] = desk.deliveries()
        assert row["status"] == "sent" and len(robot.accepted) == 1
    finally:
        robot.close()


def test_mail_is_sent_on_the_servers_250_only(desk, tmp_path: Path) -> None:
    mail = MailServer(tmp_path)
    try:
        config = desk_config()
        config["channels"]["mail"] |= {"port": mail.port, "ca_file": str(mail.ca_file),
                                       "retries": 5}
        config["people"]["zhang"] |= {"email": "zhang@h.test", "channels": ["mail"]}
        desk = desk(config, send=channels.send)
        mail.answer = "451 4.3.0 try again later"
        desk.fire()
        desk.run(1)
        [row] = desk.deliveries()
        assert row["status"] == "pending" and "451" in row["error"]
        mail.answer = "250 OK"
        desk.run(5)
        assert desk.deliveries()[0].status == Status.SENT
        assert len(mail.to("zhang@h.test")) == 1
    finally:
        mail.close()


def test_a_gateway_with_its_own_success_answer_is_sent_only_on_it(desk) -> None:
    """A site's SMS or voice gateway says in its body whether it took the message: with
    `expect`, a 200 without it is no evidence (without `expect`, the 2xx is all there is)."""
    from ops.recorder import Recorder

    gateway = Recorder()  # answers 200 with an empty body
    try:
        status = {}
        for expect in (r'"code":\s*0', None):
            config = desk_config()
            config["channels"]["gateway"] = {"type": "http", "url": f"{gateway.url}/call",
                                             "retries": 5, "expect": expect}
            config["people"]["zhang"]["channels"] = ["gateway"]
            one = desk(config, send=channels.send)
            one.fire()
            one.run(1)
            [row] = one.deliveries()
            status[expect] = (row["status"], row["error"])
        assert status[None] == ("sent", None)
        assert status[r'"code":\s*0'][0] == "pending"
        assert "answered without its success" in status[r'"code":\s*0'][1]
        assert len(gateway.received()) == 2  # both asked; one answer was evidence
    finally:
        gateway.close()


def sms_config(phone: Phone, **sms: object) -> dict:
    """张三 by SMS through `phone`'s gammu-smsd, then WeCom (a local robot's URL later)."""
    config = desk_config()
    config["channels"]["sms"] = {"type": "sms", "gammu_config": str(phone.config),
                                 "retries": 1, **sms}
    config["people"]["zhang"]["channels"] = ["sms", "wecom"]
    return config


def test_an_sms_is_sent_once_gammu_smsd_moved_it_to_its_sent_folder(desk,
                                                                     tmp_path: Path) -> None:
    """Handed to the outbox was counted as sent: it is sent when gammu-smsd (on gammu's
    dummy phone) sent it, not before, and a daemon that comes back late still counts."""
    phone = Phone(tmp_path / "gammu", "true", running=False)  # the daemon is down
    try:
        desk = desk(sms_config(phone), send=channels.send)
        incident = desk.fire(summary="主线路|备用线路 均中断")
        desk.run(30)  # half the bound: waiting in the outbox
        [row] = desk.deliveries()
        assert row["status"] == "pending" and row["receipt"] and row["hop"] == 0
        assert [p.name for p in (phone.dir / "outbox").iterdir()] == json.loads(
            row["receipt"])
        assert not desk.events("delivered")
        phone.start()
        desk.follow(lambda: desk.deliveries()[0].status == Status.SENT,
                    30, "the SMS sent by gammu-smsd")
        [text] = phone.to(MOBILE["zhang"])
        assert f"回复1确认(ACK {incident})" in text
        assert desk.metric("insmon_pager_deliveries_total", team="network", channel="sms",
                           result="sent") == 1
    finally:
        phone.close()


@pytest.fixture
def smsd_down(desk, tmp_path: Path) -> Iterator[tuple[Desk, Phone, WeComRobot]]:
    """张三 by SMS through a gammu-smsd that is not running, then on a local WeCom robot."""
    phone = Phone(tmp_path / "gammu", "true", running=False)
    robot = WeComRobot()
    try:
        config = sms_config(phone)
        config["channels"]["wecom"]["url"] = robot.url
        yield desk(config, send=channels.send), phone, robot
    finally:
        robot.close()
        phone.close()


def test_with_gammu_smsd_down_an_sms_fails_after_the_bound_and_the_next_channel_takes_it(
        smsd_down) -> None:
    """gammu-smsd not running: the SMS waited in the outbox forever, counted sent, and no
    other channel was tried."""
    desk, phone, robot = smsd_down
    desk.fire()
    desk.run(59)
    assert desk.deliveries()[0].hop == 0 and not robot.accepted
    desk.run(2)  # a minute in the outbox
    [row] = desk.deliveries()
    assert list((phone.dir / "outbox").iterdir()) == []  # taken back: it cannot go later
    [failover] = desk.events("delivery-failover")
    assert failover["channel"] == "sms" and "still in gammu-smsd's outbox after 60 s" in \
        failover["detail"]
    assert row["status"] == "sent" and row["hop"] == 1 and len(robot.accepted) == 1
    assert desk.metric("insmon_pager_deliveries_total", team="network", channel="sms",
                       result="sent") is None
    assert desk.metric("insmon_pager_deliveries_total", team="network", channel="sms",
                       result="failover") == 1


def test_an_sms_in_the_outbox_across_a_kill_9_is_followed_not_sent_again(smsd_down) -> None:
    """The pager killed while its SMS waits in gammu-smsd's outbox (the daemon down): the
    pager started again follows that file (no second SMS), and at the bound takes it back
    (gammu-smsd back later has nothing of it to send) and fails over. Held when tried."""
    desk, phone, robot = smsd_down
    desk.fire()
    desk.run(20)
    assert len(list((phone.dir / "outbox").iterdir())) == 1
    # kill -9 and start: a new worker on the same store, on the same clock
    desk.worker = Worker(desk.engine, Metrics(CollectorRegistry()), send=channels.send,
                         inline=True)
    desk.run(30)
    assert len(list((phone.dir / "outbox").iterdir())) == 1 and not robot.accepted
    desk.run(12)  # past the bound, counted from when it was handed over
    assert list((phone.dir / "outbox").iterdir()) == [] and len(robot.accepted) == 1
    [row] = desk.deliveries()
    assert row["status"] == "sent" and row["hop"] == 1


def test_an_sms_gammu_smsd_gave_up_on_fails_over_at_once(smsd_down) -> None:
    """gammu-smsd moves a message it could not send (MaxRetries, a refused number) to its
    error folder: the pager takes that as failed, not as sent."""
    desk, phone, _ = smsd_down
    desk.fire()
    desk.run(1)
    [name] = json.loads(desk.deliveries()[0].receipt)
    (phone.dir / "outbox" / name).rename(phone.dir / "error" / name)  # as it does
    desk.run(1)
    [row] = desk.deliveries()
    assert row["status"] == "sent" and row["hop"] == 1  # the next channel
    assert desk.events("delivery-failover")[0].detail == \
        "gammu-smsd moved it to its error folder"


def test_a_page_cut_in_posts_is_sent_whole_or_not_at_all(desk) -> None:
    """One post of a page cut in three was refused: the page was counted sent anyway."""
    posts: list[Message] = []
    refuse = [2]  # the second post, once

    def send(channel, people, message: Message) -> None:
        if refuse and len(posts) + 1 == refuse[0]:
            refuse.clear()
            raise channels.Failed("refused: 45009 api freq out of limit")
        posts.append(message)

    config = desk_config()
    config["channels"]["wecom"]["retries"] = 5
    desk = desk(config, send=send)
    # a description of 15 KB, as a rule may write
    description = "\n".join(f"第 {i} 行：" + "自助结算机 医保专网异常 " * 12 for i in range(40))
    desk.fire(summary="一院：医保专网中断", description=description)
    desk.run(1)
    [row] = desk.deliveries()
    assert row["status"] == "pending" and "1 of its" in row["error"]
    desk.run(5)
    assert desk.deliveries()[0].status == Status.SENT
    whole = [m for m in posts[1:]]  # the second try, all of it
    assert len(whole) >= 3 and whole[0].title == posts[0].title
    lines = set(description.splitlines())
    for message in whole:  # every post whole lines, each within the robot's size
        assert channels.fits(desk.config.channels["wecom"], [desk.config.people["zhang"]],
                             message)
        assert all(line in lines for line in message.text.splitlines()
                   if line.startswith("第 "))


def test_many_waiting_pages_for_one_person_go_in_whole_pages_never_fragments(desk) -> None:
    """250 pages waiting for 张三 on WeCom: the size check counted one @ per page while the
    post @s him once, so nothing fitted and pages were cut into one-character posts."""
    desk = desk()
    for i in range(250):
        desk.fire(f"Storm{i % 50:02d}", "II", f"site{i // 50:02d}")
    rows = [r.asdict() for r in desk.deliveries()]
    jobs = desk.worker._jobs("wecom", rows, [])
    messages = [m for job in jobs for m in job.messages]
    assert not [m for m in messages if "(续)" in m.title]  # no page cut
    assert all(m.text.startswith("【二级】") for m in messages)
    assert sorted(n[0] for m in messages for n in m.news) == sorted(r["incident"] for r in rows)


# ------------------------------------------------------------------ nobody unreachable

def test_a_page_nobody_can_get_goes_at_once_to_the_backup_and_the_lead(desk) -> None:
    """张三, on call, reachable only by SMS and with no mobile number: the page reached
    nobody (an event only); a grade III never told anyone."""
    config = desk_config()
    del config["people"]["zhang"]["mobile"]
    config["people"]["zhang"]["channels"] = ["sms"]
    desk = desk(config)
    incident = desk.fire("PrivateNetworkLatencyHigh", "III")
    desk.run(1)
    assert sorted(people for _, people, _ in desk.got) == [("李四",), ("王五",)]
    assert {m.incidents for _, _, m in desk.got} == {frozenset({incident})}
    [event] = desk.events("unreachable")
    assert event["person"] == "zhang" and event["detail"] == (
        "page: has no channel that can reach them: paged to li, wang (network)")
    assert desk.engine.unreached == {"network": 1}


def test_a_page_that_failed_on_every_channel_goes_to_the_backup_and_the_lead(desk) -> None:
    def send(channel, people, message: Message) -> None:
        if [p.name for p in people] == ["张三"]:
            raise channels.Failed("refused")
        desk.take(channel, people, message)

    desk = desk(send=send)
    desk.fire("PrimaryLineDown", "II")
    desk.run(10)
    assert sorted(people for _, people, _ in desk.got) == [("李四",), ("王五",)]
    [event] = desk.events("unreachable")
    assert event["person"] == "zhang" and event["detail"].startswith(
        "page: every channel failed")
    desk.run(120)  # the whole route again, and again: the backup and lead paged once
    assert len(desk.got) == 2 and len(desk.events("unreachable")) == 1
