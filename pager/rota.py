"""值班表: who of a team is on call at a time.

In order: an override (a swapped shift), then the team's shifts spreadsheet, then its
rotation. Nobody found is a gap: the caller pages the team lead and logs an error.

A shifts spreadsheet (CSV, or the first sheet of an XLSX) has a header row and one shift
per row; the columns, in Chinese or English:
    开始 / start    2026-11-23 08:30    (Beijing time)
    结束 / end      2026-11-24 08:30
    值班人 / person  zhangsan            (a person's id in the config, or their name)
Times are Beijing time unless the file says otherwise: a time with its offset
(2026-11-23T00:30:00Z, ...+00:00), or a zone in the column's header, "开始 (UTC)",
"start (UTC+0)", "结束 (Asia/Shanghai)", for every time of that column. A merged cell
(a name over several rows) holds its value in each of them.

The file is read when first needed and again when it changed (looked at once a second at
most): an edited rota takes effect without a restart. A broken edit keeps the last good
shifts, logged and kept in `Rota.errors` until the file is fixed.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pager.config import PagerConfig, Team
from vocabulary import SHANGHAI

COLUMNS = {"start": ("开始", "start"), "end": ("结束", "end"), "person": ("值班人", "person")}
MAX_BYTES = 10 << 20  # years of shifts are a few MB: more is a wrong file, not a rota
CHECK_EVERY = 1.0     # seconds between looks at a file's (mtime, size, inode)
AHEAD = dt.timedelta(days=14)  # how far `validate` looks for gaps
log = logging.getLogger("insmon.pager.rota")


class RotaError(Exception):
    """A shifts file that cannot be used, with the file, sheet and row."""


@dataclass(frozen=True, slots=True)
class Shift:
    start: dt.datetime
    end: dt.datetime
    person: str
    row: int = 0


def beijing(moment: dt.datetime) -> dt.datetime:
    """Naive times in the rota are Beijing time."""
    return moment.replace(tzinfo=SHANGHAI) if moment.tzinfo is None else moment


class Shifts:
    """One file's shifts sorted by start, for bisect; `reach[i]` is the latest end of
    shifts[:i + 1], so a lookup walks back only over shifts that may still cover it."""

    def __init__(self, shifts: list[Shift]) -> None:
        self.all = sorted(shifts, key=lambda s: s.start)
        self.starts = [s.start for s in self.all]
        self.reach, latest = [], None
        for shift in self.all:
            latest = shift.end if latest is None else max(latest, shift.end)
            self.reach.append(latest)

    def at(self, moment: dt.datetime) -> str | None:
        i = bisect.bisect_right(self.starts, moment)
        while i > 0 and self.reach[i - 1] > moment:  # overlaps: the latest start wins
            i -= 1
            if self.all[i].end > moment:
                return self.all[i].person
        return None


class _File:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.stamp: tuple[int, int, int] | None = None  # of the last read
        self.checked = float("-inf")
        self.shifts = Shifts([])  # the last good ones
        self.error: str | None = None


class Rota:
    def __init__(self, config: PagerConfig, clock: Callable[[], float] = time.monotonic,
                 quiet: bool = False) -> None:
        self.config, self.clock = config, clock
        self.quiet = quiet  # the caller prints `errors` itself
        # read on first use: `sms-received` and `ack` never need them
        self.files = {tid: _File(team.shifts_file)
                      for tid, team in config.teams.items() if team.shifts_file}
        self._lock = threading.Lock()

    @property
    def errors(self) -> dict[str, str]:
        """team -> why its shifts file is not used (its last good shifts are)."""
        return {tid: error for tid in self.files if (error := self.error(tid))}

    def error(self, team_id: str) -> str | None:
        return self._current(team_id).error if team_id in self.files else None

    def shifts(self, team_id: str) -> Shifts:
        return self._current(team_id).shifts if team_id in self.files else Shifts([])

    def on_call(self, team_id: str, at: dt.datetime) -> str | None:
        """The person on call for the team at `at`, or None for a gap in the rota."""
        team = self.config.teams[team_id]
        at = at.astimezone(SHANGHAI)
        for override in team.overrides:
            if beijing(override.start) <= at < beijing(override.end):
                return override.person
        return self.shifts(team_id).at(at) or _rotation(team, at)

    def role(self, team_id: str, role: str, at: dt.datetime) -> str | None:
        team = self.config.teams[team_id]
        return {"oncall": lambda: self.on_call(team_id, at), "backup": lambda: team.backup,
                "lead": lambda: team.lead}[role]()

    def _current(self, team_id: str) -> _File:
        """The team's file, read again when its (mtime, size, inode) changed."""
        file = self.files[team_id]
        with self._lock:
            now = self.clock()
            if now - file.checked < CHECK_EVERY:
                return file
            file.checked = now
            try:
                stat = file.path.stat()
                stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
                if stamp != file.stamp:
                    file.stamp = stamp  # a broken file is not read again until it changes
                    file.shifts = Shifts(read_shifts(file.path, self.config))
                    file.error = None
                    log.info("%s: %d shifts of %s", file.path, len(file.shifts.all), team_id)
            except RotaError as exc:
                error = str(exc)
            except OSError as exc:  # gone: read it again whenever it is back
                file.stamp, error = None, f"{file.path}: cannot read: {exc.strerror or exc}"
            else:
                return file
            if error != file.error and not self.quiet:  # once per change, not a second
                log.error("%s: team %s keeps its last good shifts (%d)", error, team_id,
                          len(file.shifts.all))
            file.error = error
            return file


