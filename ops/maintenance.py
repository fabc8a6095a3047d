"""`insmon maintenance`: declare an announced outage window (a platform cutover, 智慧医保
migration) as an Alertmanager silence of the alerts that outage is expected to raise.

Prometheus keeps recording and evaluating everything; only the expected pages are held
back, for that site and that window. Anything else that breaks (storage, RAID, CPU, the
hospital's own network) still pages.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitor.audit import who
from vocabulary import SHANGHAI, parse_time

log = logging.getLogger("insmon")

# What a cutover of the agency's platform stops: the front-end and the settlement path
# (the agency may also take its tunnel end down), and the symptoms that follow.
EXPECTED = ("SettlementPathDown|SettlementImpossible|PrimaryLineDown|FrontEndUnreachable|"
            "FrontEndHttpFailing|"
            "FrontEndCertificateExpiring|TunnelFlapping|PrivateNetworkLatencyHigh|"
            "PrivateNetworkPacketLoss")


# A cutover lasts hours, a migration a few days: a longer window is a typo that would
# silence Level I pages for months.
LONGEST = timedelta(days=14)


class MaintenanceError(Exception):
    pass


def declare(alertmanager: str, site: str, start: datetime, end: datetime, comment: str,
            created_by: str = "insmon maintenance", reason: str = "") -> str:
    """Create the silence; return its id."""
    if not site.strip():
        raise MaintenanceError("--site is empty: name the hospital's site label")
    if not comment.strip():
        raise MaintenanceError("--comment is empty: say what is announced")
    if end <= start:
        raise MaintenanceError("the window ends before it starts")
    if end - start > LONGEST and not reason.strip():
        days = (end - start).total_seconds() / 86400
        raise MaintenanceError(f"the window is {days:.1f} days long, over {LONGEST.days} days: "
                               "check the dates, or give --reason saying why it is")
    if end <= datetime.now(UTC):
        raise MaintenanceError(f"the window ended already ({end.isoformat()})")
    body = {
        "matchers": [
            {"name": "site", "value": site, "isRegex": False, "isEqual": True},
            {"name": "alertname", "value": EXPECTED, "isRegex": True, "isEqual": True},
        ],
        "startsAt": start.astimezone(UTC).isoformat(),
        "endsAt": end.astimezone(UTC).isoformat(),
        "createdBy": created_by,
        "comment": comment,
    }
    answer = _ask(alertmanager, "/api/v2/silences", "the silence", "POST", body)
    silence = answer.get("silenceID") if isinstance(answer, dict) else None
    if not isinstance(silence, str) or not silence:
        raise MaintenanceError(f"{alertmanager} answered without a silence id: "
                               "the silence may not exist; check its silences page")
    return silence


def _ask(alertmanager: str, path: str, what: str, method: str = "GET",
         body: dict | None = None):
    """Alertmanager's JSON answer (None for an empty one), or MaintenanceError saying
    what went wrong."""
    request = urllib.request.Request(
        alertmanager.rstrip("/") + path, method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"} if body is not None else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text.strip() or method != "DELETE" else None
    except urllib.error.HTTPError as exc:
        raise MaintenanceError(f"Alertmanager refused {what}: {exc.code} "
                               f"{exc.read().decode(errors='replace').strip()}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise MaintenanceError(f"cannot reach Alertmanager at {alertmanager}: "
                               f"{getattr(exc, 'reason', exc)}") from None
    except ValueError:
        raise MaintenanceError(f"{alertmanager} answered with no JSON: is it "
                               "Alertmanager?") from None


# ------------------------------------------------------------------ recurring windows

EVERY = ("day", "workday", "offday", "monday", "tuesday", "wednesday", "thursday", "friday",
         "saturday", "sunday")
TAG = re.compile(r"\[insmon recurring (\S+) (\S+)\]")


class Recurring(BaseModel):
    """A window that comes back (the platform's weekly maintenance, 周日 02:00-04:00): on
    `every` day of that kind (workday and offday by the Chinese working calendar, make-up
    working days and statutory holidays included), from `start` to `end` Beijing time
    (the next day when `end` is earlier)."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(pattern=r"^[\w.-]+$")
    site: str = Field(min_length=1)
    every: Literal[EVERY]  # type: ignore[valid-type]
    start: time = Field(alias="from")
    end: time = Field(alias="to")
    comment: str = Field(min_length=1)
    declared_by: str = Field(min_length=1)

    @model_validator(mode="after")
    def _not_empty(self) -> Recurring:
        if self.start == self.end:
            raise ValueError(f"from and to are both {self.start:%H:%M}: a window of no "
                             "time, or of a whole day every time, is a typo")
        return self

    def length(self) -> timedelta:
        start, end = (datetime.combine(date.min, t) for t in (self.start, self.end))
        return (end - start) % timedelta(days=1) or timedelta(days=1)


class RecurringFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    windows: list[Recurring] = []


def load_recurring(path: Path) -> list[Recurring]:
    """The file's windows; ConfigError naming the file, the key and what is wrong."""
    if not path.exists():
        return []
    from monitor.config import parse, read

    text = read(path)
    try:
        if yaml.safe_load(text) is None:  # comments only: none yet
            return []
    except yaml.YAMLError:
        pass  # parse() says where

    windows = parse(text, str(path), RecurringFile).windows
    names = [w.name for w in windows]
    if duplicate := next((n for n in names if names.count(n) > 1), None):
        from monitor.config import ConfigError

        raise ConfigError(str(path), (f"{path}: windows: the name {duplicate!r} is used "
                                      "twice",))
    return windows


def add_recurring(path: Path, window: Recurring) -> None:
    """Appended to the file as text, so the site's comments in it stay."""
    existing = load_recurring(path)
    if any(w.name == window.name for w in existing):
        raise MaintenanceError(f"{path} has a window named {window.name!r} already")
    entry = yaml.safe_dump([window.model_dump(by_alias=True, mode="json")],
                           allow_unicode=True, sort_keys=False)
    text = path.read_text("utf-8") if path.exists() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    if not existing and not re.search(r"^windows:\s*$", text, re.M):
        text += "windows:\n"
    text += "".join(f"  {line}\n" for line in entry.splitlines())
    # the file is replaced only by text that reads back as it was plus the new window
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, "utf-8")
    from monitor.config import ConfigError

    try:
        written = load_recurring(partial)
    except (ConfigError, ValueError):
        written = []
    if [w.model_dump() for w in written] != [w.model_dump() for w in [*existing, window]]:
        partial.unlink()
        raise MaintenanceError(f"cannot add to {path} without rewriting it (its windows "
                               "are not a block list at its end): add the window by hand")
    partial.replace(path)


