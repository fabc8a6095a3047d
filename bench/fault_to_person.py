"""Fault to person, with the shipped production timings: a real cut of both private-network
lines in the namespace lab, detected by `insmon run` (the vpn check of
examples/hospital.yaml), through Prometheus and Alertmanager as shipped, to the shipped
hot-standby pair of `insmon pager` (examples/pager.yaml: both take every page, the
standby sends what the active cannot) with its shipped escalation, which pages network's
on-call on a local WeCom robot and leadership by SMS through a real gammu-smsd (gammu's
dummy phone; it sends one SMS a second, a real modem takes a few seconds more). Prints the
median and worst time from the cut to each over CUTS cuts: during the third the active is
killed (kill -9) before the page and back 3 s later, during the fourth right after it.
Then KILLS cuts in which the active's host dies at the moment of the fault (kill -9, back
after the incident): the standby pages. Every incident must reach each person exactly
once.

Usage (root): make bench   or   .venv/bin/python bench/fault_to_person.py [CUTS [KILLS]]
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


def pager_config(work: Path, robot: WeComRobot, role: str, ports: dict[str, int]) -> dict:
    """examples/pager.yaml as shipped (escalation, watchdog, the pair), its channels and
    the pair's addresses pointed here, a store of its own."""
    config = yaml.safe_load((ROOT / "examples" / "pager.yaml").read_text())
    port = ports[role]
    config.update(listen=f"127.0.0.1:{port}", public_url=f"http://127.0.0.1:{port}",
                  database=str(work / role / "pager.db"),
                  auth={"token_file": str(work / "pager-token")})
    for member in ("active", "standby"):
        url = f"http://127.0.0.1:{ports[member]}"
        config["pair"][member] = {"url": url, "public_url": url}
    config["pair"]["key_file"] = str(work / "pair-key")
    config["channels"] = {"it-wecom": {"type": "wecom", "url": robot.url},
                          "sms": {"type": "sms", "gammu_config": str(work / "gammu/smsdrc")}}
    for person in config["people"].values():
        person["channels"] = [c for c in person["channels"] if c in config["channels"]] or [
            "sms"]
    config["people"]["vp"]["channels"] = ["sms"]
    return config


def main() -> None:
    cuts = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    kills = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    to_robot, to_sms, taken_over = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lab, robot = Lab(), WeComRobot()
        (work / "pager-token").write_text(secrets.token_hex(24))
        (work / "pair-key").write_text(secrets.token_hex(32))
        ports = {"active": free_port(), "standby": free_port()}
        files = {}
        for role in ports:
            files[role] = work / role / "pager.yaml"
            files[role].parent.mkdir()
            files[role].write_text(yaml.safe_dump(pager_config(work, robot, role, ports),
                                                  allow_unicode=True))
        phone = Phone(work / "gammu", f"{INSMON} pager sms-received -c {files['active']}")
        active, standby = (PagerProcess(files[role], role) for role in ("active", "standby"))

        def pages() -> list[str]:
            """The Level I pages on the robot, also inside a post carrying several."""
            parts = [p for t in robot.texts() for p in t.split("\n\n----\n\n")]
            return [p for p in parts if "告警 alert: SettlementPathDown" in p
                    and "【一级】" in p and not any(k in p for k in KINDS)]

        def sms() -> list[str]:
            return [t for t in phone.to(VP) if t.startswith("【一级】")]

        def cut(kill: str | None = None) -> tuple[float, float]:
            """Both lines cut: seconds to the robot's page and to the SMS. `kill`: the
            active dies "before" the page (back 3 s later), "after" it, or "host" at the
            moment of the fault (back once the incident is over)."""
            robot_n, sms_n = len(pages()), len(sms())
            cut_at = time.time()
            lab.cut("primary")
            lab.cut("backup")
            if kill in ("before", "host"):
                active.kill9()
            if kill == "before":
                time.sleep(3)
                active.start()
            try:
                wait_for(lambda: len(pages()) > robot_n, 120, "the robot's page")
            except TimeoutError:
                print(explain(), file=sys.stderr)
                raise
            robot_at = time.time() - cut_at
            if kill == "after":
                active.kill9()
                active.start()
            wait_for(lambda: len(sms()) > sms_n, 120, "the SMS")
            sms_at = time.time() - cut_at
            lab.restore("primary")
            lab.restore("backup")
            wait_for(lambda: not [i for i in standby.incidents() if not i["resolved"]
                                  and i["alertname"] == "SettlementPathDown"],
                     180, "the incident to resolve")
            if kill == "host":
                active.start()
            time.sleep(5)
            return robot_at, sms_at

        def explain() -> str:
            return "\n".join(f"{p.role}: " + " | ".join(p.logged().splitlines()[-8:])
                              for p in (active, standby))

        try:
            lab.start_front_end(8080)
            port = free_port()
            with alert_chain(work / "chain", vpn_check(lab, port), port, SITE,
                             (active.url, standby.url), interval=None,
                             token_file=work / "pager-token"):
                time.sleep(10)
                for i in range(cuts):
                    robot_at, sms_at = cut({2: "before", 3: "after"}.get(i))
                    to_robot.append(robot_at)
                    to_sms.append(sms_at)
                for _ in range(kills):
                    taken_over.append(cut("host"))
            incidents = [i for i in standby.incidents()
                         if i["alertname"] == "SettlementPathDown"]
            counts = len(incidents), len(pages()), len(sms())
        finally:
            active.stop()
            standby.stop()
            phone.close()
            robot.close()
            lab.close()
    print(f"fault to person, shipped timings and policy, the shipped pager pair, {cuts} cuts "
          f"of both lines (kill -9 of the active pager during cuts 3 and 4):")
    print(f"  to the WeCom robot: median {statistics.median(to_robot):.1f} s, worst "
          f"{max(to_robot):.1f} s, all: {', '.join(f'{d:.1f}' for d in to_robot)}")
    print(f"  to the phone (SMS): median {statistics.median(to_sms):.1f} s, worst "
          f"{max(to_sms):.1f} s, all: {', '.join(f'{d:.1f}' for d in to_sms)}")
    if taken_over:
        robot_times = [r for r, _ in taken_over]
        print(f"  {kills} cuts with the active's host killed at the fault (the standby "
              f"pages): to the robot median {statistics.median(robot_times):.1f} s, worst "
              f"{max(robot_times):.1f} s; to the SMS median "
              f"{statistics.median([s for _, s in taken_over]):.1f} s")
    once = counts[0] == counts[1] == counts[2]
    print(f"  {counts[0]} incidents, {counts[1]} robot pages, {counts[2]} SMS to leadership: "
          f"{'each person paged once per incident' if once else 'LOST OR DOUBLED'}")


if __name__ == "__main__":
    main()
