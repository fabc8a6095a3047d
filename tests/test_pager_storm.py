"""Issue 31's storm through the real chain: 1,000 distinct grade II alerts (50 alert names
x 20 sites, team network) posted to a real Alertmanager on the shipped
alert_rules/alertmanager.yml, which posts each group to `insmon pager run` on the shipped
examples/pager.yaml (its channels pointed at local robots, a real SMTP server and a real
gammu-smsd on gammu's dummy phone; one pager, not the pair). On main the on-call got 40
WeCom posts, 49 SMS and 765 e-mails; here a few digests. bench/pager_storm.py prints the
figures of the same storm spread over a minute."""

from __future__ import annotations

import collections
import datetime as dt
import html
import re
import secrets
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ops.stack import Alertmanager, free_port, wait_for
from pager import records
from pager.config import load
from pager.records import Kind, Status
from pager.rota import Rota
from tests.conftest import ROOT
from tests.pager_rig import MailServer, PagerProcess, Phone, acknowledge_all
from tests.robots import DingTalkRobot, FeishuRobot, WeComRobot
from vocabulary import SHANGHAI

pytestmark = pytest.mark.timeout(300)
NAMES, SITES = 50, 20
BOUND = 10  # messages per person per channel for the whole storm


class StormRig:
    """examples/pager.yaml as shipped (people, rota, escalation, robots' secrets), its
    channels pointed here and without the pair; the shipped Alertmanager before it."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.wecom = WeComRobot()
        self.dingtalk = DingTalkRobot(secret="SEC0000")
        self.feishu = FeishuRobot(secret="0000")
        self.mail = MailServer(work)
        self.phone = Phone(work / "gammu", "true")
        token = work / "pager-token"
        token.write_text(secrets.token_hex(24))
        port = free_port()
        config = yaml.safe_load((ROOT / "examples" / "pager.yaml").read_text())
        del config["pair"]
        config.update(listen=f"127.0.0.1:{port}", public_url=f"http://127.0.0.1:{port}",
                      database=str(work / "pager.db"), auth={"token_file": str(token)})
        channels = config["channels"]
        channels["it-wecom"]["url"] = self.wecom.url
        channels["it-dingtalk"]["url"] = self.dingtalk.url
        channels["leaders-feishu"]["url"] = self.feishu.url
        channels["mail"] = {"type": "email", "host": "127.0.0.1", "port": self.mail.port,
                            "ca_file": str(self.mail.ca_file), "sender": "insmon@h.test"}
        channels["sms"]["gammu_config"] = str(self.phone.config)
        channels["voice"]["url"] = "http://127.0.0.1:9/call"  # nobody of network's
        self.config_file = work / "pager.yaml"
        self.config_file.write_text(yaml.safe_dump(config, allow_unicode=True))
        self.config = load(self.config_file)
        self.pager = PagerProcess(self.config_file)
        self.alertmanager = Alertmanager(work / "am", self.pager.url, token_file=token)
        self.on_call = Rota(self.config).on_call("network", dt.datetime.now(SHANGHAI))

    def fire(self, spread: float) -> float:
        """The storm, one site's 50 alerts at a time over `spread` seconds; when it began."""
        began = time.time()
        for site in range(SITES):
            time.sleep(max(0.0, began + spread * site / SITES - time.time()))
            self.alertmanager.post(*[{
                "labels": {"alertname": f"Storm{name:02d}", "grade": "II", "team": "network",
                           "site": f"site{site:02d}", "service": "storage"},
                "annotations": {
                    "summary_zh": f"site{site:02d}：存储 IO 延迟升高（Storm{name:02d}）",
                    "description": "Storage latency above 2000 ms for 5 minutes."}}
                for name in range(NAMES)])
        return began

    def done(self, person: str) -> bool:
        """Every one of the storm's pages to `person` sent (named or counted)."""
        statuses = collections.Counter(d.status for d in self.pager.read(records.deliveries)
                                       if d.person == person and d.kind == Kind.PAGE)
        return statuses == {Status.SENT: NAMES * SITES}

    def messages(self, person: str) -> dict[str, list[tuple[float, str]]]:
        """channel -> (when, text) of each message for `person` there: a robot's post
        with their links ("it-wecom @mobile": WeCom's post right after it that @s them by
        mobile, when they have no WeCom id), an SMS to their number, a mail to their
        address."""
        who = self.config.people[person]
        tokens = {p.token for p in self.pager.read(records.pages, person=person)}
        found: dict[str, list[tuple[float, str]]] = {}
        for at, payload in zip(self.wecom.accepted_at, self.wecom.accepted, strict=True):
            named = (bool(tokens & set(re.findall(r"/(?:ack|list)/([\w-]+)",
                                                   payload["markdown"]["content"])))
                     if payload["msgtype"] == "markdown" else
                     who.mobile in payload["text"].get("mentioned_mobile_list", []))
            if named:
                channel = "it-wecom" if payload["msgtype"] == "markdown" else "it-wecom @mobile"
                found.setdefault(channel, []).append((at, self.wecom.text(payload)))
        for at, payload in zip(self.dingtalk.accepted_at, self.dingtalk.accepted, strict=True):
            if who.mobile in payload["at"]["atMobiles"]:
                found.setdefault("it-dingtalk", []).append((at, self.dingtalk.text(payload)))
        for path in sorted((self.phone.dir / "sent").glob("OUT*")):
            if f"_{who.mobile}_" in path.name:
                found.setdefault("sms", []).append((path.stat().st_mtime, path.name))
        for at, (rcpts, text) in zip(self.mail.times, self.mail.messages, strict=True):
            if who.email in rcpts:
                found.setdefault("mail", []).append((at, text))
        return found

    def close(self) -> None:
        self.alertmanager.stop()
        self.pager.stop()
        self.phone.close()
        for part in (self.wecom, self.dingtalk, self.feishu, self.mail):
            part.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[StormRig]:
    rig = StormRig(tmp_path)
    try:
        yield rig
    finally:
        rig.close()


