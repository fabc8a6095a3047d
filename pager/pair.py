"""A hot-standby pair of pagers (双机热备): two hosts, each with its own store, both given
every notification by the Alertmanager pair, so no single host stands between a fault
and a person.

Invariants (tests/test_pager_pair.py checks them in seeded simulation and with real
processes):
  1. Never silence: a page either pager accepted reaches its person at least once while
     either pager lives. When in doubt a pager sends: the failure mode is a duplicate.
  2. Once, by the active: while the two reach each other, the standby sends nothing the
     active sent, or has been trying to send for less than a minute.
  3. One acknowledgement: an ack taken by either pager stops the escalation on both (it
     is passed on, and retried until the other takes it).
  4. Ask first: a pager asks the other before it sends, so a restarted active sends
     nothing the standby sent while it was down.

How, as Alertmanager's own pair avoids double notifications: the standby holds each
delivery for `grace` after it fell due, then asks the active about the incident
(GET /api/peer/incident): sent there, or acknowledged there, and the standby records it
and sends nothing; still pending there for under a minute, and it asks again; not
there, failed there, or no answer within `timeout`, and the standby sends. The active
asks too, without waiting, and sends unless the standby already did.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from pager.engine import Engine

log = logging.getLogger("insmon.pager.pair")
PENDING_LIMIT = 60.0  # the active trying this long (rate limits, retries): the standby sends
ASK_EVERY = 2.0  # an incident's answer is used this long before asking again
BEAT_EVERY = 5.0  # the peer's liveness is asked this often
ACK_KEEP = 600.0  # an ack is passed on until the peer has the incident, this long at most
MATCH_WINDOW = 300.0  # the same incident's start on both pagers (see _incident)
SAME_OPEN = 60.0  # and its opening
PAGES = ("page", "escalation", "repeat")

Ask = Callable[[str, dict | None], dict | None]  # path, body (None: GET) -> answer or None


def http_ask(url: str, token: str, timeout: float) -> Ask:
    """Questions to the other pager's API with the pair's token; None when it does not
    answer within `timeout` (or answers nonsense)."""
    def ask(path: str, body: dict | None = None) -> dict | None:
        request = urllib.request.Request(
            url.rstrip("/") + path, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.load(response)
        except (OSError, ValueError, http.client.HTTPException):
            return None
        return answer if isinstance(answer, dict) else None
    return ask


class Peer:
    """This pager's side of the pair: what it asks the other before sending, the
    acknowledgements it passes on, whether the other lives, and the duplicates a
    partition left."""

    def __init__(self, engine: Engine, ask: Ask) -> None:
        assert engine.config.pair is not None and engine.role in ("active", "standby")
        self.engine, self.store, self.ask = engine, engine.store, ask
        self.pair = engine.config.pair
        self.standby = engine.role == "standby"
        now = engine.clock.now()
        self.last_seen = now  # from the start: a peer never heard pages after down_after
        self.seen_wall = 0.0
        self.reachable = True  # until a question goes unanswered
        self._silent_since = now
        self._answers: dict[int, tuple[float, dict | None]] = {}
        self._next_beat = now
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pager-peer", daemon=True)

    # ------------------------------------------------------------------ before sending

    def gate(self, rows: list[dict]) -> list[dict]:
        """Of the due deliveries, those this pager sends now; the peer's are marked so,
        the rest wait for a later round."""
        now = self.engine.clock.now()
        return [row for row in rows if self._verdict(row, now)]

    def _verdict(self, row: dict, now: float) -> bool:
        if row.get("peer"):  # decided before: sending for the peer, a retry or failover
            return True
        if self.standby and now < (row["born"] or now) + self.pair.grace:
            return False
        if not self.standby and not self.reachable:
            return True  # the active does not wait for a peer that is not there
        incident = self.engine.incident(row["incident"])
        if incident is None:
            return True
        answer = self._answer(incident, now)
        if answer is None:  # no answer: the standby sends for the active
            if self.standby:
                self._mark(row, "sent-for-peer", "unreachable", "the active does not answer")
            return True
        if answer.get("acked") and incident["acked"] is None and row["kind"] in PAGES:
            self.engine.ack(incident["id"], str(answer.get("acked_by") or "?"), "peer")
        theirs = same_delivery(answer, row, now)
        if any(d.get("status") == "sent" for d in theirs) or (
                answer.get("acked") and row["kind"] in PAGES):
            self._mark(row, "sent-by-peer", None, "sent or acknowledged on the peer",
                       status="peer")
            return False
        if not self.standby:
            return True
        if any(d.get("status") == "pending" and float(d.get("age", 0)) < PENDING_LIMIT
               for d in theirs):
            return False  # the active is on it: ask again in a while
        why = "failed" if theirs else "not-there"
        self._mark(row, "sent-for-peer", why, "the active has not sent it" if theirs
                   else "the active has no such page")
        return True

    def _answer(self, incident, now: float) -> dict | None:
        asked = self._answers.get(incident["id"])
        if asked is not None and now - asked[0] < ASK_EVERY:
            return asked[1]
        if not self.reachable and now - self._silent_since < BEAT_EVERY:
            return None  # silent a moment ago: not one more timeout per incident in a storm
        answer = self.ask(question(incident), None)
        self._answers[incident["id"]] = (now, answer)
        self._seen(answer is not None, now)
        return answer

    def _mark(self, row: dict, what: str, why: str | None, detail: str,
              status: str | None = None) -> None:
        with self.store.transaction() as db:
            if status:
                db.execute("UPDATE deliveries SET status = ?, error = ? WHERE id = ?",
                           (status, detail, row["id"]))
            db.execute("UPDATE deliveries SET peer = ? WHERE id = ?",
                       (why or what, row["id"]))
            db.execute("INSERT INTO events (incident, at, what, person, detail) VALUES "
                       "(?, ?, ?, ?, ?)", (row["incident"], self.engine.wall(), what,
                                           row["person"], f"{row['kind']}: {detail}"))
        row["peer"] = why or what

    # ------------------------------------------------------------------ in the background

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self.round()

    def round(self) -> None:
        """Pass on acknowledgements; now and then, is the peer there, and which pages
        of a partition did both pagers send. One failing never stops the others."""
        for step in (self.forward_acks, self.beat, self.reconcile):
            try:
                step()
            except Exception:
                log.exception("pair: %s failed", step.__name__)

    def forward_acks(self) -> None:
        for ack in self.store.query("SELECT * FROM peer_acks WHERE done = 0 ORDER BY id "
                                    "LIMIT 50"):
            taken = self.ask("/api/peer/ack", {k: ack[k] for k in (
                "key", "started", "opened", "person", "via", "at")})
            self._seen(taken is not None, self.engine.clock.now())
            if taken is None:
                return  # kept: passed on once the peer answers
            if not taken.get("taken") and self.engine.wall() - ack["at"] < ACK_KEEP:
                continue  # the peer has not opened it yet (a notification it gets late)
            with self.store.transaction() as db:
                db.execute("UPDATE peer_acks SET done = 1 WHERE id = ?", (ack["id"],))

    def beat(self) -> None:
        now = self.engine.clock.now()
        if now < self._next_beat:
            return
        self._next_beat = now + BEAT_EVERY
        self._seen(self.ask("/api/peer/hello", None) is not None, now)
        if self.reachable:
            self.engine.peer_heard()
        elif now - self.last_seen >= self.pair.down_after:
            self.engine.peer_silent(now - self.last_seen)

    def reconcile(self) -> None:
        """Pages sent for an unreachable peer: did it send them too (a duplicate)?"""
        if not self.reachable:
            return
        for row in self.store.query("SELECT * FROM deliveries WHERE peer = 'unreachable' "
                                    "AND status = 'sent' ORDER BY id LIMIT 20"):
            incident = self.engine.incident(row["incident"])
            answer = self.ask(question(incident), None)
            if answer is None:
                return
            both = any(d.get("status") == "sent" for d in same_delivery(
                answer, dict(row), self.engine.clock.now()))
            with self.store.transaction() as db:
                db.execute("UPDATE deliveries SET peer = ? WHERE id = ?",
                           ("duplicate" if both else "alone", row["id"]))
                if both:
                    db.execute("INSERT INTO events (incident, at, what, person, detail) "
                               "VALUES (?, ?, 'duplicate', ?, ?)",
                               (row["incident"], self.engine.wall(), row["person"],
                                f"{row['kind']}: both pagers sent it while apart"))
            if both:
                log.warning("incident %d: %s's %s went out from both pagers while they "
                            "could not reach each other", row["incident"], row["person"],
                            row["kind"])

    def _seen(self, answered: bool, now: float) -> None:
        if answered:
            if not self.reachable:
                log.info("the other pager answers again")
            self.last_seen, self.seen_wall, self.reachable = now, self.engine.wall(), True
        else:
            if self.reachable:
                log.warning("the other pager does not answer: %s",
                            "sending for it after the grace period" if self.standby
                            else "sending without asking it")
            self.reachable, self._silent_since = False, now


# ------------------------------------------------------------------ the peer's questions

def question(incident) -> str:
    return "/api/peer/incident?" + urllib.parse.urlencode(
        {k: incident[k] if k == "key" else repr(incident[k])
         for k in ("key", "started", "opened")})


def same_delivery(answer: dict, row: dict, now: float) -> list[dict]:
    """The peer's deliveries that are this one: the same person, kind and step (a repeat:
    one born within a minute of this one, as the pagers count Alertmanager's repeats
    apart when one of them missed some)."""
    age = now - (row["born"] or now)
    return [d for d in answer.get("deliveries", [])
            if d.get("person") == row["person"] and d.get("kind") == row["kind"]
            and (d.get("step") == row["step"] if row["kind"] != "repeat"
                 else abs(float(d.get("age", 0)) - age) <= 60)]


def describe(engine: Engine, key: str, started: float, opened: float) -> dict:
    """What this pager knows of an incident the other pager asks about."""
    incident = _incident(engine, key, started, opened)
    if incident is None:
        return {"found": False, "deliveries": []}
    now = engine.clock.now()
    deliveries = engine.store.query(
        "SELECT person, kind, step, status, born FROM deliveries WHERE incident = ?",
        (incident["id"],))
    return {"found": True, "acked": incident["acked"], "acked_by": incident["acked_by"],
            "resolved": incident["resolved"],
            "deliveries": [{"person": d["person"], "kind": d["kind"], "step": d["step"],
                            "status": d["status"], "age": now - (d["born"] or now)}
                           for d in deliveries]}


def take_ack(engine: Engine, body: dict) -> dict:
    """The other pager's acknowledgement: this pager's incident stops escalating too."""
    incident = _incident(engine, str(body["key"]), float(body["started"]),
                         float(body["opened"]))
    if incident is not None:
        engine.ack(incident["id"], str(body["person"]), "peer")
    return {"taken": incident is not None}


def _incident(engine: Engine, key: str, started: float, opened: float
              ):  # -> sqlite3.Row | None
    """This pager's incident that is the other's: the same key, the alerts' own start
    (the same on both: Prometheus said it; the watchdog's and the peer's silences, which
    each pager dates itself, a little apart), opened within a minute of the other's (the
    Alertmanager pair posts to both at once): the closest start, then opening. None when
    this pager did not open that one (it was down, or apart)."""
    rows = engine.store.query(
        "SELECT * FROM incidents WHERE key = ? AND started BETWEEN ? AND ? AND opened "
        "BETWEEN ? AND ? ORDER BY abs(started - ?), abs(opened - ?) LIMIT 1",
        (key, started - MATCH_WINDOW, started + MATCH_WINDOW, opened - SAME_OPEN,
         opened + SAME_OPEN, started, opened))
    return rows[0] if rows else None


class PairCollector:
    """The pair's metrics, from the peer's state and the store."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    def collect(self):  # prometheus_client's collector protocol
        peer = self.peer
        role = GaugeMetricFamily("insmon_pager_role", "This pager's role in the pair",
                                 labels=["role"])
        for name in ("active", "standby"):
            role.add_metric([name], float(peer.engine.role == name))
        yield role
        up = GaugeMetricFamily("insmon_pager_peer_up", "1 while the other pager answers")
        up.add_metric([], float(peer.reachable))
        yield up
        seen = GaugeMetricFamily("insmon_pager_peer_last_seen_timestamp_seconds",
                                 "When the other pager last answered")
        seen.add_metric([], peer.seen_wall)
        yield seen
        sent_for = CounterMetricFamily(
            "insmon_pager_peer_deliveries", "Messages this pager sent on the other's "
            "behalf, by why: unreachable (no answer; after the partition: duplicate or "
            "alone), failed or not-there (the active did not send it)", labels=["why"])
        sent_by = CounterMetricFamily("insmon_pager_peer_sent", "Messages this pager left "
                                      "out because the other pager sent them")
        duplicates = CounterMetricFamily("insmon_pager_peer_duplicates", "Messages both "
                                         "pagers sent while they could not reach each other")
        counts = {r["peer"]: r["n"] for r in peer.store.query(
            "SELECT peer, count(*) AS n FROM deliveries WHERE peer IS NOT NULL AND "
            "status = 'sent' GROUP BY peer")}
        for why in ("unreachable", "duplicate", "alone", "failed", "not-there"):
            sent_for.add_metric([why], counts.get(why, 0))
        sent_by.add_metric([], peer.store.query("SELECT count(*) AS n FROM deliveries "
                                                "WHERE status = 'peer'")[0]["n"])
        duplicates.add_metric([], counts.get("duplicate", 0))
        yield sent_for
        yield sent_by
        yield duplicates
