"""The Chinese working calendar: is today (Asia/Shanghai) a working day?

Peak hours are working-day mornings and afternoons, and the State Council moves working
days each year: statutory holidays (法定节假日) fall on weekdays, and make-up working
days (调休) on weekends. The alert rules read `insmon_calendar_workday` for their peak
hours, and the recurring maintenance windows (`every: workday|offday`) this module's
`WorkingCalendar`. The dates come from the `chinesecalendar` package (updated on PyPI
when the schedule is published, each November or December), and from the site's own
file (examples/calendar.yaml), which it updates itself:

    holidays: [2027-01-01, 2027-02-05]     # days off, whatever the weekday
    workdays: [2027-02-14]                 # make-up working days
    known_until: 2027-12-31                # the last day these lists cover

Past the last day the data covers, a day is **provisional**: its statutory holidays come
from the fixed rules of the law (全国年节及纪念日放假办法, as revised in 2024), its
make-up working days are unknown until announced, and every output built on it says so.
`insmon_calendar_known_until_timestamp_seconds` and `insmon_calendar_provisional` (insmon's
own series, whatever its checks) let an alert warn before the data runs out.
"""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from probes.base import MIN_INTERVAL, CheckBase, Kind, MetricSpec, ProbeFailure, ProbeResult, Sample
from vocabulary import SHANGHAI, Duration

# Where the site keeps its own dates (the examples and the messages name it).
SITE_FILE = Path("/etc/insmon/calendar.yaml")
WARN_DAYS = 45  # CalendarDataEnding's lead: next year's schedule is due


class Config(CheckBase):
    kind: Literal["calendar"]
    interval: Duration = Field(default=60.0, ge=MIN_INTERVAL)  # the day changes slowly
    file: Path | None = None  # the site's own dates, over the package's


