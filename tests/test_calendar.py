"""The Chinese working calendar: a known statutory holiday on a weekday, a known make-up
working day on a weekend, a plain weekend, a site's own dates, and a year with no data."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from probes import calendar
from tests.conftest import render, value


def on(monkeypatch: pytest.MonkeyPatch, day: str) -> None:
    monkeypatch.setattr(calendar, "local_today", lambda: datetime.date.fromisoformat(day))


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
    assert value(series, 'insmon_calendar_workday{check="cal"}') == workday
    assert value(series, 'insmon_calendar_holiday{check="cal"}') == holiday


async def test_a_year_without_data_fails_and_says_what_to_do(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, known_until = calendar.package_dates()
    day = known_until + datetime.timedelta(days=400)
    on(monkeypatch, day.isoformat())
    status, series = await render(calendar.Config(name="cal", kind="calendar"),
                                  "insmon_calendar_")
    assert status.startswith(f"# failed: {day.isoformat()}: ")
    assert f"no holiday data for {day.year}, only the weekday is known" in status
    end = datetime.datetime.combine(known_until + datetime.timedelta(days=1),
                                    datetime.time(), calendar.SHANGHAI).timestamp()
    assert value(series, 'insmon_calendar_known_until_timestamp_seconds{check="cal"}') == end


async def test_a_sites_own_dates_extend_and_override(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    _, _, known_until = calendar.package_dates()
    next_year = known_until.year + 1
    dates = tmp_path / "calendar.yaml"
    dates.write_text(f"holidays: [{next_year}-01-01]\nworkdays: [2026-11-21]\n"
                     f"known_until: {next_year}-12-31\n")
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
    assert status.startswith(f"# failed: calendar file {dates}: holidays.0: ")


def test_its_interval_is_a_duration_like_every_other_kind() -> None:
    check = calendar.Config(name="cal", kind="calendar", interval="90s")
    assert check.interval == 90
    with pytest.raises(ValueError, match="less than or equal to 86400"):
        calendar.Config(name="cal", kind="calendar", interval="25h")
