"""Fault to person, with the shipped production timings: a real cut of both private-network
lines in the namespace lab, detected by `insmon run` (the vpn check of
examples/hospital.yaml), through Prometheus and Alertmanager as shipped, to a real
`insmon pager` with its shipped escalation, which pages network's on-call on a local WeCom
robot and leadership by SMS through a real gammu-smsd (gammu's dummy phone; it sends one
SMS a second, a real modem takes a few seconds more). Prints the median and worst time
from the cut to each over CUTS cuts. During the third cut the pager is killed (kill -9)
before the page, during the fourth right after it; every incident must still reach each
person exactly once.

Usage (root): make bench   or   .venv/bin/python bench/fault_to_person.py [CUTS]
"""

from __future__ import annotations

import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fault_to_page import SITE, vpn_check  # noqa: E402
from ops.lab import Lab  # noqa: E402
from ops.stack import alert_chain  # noqa: E402
from tests.conftest import INSMON, free_port, wait_for  # noqa: E402
from tests.pager_rig import PagerProcess, Phone  # noqa: E402
from tests.robots import WeComRobot  # noqa: E402

VP = "13800000009"
KINDS = ("【已恢复】", "【已确认】", "【升级】", "【仍在告警】", "【报告提醒】")  # not the page


def pager_config(work: Path, robot: WeComRobot) -> dict:
    """examples/pager.yaml as shipped (escalation, watchdog), its channels pointed here."""
    config = yaml.safe_load((ROOT / "examples" / "pager.yaml").read_text())
    port = free_port()
    (work / "pager-token").write_text(secrets.token_hex(24))
    config.update(listen=f"127.0.0.1:{port}", public_url=f"http://127.0.0.1:{port}",
                  database=str(work / "pager.db"),
                  auth={"token_file": str(work / "pager-token")})
    config["channels"] = {"it-wecom": {"type": "wecom", "url": robot.url},
                          "sms": {"type": "sms", "gammu_config": str(work / "gammu/smsdrc")}}
    for person in config["people"].values():
        person["channels"] = [c for c in person["channels"] if c in config["channels"]] or [
            "sms"]
    config["people"]["vp"]["channels"] = ["sms"]
    return config


def main() -> None:
    cuts = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    to_robot, to_sms = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lab, robot = Lab(), WeComRobot()
        path = work / "pager.yaml"
        path.write_text(yaml.safe_dump(pager_config(work, robot), allow_unicode=True))
        phone = Phone(work / "gammu", f"{INSMON} pager sms-received -c {path}")
        pager = PagerProcess(path)

        def pages() -> list[str]:
            """The Level I pages on the robot, also inside a post carrying several."""
            parts = [p for t in robot.texts() for p in t.split("\n\n----\n\n")]
            return [p for p in parts if "告警 alert: SettlementPathDown" in p
                    and "【一级】" in p and not any(k in p for k in KINDS)]

        def sms() -> list[str]:
            return [t for t in phone.to(VP) if t.startswith("【一级】")]

        try:
            lab.start_front_end(8080)
            port = free_port()
            with alert_chain(work / "chain", vpn_check(lab, port), port, SITE, pager.url,
                             interval=None, token_file=work / "pager-token"):
                time.sleep(10)
                for i in range(cuts):
                    robot_n, sms_n = len(pages()), len(sms())
                    cut_at = time.time()
                    lab.cut("primary")
                    lab.cut("backup")
                    if i == 2:  # the pager dies before the page; back 3 s later
                        pager.kill9()
                        time.sleep(3)
                        pager.start()
                    wait_for(lambda n=robot_n: len(pages()) > n, 120, "the robot's page")
                    to_robot.append(time.time() - cut_at)
                    if i == 3:  # ... and right after it
                        pager.kill9()
                        pager.start()
                    wait_for(lambda n=sms_n: len(sms()) > n, 120, "the SMS")
                    to_sms.append(time.time() - cut_at)
                    lab.restore("primary")
                    lab.restore("backup")
                    wait_for(lambda: not [i for i in pager.incidents() if not i["resolved"]
                                          and i["alertname"] == "SettlementPathDown"],
                             180, "the incident to resolve")
                    time.sleep(5)
            incidents = [i for i in pager.incidents() if i["alertname"] == "SettlementPathDown"]
            counts = len(incidents), len(pages()), len(sms())
        finally:
            pager.stop()
            phone.close()
            robot.close()
            lab.close()
    print(f"fault to person, shipped timings and policy, {cuts} cuts of both lines "
          f"(kill -9 of the pager during cuts 3 and 4):")
    print(f"  to the WeCom robot: median {statistics.median(to_robot):.1f} s, worst "
          f"{max(to_robot):.1f} s, all: {', '.join(f'{d:.1f}' for d in to_robot)}")
    print(f"  to the phone (SMS): median {statistics.median(to_sms):.1f} s, worst "
          f"{max(to_sms):.1f} s, all: {', '.join(f'{d:.1f}' for d in to_sms)}")
    once = counts[0] == counts[1] == counts[2]
    print(f"  {counts[0]} incidents, {counts[1]} robot pages, {counts[2]} SMS to leadership: "
          f"{'each person paged once per incident' if once else 'LOST OR DOUBLED'}")


if __name__ == "__main__":
    main()