def counted(texts: list[str]) -> int:
    """Alerts a person's WeCom posts name or count: a page names one, a digest says how
    many it holds."""
    total = 0
    for text in texts:
        digest = re.search(r"【告警汇总】自 \S+ 起 (\d+) 条通知", text)
        total += int(digest.group(1)) if digest else text.count("告警 alert: Storm")
    return total


def test_a_thousand_alert_storm_through_alertmanager_is_at_most_ten_messages_a_channel(
        rig: StormRig) -> None:
    began = rig.fire(spread=0)
    wait_for(lambda: rig.done(rig.on_call), 200, f"every page of the storm to {rig.on_call}")
    assert len(rig.pager.read(records.incidents)) == NAMES * SITES
    got = rig.messages(rig.on_call)
    # nothing failed over; the posts that @ the on-call by mobile count too
    assert set(got) <= {"it-wecom", "it-wecom @mobile"}, {k: len(v) for k, v in got.items()}
    assert len(got["it-wecom"]) + len(got.get("it-wecom @mobile", [])) <= BOUND
    markdown = [text for _, text in got["it-wecom"]]
    assert counted(markdown) == NAMES * SITES  # every alert named or counted, once
    assert rig.wecom.refused == []  # never over the robot's size or minute
    print(f"storm: {NAMES * SITES} alerts -> {rig.on_call}: "
          f"{ {k: len(v) for k, v in got.items()} }, the last "
          f"{max(at for v in got.values() for at, _ in v) - began:.1f} s after the first alert")

    # the digest's one link: the whole list, and one button for all of it
    link = re.search(r"full list: (\S+)", markdown[-1]).group(1)
    with urllib.request.urlopen(link, timeout=10) as response:
        page = response.read().decode()
    assert page.count("<tr>") == NAMES * SITES
    assert f"{html.escape(rig.config.people[rig.on_call].name)}：{NAMES * SITES} 个事件" in page
    assert "0 个待确认" in acknowledge_all(page, rig.pager.url)
    assert {i.acked_by for i in rig.pager.read(records.incidents)} == {
        rig.on_call}


def test_the_pager_with_gammu_smsd_down_fails_an_sms_over_after_its_bound(
        tmp_path: Path) -> None:
    """The dead-daemon case as the process runs it: an SMS-first page is not `sent`, it
    is taken back after `confirm_within` and the person's next channel (mail) takes it."""
    mail = MailServer(tmp_path)
    phone = Phone(tmp_path / "gammu", "true", running=False)
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}",
        "database": str(tmp_path / "pager.db"), "auth": {"open": True},
        "channels": {"sms": {"type": "sms", "gammu_config": str(phone.config),
                             "confirm_within": "3s", "retries": 1},
                     "mail": {"type": "email", "host": "127.0.0.1", "port": mail.port,
                              "ca_file": str(mail.ca_file), "sender": "insmon@h.test"}},
        "people": {"zhang": {"name": "张三", "mobile": "13800000001",
                             "email": "zhang@h.test", "channels": ["sms", "mail"]}},
        "teams": {"network": {"name": "网络排查组", "lead": "zhang",
                              "rotation": {"since": "2026-01-01", "order": ["zhang"]}}},
        "fallback_team": "network", "watchdog": {"timeout": "1h", "notify": ["network"]}}
    path = tmp_path / "pager.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    pager = PagerProcess(path)
    try:
        labels = {"alertname": "SettlementPathDown", "grade": "I", "team": "network",
                  "site": "一院"}
        assert pager.post("/network", {
            "version": "4", "status": "firing", "receiver": "network", "groupKey": "g",
            "groupLabels": labels, "commonLabels": labels,
            "commonAnnotations": {"summary_zh": "一院：医保专网中断"},
            "alerts": [{"status": "firing", "labels": labels, "annotations": {},
                        "startsAt": "2026-11-23T00:31:05Z", "fingerprint": "f"}]})[0] == 200
        mails = wait_for(lambda: mail.to("zhang@h.test"), 30, "the page by mail")
        assert "【一级】" in mails[0]
        assert list((phone.dir / "outbox").iterdir()) == []  # taken back

        def mail_counted_sent() -> str | None:
            """The server has the mail before the pager has read its 250 to the message."""
            metrics = pager.get("/metrics").decode()
            return metrics if 'channel="mail",result="sent"' in metrics else None

        metrics = wait_for(mail_counted_sent, 30, "the mail counted sent")
        assert 'channel="sms",result="failover"' in metrics
        assert 'channel="sms",result="sent"' not in metrics
    finally:
        pager.stop()
        phone.close()
        mail.close()