def _rotation(team: Team, at: dt.datetime) -> str | None:
    rotation = team.rotation
    if rotation is None:
        return None
    start = dt.datetime.combine(rotation.since, rotation.handover, SHANGHAI)
    if at < start:
        return None
    period = dt.timedelta(days=1 if rotation.every == "day" else 7)
    turns = int((at - start) / period)
    return rotation.order[turns % len(rotation.order)]


def read_shifts(path: Path, config: PagerConfig) -> list[Shift]:
    """The shifts of a CSV or XLSX file; RotaError names the file, sheet and row."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise RotaError(f"{path}: {size / (1 << 20):.1f} MB, over the limit of "
                            f"{MAX_BYTES >> 20} MB for a shifts file")
        with _sheet(path) as (sheet, rows):
            return _shifts(f"{path}" + (f", sheet {sheet!r}" if sheet else ""), rows, config)
    except OSError as exc:
        raise RotaError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise RotaError(f"{path}: not UTF-8 text (in Excel: save as 'CSV UTF-8')") from None
    except csv.Error as exc:
        raise RotaError(f"{path}: not a CSV file ({exc})") from None


HEADER = re.compile(r"^(.*?)\s*(?:[(（\[]\s*([^)）\]]*?)\s*[)）\]])?$")
OFFSET = re.compile(r"^(?:UTC|GMT)\s*([+-])\s*(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)


def _zone(text: str) -> dt.tzinfo:
    """A column header's zone: UTC, GMT, Z, UTC+8, UTC-05:30, 北京时间, an IANA name."""
    if text.upper() in ("UTC", "GMT", "Z", "UTC+0", "GMT+0"):
        return dt.UTC
    if text in ("北京时间", "CST", "Asia/Shanghai"):
        return SHANGHAI
    if (offset := OFFSET.match(text)):
        sign, hours, minutes = offset.groups()
        delta = dt.timedelta(hours=int(hours), minutes=int(minutes or 0))
        if delta >= dt.timedelta(hours=15):
            raise ValueError(f"{text!r}: an offset of 14 hours at the most")
        return dt.timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{text!r} is no time zone (UTC, UTC+8, 北京时间, Asia/Shanghai)"
                         ) from None


