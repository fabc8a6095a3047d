"""The pager's durable state: one SQLite file in WAL mode. This module holds the
connection, the schema and its migrations, and the transactions; every query of the
tables is in pager/records.py.

Everything the pager promises is a row here before it answers: a notification is stored
before Alertmanager gets its 200, a page is an outbox row before it is sent, an
escalation is a timer with its due time. After kill -9 the next start carries on from
these rows: nothing accepted is lost, and the unique keys keep anything from going out
twice (a page is marked sent in the same moment the channel accepts it).
"""

from __future__ import annotations

import os
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

# Each a step from the version before it (PRAGMA user_version), run once, in order.
MIGRATIONS = (
    # 2: every notification kept (Alertmanager's repeats are news, not duplicates), the
    # last one of each group to tell a retry from a repeat; the escalation an incident
    # opened with (a config change never rewrites a running incident's); timers that
    # failed are set aside with their error; a delivery's age on the pager's own clock;
    # the alerts of a resolve, to know a late copy of what came before it.
    """
    CREATE TABLE received (
        id INTEGER PRIMARY KEY, receiver TEXT NOT NULL, key TEXT NOT NULL,
        at REAL NOT NULL, body TEXT NOT NULL);
    INSERT INTO received (receiver, key, at, body)
        SELECT team, key, received, body FROM notifications;
    DROP TABLE notifications;
    CREATE TABLE streams (
        receiver TEXT NOT NULL, group_key TEXT NOT NULL, key TEXT NOT NULL,
        seen REAL NOT NULL, PRIMARY KEY (receiver, group_key));
    ALTER TABLE incidents ADD COLUMN escalation TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE incidents ADD COLUMN repeats INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE timers ADD COLUMN error TEXT;
    ALTER TABLE deliveries ADD COLUMN born REAL;
    CREATE TABLE ended (mark TEXT PRIMARY KEY, at REAL NOT NULL);
    """,
    # 3: a hot-standby pair: how the peer took part in a delivery (status 'peer': the
    # peer sent it; `peer`: why this pager sent it for the peer, and after a partition
    # whether the peer sent it too), and the acknowledgements to pass on to the peer.
    """
    ALTER TABLE deliveries ADD COLUMN peer TEXT;
    CREATE TABLE peer_acks (
        id INTEGER PRIMARY KEY, key TEXT NOT NULL, started REAL NOT NULL,
        opened REAL NOT NULL, person TEXT NOT NULL, via TEXT NOT NULL, at REAL NOT NULL,
        done INTEGER NOT NULL DEFAULT 0);
    """,
    # 4: a message a channel took in without confirming it (gammu-smsd's outbox files):
    # pending until confirmed, its `due` the deadline; followed again after a restart.
    """
    ALTER TABLE deliveries ADD COLUMN receipt TEXT;
    """,
)
VERSION = 1 + len(MIGRATIONS)


class StoreError(Exception):
    """The store cannot be written (full disk, read-only, deleted): nothing is accepted."""


class Store:
    """One connection, one lock: the pager's threads take turns (its writes are small)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, check_same_thread=False,
                                       isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._lock = threading.RLock()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a 200 means on disk
            self._migrate()
            self._inode = os.stat(path).st_ino
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"database {path}: {exc}") from None

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > VERSION:
            raise StoreError(f"{self.path}: written by a newer insmon pager (schema "
                             f"{version}, this one knows {VERSION}): not touched")
        if version == 0:
            self._db.executescript(SCHEMA)
            version = 1
        for step in range(version, VERSION):
            self._db.executescript(f"BEGIN IMMEDIATE; {MIGRATIONS[step - 1]}; "
                                   f"PRAGMA user_version = {step + 1}; COMMIT;")

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
        """A read on its own (pager/records.py's, which holds every query)."""
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def check(self) -> str | None:
        """Why the store cannot take a page now (None: it can): a write that reaches the
        file, and the file still the one opened (deleted or replaced, every write would
        go into the void)."""
        try:
            lost = self.lost()
            if lost:
                return lost
            with self.transaction() as db:
                db.execute("INSERT OR REPLACE INTO state (key, value) VALUES ('alive', "
                           "strftime('%s', 'now'))")
        except (sqlite3.Error, OSError) as exc:
            return f"{self.path} cannot be written: {exc}"
        return None

    def lost(self) -> str | None:
        """Why the file opened is no longer the store (deleted, replaced), or None."""
        try:
            if os.stat(self.path).st_ino == self._inode:
                return None
        except FileNotFoundError:
            return f"{self.path} was deleted: restart the pager"
        return f"{self.path} was replaced: restart the pager"

    def close(self) -> None:
        with self._lock:
            self._db.close()