def occurrences(window: Recurring, start: datetime, end: datetime,
                is_workday) -> list[tuple[datetime, datetime]]:
    """The window's times that begin in [start, end), Beijing time."""
    found = []
    day = start.astimezone(SHANGHAI).date() - timedelta(days=1)
    last = end.astimezone(SHANGHAI).date()
    while day <= last:
        begins = datetime.combine(day, window.start, SHANGHAI)
        if start <= begins < end and _falls_on(window.every, day, is_workday):
            found.append((begins, begins + window.length()))
        day += timedelta(days=1)
    return found


def _falls_on(every: str, day: date, is_workday) -> bool:
    if every == "day":
        return True
    if every in ("workday", "offday"):
        return is_workday(day) == (every == "workday")
    return day.weekday() == EVERY.index(every) - 3


def realise(alertmanager: str, windows: list[Recurring], now: datetime, ahead: timedelta,
            is_workday, record) -> list[tuple[Recurring, datetime, str]]:
    """Silences for every occurrence beginning before now + ahead that Alertmanager does
    not hold yet (a window under way is silenced too); `record(window, start, end,
    silence)` for each made. What was made is found again by the tag in its comment, so a
    restart or a second insmon never makes one twice."""
    # an occurrence ended early (`insmon maintenance end`) is done: its expired silence
    # counts, and Alertmanager keeps it for days after the occurrence is over
    have = {(m[1], m[2]) for s in silences(alertmanager)
            if (m := TAG.search(s.get("comment", "")))}
    made = []
    for window in windows:
        for start, end in occurrences(window, now - window.length(), now + ahead, is_workday):
            if end <= now or (window.name, _stamp(start)) in have:
                continue
            silence = declare(alertmanager, window.site, max(start, now), end,
                              f"{window.comment} [insmon recurring {window.name} "
                              f"{_stamp(start)}]", created_by=window.declared_by)
            record(window, start, end, silence)
            made.append((window, start, silence))
    return made


def _stamp(moment: datetime) -> str:
    return moment.astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M")


def silences(alertmanager: str) -> list[dict]:
    answer = _ask(alertmanager, "/api/v2/silences", "the list of silences")
    if not isinstance(answer, list):
        raise MaintenanceError(f"{alertmanager} answered no list of silences")
    return answer


def end_window(alertmanager: str, silence: str) -> dict:
    """Expire the silence now; what it was."""
    found = next((s for s in silences(alertmanager) if s.get("id") == silence), None)
    if found is None:
        raise MaintenanceError(f"Alertmanager at {alertmanager} has no silence {silence}")
    _ask(alertmanager, f"/api/v2/silence/{silence}", f"to end {silence}", "DELETE")
    return found


# ------------------------------------------------------------------ on the audit trail
# `insmon maintenance` and `insmon run` do these; `trail` is the audit trail (its writer
# or its socket: an object with append and records), each window and silence on record.

def declare_recurring(file: Path, trail, fields: dict) -> Recurring:
    """A recurring window added to `file`, and on record."""
    window = Recurring.model_validate({**fields, "declared_by": who()})
    add_recurring(file, window)
    trail.append("maintenance-recurring", who(), "ok",
                 {**window.model_dump(by_alias=True, mode="json"), "file": str(file)})
    return window