def _shifts(where: str, rows: Iterator[Sequence[object]], config: PagerConfig) -> list[Shift]:
    header = [str(cell or "").strip() for cell in next(rows, [])]
    if not "".join(header):
        raise RotaError(f"{where}: no header row ({', '.join(c[0] for c in COLUMNS.values())})")
    names = [HEADER.match(cell).groups() for cell in header]
    index, zones = {}, {}
    for key, known in COLUMNS.items():
        found = [i for i, (name, _) in enumerate(names) if name.lower() in known]
        if not found:
            raise RotaError(f"{where}, row 1: no column {known[0]} / {known[1]} "
                            f"(columns: {', '.join(header)})")
        index[key] = found[0]
        zone = names[found[0]][1]
        try:
            zones[key] = _zone(zone) if zone else SHANGHAI
        except ValueError as exc:
            raise RotaError(f"{where}, row 1, column {header[found[0]]!r}: {exc}") from None
    by_name: dict[str, list[str]] = {}
    for pid, p in config.people.items():
        by_name.setdefault(p.name, []).append(pid)
    shifts = []
    for number, row in enumerate(rows, start=2):  # streamed: one row at a time
        if not "".join(map(str, filter(None, row))).strip():  # a blank row
            continue
        cells = {key: row[i] if i < len(row) else None for key, i in index.items()}
        try:
            start, end = _time(cells["start"], zones["start"]), _time(cells["end"], zones["end"])
        except ValueError as exc:
            raise RotaError(f"{where}, row {number}: {exc}") from None
        if end <= start:
            raise RotaError(f"{where}, row {number}: the shift ends before it starts")
        person = str(cells["person"] or "").strip()
        ids = [person] if person in config.people else by_name.get(person, [])
        if len(ids) > 1:
            raise RotaError(f"{where}, row {number}: {person!r} is the name of "
                            f"{' and '.join(ids)}: write the person's id")
        if not ids:
            raise RotaError(f"{where}, row {number}: unknown person {person!r} "
                            f"(a person's id or name)")
        shifts.append(Shift(start, end, ids[0], number))
    return shifts


@functools.lru_cache(maxsize=1024)  # one shift's end is the next one's start
def _time(cell: object, zone: dt.tzinfo = SHANGHAI) -> dt.datetime:
    """A cell's time; naive (every XLSX time, most CSV ones) in the column's zone."""
    def zoned(moment: dt.datetime) -> dt.datetime:
        return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment

    if isinstance(cell, dt.datetime):
        return zoned(cell)
    text = str(cell or "").strip()
    if ":" in text:  # the fast path (a time, not a date alone)
        try:
            return zoned(dt.datetime.fromisoformat(text))
        except ValueError:
            pass
    for form in ("%Y/%m/%d %H:%M", "%Y/%m/%d %H:%M:%S"):
        try:
            return zoned(dt.datetime.strptime(text, form))
        except ValueError:
            pass
    raise ValueError(f"{text!r} is not a time such as 2026-11-23 08:30")


@contextmanager
def _sheet(path: Path) -> Iterator[tuple[str | None, Iterator[Sequence[object]]]]:
    """(sheet name, rows read one at a time) of a CSV or the first sheet of an XLSX."""
    if path.suffix.lower() not in (".xlsx", ".xlsm"):
        with path.open(encoding="utf-8-sig", newline="") as file:  # Excel writes a BOM
            yield None, csv.reader(file)
        return
    import zipfile

    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
        merged = _merged(path)
    except (zipfile.BadZipFile, KeyError, ValueError, SyntaxError) as exc:
        raise RotaError(f"{path}: not a readable XLSX workbook ({exc})") from None
    try:
        sheet = book.worksheets[0]
        yield sheet.title, _unmerged(sheet.iter_rows(min_row=1, min_col=1, values_only=True),
                                     merged)
    finally:
        book.close()


def _merged(path: Path) -> dict[int, list[tuple[int, int, int, int]]]:
    """The first sheet's merged ranges (min_col, min_row, max_col, max_row), by each row
    they cover: read from the sheet's XML, which openpyxl's streaming reader skips."""
    import xml.etree.ElementTree as ElementTree
    import zipfile

    from openpyxl.utils.cell import range_boundaries

    main = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
    relation = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
    with zipfile.ZipFile(path) as archive:
        first = ElementTree.fromstring(archive.read("xl/workbook.xml")).find(
            f"{main}sheets/{main}sheet")
        rels = ElementTree.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
        target = next(r.get("Target") for r in rels if r.get("Id") == first.get(relation))
        name = target.lstrip("/") if target.startswith("/") else f"xl/{target}"
        by_row: dict[int, list[tuple[int, int, int, int]]] = {}
        with archive.open(name) as sheet:
            for _, element in ElementTree.iterparse(sheet):
                if element.tag == f"{main}mergeCell":
                    bounds = range_boundaries(element.get("ref", ""))
                    for row in range(bounds[1], bounds[3] + 1):
                        by_row.setdefault(row, []).append(bounds)
                element.clear()
    return by_row


