"""The Chinese working calendar: a known statutory holiday on a weekday, a known make-up
working day on a weekend, a plain weekend, a site's own dates; past the data, days
computed from the law's fixed rules and called provisional everywhere they are used; the
site's file checked by `insmon validate`."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import pytest
import yaml

from probes import calendar
from tests.conftest import INSMON, ROOT, calendar_file, render, value

pytestmark = pytest.mark.dates
TODAY = datetime.datetime.now(calendar.SHANGHAI).date()  # the test's own clock


def on(monkeypatch: pytest.MonkeyPatch, day: str | datetime.date) -> None:
    day = day if isinstance(day, datetime.date) else datetime.date.fromisoformat(day)
    monkeypatch.setattr(calendar, "local_today", lambda: day)


def package_ends(monkeypatch: pytest.MonkeyPatch, last: datetime.date) -> None:
    """The package's data as if it ended on `last` (its dates up to then kept)."""
    holidays, workdays, _ = calendar.package_dates()
    monkeypatch.setattr(calendar, "package_dates", lambda: (
        frozenset(d for d in holidays if d <= last), frozenset(d for d in workdays if d <= last),
        last))


@pytest.mark.parametrize(("day", "workday", "holiday", "kind"), [
    ("2026-10-01", 0, 1, "statutory holiday"),     # National Day, a Thursday
    ("2026-01-04", 1, 0, "make-up working day"),   # a Sunday worked for New Year
    ("2026-11-21", 0, 0, "weekend"),               # a plain Saturday
    ("2026-11-23", 1, 0, "working day"),           # a plain Monday
])
async def test_the_day_type(monkeypatch: pytest.MonkeyPatch, day: str, workday: int,
                            holiday: int, kind: str) -> None:
    on(monkeypatch, day)
    status, series = await render(calendar.Config(name="cal", kind="calendar"),
                                  "insmon_calendar_")
    assert status.startswith(f"# ok: {day}: {kind}; dates known until ")
    assert "provisional" not in status
    assert value(series, 'insmon_calendar_workday{check="cal"}') == workday
    assert value(series, 'insmon_calendar_holiday{check="cal"}') == holiday


async def test_a_day_past_the_data_is_provisional_and_the_check_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, known_until = calendar.package_dates()
    year = known_until.year + 1
    config = calendar.Config(name="cal", kind="calendar")
    on(monkeypatch, f"{year}-01-01")
    status, series = await render(config, "insmon_calendar_")
    assert status.startswith(f"# failed: {year}-01-01: statutory holiday 元旦 New Year's "
                             f"Day (provisional); dates known until {known_until}: days "
                             f"from {year}-01-01 are provisional")
    assert "make-up working days (调休) and days off in lieu are unknown" in status
    assert f"add the State Council's dates to {calendar.SITE_FILE}" in status
    assert value(series, 'insmon_calendar_holiday{check="cal"}') == 1
    assert value(series, 'insmon_calendar_workday{check="cal"}') == 0

    # the first weekday of the year that the law leaves working: a working day, but
    # only provisionally (a make-up Saturday before it would be unknown)
    first = next(d for d in (datetime.date(year, 1, 2) + datetime.timedelta(days=i)
                             for i in range(7))
                 if d.weekday() < 5 and d not in calendar.statutory_holidays(year))
    on(monkeypatch, first)
    status, series = await render(config, "insmon_calendar_")
    assert status.startswith(f"# failed: {first}: working day (provisional); ")
    assert value(series, 'insmon_calendar_workday{check="cal"}') == 1


def test_the_laws_days_are_days_off_in_every_announced_year() -> None:
    """The lunar calendar and solar terms (borax) against the State Council's schedules
    the package holds: every day the law fixes was a day off, since the 2008 revision
    (Qingming, Dragon Boat, Mid-Autumn); the eve and 2 May since the 2024 one (2025)."""
    holidays, workdays, known_until = calendar.package_dates()

    def off(day: datetime.date) -> bool:
        return day in holidays or (day.weekday() >= 5 and day not in workdays)

    checked = 0
    for year in range(2008, known_until.year + 1):
        for day, name in calendar.statutory_holidays(year).items():
            if year < 2025 and ("除夕" in name or (day.month, day.day) == (5, 2)):
                continue
            assert off(day), f"{day} ({name}) was a working day in {year}"
            checked += 1
    assert checked > 19 * 10