def declare_recorded(trail, asked: dict,
                     said: Callable[[str, datetime, datetime], None]) -> str:
    """One announced window, as `insmon maintenance` is asked (`asked`: site, from and to
    in ISO 8601, Beijing time without an offset, comment, reason, alertmanager): its
    silence, on record, and so is a refusal. `said(silence, start, end)` before it is
    recorded: should the trail fail, the silence's id is known."""
    try:
        start, end = parse_time(asked["from"]), parse_time(asked["to"])
        silence = declare(asked["alertmanager"], asked["site"], start, end, asked["comment"],
                          created_by=f"{who()} (insmon maintenance)", reason=asked["reason"])
    except (MaintenanceError, ValueError) as exc:
        trail.append("maintenance-declared", who(), "refused", {**asked, "why": str(exc)})
        raise
    said(silence, start, end)
    trail.append("maintenance-declared", who(), "ok",
                 {**asked, "from": start.isoformat(), "to": end.isoformat(),
                  "silence": silence})
    return silence


def end_recorded(alertmanager: str, trail, silence: str) -> dict:
    """The silence expired now, on record; what it was."""
    ended = end_window(alertmanager, silence)
    trail.append("maintenance-ended", who(), "ok",
                 {"silence": silence, "comment": ended.get("comment"),
                  "was": ended.get("endsAt")})
    return ended


def window_lines(file: Path, alertmanager: str, trail) -> Iterator[str]:
    """`insmon maintenance list`: the recurring windows, then every window on record
    with its silence's state in Alertmanager."""
    for window in load_recurring(file):
        yield (f"recurring {window.name}: site {window.site}, every {window.every} "
               f"{window.start:%H:%M}-{window.end:%H:%M}, {window.comment} "
               f"(declared by {window.declared_by})")
    states = {}
    try:
        states = {s["id"]: s["status"]["state"] for s in silences(alertmanager)}
    except MaintenanceError as exc:
        yield f"(Alertmanager's state unknown: {exc})"
    for record in trail.records(events=("maintenance-declared", "maintenance-scheduled",
                                        "maintenance-ended")):
        detail = record.get("detail") or {}
        if record["event"] in ("maintenance-declared", "maintenance-scheduled") and \
                record["outcome"] == "ok":
            state = states.get(detail.get("silence"), "gone from Alertmanager")
            yield (f"{detail.get('from')} to {detail.get('to')}  site {detail.get('site')}  "
                   f"{state}  silence {detail.get('silence')}  by {record['who']}: "
                   f"{detail.get('comment')}")
        elif record["event"] == "maintenance-ended":
            yield f"ended {record['at']}  silence {detail.get('silence')}  by {record['who']}"


def provisional_warning(calendar: Path | None, now: datetime) -> str | None:
    """What to say of a window on working days or days off made of days the calendar
    data does not cover (within CalendarDataEnding's lead), with the file to fill; or
    why the calendar cannot be read."""
    from probes.base import ProbeFailure
    from probes.calendar import WARN_DAYS, WorkingCalendar, provisional_note

    working = WorkingCalendar(calendar)
    try:
        dates = working.dates()
    except ProbeFailure as exc:
        return str(exc)
    if now.astimezone(SHANGHAI).date() + timedelta(days=WARN_DAYS) <= dates.known_until:
        return None
    name = "" if calendar else (" (then name it with --calendar here and in the "
                                "config's maintenance.calendar)")
    return f"{provisional_note(dates, working.to_fill())}{name}"


def realise_windows(file: Path, alertmanager: str, trail, ahead: float,
                    calendar: Path | None, now: datetime) -> list:
    """One round of the recurring windows: silences made ahead, each recorded."""
    from probes.base import ProbeFailure
    from probes.calendar import WorkingCalendar, provisional_note

    working = WorkingCalendar(calendar)
    windows = load_recurring(file)
    try:
        dates, wrong = working.dates(), None  # read once a round
    except ProbeFailure as exc:  # the windows of any day or weekday need no calendar
        dates, wrong = WorkingCalendar().dates(), exc
        windows = [w for w in windows if w.every not in ("workday", "offday")]

    def record(window, start, end, silence) -> None:
        # a working day or day off past the calendar data is on record as provisional
        provisional = window.every in ("workday", "offday") and dates.day(
            start.astimezone(SHANGHAI).date()).provisional
        if provisional:
            log.warning("recurring window %s: the silence from %s is on a provisional %s: %s",
                        window.name, start.isoformat(), window.every,
                        provisional_note(dates, working.to_fill()))
        trail.append("maintenance-scheduled", window.declared_by, "ok",
                     {"site": window.site, "from": start.isoformat(), "to": end.isoformat(),
                      "comment": window.comment, "silence": silence, "window": window.name,
                      **({"provisional": True} if provisional else {})})

    made = realise(alertmanager, windows, now, timedelta(seconds=ahead), dates.is_workday,
                   record)
    if wrong is not None:
        raise ProbeFailure(f"{wrong}: the windows of working days or days off are not made")
    return made
