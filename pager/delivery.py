"""The delivery worker: sends the outbox, keeps each robot under its rate limit, retries
with backoff and fails over to the person's next channel.

A row is marked sent in the transaction right after its channel accepted it, so a pager
killed before that moment sends it again on restart (at least once: an accepted page is
never lost); one killed after never does.
"""

from __future__ import annotations

import collections
import json
import logging
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry, Counter, Histogram

from pager import channels
from pager.config import ROBOTS
from pager.engine import Engine
from pager.messages import Message, compose

log = logging.getLogger("insmon.pager.delivery")
BACKOFF = (2.0, 5.0, 15.0, 30.0)  # after the 1st, 2nd, ... failed try
GATHER = 2.0  # the minute's last message to a robot waits this long for others to join it


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "insmon_pager_deliveries", "Messages handed to a channel, by the paged person's "
            "team, the channel and the result (sent, retry, failover, failed, rate_limited)",
            ["team", "channel", "result"], registry=registry)
        self.latency = Histogram(
            "insmon_pager_delivery_seconds", "From the decision to page to the channel "
            "accepting the message", ["channel"], registry=registry,
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900))


class Worker:
    def __init__(self, engine: Engine, metrics: Metrics, threads: int = 8) -> None:
        self.engine, self.metrics = engine, metrics
        self.config, self.store = engine.config, engine.store
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="pager-send")
        self._busy: set[int] = set()  # delivery ids being sent
        self._lock = threading.Lock()
        self._sent: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque)  # channel -> send times in the last minute
        self._thread = threading.Thread(target=self._loop, name="pager-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        self._thread.join(10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.engine.tick()
                self._dispatch()
            except Exception:  # the worker must outlive any one bad row
                log.exception("delivery round failed")
            self.wake.wait(0.5)
            self.wake.clear()

    def _dispatch(self) -> None:
        now = time.time()
        rows = self.store.query("SELECT * FROM deliveries WHERE status = 'pending' AND due <= ?"
                                " ORDER BY id", (now,))
        batches: dict[str, dict[tuple, list[sqlite3.Row]]] = collections.defaultdict(dict)
        with self._lock:
            rows = [r for r in rows if r["id"] not in self._busy]
        for row in rows:
            channel = json.loads(row["route"])[row["hop"]]
            robot = self.config.channels[channel].type in ROBOTS
            key = (row["incident"], row["kind"], row["step"]) if robot else (row["id"],)
            batches[channel].setdefault(key, []).append(row)
        for channel, groups in batches.items():
            free = self._free(channel, now)
            if free <= 0:
                continue  # over the robot's limit: they wait, nothing is dropped
            jobs = list(groups.values())
            if free == 1:  # the minute's last message: it carries everything due
                if now - min(r["due"] for job in jobs for r in job) < GATHER:
                    continue
                jobs = [[row for job in jobs for row in job]]
            else:  # one message each, keeping the last one of the minute for the rest
                jobs = jobs[:free - 1]
            for job in jobs:
                with self._lock:
                    self._busy |= {r["id"] for r in job}
                self._sent[channel].append(now)
                self._pool.submit(self._send, channel, job)

    def _free(self, channel: str, now: float) -> int:
        sent = self._sent[channel]
        while sent and sent[0] < now - 60:
            sent.popleft()
        return self.config.channels[channel].per_minute - len(sent)

    def _send(self, channel_id: str, rows: list[sqlite3.Row]) -> None:
        try:
            channel = self.config.channels[channel_id]
            people = [self.config.people[r["person"]] for r in rows]
            message = self._message(rows)
            try:
                channels.send(channel, people, message)
            except channels.RateLimited as exc:
                self._retry(channel_id, rows, str(exc), rate_limited=True)
            except channels.Failed as exc:
                self._retry(channel_id, rows, str(exc))
            except Exception as exc:  # a bug in a channel must not lose the page
                log.exception("channel %s crashed", channel_id)
                self._retry(channel_id, rows, f"crashed: {exc}")
            else:
                self._done(channel_id, rows)
        finally:
            with self._lock:
                self._busy -= {r["id"] for r in rows}
            self.wake.set()

    def _message(self, rows: list[sqlite3.Row]) -> Message:
        parts = []
        for incident_id in dict.fromkeys(r["incident"] for r in rows):
            incident = self.engine.incident(incident_id)
            mine = [r for r in rows if r["incident"] == incident_id]
            paged = self.store.query("SELECT * FROM pages WHERE incident = ? ORDER BY id",
                                     (incident_id,))
            tokens = {p["person"]: p["token"] for p in paged}
            for kind, step in dict.fromkeys((r["kind"], r["step"]) for r in mine):
                people = [r["person"] for r in mine if (r["kind"], r["step"]) == (kind, step)]
                parts.append(compose(self.config, incident, kind, step, paged,
                                     {p: tokens.get(p) for p in people}, time.time()))
        if len(parts) == 1:
            return parts[0]
        return Message(f"{len(parts)} 条通知: " + parts[0].title,
                       "\n\n----\n\n".join(p.text for p in parts),
                       parts[0].short)

    def _done(self, channel: str, rows: list[sqlite3.Row]) -> None:
        now = time.time()
        with self.store.transaction() as db:
            for row in rows:
                db.execute("UPDATE deliveries SET status = 'sent', sent = ?, error = NULL "
                           "WHERE id = ?", (now, row["id"]))
                db.execute("INSERT INTO events (incident, at, what, person, channel, detail) "
                           "VALUES (?, ?, 'delivered', ?, ?, ?)",
                           (row["incident"], now, row["person"], channel, row["kind"]))
        for row in rows:
            self.metrics.deliveries.labels(self._team(row), channel, "sent").inc()
            self.metrics.latency.labels(channel).observe(now - row["created"])

    def _retry(self, channel: str, rows: list[sqlite3.Row], error: str,
               rate_limited: bool = False) -> None:
        now = time.time()
        config = self.config.channels[channel]
        with self.store.transaction() as db:
            for row in rows:
                route, attempts = json.loads(row["route"]), row["attempts"] + 1
                if rate_limited:
                    result, update = "rate_limited", ("pending", row["hop"], row["attempts"],
                                                      now + 10)
                elif attempts < config.retries:
                    result, update = "retry", ("pending", row["hop"], attempts,
                                               now + BACKOFF[min(attempts, len(BACKOFF)) - 1])
                elif row["hop"] + 1 < len(route):
                    result, update = "failover", ("pending", row["hop"] + 1, 0, now)
                else:
                    result, update = "failed", ("failed", row["hop"], attempts, now)
                    log.error("page %d to %s failed on every channel: %s", row["id"],
                              row["person"], error)
                db.execute("UPDATE deliveries SET status = ?, hop = ?, attempts = ?, due = ?, "
                           "error = ? WHERE id = ?", (*update, error, row["id"]))
                db.execute("INSERT INTO events (incident, at, what, person, channel, detail) "
                           "VALUES (?, ?, ?, ?, ?, ?)",
                           (row["incident"], now, f"delivery-{result}", row["person"],
                            channel, error))
                self.metrics.deliveries.labels(self._team(row), channel, result).inc()
        log.warning("%s: %s (%d message(s))", channel, error, len(rows))

    def _team(self, row: sqlite3.Row) -> str:
        rows = self.store.query("SELECT team FROM pages WHERE incident = ? AND person = ?",
                                (row["incident"], row["person"]))
        return rows[0]["team"] if rows else ""