@pytest.mark.parametrize(("year", "spring", "qingming", "dragon_boat", "mid_autumn"), [
    (2027, "2027-02-06", "2027-04-05", "2027-06-09", "2027-09-15"),
    (2028, "2028-01-26", "2028-04-04", "2028-05-28", "2028-10-03"),  # on National Day
    (2030, "2030-02-03", "2030-04-05", "2030-06-05", "2030-09-12"),
])
def test_the_laws_days_of_years_not_announced_yet(year: int, spring: str, qingming: str,
                                                 dragon_boat: str, mid_autumn: str) -> None:
    days = {str(d): name for d, name in calendar.statutory_holidays(year).items()}
    first = datetime.date.fromisoformat(spring)
    assert [days.get(str(first + datetime.timedelta(days=i)), "")[:2]
            for i in range(-1, 4)] == ["除夕", "春节", "春节", "春节", ""]
    assert days[qingming] == "清明节 Qingming"
    assert days[dragon_boat] == "端午节 Dragon Boat Festival"
    assert days[mid_autumn].startswith("中秋节 Mid-Autumn Festival")
    for fixed in ("01-01", "05-01", "05-02", "10-01", "10-02", "10-03"):
        assert f"{year}-{fixed}" in days
    assert len(days) == (12 if year == 2028 else 13)  # 2028: Mid-Autumn on 3 October


