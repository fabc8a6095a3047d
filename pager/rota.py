"""值班表: who of a team is on call at a time.

In order: an override (a swapped shift), then the team's shifts spreadsheet, then its
rotation. Nobody found is a gap: the caller pages the team lead and logs an error.

A shifts spreadsheet (CSV, or the first sheet of an XLSX) has a header row and one shift
per row; the columns, in Chinese or English:
    开始 / start    2026-11-23 08:30    (Beijing time)
    结束 / end      2026-11-24 08:30
    值班人 / person  zhangsan            (a person's id in the config, or their name)
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from pager.config import PagerConfig, Team

SHANGHAI = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")
COLUMNS = {"start": ("开始", "start"), "end": ("结束", "end"), "person": ("值班人", "person")}


class RotaError(Exception):
    """A shifts file that cannot be used, with the file, sheet and row."""


@dataclass(frozen=True)
class Shift:
    start: dt.datetime
    end: dt.datetime
    person: str


def beijing(moment: dt.datetime) -> dt.datetime:
    """Naive times in the rota are Beijing time."""
    return moment.replace(tzinfo=SHANGHAI) if moment.tzinfo is None else moment


class Rota:
    def __init__(self, config: PagerConfig) -> None:
        self.config = config
        self.shifts = {tid: read_shifts(team.shifts_file, config)
                       for tid, team in config.teams.items() if team.shifts_file}

    def on_call(self, team_id: str, at: dt.datetime) -> str | None:
        """The person on call for the team at `at`, or None for a gap in the rota."""
        team = self.config.teams[team_id]
        at = at.astimezone(SHANGHAI)
        for override in team.overrides:
            if beijing(override.start) <= at < beijing(override.end):
                return override.person
        for shift in self.shifts.get(team_id, ()):
            if shift.start <= at < shift.end:
                return shift.person
        return _rotation(team, at)

    def role(self, team_id: str, role: str, at: dt.datetime) -> str | None:
        team = self.config.teams[team_id]
        return {"oncall": lambda: self.on_call(team_id, at), "backup": lambda: team.backup,
                "lead": lambda: team.lead}[role]()


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
        if path.suffix.lower() in (".xlsx", ".xlsm"):
            sheet, rows = _xlsx_rows(path)
        else:
            sheet, rows = None, _csv_rows(path)
    except OSError as exc:
        raise RotaError(f"{path}: cannot read: {exc.strerror or exc}") from None
    where = f"{path}" + (f", sheet {sheet!r}" if sheet else "")
    if not rows:
        raise RotaError(f"{where}: no header row ({', '.join(c[0] for c in COLUMNS.values())})")
    header = [str(cell or "").strip().lower() for cell in rows[0]]
    index = {}
    for key, names in COLUMNS.items():
        found = [i for i, name in enumerate(header) if name in names]
        if not found:
            raise RotaError(f"{where}, row 1: no column {names[0]} / {names[1]} "
                            f"(columns: {', '.join(header)})")
        index[key] = found[0]
    by_name = {p.name: pid for pid, p in config.people.items()}
    shifts = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(str(cell or "").strip() for cell in row):
            continue
        cells = {key: row[i] if i < len(row) else None for key, i in index.items()}
        try:
            start, end = _time(cells["start"]), _time(cells["end"])
        except ValueError as exc:
            raise RotaError(f"{where}, row {number}: {exc}") from None
        if end <= start:
            raise RotaError(f"{where}, row {number}: the shift ends before it starts")
        person = str(cells["person"] or "").strip()
        person = person if person in config.people else by_name.get(person, "")
        if not person:
            raise RotaError(f"{where}, row {number}: unknown person "
                            f"{str(cells['person'] or '')!r} (a person's id or name)")
        shifts.append(Shift(start, end, person))
    return shifts


def _time(cell: object) -> dt.datetime:
    if isinstance(cell, dt.datetime):
        return beijing(cell)
    text = str(cell or "").strip()
    for form in ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y-%m-%dT%H:%M"):
        try:
            return beijing(dt.datetime.strptime(text, form))
        except ValueError:
            pass
    raise ValueError(f"{text!r} is not a time such as 2026-11-23 08:30")


def _csv_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as file:  # Excel writes a BOM
        return list(csv.reader(file))


def _xlsx_rows(path: Path) -> tuple[str, list[list[object]]]:
    import zipfile

    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise RotaError(f"{path}: not a readable XLSX workbook ({exc})") from None
    try:
        sheet = book.worksheets[0]
        return sheet.title, [list(row) for row in sheet.iter_rows(values_only=True)]
    finally:
        book.close()
