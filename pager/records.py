"""Every query of the pager's store, and the records they return.

The store (pager/store.py) holds the connection, the schema and its migrations, and the
transactions; the engine (pager/engine.py) decides; this module is the only one that
speaks SQL to the tables. Each function takes `db`: a connection inside one of the
store's transactions (`with store.transaction() as db`), or, for a read on its own, the
store itself (or a connection of another process: the tests read a running pager's file).

The records are typed (a dataclass per table); they also read as the rows they replace
(`incident["grade"]`, `dict(page)`), which is how the messages and pages render them.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, Self

from pager.store import Store

Db = Store | sqlite3.Connection

# SQLite's bound on parameters in a statement: a storm's lists go in chunks of this
CHUNK = 500


class Kind(StrEnum):
    """What a delivery tells its person."""

    PAGE = "page"  # the incident, the first time
    ESCALATION = "escalation"  # nobody acknowledged: the escalation's step
    REPEAT = "repeat"  # Alertmanager says again that it fires
    RESOLVED = "resolved"
    ACK = "ack"  # somebody acknowledged it
    REMINDER = "reminder"  # the written report is due soon


# the messages somebody must act on; the notices that end what a page began
PAGES = (Kind.PAGE, Kind.ESCALATION, Kind.REPEAT)
CLOSING = (Kind.ACK, Kind.RESOLVED)


class Status(StrEnum):
    """Where a delivery is."""

    PENDING = "pending"  # waits for its due time, a retry or a channel's confirmation
    SENT = "sent"
    FAILED = "failed"  # set aside: every channel failed, or it can never be sent
    PEER = "peer"  # the other pager of the pair sent it


class TimerKind(StrEnum):
    ESCALATION = "escalation"  # the incident's escalation step `step`
    REMINDER = "reminder"  # the written report's


class _Record:
    """Read as a row too: `record["field"]`, `dict(record)`."""

    __slots__ = ()

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def keys(self) -> tuple[str, ...]:
        return _names(type(self))

    def asdict(self) -> dict[str, Any]:
        """A copy to annotate (the delivery worker's plan)."""
        return {name: getattr(self, name) for name in _names(type(self))}

    @classmethod
    def of(cls, row: sqlite3.Row | None) -> Self | None:
        return None if row is None else cls.all([row])[0]

    @classmethod
    def all(cls, rows: list[sqlite3.Row]) -> list[Self]:
        """The records of rows of the table (by position when the columns are the fields
        in order, as a table's `SELECT *`: the simulation reads thousands)."""
        if not rows:
            return []
        columns = tuple(rows[0].keys())
        if columns == _names(cls):
            return [cls(*row) for row in rows]
        return [cls(**dict(zip(columns, row, strict=True))) for row in rows]


@functools.cache
def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@dataclass(slots=True)
class Incident(_Record):
    id: int
    key: str  # site|alertname|grade|drill: Alertmanager's group
    grade: str
    alertname: str
    site: str
    drill: int
    owners: str  # JSON list of the teams the alert names
    teams: str  # JSON list of the teams paged
    summary: str
    description: str
    runbook: str
    started: float  # the alerts' own start (wall clock)
    opened: float  # wall clock
    resolved: float | None
    acked: float | None
    acked_by: str | None
    escalation: str  # JSON list of the steps it opened with
    repeats: int


@dataclass(slots=True)
class Page(_Record):
    """A person paged for an incident (once), with their acknowledge link's token."""

    id: int
    incident: int
    person: str
    team: str
    role: str
    token: str
    paged: float


@dataclass(slots=True)
class Delivery(_Record):
    """A message to a person on their route of channels: the outbox."""

    id: int
    incident: int
    person: str
    kind: str  # a Kind
    step: int
    route: str  # JSON list of channel ids
    hop: int  # the channel of the route tried now
    status: str  # a Status
    attempts: int
    due: float  # the pager's clock
    created: float  # wall clock
    sent: float | None
    error: str | None
    born: float | None  # the pager's clock: when the message was first decided
    peer: str | None  # how the pair's other pager took part
    receipt: str | None  # JSON: what a channel took in without confirming (SMS files)


@dataclass(slots=True)
class Timer(_Record):
    id: int
    incident: int
    kind: str  # a TimerKind
    step: int
    due: float  # the pager's clock
    done: int  # 0 waiting, 1 done, 2 set aside (failed)
    error: str | None


@dataclass(slots=True)
class Event(_Record):
    id: int
    incident: int | None
    at: float  # wall clock
    what: str
    person: str | None
    channel: str | None
    detail: str | None


@dataclass(slots=True)
class Received(_Record):
    """A notification as it came from Alertmanager."""

    id: int
    receiver: str
    key: str
    at: float
    body: str


@dataclass(slots=True)
class PeerAck(_Record):
    """An acknowledgement to pass on to the pair's other pager."""

    id: int
    key: str
    started: float
    opened: float
    person: str
    via: str
    at: float
    done: int


def _rows(db: Db, sql: str, args: Sequence = ()) -> list[sqlite3.Row]:
    if isinstance(db, Store):
        return db.query(sql, tuple(args))
    return db.execute(sql, tuple(args)).fetchall()


def _one(db: Db, sql: str, args: Sequence = ()) -> sqlite3.Row | None:
    rows = _rows(db, sql, args)
    return rows[0] if rows else None


def _write(db: sqlite3.Connection, sql: str, args: Sequence = ()) -> sqlite3.Cursor:
    return db.execute(sql, tuple(args))


def _chunks(items: Sequence) -> Iterable[Sequence]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _where(**equal: object) -> tuple[str, list]:
    """`WHERE a = ? AND b = ?` for the arguments that are not None."""
    given = {k: v for k, v in equal.items() if v is not None}
    if not given:
        return "", []
    return " WHERE " + " AND ".join(f"{k} = ?" for k in given), list(given.values())


# ---------------------------------------------------------------------- the whole tables
# (the readers: the pages, the tests, the simulation's invariants)

def incidents(db: Db) -> list[Incident]:
    return Incident.all(_rows(db, "SELECT * FROM incidents ORDER BY id"))


def pages(db: Db, incident: int | None = None, person: str | None = None,
          team: str | None = None) -> list[Page]:
    where, args = _where(incident=incident, person=person, team=team)
    return Page.all(_rows(db, f"SELECT * FROM pages{where} ORDER BY id", args))


def deliveries(db: Db, incident: int | None = None) -> list[Delivery]:
    where, args = _where(incident=incident)
    return Delivery.all(_rows(db, f"SELECT * FROM deliveries{where} ORDER BY id", args))


def events(db: Db, incident: int | None = None, after: int = 0,
           limit: int | None = None) -> list[Event]:
    where, args = _where(incident=incident)
    where = f"{where} AND id > ?" if where else " WHERE id > ?"
    tail = "" if limit is None else f" LIMIT {int(limit)}"
    return Event.all(_rows(db, f"SELECT * FROM events{where} ORDER BY id{tail}",
                           [*args, after]))


def timers(db: Db, incident: int | None = None) -> list[Timer]:
    where, args = _where(incident=incident)
    return Timer.all(_rows(db, f"SELECT * FROM timers{where} ORDER BY id", args))


def received(db: Db) -> list[Received]:
    return Received.all(_rows(db, "SELECT * FROM received ORDER BY id"))


# ---------------------------------------------------------------------- state

def state(db: Db, key: str) -> str | None:
    row = _one(db, "SELECT value FROM state WHERE key = ?", (key,))
    return row["value"] if row else None


def put_state(db: sqlite3.Connection, key: str, value: str) -> None:
    _write(db, "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))


# ---------------------------------------------------------------------- notifications

def add_received(db: sqlite3.Connection, receiver: str, key: str, at: float,
                 body: str) -> None:
    _write(db, "INSERT INTO received (receiver, key, at, body) VALUES (?, ?, ?, ?)",
           (receiver, key, at, body))


def stream(db: Db, receiver: str, group: str) -> tuple[str, float] | None:
    """The last notification of a receiver's group: its key and when (the pager's clock)."""
    row = _one(db, "SELECT key, seen FROM streams WHERE receiver = ? AND group_key = ?",
                (receiver, group))
    return None if row is None else (row["key"], row["seen"])


def put_stream(db: sqlite3.Connection, receiver: str, group: str, key: str,
               seen: float) -> None:
    _write(db, "INSERT OR REPLACE INTO streams (receiver, group_key, key, seen) "
               "VALUES (?, ?, ?, ?)", (receiver, group, key, seen))


def mark_ended(db: sqlite3.Connection, marks: Iterable[str], at: float,
               forget_before: float) -> None:
    """A resolve's alerts remembered (those older than `forget_before` forgotten)."""
    _write(db, "DELETE FROM ended WHERE at < ?", (forget_before,))
    db.executemany("INSERT OR REPLACE INTO ended (mark, at) VALUES (?, ?)",
                   [(m, at) for m in marks])


def ended_since(db: Db, marks: Sequence[str], since: float) -> int:
    """How many of `marks` (distinct) a resolve remembered at or after `since`."""
    found = 0
    for chunk in _chunks(marks):
        found += _one(db, f"SELECT count(*) AS n FROM ended WHERE at >= ? AND mark IN "
                          f"({_marks(len(chunk))})", (since, *chunk))["n"]
    return found


# ---------------------------------------------------------------------- incidents

def incident(db: Db, incident_id: int) -> Incident | None:
    return Incident.of(_one(db, "SELECT * FROM incidents WHERE id = ?", (incident_id,)))


def open_incident(db: Db, key: str) -> Incident | None:
    """The incident of `key` not yet resolved (there is one at the most)."""
    return Incident.of(_one(db, "SELECT * FROM incidents WHERE key = ? AND resolved IS NULL",
                            (key,)))


def open_incidents(db: Db, limit: int, except_keys: Sequence[str] = ()) -> list[Incident]:
    keys = f" AND key NOT IN ({_marks(len(except_keys))})" if except_keys else ""
    return Incident.all(_rows(
        db, f"SELECT * FROM incidents WHERE resolved IS NULL{keys} ORDER BY id LIMIT ?",
        (*except_keys, limit)))


def same_fault(db: Db, site: str, alertname: str, drill: bool, other_than: str
               ) -> list[Incident]:
    """The open incidents of the same alert at the same site at another grade."""
    return Incident.all(_rows(
        db, "SELECT * FROM incidents WHERE resolved IS NULL AND site = ? AND alertname = ? "
            "AND drill = ? AND key != ?", (site, alertname, int(drill), other_than)))


def add_incident(db: sqlite3.Connection, key: str, grade: str, alertname: str, site: str,
                 drill: bool, owners: list[str], summary: str, description: str,
                 runbook: str, started: float, opened: float,
                 escalation: list[dict] | None = None) -> Incident:
    """A new incident, nobody paged yet; `escalation`: the steps it keeps."""
    columns = ["key", "grade", "alertname", "site", "drill", "owners", "teams", "summary",
               "description", "runbook", "started", "opened"]
    values = [key, grade, alertname, site, int(drill), json.dumps(owners), "[]", summary,
              description, runbook, started, opened]
    if escalation is not None:
        columns.append("escalation")
        values.append(json.dumps(escalation))
    cursor = _write(db, f"INSERT INTO incidents ({', '.join(columns)}) VALUES "
                        f"({_marks(len(values))})", values)
    return incident(db, cursor.lastrowid)


def set_resolved(db: sqlite3.Connection, incident_id: int, at: float) -> None:
    _write(db, "UPDATE incidents SET resolved = ? WHERE id = ?", (at, incident_id))


def set_acked(db: sqlite3.Connection, incident_id: int, at: float, person: str) -> None:
    _write(db, "UPDATE incidents SET acked = ?, acked_by = ? WHERE id = ?",
           (at, person, incident_id))


def set_escalation(db: sqlite3.Connection, incident_id: int, steps: list[dict]) -> None:
    _write(db, "UPDATE incidents SET escalation = ? WHERE id = ?",
           (json.dumps(steps), incident_id))


def set_repeats(db: sqlite3.Connection, incident_id: int, repeats: int) -> None:
    _write(db, "UPDATE incidents SET repeats = ? WHERE id = ?", (repeats, incident_id))


def add_team(db: sqlite3.Connection, incident_id: int, team: str) -> None:
    """`team` among the incident's teams paged (once)."""
    teams = json.loads(incident(db, incident_id).teams)
    if team not in teams:
        _write(db, "UPDATE incidents SET teams = ? WHERE id = ?",
               (json.dumps([*teams, team]), incident_id))


def count_open(db: Db) -> int:
    """Incidents not resolved, drills apart."""
    return _one(db, "SELECT count(*) AS n FROM incidents WHERE resolved IS NULL "
                    "AND drill = 0")["n"]


def open_by_grade(db: Db) -> list[tuple[str, bool, int]]:
    """Incidents not resolved (drills apart): (grade, acknowledged, how many)."""
    return [(r["grade"], bool(r["acked"]), r["n"]) for r in _rows(
        db, "SELECT grade, acked IS NOT NULL AS acked, count(*) AS n FROM incidents "
            "WHERE resolved IS NULL AND drill = 0 GROUP BY grade, acked IS NOT NULL")]


def ack_times(db: Db) -> list[tuple[str, list[str], float]]:
    """Each acknowledged incident (drills apart): its grade, owners, seconds to its ack."""
    return [(r["grade"], json.loads(r["owners"]), r["took"]) for r in _rows(
        db, "SELECT grade, owners, acked - opened AS took FROM incidents "
            "WHERE acked IS NOT NULL AND drill = 0")]


def incidents_between(db: Db, since: float, until: float) -> list[Incident]:
    """Incidents open at some moment of [since, until], in the order they opened."""
    return Incident.all(_rows(
        db, "SELECT * FROM incidents WHERE opened <= ? AND (resolved IS NULL OR "
            "resolved >= ?) ORDER BY opened", (until, since)))


def matching(db: Db, key: str, started: float, window: float, opened: float,
             is_open: bool | None, ended: float | None) -> Incident | None:
    """The incident of `key` started within `window` of `started`, not ended before
    `opened`, not opened after `ended`; of several, the one open or not as `is_open`
    says, then the one started and opened closest (pager/pair.py's `_incident`)."""
    return Incident.of(_one(
        db, "SELECT * FROM incidents WHERE key = ? AND started BETWEEN ? AND ? AND (resolved "
            "IS NULL OR resolved >= ?) AND opened <= ? ORDER BY (resolved IS NULL) != ?, "
            "abs(started - ?), abs(opened - ?), id DESC LIMIT 1",
        (key, started - window, started + window, opened,
         float("inf") if ended is None else ended, -1 if is_open is None else int(is_open),
         started, opened)))


def incident_at(db: Db, key: str, started: float, opened: float) -> Incident | None:
    """The incident of `key` started and opened exactly then."""
    return Incident.of(_one(db, "SELECT * FROM incidents WHERE key = ? AND started = ? "
                                "AND opened = ?", (key, started, opened)))


def grades(db: Db, incident_ids: Iterable[int]) -> dict[int, tuple[str, bool]]:
    """Each incident's grade and whether it is a drill's."""
    found = {}
    for chunk in _chunks(sorted(incident_ids)):
        found |= {r["id"]: (r["grade"], bool(r["drill"])) for r in _rows(
            db, f"SELECT id, grade, drill FROM incidents WHERE id IN ({_marks(len(chunk))})",
            chunk)}
    return found


# ---------------------------------------------------------------------- pages

def add_page(db: sqlite3.Connection, incident_id: int, person: str, team: str, role: str,
             token: str, at: float) -> None:
    """The person paged for the incident: the first time only (its team, role, token)."""
    _write(db, "INSERT OR IGNORE INTO pages (incident, person, team, role, token, paged) "
               "VALUES (?, ?, ?, ?, ?, ?)", (incident_id, person, team, role, token, at))


def page(db: Db, incident_id: int, person: str) -> Page | None:
    return Page.of(_one(db, "SELECT * FROM pages WHERE incident = ? AND person = ?",
                        (incident_id, person)))


def page_by_token(db: Db, token: str) -> Page | None:
    return Page.of(_one(db, "SELECT * FROM pages WHERE token = ?", (token,)))


def newest_open_paged(db: Db, person: str) -> int | None:
    """The newest open, unacknowledged incident paged to `person`."""
    row = _one(db, "SELECT p.incident FROM pages p JOIN incidents i ON i.id = p.incident "
                   "WHERE p.person = ? AND i.resolved IS NULL AND i.acked IS NULL "
                   "ORDER BY i.opened DESC, i.id DESC LIMIT 1", (person,))
    return row["incident"] if row else None


def newest_open_delivered(db: Db, person: str, kinds: Sequence[str]) -> int | None:
    """The open, unacknowledged incident whose newest message of `kinds` on its own (not
    in a storm's digest) reached `person`."""
    row = _one(db, f"SELECT e.incident FROM events e JOIN incidents i ON i.id = e.incident "
                   f"WHERE e.what = 'delivered' AND e.person = ? AND e.detail IN "
                   f"({_marks(len(kinds))}) AND i.resolved IS NULL AND i.acked IS NULL "
                   f"ORDER BY e.id DESC LIMIT 1", (person, *kinds))
    return row["incident"] if row else None


def open_unacked_paged(db: Db, person: str) -> list[int]:
    """The incidents paged to `person` open and not acknowledged."""
    return [r["id"] for r in _rows(
        db, "SELECT i.id FROM incidents i JOIN pages p ON p.incident = i.id "
            "WHERE p.person = ? AND i.resolved IS NULL AND i.acked IS NULL", (person,))]


def listed(db: Db, person: str, since: float, limit: int) -> list[tuple[Incident, str]]:
    """The incidents paged to `person` open or resolved since `since`, with the token of
    their page: open and unacknowledged first, by grade, the newest first."""
    rows = _rows(db, "SELECT i.*, p.token AS page_token FROM incidents i JOIN pages p "
                     "ON p.incident = i.id WHERE p.person = ? AND (i.resolved IS NULL OR "
                     "i.resolved >= ?) ORDER BY i.resolved IS NOT NULL, i.acked IS NOT NULL, "
                     "i.grade, i.id DESC LIMIT ?", (person, since, limit))
    found = []
    for row in rows:
        columns = dict(zip(row.keys(), row, strict=True))
        token = columns.pop("page_token")
        found.append((Incident(**columns), token))
    return found


# ---------------------------------------------------------------------- deliveries

def add_delivery(db: sqlite3.Connection, incident_id: int, person: str, kind: str,
                 step: int, route: list[str], due: float, created: float,
                 born: float) -> bool:
    """A message in the outbox; False when this one (incident, person, kind, step) is
    there already."""
    return _write(db, "INSERT OR IGNORE INTO deliveries (incident, person, kind, step, "
                      "route, hop, status, attempts, due, created, born) VALUES (?, ?, ?, ?, "
                      "?, 0, ?, 0, ?, ?, ?)", (incident_id, person, kind, step,
                                               json.dumps(route), Status.PENDING, due,
                                               created, born)).rowcount > 0


def retry_failed(db: sqlite3.Connection, incident_id: int, person: str, kind: str,
                 step: int, route: list[str], due: float) -> None:
    """That message, if it failed, pending again from the first channel of `route`."""
    _write(db, "UPDATE deliveries SET status = ?, route = ?, hop = 0, attempts = 0, due = ?, "
               "error = NULL WHERE incident = ? AND person = ? AND kind = ? AND step = ? "
               "AND status = ?", (Status.PENDING, json.dumps(route), due, incident_id, person,
                                  kind, step, Status.FAILED))


def delivery(db: Db, delivery_id: int) -> Delivery | None:
    return Delivery.of(_one(db, "SELECT * FROM deliveries WHERE id = ?", (delivery_id,)))


def due_deliveries(db: Db, now: float) -> list[Delivery]:
    """What is pending and due (not handed to a channel that confirms later), oldest first."""
    return Delivery.all(_rows(
        db, "SELECT * FROM deliveries WHERE status = ? AND due <= ? AND receipt IS NULL "
            "ORDER BY id", (Status.PENDING, now)))


def handed(db: Db) -> list[Delivery]:
    """What a channel took in and has not yet confirmed (followed after a restart)."""
    return Delivery.all(_rows(
        db, "SELECT * FROM deliveries WHERE status = ? AND receipt IS NOT NULL",
        (Status.PENDING,)))


def has_pending(db: Db, incident_id: int, person: str) -> bool:
    return _one(db, "SELECT 1 FROM deliveries WHERE incident = ? AND person = ? AND "
                    "status = ?", (incident_id, person, Status.PENDING)) is not None


def count_deliveries(db: Db, status: str) -> int:
    return _one(db, "SELECT count(*) AS n FROM deliveries WHERE status = ?", (status,))["n"]


def set_route(db: sqlite3.Connection, delivery_id: int, route: list[str], hop: int) -> None:
    _write(db, "UPDATE deliveries SET route = ?, hop = ? WHERE id = ?",
           (json.dumps(route), hop, delivery_id))


def mark_handed(db: sqlite3.Connection, delivery_ids: Iterable[int], receipt: list[str],
                deadline: float) -> None:
    """Taken in by a channel that confirms later: `receipt` to follow, until `deadline`."""
    db.executemany("UPDATE deliveries SET receipt = ?, due = ? WHERE id = ?",
                   [(json.dumps(receipt), deadline, i) for i in delivery_ids])


def mark_sent(db: sqlite3.Connection, delivery_id: int, at: float, channel: str,
              note: str = "") -> None:
    """Sent on `channel` at `at` (wall clock), and the event that says so (`note`: in a
    storm's digest)."""
    _write(db, "UPDATE deliveries SET status = ?, sent = ?, error = NULL, receipt = NULL "
               "WHERE id = ?", (Status.SENT, at, delivery_id))
    row = delivery(db, delivery_id)
    add_event(db, row.incident, at, "delivered", row.person, channel, row.kind + note)


def mark_tried(db: sqlite3.Connection, delivery: Mapping[str, Any], channel: str,
               error: str, result: str, at: float, status: str, hop: int, attempts: int,
               due: float) -> None:
    """A try on `channel` that failed, and the event that says so (`result`: retry,
    rate_limited, failover or failed): what comes next (another try, the next channel,
    or nothing)."""
    _write(db, "UPDATE deliveries SET status = ?, hop = ?, attempts = ?, due = ?, error = ?, "
               "receipt = NULL WHERE id = ?",
           (status, hop, attempts, due, error, delivery["id"]))
    add_event(db, delivery["incident"], at, f"delivery-{result}", delivery["person"],
              channel, error)


def mark_failed(db: sqlite3.Connection, delivery: Mapping[str, Any], error: str,
                at: float) -> None:
    """Set aside, it can never be sent as it is, and the event that says why."""
    _write(db, "UPDATE deliveries SET status = ?, error = ? WHERE id = ?",
           (Status.FAILED, error, delivery["id"]))
    add_event(db, delivery["incident"], at, "delivery-failed", delivery["person"],
              detail=error)


def mark_peer(db: sqlite3.Connection, delivery_id: int, peer: str,
              status: str | None = None, error: str | None = None) -> None:
    """How the pair's other pager took part (`status`: it sent it, and why so)."""
    if status:
        _write(db, "UPDATE deliveries SET status = ?, error = ? WHERE id = ?",
               (status, error, delivery_id))
    _write(db, "UPDATE deliveries SET peer = ? WHERE id = ?", (peer, delivery_id))


def last_sent(db: Db, incident_id: int, person: str, kinds: Sequence[str]) -> float | None:
    """When the newest message of `kinds` to `person` about the incident was sent."""
    return _one(db, f"SELECT max(sent) AS at FROM deliveries WHERE incident = ? AND "
                    f"person = ? AND status = ? AND kind IN ({_marks(len(kinds))})",
                (incident_id, person, Status.SENT, *kinds))["at"]


def sent_for_peer(db: Db, peer: str, limit: int) -> list[Delivery]:
    """Sent for the other pager, for the reason `peer`."""
    return Delivery.all(_rows(
        db, "SELECT * FROM deliveries WHERE peer = ? AND status = ? ORDER BY id LIMIT ?",
        (peer, Status.SENT, limit)))


def sent_by_peer_reason(db: Db) -> dict[str, int]:
    """Deliveries this pager sent that the other pager took part in, by how."""
    return {r["peer"]: r["n"] for r in _rows(
        db, "SELECT peer, count(*) AS n FROM deliveries WHERE peer IS NOT NULL AND "
            "status = ? GROUP BY peer", (Status.SENT,))}


# ---------------------------------------------------------------------- timers

def add_timer(db: sqlite3.Connection, incident_id: int, kind: str, step: int,
              due: float) -> None:
    _write(db, "INSERT INTO timers (incident, kind, step, due) VALUES (?, ?, ?, ?)",
           (incident_id, kind, step, due))


def due_timers(db: Db, now: float) -> list[int]:
    """The timers due and waiting, by due time."""
    return [r["id"] for r in _rows(db, "SELECT id FROM timers WHERE done = 0 AND due <= ? "
                                       "ORDER BY due", (now,))]


def take_timer(db: sqlite3.Connection, timer_id: int) -> Timer | None:
    """The timer, done from now on; None when it was done already."""
    timer = Timer.of(_one(db, "SELECT * FROM timers WHERE id = ? AND done = 0", (timer_id,)))
    if timer is not None:
        _write(db, "UPDATE timers SET done = 1 WHERE id = ?", (timer_id,))
    return timer


def set_timer_aside(db: sqlite3.Connection, timer_id: int, error: str) -> None:
    _write(db, "UPDATE timers SET done = 2, error = ? WHERE id = ?", (error, timer_id))


def stop_timers(db: sqlite3.Connection, incident_id: int) -> None:
    """All the incident's timers done (it is another incident's now)."""
    _write(db, "UPDATE timers SET done = 1 WHERE incident = ?", (incident_id,))


def stop_escalation(db: sqlite3.Connection, incident_id: int) -> None:
    """The incident's escalation timers still waiting, done (its reminder goes on)."""
    _write(db, "UPDATE timers SET done = 1 WHERE incident = ? AND kind = ? AND done = 0",
           (incident_id, TimerKind.ESCALATION))


# ---------------------------------------------------------------------- events

def add_event(db: sqlite3.Connection, incident_id: int | None, at: float, what: str,
              person: str | None = None, channel: str | None = None,
              detail: str | None = None) -> None:
    _write(db, "INSERT INTO events (incident, at, what, person, channel, detail) "
               "VALUES (?, ?, ?, ?, ?, ?)", (incident_id, at, what, person, channel, detail))


def event(db: Db, event_id: int) -> Event | None:
    return Event.of(_one(db, "SELECT * FROM events WHERE id = ?", (event_id,)))


def happened(db: Db, incident_id: int, whats: Sequence[str], person: str | None = None
             ) -> set[str]:
    """Which of `whats` happened to the incident (to `person`, if given)."""
    who = "" if person is None else " AND person = ?"
    return {r["what"] for r in _rows(
        db, f"SELECT DISTINCT what FROM events WHERE incident = ? AND what IN "
            f"({_marks(len(whats))}){who}",
        (incident_id, *whats, *(() if person is None else (person,))))}


# ---------------------------------------------------------------------- the pair's acks

def add_peer_ack(db: sqlite3.Connection, incident: Incident, person: str, via: str,
                 at: float) -> None:
    _write(db, "INSERT INTO peer_acks (key, started, opened, person, via, at) "
               "VALUES (?, ?, ?, ?, ?, ?)", (incident.key, incident.started, incident.opened,
                                             person, via, at))


def waiting_peer_acks(db: Db, limit: int) -> list[PeerAck]:
    return PeerAck.all(_rows(
        db, "SELECT * FROM peer_acks WHERE done = 0 ORDER BY id LIMIT ?", (limit,)))


def peer_ack_done(db: sqlite3.Connection, ack_id: int) -> None:
    _write(db, "UPDATE peer_acks SET done = 1 WHERE id = ?", (ack_id,))