class SiteDates(BaseModel):
    """The site's file: one announced schedule (or several), up to `known_until`."""
    model_config = ConfigDict(extra="forbid")
    holidays: list[datetime.date] = Field(default_factory=list, max_length=1000)
    workdays: list[datetime.date] = Field(default_factory=list, max_length=1000)
    known_until: datetime.date

    def faults(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(where, what) of each date that cannot be right: after known_until, both a
        holiday and a make-up working day, a make-up working day on a weekday, or a day
        off by law made a working day (see _law_days_worked)."""
        found: list = []
        for key in ("holidays", "workdays"):
            for i, day in enumerate(getattr(self, key)):
                if day > self.known_until:
                    found.append(((key, i), f"{day} is after known_until ({self.known_until}):"
                                  " the file knows the days only until then (a typo in the "
                                  "year, or known_until to move on)"))
                elif key == "workdays" and day in self.holidays:
                    found.append(((key, i), f"{day} is also in holidays: a day is one or "
                                  "the other"))
                elif key == "workdays" and day.weekday() < 5:
                    found.append(((key, i), f"{day} is a {day:%A}: a make-up working day "
                                  "(调休) is a Saturday or Sunday worked"))
        return found + self._law_days_worked()

    def _law_days_worked(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Every day up to known_until is known, so a statutory holiday past the
        package's data that the file leaves out would be a working day, not a
        provisional one (a bare known_until: New Year's Day worked). The law's days
        (as revised in 2024, in force from 2025) are days off whatever the notice adds."""
        _, _, package_end = package_dates()
        workdays = {day: i for i, day in enumerate(self.workdays)  # the others: faults()
                    if day.weekday() >= 5 and day not in self.holidays
                    and day <= self.known_until}
        first = min([package_end.year, *(day.year for day in workdays)])
        found: list = []
        missing = []
        for year in range(max(first, LAW_SINCE), self.known_until.year + 1):
            for day, name in statutory_holidays(year).items():
                if day in workdays:
                    found.append((("workdays", workdays[day]),
                                  f"{day} is {name}, a day off by law: no make-up working day"))
                elif (package_end < day <= self.known_until and day.weekday() < 5
                      and day not in self.holidays):
                    missing.append(f"{day} ({name})")
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            found.append((("known_until",), f"{self.known_until}, but the law's days off "
                          f"{', '.join(missing[:3])}{more} are not in holidays: list every "
                          "day off of the State Council's notice, or known_until at the "
                          "last day the lists cover"))
        return found


METRICS = (
    MetricSpec("insmon_calendar_workday", "gauge",
               "1 if today (Asia/Shanghai) is a working day: a weekday that is no statutory "
               "holiday, or a make-up working day (provisional past the calendar data: "
               "insmon_calendar_provisional)."),
    MetricSpec("insmon_calendar_holiday", "gauge",
               "1 if today (Asia/Shanghai) is a statutory holiday (法定节假日)."),
)


# ------------------------------------------------------------------ the law's rules

# The lunar calendar and the solar terms come from `borax` (borax.calendars): a pure-
# Python wheel with no dependencies (the offline bundle takes binary wheels only, which
# rules out lunar-python and tyme4py, published as sources, and sxtwl, which has no
# aarch64 wheel), maintained, with the lunar months and the 24 solar terms of 1900-2100
# in tables. Its dates agree with the chinesecalendar package's holidays of 2008-2026
# (tests/test_calendar.py), and, checked once against an ephemeris (PyEphem), Qingming
# 2004-2100 and the lunar new years to 2100.
LUNAR_YEARS = range(1901, 2101)
LAW_SINCE = 2025  # the eve and 2 May are the law's days from the 2024 revision on


@functools.lru_cache(maxsize=32)
def statutory_holidays(year: int) -> dict[datetime.date, str]:
    """The days off for everybody that the law fixes (全国年节及纪念日放假办法, art. 2, as
    revised in 2024 and in force from 2025): New Year's Day; the Spring Festival's eve
    and its first three days; Qingming on its solar term; 1-2 May; the Dragon Boat
    Festival (5/5 of the lunar calendar); the Mid-Autumn Festival (8/15); 1-3 October.
    Not the days the State Council adds around them, nor the days off in lieu (补假) of
    a holiday on a weekend (art. 6), nor the make-up working days: those are announced."""
    days: dict[datetime.date, list[str]] = {}

    def add(day: datetime.date, name: str) -> None:
        days.setdefault(day, []).append(name)

    add(datetime.date(year, 1, 1), "元旦 New Year's Day")
    if year in LUNAR_YEARS:
        from borax.calendars.lunardate import LunarDate, TermUtils

        new_year = LunarDate(year, 1, 1).to_solar_date()
        add(new_year - datetime.timedelta(days=1), "除夕 Spring Festival's Eve")
        for offset in range(3):
            add(new_year + datetime.timedelta(days=offset), "春节 Spring Festival")
        add(TermUtils.nth_term_day(year, term_name="清明"), "清明节 Qingming")
        add(LunarDate(year, 5, 5).to_solar_date(), "端午节 Dragon Boat Festival")
        add(LunarDate(year, 8, 15).to_solar_date(), "中秋节 Mid-Autumn Festival")
    for day in (1, 2):
        add(datetime.date(year, 5, day), "劳动节 Labour Day")
    for day in (1, 2, 3):
        add(datetime.date(year, 10, day), "国庆节 National Day")
    return {day: " and ".join(names) for day, names in sorted(days.items())}


# ------------------------------------------------------------------ the calendar

@dataclass(frozen=True)
class Day:
    date: datetime.date
    workday: bool
    holiday: bool
    makeup: bool          # a make-up working day (调休)
    provisional: bool     # past the data: holidays by the law's rules, make-up days unknown
    name: str = ""        # the holiday's, where known

    @property
    def kind(self) -> str:
        return ("statutory holiday" if self.holiday else "make-up working day"
                if self.makeup else "working day" if self.workday else "weekend")


@dataclass(frozen=True)
class Dates:
    """The calendar's data at one moment: the package's, with the site's file over it."""
    holidays: frozenset[datetime.date]
    workdays: frozenset[datetime.date]
    known_until: datetime.date
    sources: str  # what they come from, for people

    def day(self, day: datetime.date) -> Day:
        if day <= self.known_until:
            holiday, makeup = day in self.holidays, day in self.workdays
            return Day(day, makeup or (day.weekday() < 5 and not holiday), holiday, makeup,
                       False)
        name = statutory_holidays(day.year).get(day, "")
        return Day(day, day.weekday() < 5 and not name, bool(name), False, True, name)

    def is_workday(self, day: datetime.date) -> bool:
        return self.day(day).workday

    @property
    def known_until_timestamp(self) -> float:
        """The end of the last day covered (Beijing midnight after it), Unix time."""
        return datetime.datetime.combine(self.known_until + datetime.timedelta(days=1),
                                         datetime.time(), SHANGHAI).timestamp()


@functools.cache
def package_dates() -> tuple[frozenset[datetime.date], frozenset[datetime.date], datetime.date]:
    """(holidays, make-up working days, last day covered) from `chinesecalendar`."""
    import chinese_calendar

    holidays = frozenset(chinese_calendar.holidays)
    workdays = frozenset(chinese_calendar.workdays)
    last_year = max(day.year for day in holidays | workdays)
    return holidays, workdays, datetime.date(last_year, 12, 31)


@functools.cache
def _version() -> str:
    import importlib.metadata

    return importlib.metadata.version("chinesecalendar")


def site_dates(path: Path) -> SiteDates:
    """The site's file, or ProbeFailure with its first fault (`insmon validate` says
    them all, with their lines)."""
    try:
        site = SiteDates.model_validate(_read_yaml(path.read_text("utf-8"), path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ProbeFailure(f"cannot read the calendar file {path}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ProbeFailure(f"calendar file {path}: {_where(first['loc'])}: "
                           f"{first['msg']}") from None
    if faults := site.faults():
        where, what = faults[0]
        raise ProbeFailure(f"calendar file {path}: {_where(where)}: {what}")
    return site


def _read_yaml(text: str, path: Path) -> object:
    """The file's data, with libyaml's parser when PyYAML has it (the file is read on
    every run, in the event loop). PyYAML keeps the last of a key given twice: a second
    `holidays:` block would drop the first in silence (insmon validate refuses it too)."""
    root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    seen: set[str] = set()
    for key, _ in root.value if isinstance(root, yaml.MappingNode) else ():
        if key.value in seen:
            raise ProbeFailure(f"calendar file {path}:{key.start_mark.line + 1}: key "
                               f"{key.value!r} is given twice")
        seen.add(key.value)
    try:
        return _Dates("").construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        raise ProbeFailure(f"calendar file {path}:{exc.problem_mark.line + 1}: "
                           f"{exc.problem}") from None


class _Dates(yaml.SafeLoader):
    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> object:
        """A date YAML reads and Python refuses (2027-02-29, a ValueError) is a fault of
        the file, named at its line."""
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value} is no date ({exc})", node.start_mark) from None


_Dates.add_constructor("tag:yaml.org,2002:timestamp", _Dates.construct_yaml_timestamp)


def _where(loc: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") \
        or "(top)"


class WorkingCalendar:
    """The package's dates with the site's file over them (read again on each use: a
    small file the site edits when next year's schedule is published)."""

    def __init__(self, file: Path | None = None) -> None:
        self.file = file

    def dates(self) -> Dates:
        """ProbeFailure when the site's file cannot be read or is wrong."""
        holidays, workdays, known_until = package_dates()
        sources = f"chinesecalendar {_version()}"
        if self.file is not None:
            site = site_dates(self.file)
            holidays = (holidays - set(site.workdays)) | set(site.holidays)
            workdays = (workdays - set(site.holidays)) | set(site.workdays)
            known_until = max(known_until, site.known_until)
            sources += f" and {self.file}"
        return Dates(holidays, workdays, known_until, sources)

    def is_workday(self, day: datetime.date) -> bool:
        return self.dates().day(day).workday

    def to_fill(self) -> Path:
        """The file where the site adds the dates it lacks."""
        return self.file or SITE_FILE


def provisional_note(dates: Dates, fill: Path) -> str:
    """What a provisional day means and what to do, in one sentence."""
    after = dates.known_until + datetime.timedelta(days=1)
    return (f"days from {after} are provisional: the calendar data ({dates.sources}) ends "
            f"{dates.known_until}; statutory holidays come from the law's fixed rules, and "
            "make-up working days (调休) and days off in lieu are unknown until announced: "
            f"add the State Council's dates to {fill} (holidays, workdays, known_until) "
            "or upgrade the chinesecalendar package")


def local_today() -> datetime.date:
    return datetime.datetime.now(SHANGHAI).date()


class Probe:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.calendar = WorkingCalendar(cfg.file)

    async def run(self) -> ProbeResult:
        # the file: small, on the config's disk, read each run. One that is wrong fails
        # the run, and the day comes from the package's dates and past them the law's
        # (as insmon's own series take it), not from a Monday-to-Friday guess of the
        # alert rules without the series.
        try:
            dates, wrong = self.calendar.dates(), ""
        except ProbeFailure as exc:
            dates, wrong = WorkingCalendar().dates(), (
                f"{exc}; meanwhile the chinesecalendar package's dates only: ")
        today = dates.day(local_today())
        samples = (Sample("insmon_calendar_workday", float(today.workday)),
                   Sample("insmon_calendar_holiday", float(today.holiday)))
        name = f" {today.name}" if today.name else ""
        detail = (f"{today.date}: {today.kind}{name}"
                  f"{' (provisional)' if today.provisional else ''}; dates known until "
                  f"{dates.known_until}")
        if today.provisional:
            return ProbeResult("failed", samples, f"{wrong}{detail}: " + provisional_note(
                dates, self.calendar.to_fill()))
        if wrong:
            return ProbeResult("failed", samples, wrong + detail)
        days_left = (dates.known_until - today.date).days + 1
        if days_left < WARN_DAYS:
            detail += f" ({days_left} days left: next year's dates are due)"
        return ProbeResult("ok", samples, detail)


KIND = Kind(Config, METRICS, Probe)
