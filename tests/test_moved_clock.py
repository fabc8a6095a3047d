"""Where the day and the year turn, on a clock moved by libfaketime (tests/moved_clock.py)
on a UTC host: insmon's processes, and the platform's, see the moved clock, not the
test's. A calendar day past the data (provisional, and said so by `insmon once` and by
the recurring-window command), the settlement day session and msgids at Beijing
midnight, the audit trail's month files, the rota across New Year; and the monthly
report's month boundaries on the test's own clock (also moved by `make test-dates`)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from ops import report
from probes import calendar
from tests.conftest import INSMON, calendar_file, free_port, wait_for
from tests.moved_clock import moved

# The working Monday after New Year of the first year the package's data does not cover
# (2027-01-04 with chinesecalendar 1.11.0, whose data ends with 2026).
_, _, KNOWN_UNTIL = calendar.package_dates()
FIRST_MONDAY = next(
    day for day in (dt.date(KNOWN_UNTIL.year + 1, 1, 2) + dt.timedelta(days=i) for i in range(7))
    if day.weekday() == 0 and day not in calendar.statutory_holidays(day.year))
NEW_YEAR = dt.datetime(2031, 1, 1, tzinfo=calendar.SHANGHAI)  # a New Year's midnight


def insmon(*args: str, at: dt.datetime, **run: object) -> subprocess.CompletedProcess:
    return subprocess.run([INSMON, *args], capture_output=True, text=True, timeout=60,
                          env=moved(at), **run)


def test_once_on_the_first_monday_past_the_data_says_the_day_is_provisional(
        tmp_path: Path) -> None:
    config = tmp_path / "insmon.yaml"
    config.write_text("checks:\n- {name: working-calendar, kind: calendar}\n")
    done = insmon("once", "-c", str(config),
                  at=dt.datetime.combine(FIRST_MONDAY, dt.time(9), calendar.SHANGHAI))
    assert done.returncode == 1, done.stdout + done.stderr
    [row] = [line for line in done.stdout.splitlines() if line.startswith("working-calendar")]
    assert " failed " in row
    assert f"{FIRST_MONDAY}: working day (provisional); dates known until {KNOWN_UNTIL}: " \
           f"days from {KNOWN_UNTIL + dt.timedelta(days=1)} are provisional" in row
    assert f"add the State Council's dates to {calendar.SITE_FILE}" in row


def test_the_recurring_window_command_warns_past_the_data(tmp_path: Path) -> None:
    at = dt.datetime.combine(FIRST_MONDAY, dt.time(9), calendar.SHANGHAI)
    common = ["--site", "h1", "--from", "01:00", "--to", "01:30", "--comment", "结算批处理",
              "--file", str(tmp_path / "maintenance.yaml"), "--audit", str(tmp_path / "audit")]
    done = insmon("maintenance", "--every", "workday", "--name", "batch", *common, at=at)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("insmon maintenance: warning: days from "
                                  f"{KNOWN_UNTIL + dt.timedelta(days=1)} are provisional")
    assert f"add the State Council's dates to {calendar.SITE_FILE}" in done.stderr
    # the site's file with the year's dates: nothing to warn of
    site = calendar_file(tmp_path / "calendar.yaml", dt.date(FIRST_MONDAY.year, 12, 31))
    done = insmon("maintenance", "--every", "offday", "--name", "weekend", *common,
                  "--calendar", str(site), at=at)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_the_day_session_and_msgids_turn_at_beijing_midnight_on_a_utc_host(
        tmp_path: Path) -> None:
    """insmon and the platform both 10 s before Beijing's New Year (15:59:50 UTC): the
    queries before midnight carry the 31st's session, the first one after it a new
    session signed in for the 1st of January before it (not after a refusal), and every
    msgid carries Beijing's date and time."""
    from tests.test_settlement import Platform

    at = NEW_YEAR - dt.timedelta(seconds=10)
    platform = Platform(tmp_path / "control.json", env=moved(at))  # its own process, moved
    check = {"name": "settle", "kind": "settlement", "url": platform.url, "interval": "10s",
             "quiet_interval": "10s",  # midnight is outside business hours
             "timeout": "3s", "fixmedins_code": "H32010200001", "fixmedins_name": "实验医院",
             "mdtrtarea_admvs": "320102", "opter": "001", "opter_name": "收费员",
             "state_file": str(tmp_path / "sessions.json")}
    config = tmp_path / "insmon.yaml"
    config.write_text(yaml.safe_dump({"listen": f"127.0.0.1:{free_port()}",
                                      "checks": [check]}, allow_unicode=True))
    process = subprocess.Popen([INSMON, "run", "-c", str(config)], env=moved(at),
                               stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def day(request: dict) -> str:
        return request["msgid"][12:20]  # after the 12-character institution code

    try:
        wait_for(lambda: any(r["infno"] == "1901" and day(r) == "20310101"
                             for r in platform.received()), 60, "a query after midnight")
    finally:
        process.terminate()
        process.wait(30)
        platform.close()
    received = platform.received()
    assert all(r["refused"] is None for r in received), received
    queries = [r for r in received if r["infno"] == "1901"]
    old = [q for q in queries if day(q) == "20301231"]
    new = [q for q in queries if day(q) == "20310101"]
    assert old, f"insmon's first run came after midnight (a start over 10 s): {received}"
    assert {day(q) for q in queries} == {"20301231", "20310101"}
    assert len({q["sign_no"] for q in old}) == 1 and len({q["sign_no"] for q in new}) == 1
    assert old[0]["sign_no"] != new[0]["sign_no"]  # each day its own session
    turn = received.index(new[0])
    assert received[turn - 1]["infno"] == "9001" and day(received[turn - 1]) == "20310101"
    sessions = json.loads((tmp_path / "sessions.json").read_text())["operators"]
    assert sessions["001"]["day"] == "2031-01-01"  # the operator's session, kept


def test_the_audit_trail_files_records_by_beijing_month_across_new_year(
        tmp_path: Path) -> None:
    """Two refused windows just before and after New Year's midnight in Beijing, both on
    31 December in UTC (the first half a minute before: insmon takes a moment to start):
    one in December's file, one in January's, one chain."""
    audit = tmp_path / "audit"
    for at in (NEW_YEAR - dt.timedelta(seconds=30), NEW_YEAR + dt.timedelta(seconds=1)):
        start = at + dt.timedelta(days=1)
        done = insmon("maintenance", "--alertmanager", "http://127.0.0.1:9", "--site", "h1",
                      "--from", f"{start:%Y-%m-%d %H:%M}",
                      "--to", f"{start + dt.timedelta(days=20):%Y-%m-%d %H:%M}",
                      "--comment", "平台切换", "--audit", str(audit), at=at)
        assert done.returncode == 1 and "over 14 days" in done.stderr, done.stderr
    assert sorted(p.name for p in audit.glob("audit-*.jsonl")) == [
        "audit-2030-12.jsonl", "audit-2031-01.jsonl"]
    december, january = (json.loads(p.read_text()) for p in sorted(audit.glob("audit-*")))
    assert december["at"].startswith("2030-12-31T23:59:") and december["at"].endswith("+08:00")
    assert january["at"].startswith("2031-01-01T00:00:")
    done = insmon("audit", str(audit), "--verify", "--prometheus", "http://127.0.0.1:9",
                  at=NEW_YEAR + dt.timedelta(minutes=1))
    # the chain holds across the two files; no witness answered here, so not exit 0
    assert done.returncode == 2 and "every record is as written" in done.stdout, done.stdout
    assert "not compared with a witness" in done.stdout, done.stdout


def test_the_rota_turns_at_the_handover_across_new_year(tmp_path: Path) -> None:
    """A daily rotation handing over at midnight, and a shifts file's night shift across
    New Year, asked without --at on each side of it (UTC: the same day; the first a
    minute before, as the pager's command takes a moment to start)."""
    from tests.test_pager_rota import HEADER, write_config

    path = write_config(tmp_path, HEADER + "2030-12-31 20:00,2031-01-01 08:00,zhang\n")
    config = yaml.safe_load(path.read_text())
    config["teams"]["server_ops"]["rotation"] = {
        "every": "day", "handover": "00:00", "since": "2030-12-30", "order": ["zhao", "li"]}
    path.write_text(yaml.safe_dump(config, allow_unicode=True))

    def who(team: str, at: dt.datetime) -> str:
        done = insmon("pager", "who", "-c", str(path), "--team", team, at=at)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()[1]

    before, after = NEW_YEAR - dt.timedelta(minutes=1), NEW_YEAR + dt.timedelta(seconds=1)
    assert "李四" in who("server_ops", before) and "赵六" in who("server_ops", after)
    assert "张三" in who("network", before) and "张三" in who("network", after)
    done = insmon("pager", "validate", str(path), at=before)
    assert "nobody on call from 2031-01-01 08:00" in done.stderr, done.stderr


@pytest.mark.dates
def test_the_reports_months_have_their_days_in_beijing_time() -> None:
    """This month and the next by the test's own clock (a leap February, a December
    turning into January when `make test-dates` moves it): each month's minutes end where
    the next one's begin, at Beijing midnight, and every day of it is in the figures."""
    now = dt.datetime.now(calendar.SHANGHAI)
    this = f"{now:%Y-%m}"
    start, end = report.month_bounds(this)
    assert start == dt.datetime(now.year, now.month, 1, tzinfo=calendar.SHANGHAI)
    assert start <= now < end and end.day == 1 and (end.hour, end.minute) == (0, 0)
    following = f"{end:%Y-%m}"
    assert report.month_bounds(following)[0] == end and report.previous(following) == this

    class NoHistory:  # a Prometheus that holds nothing for the site
        def range(self, query: str, start: float, end: float) -> list:
            return []

    figures = report.measure(NoHistory(), "h1", this, [])
    days = (end - start).days
    assert sorted(figures.daily) == [f"{start + dt.timedelta(days=d):%Y-%m-%d}"
                                     for d in range(days)]
    assert figures.minutes["unmeasured"] == days * 1440