async def test_a_sites_own_dates_extend_and_override(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    _, _, known_until = calendar.package_dates()
    next_year = known_until.year + 1
    dates = calendar_file(tmp_path / "calendar.yaml", datetime.date(next_year, 12, 31),
                          workdays=[datetime.date(2026, 11, 21)])
    config = calendar.Config(name="cal", kind="calendar", file=dates)
    on(monkeypatch, f"{next_year}-01-01")
    status, series = await render(config, "insmon_calendar_")
    assert status.startswith(f"# ok: {next_year}-01-01: statutory holiday; dates known until "
                             f"{next_year}-12-31")
    on(monkeypatch, "2026-11-21")  # a Saturday the site works
    status, series = await render(config, "insmon_calendar_")
    assert value(series, 'insmon_calendar_workday{check="cal"}') == 1

    dates.write_text("holidays: [not-a-date]\nknown_until: 2027-12-31\n")
    status, _ = await render(config, "insmon_calendar_")
    assert status.startswith(f"# failed: calendar file {dates}: holidays[0]: ")


async def test_a_site_file_that_cannot_be_right_fails_the_check_saying_where(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    on(monkeypatch, TODAY)
    dates = tmp_path / "calendar.yaml"
    dates.write_text("holidays: [2027-10-01]\nworkdays: [2027-09-26, 2072-10-09]\n"
                     "known_until: 2027-12-31\n")
    status, series = await render(calendar.Config(name="cal", kind="calendar", file=dates),
                                  "insmon_calendar_")
    assert status.startswith(
        f"# failed: calendar file {dates}: workdays[1]: 2072-10-09 is after known_until "
        "(2027-12-31): the file knows the days only until then (a typo in the year, or "
        f"known_until to move on); meanwhile the chinesecalendar package's dates only: "
        f"{TODAY}: "), status
    assert value(series, 'insmon_calendar_workday{check="cal"}') == \
        calendar.WorkingCalendar().is_workday(TODAY)


def test_validate_names_every_fault_of_the_calendar_file_with_its_line(
        tmp_path: Path) -> None:
    dates = tmp_path / "calendar.yaml"
    law = "".join(f"  - {day}\n" for day in calendar.statutory_holidays(2027)
                  if str(day) != "2027-10-01")  # the law's days off, as a site lists them
    line = 5 + law.count("\n")  # of workdays
    dates.write_text(f"# 2027\nholidays:\n  - 2027-10-01\n  - 2072-10-02\n{law}"
                     "workdays: [2027-10-01, 2027-10-08, 2027-09-26]\nknown_until: 2027-12-31\n")
    config = tmp_path / "insmon.yaml"
    config.write_text(f"checks:\n- {{name: cal, kind: calendar, file: {dates}}}\n")
    for args in ([dates], [config]):  # the file itself, or the config that names it
        done = subprocess.run([INSMON, "validate", *map(str, args)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 1, done.stdout
        assert done.stderr.splitlines() == [
            f"{dates}:4: holidays[1]: 2072-10-02 is after known_until (2027-12-31): the file "
            "knows the days only until then (a typo in the year, or known_until to move on)",
            f"{dates}:{line}: workdays[0]: 2027-10-01 is also in holidays: a day is one or "
            "the other",
            f"{dates}:{line}: workdays[1]: 2027-10-08 is a Friday: a make-up working day (调休) "
            "is a Saturday or Sunday worked"], done.stderr
    dates.write_text(f"holidays:\n  - 2027-10-01\n{law}workdays: [2027-09-26]\n"
                     "known_until: 2027-12-31\n")
    done = subprocess.run([INSMON, "validate", str(dates)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"{dates}: ok, calendar dates known until 2027-12-31: 13 holidays, "
                           "1 make-up working days\n")


async def test_a_site_file_that_works_the_laws_days_off_is_refused(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """known_until makes every day up to it known: a year past the package's data whose
    statutory holidays are not in the file would be called working days, not
    provisional (New Year's Day a working day, as the issue found). validate and the
    check refuse it, as they refuse one of the law's days among the make-up days."""
    _, _, end = calendar.package_dates()
    year = end.year + 1
    law = calendar.statutory_holidays(year)
    weekdays = [day for day in law if day.weekday() < 5]
    dates = tmp_path / "calendar.yaml"
    config = calendar.Config(name="cal", kind="calendar", file=dates)
    on(monkeypatch, f"{year}-01-01")
    for text in (f"known_until: {year}-12-31\n",  # the doctor's FAIL silenced, no dates
                 f"holidays: [{', '.join(map(str, weekdays[1:]))}]\n"
                 f"known_until: {year}-12-31\n"):
        dates.write_text(text)
        done = subprocess.run([INSMON, "validate", str(dates)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 1, done.stdout
        assert f"{dates}:" in done.stderr and f"the law's days off {weekdays[0]} " \
            f"({law[weekdays[0]]})" in done.stderr, done.stderr
        status, series = await render(config, "insmon_calendar_")
        assert status.startswith(f"# failed: calendar file {dates}: known_until: "), status
        # the day from the package and the law's rules, as insmon's own series take it
        assert f"{year}-01-01: statutory holiday 元旦 New Year's Day (provisional)" in status
        assert value(series, 'insmon_calendar_holiday{check="cal"}') == 1
        assert value(series, 'insmon_calendar_workday{check="cal"}') == 0
    # every day the law gives off, listed: the file is right
    dates.write_text(f"holidays: [{', '.join(map(str, law))}]\nknown_until: {year}-12-31\n")
    status, series = await render(config, "insmon_calendar_")
    assert status.startswith(f"# ok: {year}-01-01: statutory holiday; "), status
    assert value(series, 'insmon_calendar_workday{check="cal"}') == 0

    # one of the law's days among the make-up working days (a Saturday or Sunday)
    weekend = next(day for y in range(year, year + 10)
                   for day in calendar.statutory_holidays(y) if day.weekday() >= 5)
    off = [day for y in range(year, weekend.year + 1) for day in calendar.statutory_holidays(y)
           if day != weekend]
    dates.write_text(f"holidays: [{', '.join(map(str, off))}]\nworkdays: [{weekend}]\n"
                     f"known_until: {weekend.year}-12-31\n")
    done = subprocess.run([INSMON, "validate", str(dates)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert f"workdays[0]: {weekend} is {calendar.statutory_holidays(weekend.year)[weekend]}" \
        ", a day off by law" in done.stderr, done.stderr

    # "known until forever": a known_until no list of dates can reach
    dates.write_text("known_until: 9999-12-31\n")
    done = subprocess.run([INSMON, "validate", str(dates)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "more are not in holidays" in done.stderr, done.stderr
    assert len(done.stderr) < 2000, done.stderr  # the first days said, the rest counted


async def test_a_day_no_calendar_has_is_named_with_its_line(tmp_path: Path) -> None:
    """29 February of a common year, a 13th month: YAML takes them for dates and Python
    refuses them (ValueError, not a YAML error): validate and the check name them, with
    no traceback, and the check keeps its series (the package's day)."""
    dates = tmp_path / "calendar.yaml"
    config = tmp_path / "insmon.yaml"
    config.write_text(f"checks:\n- {{name: cal, kind: calendar, file: {dates}}}\n")
    for day, why in (("2027-02-29", "day is out of range for month"),
                     ("2027-13-01", "month must be in 1..12")):
        dates.write_text(f"# 2027\nholidays: [2027-01-01, {day}]\nknown_until: 2027-12-31\n")
        for path in (dates, config):
            done = subprocess.run([INSMON, "validate", str(path)], capture_output=True,
                                  text=True, timeout=60)
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
            assert f"{dates}:2:" in done.stderr and f"{day} is no date ({why})" in \
                done.stderr, done.stderr
        status, series = await render(calendar.Config(name="cal", kind="calendar",
                                                      file=dates), "insmon_calendar_")
        assert status.startswith(f"# failed: calendar file {dates}:2: {day} is no date "
                                 f"({why}); meanwhile the chinesecalendar package's dates "
                                 "only: "), status
        assert 'insmon_calendar_workday{check="cal"}' in series


async def test_a_key_given_twice_fails_the_check_as_validate_refuses_it(
        tmp_path: Path) -> None:
    """PyYAML keeps the last of two keys: a second `holidays:` block (next year's, added
    below this year's) would silently drop the first, or a second known_until win."""
    dates = tmp_path / "calendar.yaml"
    dates.write_text("holidays: [2026-10-01]\nknown_until: 2026-12-31\n"
                     "known_until: 2099-12-31\n")
    done = subprocess.run([INSMON, "validate", str(dates)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "'known_until' is given twice" in done.stderr
    status, _ = await render(calendar.Config(name="cal", kind="calendar", file=dates),
                             "insmon_calendar_")
    assert status.startswith(f"# failed: calendar file {dates}:3: key 'known_until' is "
                             "given twice"), status


def test_the_example_holds_the_laws_days_and_wants_known_until(tmp_path: Path) -> None:
    example = ROOT / "examples" / "calendar.yaml"
    data = yaml.safe_load(example.read_text())
    assert set(data["holidays"]) == set(calendar.statutory_holidays(2027))
    done = subprocess.run([INSMON, "validate", str(example)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "known_until: required key is missing" in done.stderr
    filled = tmp_path / "calendar.yaml"  # as a site fills it in: known_until set
    filled.write_text(example.read_text().replace("# known_until:", "known_until:"))
    done = subprocess.run([INSMON, "validate", str(filled)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_one_site_calendar_file_per_config(tmp_path: Path) -> None:
    from monitor.config import ConfigError, load

    config = tmp_path / "insmon.yaml"
    config.write_text("checks:\n- {name: cal, kind: calendar, file: /etc/insmon/calendar.yaml}\n"
                      "maintenance: {calendar: /etc/insmon/holidays.yaml}\n")
    with pytest.raises(ConfigError) as error:
        load(config)
    assert "two calendar files, /etc/insmon/calendar.yaml and /etc/insmon/holidays.yaml: " \
        "the site keeps one" in str(error.value)
    config.write_text("checks:\n- {name: cal, kind: calendar, file: /etc/insmon/calendar.yaml}\n"
                      "maintenance: {calendar: /etc/insmon/calendar.yaml}\n")
    assert load(config).config.calendar_file == Path("/etc/insmon/calendar.yaml")


def test_insmon_says_until_when_its_calendar_is_known_without_a_calendar_check(
        tmp_path: Path) -> None:
    """The recurring windows and the alert rules depend on the data too: insmon's own
    series, whatever its checks, and a reload with the site's file follows at once."""
    import signal

    from tests.conftest import wait_for
    from tests.test_cli import Running

    _, _, end = calendar.package_dates()
    before = datetime.datetime.now(calendar.SHANGHAI).date()
    site = calendar_file(tmp_path / "calendar.yaml", TODAY + datetime.timedelta(days=400))
    config = tmp_path / "insmon.yaml"
    config.write_text("checks:\n- {name: cpu, kind: cpu, interval: 1s}\n")
    monitor = Running("-c", str(config), "--audit", str(tmp_path / "audit"))
    try:
        wait_for(lambda: monitor.value("insmon_calendar_known_until_timestamp_seconds"), 30,
                 "insmon's calendar series")
        assert monitor.value("insmon_calendar_known_until_timestamp_seconds") == \
            datetime.datetime.combine(end + datetime.timedelta(days=1), datetime.time(),
                                      calendar.SHANGHAI).timestamp()
        after = datetime.datetime.now(calendar.SHANGHAI).date()  # the day may turn
        assert monitor.value("insmon_calendar_provisional") in {float(end < before),
                                                                float(end < after)}
        config.write_text(config.read_text() + f"maintenance: {{calendar: {site}}}\n")
        monitor.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: monitor.value("insmon_calendar_known_until_timestamp_seconds") == (
            datetime.datetime.combine(TODAY + datetime.timedelta(days=401), datetime.time(),
                                      calendar.SHANGHAI).timestamp()), 30,
            "the site's file to carry the calendar on")
        assert monitor.value("insmon_calendar_provisional") == 0
    finally:
        code, log = monitor.stop()
    assert code == 0, log
    assert ("days from" in log and "are provisional" in log) in {end < before, end < after}, log


def test_the_doctor_says_how_long_the_data_lasts(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    from monitor.doctor import _calendar

    package_ends(monkeypatch, TODAY + datetime.timedelta(days=100))
    line = _calendar(None, TODAY)
    assert (line.status, line.what) == ("OK", "working calendar: dates known until "
                                        f"{TODAY + datetime.timedelta(days=100)} (chinesecalendar "
                                        f"{calendar._version()}): 101 days left")
    package_ends(monkeypatch, TODAY + datetime.timedelta(days=9))
    line = _calendar(None, TODAY)
    assert line.status == "FAIL" and line.what.endswith(": 10 days left")
    assert line.todo.startswith(f"add the State Council's dates to {calendar.SITE_FILE}")
    site = calendar_file(tmp_path / "calendar.yaml", TODAY + datetime.timedelta(days=400))
    assert _calendar(site, TODAY).status == "OK"  # the site's file carries it on
    package_ends(monkeypatch, TODAY - datetime.timedelta(days=1))
    line = _calendar(None, TODAY)
    assert line.status == "FAIL" and "today is past it, the days are provisional" in line.what


def test_the_doctors_mend_names_the_file_where_no_check_does(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    """install.sh's hospital.yaml names no calendar file: dates written where the doctor
    says are read only once the calendar check names the file, so its mend says that
    too; followed, the line is OK."""
    from monitor.config import load
    from monitor.doctor import _calendar
    from tests.debian_root import site_configs

    hospital = site_configs(tmp_path / "etc") / "hospital.yaml"
    package_ends(monkeypatch, TODAY + datetime.timedelta(days=9))
    line = _calendar(load(hospital).config.calendar_file, TODAY, config=hospital)
    assert line.status == "FAIL"
    assert line.todo == (f"add the State Council's dates to {calendar.SITE_FILE} (holidays, "
                         f"workdays, known_until) and name it in the calendar check of "
                         f"{hospital} (file: {calendar.SITE_FILE}), then insmon validate "
                         f"{hospital} && systemctl reload insmon; or upgrade the "
                         "chinesecalendar package"), line.todo
    site = calendar_file(tmp_path / "etc" / "calendar.yaml",  # as /etc/insmon/calendar.yaml
                         TODAY + datetime.timedelta(days=400))
    assert _calendar(load(hospital).config.calendar_file, TODAY,
                     config=hospital).status == "FAIL"  # written, and read by nothing
    hospital.write_text(hospital.read_text().replace(
        "    kind: calendar\n", f"    kind: calendar\n    file: {site}\n", 1))
    assert _calendar(load(hospital).config.calendar_file, TODAY,
                     config=hospital).status == "OK"


def test_its_interval_is_a_duration_like_every_other_kind() -> None:
    check = calendar.Config(name="cal", kind="calendar", interval="90s")
    assert check.interval == 90
    with pytest.raises(ValueError, match="less than or equal to 86400"):
        calendar.Config(name="cal", kind="calendar", interval="25h")
