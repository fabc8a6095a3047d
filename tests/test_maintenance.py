"""Recurring maintenance windows: made into real Alertmanager silences ahead of time on
the Chinese working calendar (a weekend, a statutory holiday, a make-up working day),
each once however often insmon asks, each recorded in the audit trail; `list` shows
them with who declared them and why, `end` ends one, and an invalid file is named."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest

from monitor.audit import Trail
from ops import maintenance
from ops.maintenance import realise_windows
from ops.recorder import Recorder
from ops.stack import Alertmanager
from probes.calendar import WorkingCalendar
from tests.conftest import INSMON, calendar_file
from vocabulary import SHANGHAI


def next_monday(after: date) -> date:
    return after + timedelta(days=(7 - after.weekday()) % 7 or 7)


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Alertmanager]:
    recorder = Recorder()
    manager = Alertmanager(tmp_path / "am", recorder.url)
    yield manager
    manager.stop()
    recorder.close()


def insmon(*argv: str, user: str = "zhangsan") -> subprocess.CompletedProcess:
    return subprocess.run([INSMON, "maintenance", *argv], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "SUDO_USER": user})


def ours(manager: Alertmanager) -> list[dict]:
    return sorted((s for s in maintenance.silences(manager.url)
                   if maintenance.TAG.search(s["comment"])), key=lambda s: s["startsAt"])


def test_a_recurring_window_follows_the_working_calendar_once_each(
        manager: Alertmanager, tmp_path: Path) -> None:
    # two weeks from now or after, a week with no day off or make-up day of its own
    # (the package's or the law's): a Thursday made a statutory holiday and that week's
    # Saturday a make-up working day, in the site's calendar file (as a site adds next
    # year's dates)
    known = WorkingCalendar().dates()
    monday = next(day for day in (next_monday(datetime.now(SHANGHAI).date() + timedelta(
        days=14 + 7 * i)) for i in range(10)) if all(
        known.day(day + timedelta(days=d)).kind in ("working day", "weekend")
        for d in range(-1, 10)))
    holiday, makeup = monday + timedelta(days=3), monday + timedelta(days=5)
    calendar = calendar_file(tmp_path / "calendar.yaml", monday + timedelta(days=60),
                             [holiday], [makeup])
    file, audit = tmp_path / "maintenance.yaml", tmp_path / "audit"
    file.write_text("# the platform's announced windows (省平台维护公告)\n")
    common = ["--file", str(file), "--audit", str(audit), "--site", "h1"]
    done = insmon("--every", "workday", "--name", "nightly-batch", "--from", "01:00",
                  "--to", "01:30", "--comment", "结算批处理", *common)
    assert done.returncode == 0, done.stderr
    done = insmon("--every", "sunday", "--name", "platform-weekly", "--from", "23:00",
                  "--to", "02:00", "--comment", "省平台每周例行维护", *common)
    assert done.returncode == 0, done.stderr
    assert file.read_text().startswith("# the platform's announced windows")

    # insmon asks every 6 hours (a clock the test moves) from Sunday 00:00 across nine
    # days, 12 hours ahead: windows beginning up to Tuesday 06:00 of the next week
    trail = Trail.open(audit)  # with its key, as insmon run holds it
    now = datetime.combine(monday - timedelta(days=1), datetime.min.time(), SHANGHAI)
    for _ in range(9 * 4):
        realise_windows(file, manager.url, trail, 12 * 3600.0, calendar, now)
        now += timedelta(hours=6)

    made = [(maintenance.TAG.search(s["comment"]).groups(), s["createdBy"])
            for s in ours(manager)]
    # not the holiday Thursday, the make-up Saturday yes, not Sunday
    workdays = [monday + timedelta(days=d) for d in (0, 1, 2, 4, 5, 7, 8)]
    expected = sorted([(("nightly-batch", f"{d}T01:00"), "zhangsan") for d in workdays]
                      + [(("platform-weekly", f"{monday + timedelta(days=d)}T23:00"),
                          "zhangsan") for d in (-1, 6)], key=lambda m: m[0][1])
    assert made == expected
    sunday = next(s for s in ours(manager) if "platform-weekly" in s["comment"]
                  and str(monday + timedelta(days=6)) in s["comment"])
    assert datetime.fromisoformat(sunday["endsAt"]) - datetime.fromisoformat(
        sunday["startsAt"]) == timedelta(hours=3)  # 23:00 to 02:00 the next day
    scheduled = [r for r in trail.records() if r["event"] == "maintenance-scheduled"]
    assert len(scheduled) == len(expected)
    assert {r["who"] for r in scheduled} == {"zhangsan"}
    assert Trail.open(audit).verify().faults == []

    listed = insmon("list", "--alertmanager", manager.url, *common[:4])
    assert "recurring nightly-batch: site h1, every workday 01:00-01:30" in listed.stdout
    assert listed.stdout.count("by zhangsan: 省平台每周例行维护") == 2, listed.stdout

    first = ours(manager)[0]["id"]
    ended = insmon("end", first, "--alertmanager", manager.url, "--audit", str(audit),
                   user="lisi")
    assert ended.returncode == 0, ended.stderr
    assert next(s for s in maintenance.silences(manager.url)
                if s["id"] == first)["status"]["state"] == "expired"
    [end] = [r for r in trail.records() if r["event"] == "maintenance-ended"]
    assert end["who"] == "lisi" and end["detail"]["silence"] == first


def test_a_window_under_way_is_silenced_for_what_is_left(manager: Alertmanager,
                                                         tmp_path: Path) -> None:
    now = datetime.now(SHANGHAI).replace(microsecond=0)
    start = (now - timedelta(minutes=30)).strftime("%H:%M")
    stop = (now + timedelta(minutes=30)).strftime("%H:%M")
    file = tmp_path / "maintenance.yaml"
    maintenance.add_recurring(file, maintenance.Recurring.model_validate(
        {"name": "now", "site": "h1", "every": "day", "from": start, "to": stop,
         "comment": "under way", "declared_by": "ops"}))
    trail = Trail(tmp_path / "audit")
    assert len(realise_windows(file, manager.url, trail, 3600.0, None, now)) == 1
    [silence] = ours(manager)
    assert silence["status"]["state"] == "active"
    assert realise_windows(file, manager.url, trail, 3600.0, None, now) == []


@pytest.mark.dates
def test_an_invalid_windows_file_is_named_with_its_key(tmp_path: Path) -> None:
    file = tmp_path / "maintenance.yaml"
    file.write_text("windows:\n  - {name: w, site: h1, every: sundays, from: '02:00', "
                    "to: '04:00', comment: x, declared_by: y}\n")
    done = insmon("list", "--file", str(file), "--audit", str(tmp_path / "audit"),
                  "--alertmanager", "http://127.0.0.1:9")
    assert done.returncode == 1
    assert f"{file}:2" in done.stderr and "every" in done.stderr, done.stderr


@pytest.mark.dates
def test_a_window_over_the_maximum_needs_a_reason_on_record(tmp_path: Path) -> None:
    start = datetime.now(SHANGHAI).date() + timedelta(days=1)
    done = insmon("--site", "h1", "--from", f"{start} 00:00",
                  "--to", f"{start + timedelta(days=31)} 00:00",
                  "--comment", "迁移", "--alertmanager", "http://127.0.0.1:9",
                  "--audit", str(tmp_path))
    assert done.returncode == 1 and "give --reason" in done.stderr
    [refused] = Trail(tmp_path).records()
    assert refused["outcome"] == "refused" and refused["who"] == "zhangsan"


def test_insmon_run_makes_the_silences_ahead_by_itself(manager: Alertmanager,
                                                       tmp_path: Path) -> None:
    from ops.stack import free_port, wait_for

    soon = (datetime.now(SHANGHAI) + timedelta(hours=2)).replace(second=0, microsecond=0)
    file = tmp_path / "maintenance.yaml"
    maintenance.add_recurring(file, maintenance.Recurring.model_validate(
        {"name": "daily", "site": "h1", "every": "day", "from": f"{soon:%H:%M}",
         "to": f"{soon + timedelta(minutes=20):%H:%M}", "comment": "每日备份",
         "declared_by": "wangwu"}))
    tag = f"daily {soon:%Y-%m-%dT%H:%M}"
    config = tmp_path / "insmon.yaml"
    config.write_text(f"listen: 127.0.0.1:{free_port()}\n"
                      "checks:\n- {name: cpu, kind: cpu, interval: 5s}\n"
                      f"maintenance: {{file: {file}, alertmanager: '{manager.url}', "
                      "ahead: 24h, every: 1s}\n")
    process = subprocess.Popen([INSMON, "run", "-c", str(config), "--audit",
                                str(tmp_path / "audit")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(tag in s["comment"] for s in ours(manager)), 30,
                 "the silence of the window two hours ahead")
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert len([s for s in ours(manager) if tag in s["comment"]]) == 1
    records = [r for r in Trail(tmp_path / "audit").records()
               if r["event"] == "maintenance-scheduled"]
    assert records and records[0]["who"] == "wangwu"


def test_insmon_run_takes_the_site_calendar_file_its_calendar_check_names(
        manager: Alertmanager, tmp_path: Path) -> None:
    """One calendar file per site: named by the calendar check alone, the recurring
    windows follow it too (a make-up Saturday of the site's file gets its window). insmon
    runs on the Friday before it (libfaketime; Alertmanager keeps the real clock, behind)."""
    from ops.stack import free_port, wait_for
    from tests.moved_clock import moved

    today = datetime.now(SHANGHAI).date()
    known = WorkingCalendar().dates()
    saturday = next(day for day in (today + timedelta(days=i) for i in range(2, 30))
                    if day.weekday() == 5 and known.day(day).kind == "weekend")
    site = calendar_file(tmp_path / "calendar.yaml", today + timedelta(days=60),
                         workdays=[saturday])
    file = tmp_path / "maintenance.yaml"
    maintenance.add_recurring(file, maintenance.Recurring.model_validate(
        {"name": "batch", "site": "h1", "every": "workday", "from": "01:00", "to": "01:30",
         "comment": "结算批处理", "declared_by": "wangwu"}))
    config = tmp_path / "insmon.yaml"
    config.write_text(f"listen: 127.0.0.1:{free_port()}\n"
                      f"checks:\n- {{name: cal, kind: calendar, file: {site}}}\n"
                      f"maintenance: {{file: {file}, alertmanager: '{manager.url}', "
                      "ahead: 24h, every: 1s}\n")
    friday = datetime.combine(saturday - timedelta(days=1), time(12), SHANGHAI)
    process = subprocess.Popen([INSMON, "run", "-c", str(config), "--audit",
                                str(tmp_path / "audit")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=moved(friday))
    try:
        wait_for(lambda: any(f"batch {saturday}T01:00" in s["comment"]
                             for s in ours(manager)), 30,
                 f"the window of the make-up Saturday {saturday}")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_broken_calendar_file_holds_back_only_the_windows_that_need_it(
        manager: Alertmanager, tmp_path: Path) -> None:
    """A typo in the site's calendar file takes neither the platform's weekly window nor
    any window of a day or weekday with it: those are made; those of working days or
    days off are not, and the round fails saying why (insmon run logs it)."""
    from probes.base import ProbeFailure

    now = datetime.now(SHANGHAI).replace(microsecond=0)
    file = tmp_path / "maintenance.yaml"
    for name, every in (("daily", "day"), ("batch", "workday"), ("weekend", "offday")):
        maintenance.add_recurring(file, maintenance.Recurring.model_validate(
            {"name": name, "site": "h1", "every": every,
             "from": f"{now + timedelta(hours=1):%H:%M}",
             "to": f"{now + timedelta(hours=2):%H:%M}", "comment": "x", "declared_by": "ops"}))
    site = tmp_path / "calendar.yaml"
    site.write_text("holidays: [the 1st of October]\nknown_until: 2027-12-31\n")
    with pytest.raises(ProbeFailure, match=rf"calendar file {site}: holidays\[0\]: .*: the "
                       "windows of working days or days off are not made"):
        realise_windows(file, manager.url, Trail(tmp_path / "audit"), 3 * 3600.0, site, now)
    assert [maintenance.TAG.search(s["comment"]).group(1) for s in ours(manager)] == ["daily"]


def test_an_occurrence_ended_early_is_not_made_again(manager: Alertmanager,
                                                     tmp_path: Path) -> None:
    now = datetime.now(SHANGHAI).replace(microsecond=0)
    file = tmp_path / "maintenance.yaml"
    maintenance.add_recurring(file, maintenance.Recurring.model_validate(
        {"name": "now", "site": "h1", "every": "day",
         "from": f"{now - timedelta(minutes=30):%H:%M}",
         "to": f"{now + timedelta(minutes=30):%H:%M}", "comment": "x", "declared_by": "ops"}))
    trail = Trail(tmp_path / "audit")
    [(_, _, silence)] = realise_windows(file, manager.url, trail, 3600.0, None, now)
    assert insmon("end", silence, "--alertmanager", manager.url, "--audit",
                  str(tmp_path / "audit")).returncode == 0
    assert realise_windows(file, manager.url, trail, 3600.0, None, now) == []


@pytest.mark.dates
def test_a_windows_file_it_cannot_add_to_is_left_as_it_was(tmp_path: Path) -> None:
    file = tmp_path / "maintenance.yaml"
    for text in ("windows: []\n", "windows: [{name: a, site: h1, every: day, from: '01:00', "
                                  "to: '02:00', comment: x, declared_by: y}]"):
        file.write_text(text)
        done = insmon("--every", "sunday", "--name", "b", "--site", "h1", "--from", "02:00",
                      "--to", "04:00", "--comment", "c", "--file", str(file), "--audit",
                      str(tmp_path / "audit"))
        assert done.returncode == 1 and "add the window by hand" in done.stderr, done.stderr
        assert file.read_text() == text
    file.write_text("windows:\n  - {name: a, site: h1, every: day, from: '01:00', "
                    "to: '02:00', comment: x, declared_by: y}")  # no newline at its end
    done = insmon("--every", "sunday", "--name", "b", "--site", "h1", "--from", "02:00",
                  "--to", "04:00", "--comment", "c", "--file", str(file), "--audit",
                  str(tmp_path / "audit"))
    assert done.returncode == 0, done.stderr
    assert [w.name for w in maintenance.load_recurring(file)] == ["a", "b"]


@pytest.mark.dates
def test_a_recurring_window_of_no_length_is_refused(tmp_path: Path) -> None:
    done = insmon("--every", "day", "--name", "x", "--site", "h1", "--from", "03:00",
                  "--to", "03:00", "--comment", "c", "--file", str(tmp_path / "m.yaml"),
                  "--audit", str(tmp_path / "audit"))
    assert done.returncode == 1 and "from and to are both 03:00" in done.stderr
    assert not (tmp_path / "m.yaml").exists()


def test_windows_on_days_past_the_calendar_data_are_said_to_be_provisional(
        manager: Alertmanager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    """The working days past the data come from the law's rules alone: the command that
    declares such a window warns and names the file to fill, and each silence made on
    such a day is logged and recorded as provisional; a window of weekdays is not."""
    from monitor import cli
    from probes import calendar

    today = datetime.now(SHANGHAI).date()
    holidays, workdays, _ = calendar.package_dates()
    monkeypatch.setattr(calendar, "package_dates", lambda: (
        holidays, workdays, today - timedelta(days=1)))  # the data ended yesterday
    file, audit = tmp_path / "maintenance.yaml", tmp_path / "audit"
    common = ["--file", str(file), "--audit", str(audit), "--site", "h1", "--from", "01:00",
              "--to", "01:30", "--comment", "c", "--alertmanager", manager.url]
    assert cli.main(["maintenance", "--every", "day", "--name", "daily", *common]) == 0
    assert "provisional" not in capsys.readouterr().err
    assert cli.main(["maintenance", "--every", "workday", "--name", "batch", *common]) == 0
    warned = capsys.readouterr().err
    assert warned.startswith(f"insmon maintenance: warning: days from {today} are "
                             "provisional: the calendar data (chinesecalendar ")
    assert f"add the State Council's dates to {calendar.SITE_FILE} (holidays, workdays, " \
           "known_until)" in warned and "--calendar" in warned

    now = datetime.now(SHANGHAI)
    with caplog.at_level("WARNING", logger="insmon"):  # as insmon run: with the trail's key
        made = realise_windows(file, manager.url, Trail.open(audit), 8 * 86400.0, None, now)
    assert {w.name for w, _, _ in made} == {"daily", "batch"}
    records = [r["detail"] for r in Trail.open(audit).records()
               if r["event"] == "maintenance-scheduled"]
    assert records and all(r.get("provisional") is (True if r["window"] == "batch" else None)
                           for r in records)
    batch = [r for r in records if r["window"] == "batch"]
    logged = [r.getMessage() for r in caplog.records if "provisional" in r.getMessage()]
    assert len(logged) == len(batch) and all(
        m.startswith("recurring window batch: the silence from ") for m in logged)

    # a site file carrying the calendar 60 days on: nothing provisional to say
    site = calendar_file(tmp_path / "calendar.yaml", today + timedelta(days=60))
    assert cli.main(["maintenance", "--every", "offday", "--name", "weekend", *common,
                     "--calendar", str(site)]) == 0
    assert "provisional" not in capsys.readouterr().err