def _unmerged(rows: Iterator[Sequence[object]], merged: dict[int, list[tuple[int, ...]]]
              ) -> Iterator[Sequence[object]]:
    """The rows, each cell of a merged range holding the range's value (its top left's)."""
    tops: dict[tuple[int, int], object] = {}
    for number, row in enumerate(rows, start=1):
        if number not in merged:
            yield row
            continue
        cells = list(row)
        for first_col, first_row, last_col, _ in merged[number]:
            cells += [None] * (last_col - len(cells))
            if number == first_row:
                tops[(first_row, first_col)] = cells[first_col - 1]
            for col in range(first_col, last_col + 1):
                cells[col - 1] = tops.get((first_row, first_col))
        yield cells


# ------------------------------------------------------------------ validation

def check(config: PagerConfig, rota: Rota, now: dt.datetime) -> list[str]:
    """Warnings for `insmon pager validate`: people sharing a name, overlapping shifts,
    and gaps (nobody on call) from now to 14 days ahead or the end of a shifts file."""
    warnings = []
    by_name: dict[str, list[str]] = {}
    for pid, person in config.people.items():
        by_name.setdefault(person.name, []).append(pid)
    warnings += [f"people {' and '.join(ids)} share the name {name!r}: a shifts file "
                 f"must name them by id" for name, ids in by_name.items() if len(ids) > 1]
    now = now.astimezone(SHANGHAI)
    for tid, team in config.teams.items():
        known = rota.shifts(tid)
        shifts = known.all
        warnings += _first(5, [f"{team.shifts_file}: rows {a.row} and {b.row} overlap "
                               f"({_fmt(b.start)} to {_fmt(min(a.end, b.end))}): the later "
                               f"start, {b.person}, is on call" for a, b in _overlaps(shifts)])
        until = max([now + AHEAD, *known.reach[-1:]])
        warnings += _first(5, [f"team {tid}: nobody on call from {_fmt(a)} to {_fmt(b)}: "
                               f"its lead {team.lead} would be paged"
                               for a, b in _gaps(team, shifts, now, until)])
    return warnings


def ahead(config: PagerConfig, rota: Rota, team_id: str, now: dt.datetime,
          days: int = 7) -> list[tuple[dt.datetime, str | None]]:
    """Who is on call for the team from `now` for `days` days: (from when, person or None
    for nobody), at each change, so that a rota shifted by hours shows."""
    team = config.teams[team_id]
    now = now.astimezone(SHANGHAI)
    until = now + dt.timedelta(days=days)
    moments = {now}
    moments |= {m for o in team.overrides for m in (beijing(o.start), beijing(o.end))}
    moments |= {m for s in rota.shifts(team_id).all for m in (s.start, s.end)}
    if team.rotation is not None:
        moments |= {dt.datetime.combine(now.date() + dt.timedelta(days=d),
                                        team.rotation.handover, SHANGHAI)
                    for d in range(-1, days + 2)}
    changes: list[tuple[dt.datetime, str | None]] = []
    for moment in sorted(m for m in moments if now <= m < until):
        person = rota.on_call(team_id, moment)
        if not changes or changes[-1][1] != person:
            changes.append((moment, person))
    return changes


def _first(count: int, lines: list[str]) -> list[str]:
    """A few, and how many more: a broken file of thousands of rows stays readable."""
    return lines[:count] + ([f"... and {len(lines) - count} more like it"]
                            if len(lines) > count else [])


def _overlaps(shifts: list[Shift]) -> Iterator[tuple[Shift, Shift]]:
    """Each shift that starts before an earlier-starting one ended, with that one."""
    longest: Shift | None = None
    for shift in shifts:
        if longest is not None and shift.start < longest.end:
            yield longest, shift
        if longest is None or shift.end > longest.end:
            longest = shift


def _gaps(team: Team, shifts: list[Shift], since: dt.datetime,
          until: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    covered = [(s.start, s.end) for s in shifts]
    covered += [(beijing(o.start), beijing(o.end)) for o in team.overrides]
    if team.rotation is not None:  # every turn has somebody: covered from its start on
        covered.append((dt.datetime.combine(team.rotation.since, team.rotation.handover,
                                            SHANGHAI), dt.datetime.max.replace(tzinfo=SHANGHAI)))
    gaps, cursor = [], since
    for start, end in sorted(covered):
        if start > cursor and cursor < until:
            gaps.append((cursor, min(start, until)))
        cursor = max(cursor, end)
    if cursor < until:
        gaps.append((cursor, until))
    return gaps


def _fmt(moment: dt.datetime) -> str:
    return f"{moment.astimezone(SHANGHAI):%Y-%m-%d %H:%M}"
