"""insmon pager against real Alertmanager, real gammu-smsd (dummy phone), a real SMTP
server and local robots that check the documented formats and signatures. What waits on
time runs the pager in this process on a clock the test moves (`rig.harness()`,
tests/pager_harness.py): a step, a timeout or a minute is the clock moved, and that
nothing more came is the clock moved past the moment with nothing sent. What only a
process shows (kill -9, TLS, a full or read-only disk, /metrics scraped by Prometheus)
runs `insmon pager run` (`rig.start()`).

The people: 张三 (network on call, WeCom then SMS), 李四 (network backup, DingTalk then
e-mail), 王五 (network lead, Feishu then SMS), 钱副院长 (leadership, SMS), 结算中心
(settlement center, SMS), 赵六 (server_ops on call, SMS)."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openpyxl
import pytest
import yaml

from ops.recorder import Recorder
from ops.stack import RULES, Alertmanager, Prometheus, free_port, wait_for
from pager import records
from pager.engine import RETRY_WINDOW
from pager.records import Kind, Status, TimerKind
from tests.certs import Authority
from tests.conftest import INSMON
from tests.pager_harness import InProcessPager
from tests.pager_rig import MailServer, PagerClient, PagerProcess, Phone, acknowledge_all
from tests.robots import DingTalkRobot, FeishuRobot, WeComRobot
from vocabulary import SHANGHAI

pytestmark = pytest.mark.timeout(180)
MOBILE = {"zhang": "13800000001", "li": "13800000002", "wang": "13800000003",
          "vp": "13800000009", "desk": "13800000010", "zhao": "13800000004"}


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.wecom = WeComRobot()
        self.dingtalk = DingTalkRobot(secret="SECd1n9")
        self.feishu = FeishuRobot(secret="f3i5hu")
        self.mail = MailServer(tmp)
        self.phone: Phone | None = None
        self.pager: PagerProcess | InProcessPager | None = None
        self.port = free_port()
        self.token_file = tmp / "pager-token"
        self.token_file.write_text("a8f5f167f44f4964e6c998dee827110c")

    def config(self, **changes: object) -> dict:
        fast = {"timeout": "2s", "retries": 2}
        config = {
            "listen": f"127.0.0.1:{self.port}",
            "public_url": f"http://127.0.0.1:{self.port}",
            "database": str(self.tmp / "pager.db"),
            "channels": {
                "wecom": {"type": "wecom", "url": self.wecom.url, **fast},
                "dingtalk": {"type": "dingtalk", "url": self.dingtalk.url,
                             "secret": "SECd1n9", **fast},
                "feishu": {"type": "feishu", "url": self.feishu.url, "secret": "f3i5hu",
                           **fast},
                "mail": {"type": "email", "host": "127.0.0.1", "port": self.mail.port,
                         "ca_file": str(self.mail.ca_file), "sender": "insmon@hospital.test",
                         **fast},
                "sms": {"type": "sms", "gammu_config": str(self.tmp / "gammu" / "smsdrc"),
                        **fast},
            },
            "people": {
                "zhang": {"name": "张三", "mobile": MOBILE["zhang"], "wecom": "zhangsan",
                          "channels": ["wecom", "sms"]},
                "li": {"name": "李四", "mobile": MOBILE["li"], "email": "li@hospital.test",
                       "channels": ["dingtalk", "mail", "sms"]},
                "wang": {"name": "王五", "mobile": MOBILE["wang"], "feishu": "ou_wang",
                         "channels": ["feishu", "sms"]},
                "vp": {"name": "钱副院长", "mobile": MOBILE["vp"], "channels": ["sms"]},
                "desk": {"name": "结算中心值班台", "mobile": MOBILE["desk"], "channels": ["sms"]},
                "zhao": {"name": "赵六", "mobile": MOBILE["zhao"], "channels": ["sms"]},
            },
            "teams": {
                "network": {"name": "网络排查组", "rotation": {"since": "2026-01-01",
                                                          "order": ["zhang"]},
                            "backup": "li", "lead": "wang"},
                "server_ops": {"name": "服务器运维组", "rotation": {"since": "2026-01-01",
                                                              "order": ["zhao"]},
                               "lead": "wang"},
                "leadership": {"name": "分管副院长", "rotation": {"since": "2026-01-01",
                                                             "order": ["vp"]}, "lead": "vp"},
                "settlement_center": {"name": "医保结算中心", "rotation": {
                    "since": "2026-01-01", "order": ["desk"]}, "lead": "desk"},
            },
            # as a hospital sets it: the tests move the pager's clock to each step
            "escalation": {"I": [{"after": "5m", "notify": ["backup", "lead"],
                                  "channels": ["sms"]},
                                 {"after": "15m", "notify": ["leadership"]}],
                           "II": [{"after": "10m", "notify": ["backup"]}]},
            "watchdog": {"timeout": "1h"},
            "drill": {"people": ["wang"]},
            "auth": {"token_file": str(self.token_file)},
        }
        for key, value in changes.items():
            config[key] = value
        return config

    def _write(self, config: dict | None, phone: bool) -> Path:
        path = self.tmp / "pager.yaml"
        path.write_text(yaml.safe_dump(config or self.config(), allow_unicode=True))
        if phone and self.phone is None:
            self.phone = Phone(self.tmp / "gammu", f"{INSMON} pager sms-received -c {path}")
        return path

    def start(self, config: dict | None = None, phone: bool = False) -> PagerProcess:
        """The pager as a process (`insmon pager run`)."""
        self.pager = PagerProcess(self._write(config, phone))
        return self.pager

    def harness(self, config: dict | None = None, phone: bool = False,
                wall: float | None = None) -> InProcessPager:
        """The pager in this process on a clock the test moves (tests/pager_harness.py);
        the robots count their minute on that clock."""
        self.pager = InProcessPager(self._write(config, phone), wall)
        for robot in (self.wecom, self.dingtalk, self.feishu):
            robot.clock = self.pager.now
        return self.pager

    def close_pager(self) -> None:
        if self.pager is not None:
            self.pager.stop()
            self.pager = None

    def close(self) -> None:
        for part in (self.pager, self.phone):
            if part is not None:
                part.stop() if part is self.pager else part.close()
        for part in (self.wecom, self.dingtalk, self.feishu, self.mail):
            part.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    try:
        yield rig
    finally:
        rig.close()


def at(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


# When the alerts of the tests' notifications began: a few minutes before the test
# session, by its own clock (one time for all, so that a repeat is the same episode).
STARTED = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
STARTS_AT = at(STARTED)


def notification(status: str = "firing", alertname: str = "SettlementPathDown",
                 grade: str = "I", team: str = "network", also: str = "",
                 fingerprint: str = "f1", **labels: str) -> dict:
    """Alertmanager's webhook payload (version 4), as it posts it."""
    alert_labels = {"alertname": alertname, "grade": grade, "team": team, "site": "一院",
                    **({"also": also} if also else {}), **labels}
    group = {k: alert_labels[k] for k in ("site", "alertname", "grade")}
    return {
        "version": "4", "groupKey": f"{{}}:{group}", "truncatedAlerts": 0, "status": status,
        "receiver": team, "groupLabels": group, "commonLabels": alert_labels,
        "commonAnnotations": {"summary_zh": "一院：医保专网主线路与备用通道均中断，无法实时结算",
                              "runbook": f"runbooks/{alertname}.md"},
        "externalURL": "http://alertmanager:9093",
        "alerts": [{"status": status, "labels": alert_labels, "annotations": {},
                    "startsAt": STARTS_AT,
                    "endsAt": at(STARTED + timedelta(minutes=9)) if status == "resolved"
                    else "0001-01-01T00:00:00Z",
                    "generatorURL": "", "fingerprint": fingerprint}]}


