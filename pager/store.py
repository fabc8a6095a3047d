"""The pager's durable state: one SQLite file in WAL mode.

Everything the pager promises is a row here before it answers: a notification is stored
before Alertmanager gets its 200, a page is an outbox row before it is sent, an
escalation is a timer with its due time. After kill -9 the next start carries on from
these rows: nothing accepted is lost, and the unique keys keep anything from going out
twice (a page is marked sent in the same moment the channel accepts it).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, team TEXT NOT NULL,
    received REAL NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, grade TEXT NOT NULL, alertname TEXT NOT NULL,
    site TEXT NOT NULL, drill INTEGER NOT NULL, owners TEXT NOT NULL, teams TEXT NOT NULL,
    summary TEXT NOT NULL, description TEXT NOT NULL, runbook TEXT NOT NULL,
    started REAL NOT NULL, opened REAL NOT NULL, resolved REAL, acked REAL, acked_by TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS one_open_incident ON incidents (key) WHERE resolved IS NULL;
CREATE TABLE IF NOT EXISTS pages (
    id INTEGER PRIMARY KEY, incident INTEGER NOT NULL, person TEXT NOT NULL,
    team TEXT NOT NULL, role TEXT NOT NULL, token TEXT NOT NULL UNIQUE, paged REAL NOT NULL,
    UNIQUE (incident, person));
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY, incident INTEGER NOT NULL, person TEXT NOT NULL,
    kind TEXT NOT NULL, step INTEGER NOT NULL, route TEXT NOT NULL, hop INTEGER NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL, due REAL NOT NULL,
    created REAL NOT NULL, sent REAL, error TEXT,
    UNIQUE (incident, person, kind, step));
CREATE INDEX IF NOT EXISTS pending ON deliveries (status, due);
CREATE TABLE IF NOT EXISTS timers (
    id INTEGER PRIMARY KEY, incident INTEGER NOT NULL, kind TEXT NOT NULL,
    step INTEGER NOT NULL, due REAL NOT NULL, done INTEGER NOT NULL DEFAULT 0,
    UNIQUE (incident, kind, step));
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, incident INTEGER, at REAL NOT NULL, what TEXT NOT NULL,
    person TEXT, channel TEXT, detail TEXT);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Store:
    """One connection, one lock: the pager's threads take turns (its writes are small)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False,
                                   isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a 200 means on disk
            self._db.executescript(SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing, and nobody else in between (other processes wait: IMMEDIATE)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def get(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM state WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def close(self) -> None:
        with self._lock:
            self._db.close()
