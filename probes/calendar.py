"""The Chinese working calendar: is today (Asia/Shanghai) a working day?

Peak hours are working-day mornings and afternoons, and the State Council moves working
days each year: statutory holidays (法定节假日) fall on weekdays, and make-up working
days (调休) on weekends. The alert rules read `insmon_calendar_workday` for their peak
hours. The dates come from the `chinesecalendar` package (updated on PyPI when the
schedule is published, each November or December), and from an optional `file` a site
updates itself:

    holidays: [2027-01-01, 2027-02-05]     # days off, whatever the weekday
    workdays: [2027-02-14]                 # make-up working days
    known_until: 2027-12-31                # the last day these lists cover

The check fails when today is not covered by any data (the weekday is then all it
knows), and `insmon_calendar_known_until_timestamp_seconds` lets an alert warn before
the data runs out.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from probes.base import (
    MIN_INTERVAL,
    SHANGHAI,
    CheckBase,
    Duration,
    Kind,
    MetricSpec,
    ProbeFailure,
    ProbeResult,
    Sample,
)


class Config(CheckBase):
    kind: Literal["calendar"]
    interval: Duration = Field(default=60.0, ge=MIN_INTERVAL)  # the day changes slowly
    file: Path | None = None  # the site's own dates, over the package's


class SiteDates(BaseModel):
    model_config = ConfigDict(extra="forbid")
    holidays: list[datetime.date] = Field(default_factory=list, max_length=1000)
    workdays: list[datetime.date] = Field(default_factory=list, max_length=1000)
    known_until: datetime.date


METRICS = (
    MetricSpec("insmon_calendar_workday", "gauge",
               "1 if today (Asia/Shanghai) is a working day: a weekday that is no statutory "
               "holiday, or a make-up working day."),
    MetricSpec("insmon_calendar_holiday", "gauge",
               "1 if today (Asia/Shanghai) is a statutory holiday (法定节假日)."),
    MetricSpec("insmon_calendar_known_until_timestamp_seconds", "gauge",
               "End of the last day the calendar data covers (Unix time): past it, only "
               "the weekday is known.", unit="seconds"),
)


def package_dates() -> tuple[set[datetime.date], set[datetime.date], datetime.date]:
    """(holidays, make-up working days, last day covered) from `chinesecalendar`."""
    import chinese_calendar

    holidays = set(chinese_calendar.holidays)
    workdays = set(chinese_calendar.workdays)
    last_year = max(day.year for day in holidays | workdays)
    return holidays, workdays, datetime.date(last_year, 12, 31)


def site_dates(path: Path) -> SiteDates:
    try:
        return SiteDates.model_validate(yaml.safe_load(path.read_text("utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ProbeFailure(f"cannot read the calendar file {path}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top)"
        raise ProbeFailure(f"calendar file {path}: {where}: {first['msg']}") from None


class WorkingCalendar:
    """The package's dates with the site's file over them (read again on each use: a
    small file the site edits when next year's schedule is published)."""

    def __init__(self, file: Path | None = None) -> None:
        self.file = file
        self._package = package_dates()

    def dates(self) -> tuple[set[datetime.date], set[datetime.date], datetime.date]:
        holidays, workdays, known_until = self._package
        if self.file is not None:
            site = site_dates(self.file)
            holidays = (holidays - set(site.workdays)) | set(site.holidays)
            workdays = (workdays - set(site.holidays)) | set(site.workdays)
            known_until = max(known_until, site.known_until)
        return holidays, workdays, known_until

    def is_workday(self, day: datetime.date) -> bool:
        holidays, workdays, _ = self.dates()
        return day in workdays or (day.weekday() < 5 and day not in holidays)


def local_today() -> datetime.date:
    return datetime.datetime.now(SHANGHAI).date()


class Probe:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.calendar = WorkingCalendar(cfg.file)

    async def run(self) -> ProbeResult:
        # the file: small, on the config's disk, read each run
        holidays, workdays, known_until = self.calendar.dates()
        today = local_today()
        holiday = today in holidays
        workday = today in workdays or (today.weekday() < 5 and not holiday)
        end = datetime.datetime.combine(known_until + datetime.timedelta(days=1),
                                        datetime.time(), SHANGHAI).timestamp()
        samples = (Sample("insmon_calendar_workday", float(workday)),
                   Sample("insmon_calendar_holiday", float(holiday)),
                   Sample("insmon_calendar_known_until_timestamp_seconds", end))
        kind = ("statutory holiday" if holiday else "make-up working day"
                if today in workdays else "working day" if workday else "weekend")
        detail = f"{today.isoformat()}: {kind}; dates known until {known_until.isoformat()}"
        if today > known_until:
            return ProbeResult("failed", samples, f"{detail}: no holiday data for "
                               f"{today.year}, only the weekday is known (update the "
                               "chinesecalendar package, or add the dates to the file)")
        days_left = (end - time.time()) / 86400
        if days_left < 45:
            detail += f" ({days_left:.0f} days left: next year's dates are due)"
        return ProbeResult("ok", samples, detail)


KIND = Kind(Config, METRICS, Probe)