def ack_link(text: str) -> str:
    return next(word for word in text.split() if "/ack/" in word)


def named(text: str, alertname: str) -> int:
    """How often a robot's post names the alert: its page, or a line of a storm's digest
    (pager/storm.py)."""
    return text.count(f"alert: {alertname}\n") + len(re.findall(
        rf"^(?:【[^】]*】)+{alertname} @ .*（\d+）", text, re.MULTILINE))


def escalations(pager: PagerClient) -> list[records.Delivery]:
    """The escalation steps' messages in the pager's store."""
    return [d for d in pager.read(records.deliveries) if d.kind == Kind.ESCALATION]


# ------------------------------------------------------------------ the chain

def test_a_level_one_through_alertmanager_reaches_every_team_and_one_ack_stops_it(
        rig: Rig, tmp_path: Path) -> None:
    pager = rig.harness(phone=True)
    alertmanager = Alertmanager(tmp_path / "am", pager.url, token_file=rig.token_file)
    try:
        alertmanager.post({"labels": {"alertname": "SettlementPathDown", "grade": "I",
                                      "team": "network", "also": "insurance_agency",
                                      "site": "一院"},
                           "annotations": {"summary_zh": "一院：医保专网主线路与备用通道均中断",
                                           "runbook": "runbooks/SettlementPathDown.md"}})
        # network's on-call on the WeCom robot, @-ed; leadership and the settlement
        # center by SMS through the modem
        page = pager.follow(lambda: rig.wecom.texts(), 20, "the page on the WeCom robot")[0]
        assert "【一级】" in page and "医保专网主线路与备用通道均中断" in page
        assert "<@zhangsan>" in page and "医保结算: 已中断" in page
        assert "runbooks/SettlementPathDown.md" in page
        pager.follow(lambda: rig.phone.to(MOBILE["vp"]) and rig.phone.to(MOBILE["desk"]), 20,
                     "the SMS to leadership and the settlement center")
        sms = rig.phone.to(MOBILE["vp"])[0]
        assert sms.startswith("【演练】") is False and "【一级】" in sms and "回复1确认" in sms
        # insurance_agency is no team of this pager: its page went to the fallback
        pager.follow(lambda: rig.phone.to(MOBILE["zhao"]), 20, "the fallback team's page")
        incident = pager.incidents()[0]
        assert {p["team"] for p in incident["pages"]} == {
            "network", "leadership", "settlement_center", "server_ops"}
        assert any(e["what"] == "unknown-team" for e in incident["events"])

        # 张三 taps the link: the escalation (backup at 5 min, leadership at 15) never
        # happens, and everyone paged hears who acknowledged
        status, _ = pager.post(ack_link(page).removeprefix(pager.url), b"")
        assert status == 200
        pager.follow(lambda: any("张三 已确认" in t for t in rig.phone.to(MOBILE["vp"])), 20,
                     "the acknowledgement told to leadership")
        pager.advance(16 * 60, step=10)
        assert not escalations(pager)
        assert rig.phone.to(MOBILE["li"]) == [] and rig.dingtalk.texts() == []

        # the alert resolves: everyone paged is told
        alertmanager.post({"labels": {"alertname": "SettlementPathDown", "grade": "I",
                                      "team": "network", "also": "insurance_agency",
                                      "site": "一院"},
                           "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        pager.follow(lambda: any("【已恢复】" in t for t in rig.wecom.texts()), 30,
                     "the resolved notice on the robot")
        pager.follow(lambda: any("已恢复" in t for t in rig.phone.to(MOBILE["desk"])), 20,
                     "the resolved notice by SMS")
        metrics = pager.get("/metrics").decode()
        assert 'insmon_pager_deliveries_total{channel="wecom",result="sent",team="network"}' \
            in metrics
        assert 'insmon_pager_ack_seconds_count{grade="I",team="network"} 1.0' in metrics
    finally:
        alertmanager.stop()


def test_unacknowledged_it_escalates_on_time_and_an_sms_reply_stops_the_next_step(
        rig: Rig) -> None:
    pager = rig.harness(phone=True)
    assert pager.post("/network", notification())[0] == 200
    opened = pager.now()
    pager.round()
    assert rig.wecom.texts(), "the first page"
    # step 1 at 5 min: the backup and the lead, SMS first (their usual channels are robots)
    pager.advance(5 * 60 - 1, step=10)
    assert not escalations(pager)
    pager.advance(1)
    assert {d.created - opened for d in escalations(pager)} == {5 * 60}
    pager.follow(lambda: rig.phone.to(MOBILE["li"]) and rig.phone.to(MOBILE["wang"]), 20,
                 "the escalation to backup and lead by SMS")
    assert "【升级】" in rig.phone.to(MOBILE["li"])[0]
    assert rig.dingtalk.texts() == []  # SMS was preferred for the step
    # 李四 answers the SMS with "1": acknowledged, step 2 (leadership at 15 min) never
    # comes
    rig.phone.reply("+86" + MOBILE["li"], "1")
    pager.follow(lambda: pager.incidents()[0]["acked_by"] == "li", 20, "the SMS reply to ack")
    assert any(e["what"] == "acknowledged" and e["channel"] == "sms"
               for e in pager.incidents()[0]["events"])
    pager.advance(opened + 16 * 60 - pager.now(), step=10)
    assert not [d for d in escalations(pager) if d.step == 2]
    assert rig.phone.to(MOBILE["vp"]) == []


# ------------------------------------------------------------------ nothing lost, nothing twice

def test_the_same_notification_twice_pages_once(rig: Rig) -> None:
    pager = rig.harness()
    body = json.dumps(notification()).encode()
    assert json.loads(pager.post("/network", body)[1])["status"] == "accepted"
    assert json.loads(pager.post("/network", body)[1])["status"] == "duplicate"
    pager.advance(60)
    assert len(rig.wecom.texts()) == 1


def test_kill_9_before_delivery_and_during_escalation_loses_nothing_and_doubles_nothing(
        rig: Rig) -> None:
    # (each wait is bounded at a minute: a pager process starting on a loaded host)
    rig.wecom.mode = "hang"  # the robot takes the request and never answers
    pager = rig.start(rig.config(escalation={"I": [{"after": "6s", "notify": ["backup"]}]}))
    assert pager.post("/network", notification())[0] == 200
    wait_for(lambda: rig.wecom.hung, 60, "the page on its way to the hanging robot")
    pager.kill9()  # accepted, on its way, not delivered
    rig.wecom.mode = "ok"
    pager.start()
    wait_for(lambda: rig.wecom.texts(), 60, "the page after the restart")
    # the robot's 200 counted as sent (killed between the robot's answer and that, the
    # pager sends again: at least once, as it must, never unsaid)
    wait_for(lambda: any(d.status == Status.SENT for d in pager.read(records.deliveries)),
             60, "the page marked sent")
    pager.kill9()  # while the escalation timer runs
    pager.start()
    wait_for(lambda: rig.dingtalk.texts(), 60, "the escalation after the restart")
    # nothing left to send: every delivery marked sent, no escalation to come (the
    # pager sends what is pending: this is all it will ever send of this page)
    wait_for(lambda: all(d.status == Status.SENT for d in pager.read(records.deliveries))
             and not [t for t in pager.read(records.timers)
                      if t.done == 0 and t.kind == TimerKind.ESCALATION], 60,
             "every delivery sent, no step left")
    assert len(rig.wecom.texts()) == 1 and len(rig.dingtalk.texts()) == 1
    assert "【升级】" in rig.dingtalk.texts()[0] and "@13800000002" in rig.dingtalk.texts()[0]


# ------------------------------------------------------------------ channels

def test_a_failing_channel_is_retried_then_the_next_channel_takes_the_page(rig: Rig) -> None:
    rig.dingtalk.mode = "500"
    pager = rig.harness(rig.config(escalation={"I": [{"after": "1m", "notify": ["backup"]}]}))
    pager.post("/network", notification())
    pager.advance(60 + 5)  # the step, and the retry's backoff
    # 李四's DingTalk answers 500 twice (its retries): the page goes by e-mail (STARTTLS)
    [mail] = rig.mail.to("li@hospital.test")
    assert "【升级】【一级】" in mail and "/ack/" in mail
    events = [e["what"] for e in pager.incidents()[0]["events"] if e["person"] == "li"]
    assert events == ["delivery-retry", "delivery-failover", "delivered"]
    metrics = pager.get("/metrics").decode()
    assert 'channel="dingtalk",result="failover"' in metrics


def test_the_first_page_nobody_could_get_alerts_through_prometheus(rig: Rig,
                                                                   tmp_path: Path) -> None:
    """The on-call's every channel fails (WeCom answers 500, SMS has no gammu-smsd): the
    backup and the lead are paged, and PagerPersonUnreachable and PagerDeliveryFailing
    fire in a real Prometheus on the shipped rules. They never did for a team's first
    such page since the pager started: its counters appeared at 1, and increase() of a
    series that begins at 1 is 0."""
    rig.wecom.mode = "500"
    pager = rig.start()
    rules = tmp_path / "prometheus"
    rules.mkdir()
    (rules / "alerts.yml").write_text((RULES / "alerts.yml").read_text())
    prometheus = Prometheus(rules, {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [{"job_name": "insmon-pager", "static_configs": [
            {"targets": [f"127.0.0.1:{rig.port}"], "labels": {"site": "h1"}}]}]})
    try:
        wait_for(lambda: prometheus.query('up{job="insmon-pager"} == 1'), 30,
                 "Prometheus to scrape the pager")
        assert pager.post("/network", notification(grade="II"))[0] == 200
        wait_for(lambda: [e for e in pager.incidents()[0]["events"]
                          if e["what"] == "unreachable"], 30, "the page found unreachable")
        firing = 'ALERTS{alertstate="firing", alertname=~"PagerPersonUnreachable|' \
            'PagerDeliveryFailing"}'
        alerts = wait_for(lambda: len(found := prometheus.query(firing)) == 2 and found,
                          60, "both alerts to fire")
        assert {a["metric"]["alertname"] for a in alerts} == {"PagerPersonUnreachable",
                                                              "PagerDeliveryFailing"}
    finally:
        prometheus.stop()


def test_a_hanging_channel_times_out_and_fails_over(rig: Rig) -> None:
    rig.wecom.mode = "hang"
    pager = rig.harness(phone=True)
    pager.post("/network", notification(grade="II", alertname="PrimaryLineDown"))
    pager.advance(5)  # two tries, each given up after the channel's timeout (real 2 s)
    sms = pager.follow(lambda: rig.phone.to(MOBILE["zhang"]), 30, "the SMS after the timeouts")
    assert "【二级】" in sms[0]
    assert len(rig.wecom.hung) == 2  # its retries, each given up at its timeout


def test_more_pages_than_the_robot_allows_go_out_together_and_drills_only_to_the_drill_rota(
        rig: Rig) -> None:
    config = rig.config()
    config["channels"]["wecom"]["per_minute"] = 2
    pager = rig.harness(config)
    for i in range(5):  # five incidents at once for 张三's WeCom robot
        pager.post("/network", notification(alertname=f"Fault{i}", fingerprint=f"f{i}"))
    # the first three pages together, the other two in the storm's first digest
    pager.advance(60)
    assert all(any(f"Fault{i}" in t for t in rig.wecom.texts()) for i in range(5))
    assert len(rig.wecom.texts()) <= 2  # within the minute's limit: batched, none dropped
    # a drill goes to the drill rota only (王五, on a signed Feishu robot), marked 【演练】
    pager.post("/drill", notification(alertname="Drilled", drill="true"))
    pager.advance(60)
    [drill] = [t for t in rig.feishu.texts() if "Drilled" in t]
    assert drill.startswith("【演练】") and rig.feishu.refused == []
    assert not any("Drilled" in t for t in rig.wecom.texts())


def test_the_robot_saying_too_fast_makes_the_page_wait_not_fail(rig: Rig) -> None:
    rig.wecom.per_minute = 1
    pager = rig.harness()
    pager.post("/network", notification(alertname="First", fingerprint="a"))
    pager.round()
    assert len(rig.wecom.texts()) == 1, "the first page"
    pager.post("/network", notification(alertname="Second", fingerprint="b"))
    pager.round()
    assert [code for code, _ in rig.wecom.refused] == [45009]
    [second] = pager.incidents_of("Second")
    row = pager.read(records.deliveries, second.id)[0]
    assert row["status"] == "pending" and row["hop"] == 0  # waits for the robot, same channel
    assert 'result="rate_limited"' in pager.get("/metrics").decode()


def test_the_http_gateway_and_the_webhook_and_the_report_reminder(rig: Rig) -> None:
    """A voice gateway that is down fails over to the site's webhook; a working one gets
    its templated request, cut to its length; before the written report is due, the
    on-call is reminded."""
    sink = Recorder()
    try:
        config = rig.config(reports={"major": "4h", "remind_before": "30m"})
        config["channels"] |= {
            "dead-voice": {"type": "http", "url": "http://127.0.0.1:9/call", "retries": 1},
            "voice": {"type": "http", "url": f"{sink.url}/voice?to=$mobile",
                      "body": '{"phone": "$mobile", "tts": $text_json}', "max_chars": 60},
            "hook": {"type": "webhook", "url": f"{sink.url}/hook"}}
        config["people"]["zhang"]["channels"] = ["dead-voice", "hook"]
        config["people"]["vp"]["channels"] = ["voice"]
        pager = rig.harness(config)
        pager.post("/network", notification())
        pager.post("/leadership", notification())
        pager.advance(2)  # the dead gateway's try
        hook = wait_for(lambda: [p.body for p in sink.received() if p.team == "hook"], 15,
                        "the webhook after the dead gateway")[0]
        assert hook["title"].startswith("【一级】SettlementPathDown") and \
            hook["people"] == [{"name": "张三", "mobile": MOBILE["zhang"], "email": None}]
        voice = wait_for(lambda: [p.body for p in sink.received()
                                  if p.team.startswith("voice")], 15, "the voice call")[0]
        assert voice["phone"] == MOBILE["vp"] and len(voice["tts"]) <= 60
        assert voice["tts"].startswith("【一级】") and "回复1确认" in voice["tts"]
        reported = lambda: [p.body["text"] for p in sink.received()  # noqa: E731
                            if p.team == "hook" and "报告" in p.body["title"]]
        pager.advance(3.5 * 3600 - 3, step=60)
        assert reported() == []  # not before the half hour before it is due
        pager.advance(60)
        reminder = wait_for(reported, 15, "the report reminder")[0]
        assert "书面事件报告须于" in reminder
    finally:
        sink.close()


# ------------------------------------------------------------------ bad input

def test_bad_notifications_are_refused_and_store_nothing(rig: Rig) -> None:
    pager = rig.harness(rig.config(max_body=4096))
    assert pager.post("/network", b"{not json")[0] == 400
    assert pager.post("/network", {"status": "firing", "alerts": "no"})[0] == 400
    assert pager.post("/network", {"status": "firing", "alerts": [{"labels": 1}]})[0] == 400
    big = notification()
    big["commonAnnotations"]["description"] = "x" * 5000
    assert pager.post("/network", big)[0] == 413
    assert pager.read(records.received) == []
    assert pager.read(records.incidents) == []
    assert pager.post("/ack/AAAAAAAAAAAAAAAAAAAAAAAA", b"")[0] == 404  # a guessed token
    assert "unknown token" in pager.logged()
    assert 'insmon_pager_notifications_total{result="invalid"} 4.0' in pager.get(
        "/metrics").decode()


def test_a_gap_in_the_rota_pages_the_team_lead_and_is_logged(rig: Rig) -> None:
    config = rig.config()
    config["teams"]["network"]["rotation"]["since"] = str(
        datetime.now(SHANGHAI).date() + timedelta(days=2))  # not begun yet
    pager = rig.harness(config)
    pager.post("/network", notification())
    pager.round()
    page = rig.feishu.texts()[0]  # the lead's page
    assert '<at user_id="ou_wang">王五</at>' in page
    assert "nobody is on call for network" in pager.logged()
    assert 'insmon_pager_rota_gaps{team="network"} 1.0' in pager.get("/metrics").decode()


# ------------------------------------------------------------------ watchdog

def test_when_the_watchdog_stops_the_pager_pages_network_and_server_ops_by_sms(
        rig: Rig) -> None:
    pager = rig.harness(rig.config(watchdog={"timeout": "10m"}), phone=True)
    watchdog = notification(alertname="Watchdog", grade="", team="")
    assert pager.post("/watchdog", watchdog)[0] == 200
    pager.advance(10 * 60 - 1, step=10)
    assert pager.read(records.incidents) == []  # quiet within its timeout
    pager.advance(1)
    sms = pager.follow(lambda: rig.phone.to(MOBILE["zhang"]) and rig.phone.to(MOBILE["zhao"]),
                       20, "the watchdog page to network and server_ops")
    assert "监控告警通道中断" in rig.phone.to(MOBILE["zhang"])[0]
    assert rig.wecom.texts() == []  # SMS first: the alert path itself may be down
    assert sms
    watchdog["alerts"][0]["startsAt"] = at(STARTED + timedelta(minutes=1))  # the next one
    pager.post("/watchdog", watchdog)
    pager.follow(lambda: any("已恢复" in t for t in rig.phone.to(MOBILE["zhao"])), 20,
                 "the all-clear")


# ------------------------------------------------------------------ rota and config

def test_who_is_on_call_follows_handover_overrides_and_the_spreadsheet(
        rig: Rig, tmp_path: Path) -> None:
    import subprocess

    config = rig.config()
    config["teams"]["network"]["rotation"] = {"every": "day", "handover": "08:30",
                                              "since": "2026-11-01", "order": ["zhang", "li"]}
    config["teams"]["network"]["overrides"] = [
        {"start": "2026-11-10 08:30", "end": "2026-11-11 08:30", "person": "wang"}]
    book = openpyxl.Workbook()
    book.active.title = "十一月"
    book.active.append(["开始", "结束", "值班人"])
    book.active.append(["2026-11-23 08:00", "2026-11-23 20:00", "赵六"])
    book.active.append(["2026-11-23 20:00", "2026-11-24 08:00", "desk"])
    book.save(tmp_path / "rota.xlsx")
    config["teams"]["server_ops"] = {"name": "服务器运维组", "lead": "wang",
                                     "shifts_file": str(tmp_path / "rota.xlsx")}
    path = tmp_path / "who.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))

    def who(team: str, at: str) -> str:
        out = subprocess.run([INSMON, "pager", "who", "-c", str(path), "--team", team,
                              "--at", at], capture_output=True, text=True, check=True).stdout
        return out.splitlines()[1]

    assert "张三" in who("network", "2026-11-01 08:30")  # the first turn begins
    assert "张三" in who("network", "2026-11-02 08:29")  # ... and ends at the handover
    assert "李四" in who("network", "2026-11-02 08:30")
    assert "王五" in who("network", "2026-11-10 12:00")  # a swapped shift
    assert "赵六" in who("server_ops", "2026-11-23 19:59")
    assert "结算中心值班台" in who("server_ops", "2026-11-23 20:00")
    assert "无人值班" in who("server_ops", "2026-11-24 09:00")  # a gap: the lead is paged

    # a broken spreadsheet: the file, the sheet and the row
    book.active.append(["tomorrow", "2026-11-25 08:00", "赵六"])
    book.save(tmp_path / "rota.xlsx")
    done = subprocess.run([INSMON, "pager", "validate", str(path)], capture_output=True,
                          text=True)
    assert done.returncode == 2
    assert "rota.xlsx, sheet '十一月', row 4: 'tomorrow' is not a time" in done.stderr
    (tmp_path / "rota.xlsx").write_bytes(b"PK\x03\x04 not a workbook")
    done = subprocess.run([INSMON, "pager", "validate", str(path)], capture_output=True,
                          text=True)
    assert done.returncode == 2 and "not a readable XLSX workbook" in done.stderr


def test_a_bad_config_names_the_file_the_line_and_the_key(tmp_path: Path) -> None:
    import subprocess

    path = tmp_path / "pager.yaml"
    text = (Path(__file__).parent.parent / "examples" / "pager.yaml").read_text()
    path.write_text(text.replace("channels: [it-wecom, sms, mail]}",
                                 "channels: [it-wecom, pigeon]}", 1))
    done = subprocess.run([INSMON, "pager", "validate", str(path)], capture_output=True,
                          text=True)
    assert done.returncode == 2
    assert f"{path}:" in done.stderr and "people.zhangsan.channels: unknown channel 'pigeon'" \
        in done.stderr
    # a Level I's escalation misspelt would leave SMS-first without a word
    path.write_text(text.replace("notify: [backup, lead], channels: [sms]}",
                                 "notify: [backup, lead], channels: [smss]}", 1))
    done = subprocess.run([INSMON, "pager", "validate", str(path)], capture_output=True,
                          text=True)
    assert done.returncode == 2
    assert "escalation.I[0].channels: unknown channel type 'smss' (the types are wecom, " \
           in done.stderr, done.stderr
    ok = subprocess.run([INSMON, "pager", "validate", "examples/pager.yaml"],
                        capture_output=True, text=True,
                        cwd=Path(__file__).parent.parent)
    assert ok.returncode == 0, ok.stderr


def test_acknowledge_all_on_a_digests_list_takes_only_what_the_list_showed(rig: Rig) -> None:
    """A storm digest's list page, opened, then a Level I: "全部确认 · Acknowledge all"
    took every open incident of the person at the moment of the tap, the Level I they
    never saw too, and its escalation stopped."""
    pager = rig.harness()
    for n in range(5):
        assert pager.post("/network", notification(alertname=f"Storm{n}", grade="III",
                                                   fingerprint=f"s{n}"))[0] == 200
    token = pager.read(records.pages, person="zhang")[-1].token
    page = pager.get(f"/list/{token}").decode()
    assert "Acknowledge all 5" in page
    assert pager.post("/network", notification(alertname="SettlementPathDown"))[0] == 200
    acknowledge_all(page, pager.url)  # the tap
    acked = {i.alertname: i.acked_by for i in pager.read(records.incidents)}
    assert acked == {**{f"Storm{n}": "zhang" for n in range(5)}, "SettlementPathDown": None}


def test_ack_from_the_command_line(rig: Rig) -> None:
    pager = rig.harness()
    incident = json.loads(pager.post("/network", notification())[1])["incident"]
    pager.round()
    assert rig.wecom.texts(), "the page"
    done = subprocess.run([INSMON, "pager", "ack", str(incident), "--by", "wang", "-c",
                           str(pager.config_file)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    pager.follow(lambda: any("王五 已确认" in t for t in rig.wecom.texts()), 10,
                 "the acknowledgement on the robot")
    again = subprocess.run([INSMON, "pager", "ack", str(incident), "--by", "li", "-c",
                            str(pager.config_file)], capture_output=True, text=True)
    assert again.returncode == 1 and "acknowledged already by wang" in again.stderr


def test_a_page_right_after_the_handover_goes_to_the_next_on_call(rig: Rig) -> None:
    now = datetime.now(SHANGHAI).replace(microsecond=0)
    if (now + timedelta(minutes=1)).date() != now.date():  # no handover across midnight
        now -= timedelta(minutes=2)  # the pager's clock starts a little earlier
    handover = now + timedelta(minutes=1)
    config = rig.config()
    config["teams"]["network"]["rotation"] = {
        "every": "day", "handover": handover.strftime("%H:%M:%S"),
        "since": (now - timedelta(days=1)).date().isoformat(), "order": ["zhang", "li"]}
    pager = rig.harness(config, wall=now.timestamp())
    pager.post("/network", notification(alertname="Before", fingerprint="a"))
    pager.advance(59)
    assert any("Before" in t for t in rig.wecom.texts()), "张三's page"
    pager.post("/network", notification(alertname="Late", fingerprint="c"))
    pager.round()
    assert any("Late" in t for t in rig.wecom.texts())  # a second before: still 张三's
    pager.advance(1)  # the handover
    pager.post("/network", notification(alertname="After", fingerprint="b"))
    pager.round()
    assert any("After" in t for t in rig.dingtalk.texts()), "李四's page"
    assert not any("After" in t for t in rig.wecom.texts())  # 张三 is off duty now


def test_the_same_fault_raised_to_level_one_says_so_and_replaces_the_lower_incident(
        rig: Rig) -> None:
    pager = rig.harness()
    pager.post("/network", notification(grade="II", fingerprint="ii"))
    pager.round()
    assert any("【二级】" in t for t in rig.wecom.texts()), "the Level II page"
    pager.post("/network", notification(grade="I", fingerprint="i"))
    pager.round()
    [raised] = [t for t in rig.wecom.texts() if "【升级为一级】" in t]
    assert "【一级】" in raised
    [lower] = [i for i in pager.incidents() if i["grade"] == "II"]
    # closed as superseded (its page's own delivery may be recorded after that)
    assert lower["resolved"] and "superseded" in {e["what"] for e in lower["events"]}
    pager.advance(60)
    assert not any("已恢复" in t for t in rig.wecom.texts())  # the fault is not over


def test_only_the_token_opens_resolves_or_reads_and_a_lost_store_fails_health(
        rig: Rig) -> None:
    """A stranger on the hospital network can neither page, resolve nor read incidents;
    a pager whose database was deleted says so on /healthz and refuses pages (503:
    Alertmanager sends them again) rather than taking them into the void."""
    import urllib.error

    pager = rig.harness()

    def post(path: str, body: dict, auth: dict) -> int:
        request = urllib.request.Request(pager.url + path, data=json.dumps(body).encode(),
                                         method="POST", headers=auth)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    forged = notification(alertname="Forged")
    assert post("/network", forged, {}) == 401
    assert post("/network", forged, {"Authorization": "Bearer not-the-token-at-all"}) == 401
    assert post("/network", forged, {"Authorization": "Basic "
                + base64.b64encode(b"am:wrong").decode()}) == 401
    assert pager.read(records.incidents) == []
    stranger = urllib.request.Request(pager.url + "/api/incidents")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(stranger, timeout=10)
    assert refused.value.code == 401
    # Alertmanager's basic auth with the token as password is taken
    token = rig.token_file.read_text()
    assert post("/network", notification(), {"Authorization": "Basic " + base64.b64encode(
        f"alertmanager:{token}".encode()).decode()}) == 200
    assert "refused: no token" in pager.logged() and "wrong token" in pager.logged()
    assert pager.get("/healthz") == b"ok\n"
    pager.database.unlink()
    assert pager.get("/healthz") is None  # 503
    assert pager.post("/network", notification(alertname="Later"))[0] == 503


# ------------------------------------------------------------------ issue 21's failures

def test_alertmanagers_watchdog_repeats_keep_the_switch_quiet_and_its_silence_pages(
        rig: Rig, tmp_path: Path) -> None:
    """A real Alertmanager repeats the Watchdog with an identical body; each repeat is a
    heartbeat (they were once taken as duplicates: a false 监控告警通道中断)."""
    pager = rig.harness(rig.config(watchdog={"timeout": "12s"}), phone=True)
    alertmanager = Alertmanager(tmp_path / "am", pager.url, token_file=rig.token_file)
    try:
        config = yaml.safe_load(alertmanager.config_file.read_text())
        [route] = [r for r in config["route"]["routes"] if "Watchdog" in str(r["matchers"])]
        route.update(group_interval="3s", repeat_interval="3s")  # the minute, shortened
        alertmanager.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        urllib.request.urlopen(urllib.request.Request(
            f"{alertmanager.url}/-/reload", method="POST"), timeout=10).close()
        alertmanager.post({"labels": {"alertname": "Watchdog"}})
        # the pager's clock as real time passes: Alertmanager repeats on its own
        heard = lambda: [r.at for r in pager.read(records.received)  # noqa: E731
                         if r.receiver == "watchdog"]
        pager.follow(lambda: len(heard()) >= 4 and max(heard()) - min(heard()) > 12, 60,
                     "Watchdog repeats over more than its timeout")
        bodies = {r.key for r in pager.read(records.received)}
        assert len(bodies) == 1  # identical repeats, as Alertmanager sends them
        # over a timeout of identical repeats: never paged
        assert not any(i["alertname"] == "MonitoringPathDown" for i in pager.incidents())
        # the heartbeat stops (the alerting path is down): paged within the timeout and
        # a minute, and not before the timeout
        alertmanager.stop()
        last = max(heard())
        pager.advance(last + 12 - 1 - pager.now(), step=0.5)
        assert not any(i["alertname"] == "MonitoringPathDown" for i in pager.incidents())
        # a second more than the timeout (the clocks are fractions of a second here, and
        # no further: gammu-smsd sends the SMS in real time)
        pager.advance(2)
        silent = [i for i in pager.incidents() if i["alertname"] == "MonitoringPathDown"]
        assert silent and silent[0]["opened"] - last <= 12 + 60
        pager.follow(lambda: rig.phone.to(MOBILE["zhang"]), 30, "the SMS of the silence")
    finally:
        alertmanager.stop()


def test_a_firing_repeat_after_a_resolve_pages_again(rig: Rig) -> None:
    """A "resolved" that came too early (Prometheus unheard for resolve_timeout, say): the
    firing repeat that follows opens the incident again and pages, it is not dropped."""
    pager = rig.harness()
    assert pager.post("/network", notification())[0] == 200
    pager.round()
    assert rig.wecom.texts(), "the page"
    assert pager.post("/network", notification(status="resolved"))[0] == 200
    pager.round()
    assert any("已恢复" in t for t in rig.wecom.texts()), "the all-clear"
    # Alertmanager's repeat comes a repeat_interval later; within a minute of the resolve
    # the same firing would be a late copy of the one before it (the HA peer's)
    pager.advance(RETRY_WINDOW + 1)
    assert pager.post("/network", notification())[0] == 200
    assert len([i for i in pager.incidents() if i["resolved"] is None]) == 1, \
        "the incident open again"
    pager.round()
    assert sum("【一级】" in t and "已恢复" not in t for t in rig.wecom.texts()) == 2, \
        "the second page"


def test_a_group_of_5000_alerts_is_taken_and_a_storm_is_shown_whole_within_robot_limits(
        rig: Rig) -> None:
    pager = rig.harness()
    big = notification(alertname="LinkFlapping", grade="III")
    big["alerts"] = [{**big["alerts"][0], "labels": {**big["alerts"][0]["labels"],
                                                    "instance": f"kiosk-{i:04d}"},
                      "annotations": {"description": "自助结算机 医保专网异常 " * 8},
                      "fingerprint": f"k{i}"} for i in range(5000)]
    body = json.dumps(big, ensure_ascii=False).encode()
    assert len(body) > 2_000_000
    assert pager.post("/network", body)[0] == 200
    # a storm: 60 groups in a few seconds for one person's WeCom robot (20 a minute),
    # each page long enough that a minute's batch is over the robot's 4,096 bytes
    for i in range(60):
        storm = notification(alertname=f"Storm{i:02d}", grade="III", fingerprint=f"s{i}")
        storm["commonAnnotations"]["description"] = "存储 IO 延迟升高 " * 20
        pager.post("/network", storm)
        pager.advance(0.1, step=0.1)  # a few seconds in all, as Alertmanager sends them
    pager.advance(60)
    assert all(any(named(t, f"Storm{i:02d}") for t in rig.wecom.texts()) for i in range(60))
    assert rig.wecom.refused == []  # never over its size, never over its rate
    assert len(rig.wecom.texts()) <= 20
    for i in range(60):  # each page once, as itself or a line of a storm's digest
        assert sum(named(t, f"Storm{i:02d}") for t in rig.wecom.texts()) == 1


def test_a_full_disk_refuses_pages_alertmanager_retries_and_nothing_is_sent_twice(
        rig: Rig, tmp_path: Path) -> None:
    """The store on a small filesystem that fills up: pages are refused with 503 (never
    a dropped connection), /healthz fails; freed, what was accepted before went out once."""
    volume = tmp_path / "volume"
    volume.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(volume)],
                   check=True)
    try:
        pager = rig.start(rig.config(database=str(volume / "pager.db")))
        assert pager.post("/network", notification(alertname="Before"))[0] == 200
        wait_for(lambda: rig.wecom.texts(), 20, "the page before the disk filled")
        filler = volume / "filler"
        # unbuffered: the write that fills the disk fails here, not at close
        with open(filler, "wb", buffering=0) as file, contextlib.suppress(OSError):
            while True:
                file.write(b"\0" * (1 << 16))
        answers = {pager.post("/network", notification(alertname=f"During{i}",
                                                       fingerprint=f"d{i}"))[0]
                   for i in range(20)}
        assert answers <= {200, 503} and 503 in answers
        assert pager.get("/healthz") is None
        filler.unlink()
        wait_for(lambda: pager.get("/healthz") == b"ok\n", 20, "healthy again")
        assert pager.post("/network", notification(alertname="After", fingerprint="a"))[0] \
            == 200
        wait_for(lambda: any("After" in t for t in rig.wecom.texts()), 20, "the page after")
        assert sum("Before @" in t for t in rig.wecom.texts()) == 1
    finally:
        rig.close_pager()
        subprocess.run(["umount", "-l", str(volume)], check=False)


def test_a_read_only_store_stops_the_start_with_the_reason(rig: Rig, tmp_path: Path) -> None:
    volume = tmp_path / "ro"
    volume.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(volume)],
                   check=True)
    try:
        path = tmp_path / "pager.yaml"
        path.write_text(yaml.safe_dump(rig.config(database=str(volume / "pager.db")),
                                       allow_unicode=True))
        done = subprocess.run([INSMON, "pager", "run", "-c", str(path)], capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert done.returncode == 2
        assert str(path) in done.stderr and "pager.db" in done.stderr
    finally:
        subprocess.run(["umount", "-l", str(volume)], check=False)


def test_the_pager_over_https_with_the_exporters_tls_config(rig: Rig, tmp_path: Path) -> None:
    import ssl
    import urllib.error

    (tmp_path / "ca").mkdir()
    authority = Authority(tmp_path / "ca")
    cert, key = authority.issue("127.0.0.1", ip="127.0.0.1")
    config = rig.config(tls={"cert_file": str(cert), "key_file": str(key)})
    path = tmp_path / "pager.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    proc = subprocess.Popen([INSMON, "pager", "run", "-c", str(path)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    context = ssl.create_default_context(cafile=str(authority.file))
    url = f"https://127.0.0.1:{rig.port}"
    try:
        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/healthz", context=context, timeout=5):
                    return True
            except OSError:
                return False

        wait_for(healthy, 20, "the pager over HTTPS")
        request = urllib.request.Request(
            f"{url}/network", data=json.dumps(notification()).encode(), method="POST",
            headers={"Authorization": f"Bearer {rig.token_file.read_text()}"})
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            assert response.status == 200
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP: no
            urllib.request.urlopen(f"http://127.0.0.1:{rig.port}/healthz", timeout=5)
        wait_for(lambda: rig.wecom.texts(), 20, "the page")
    finally:
        proc.terminate()
        proc.wait(15)


def test_wecoms_at_by_mobile_counts_against_the_robots_minute(rig: Rig) -> None:
    """张三 with no WeCom id is @-ed by mobile in a second post: 20 posts a minute are 10
    pages, and a storm must still never hear "too fast" (45009) nor fail over for it."""
    config = rig.config()
    del config["people"]["zhang"]["wecom"]
    config["people"]["zhang"]["channels"] = ["wecom"]
    pager = rig.harness(config)
    for i in range(25):
        pager.post("/network", notification(alertname=f"Storm{i:02d}", grade="III",
                                            fingerprint=f"s{i}"))
        pager.advance(0.2, step=0.2)
    pager.advance(2 * 60)
    assert all(any(named(t, f"Storm{i:02d}") for t in rig.wecom.texts()) for i in range(25))
    assert rig.wecom.refused == []
    assert 'result="rate_limited"' not in pager.get("/metrics").decode()
