"""The delivery worker: sends the outbox, keeps each channel under its rate limit,
retries with backoff and fails over to the person's next channel.

What goes out together: a group robot's chat is one recipient (the group), so the due
messages for one robot go in as few posts as the robot's size limit allows. SMS, mail,
gateways and webhooks reach one person: each message is that person's alone, with their
own acknowledge link. In a storm, what waits for a person on a channel goes as one
digest (pager/storm.py).

A row is marked sent in the transaction right after its channel confirmed it (all of
it: a page cut into several posts counts only when every post went), so a pager killed
before that moment sends it again on restart (at least once: an accepted page is never
lost); one killed after never does. When that mark cannot be written (a full disk), the
worker remembers it and writes it later: it never sends the row again. An SMS is handed
to gammu-smsd and followed: sent when it reaches the sent folder, failed (the next
channel) from the error folder or after the channel's `confirm_within` in the outbox.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from pager import channels, records
from pager.channels import ROBOTS, Message
from pager.engine import Engine
from pager.messages import compose, digest, join, pack
from pager.pair import Peer
from pager.records import Status
from pager.storm import Flows, urgent

log = logging.getLogger("insmon.pager.delivery")
BACKOFF = (2.0, 5.0, 15.0, 30.0)  # after the 1st, 2nd, ... failed try
# A message that waited this long for its channel's minute goes to the person's next
# channel: a robot's limit never holds back a Level I that SMS could carry.
QUEUE_LIMIT = 30.0
# A robot's minute is 20 posts: in a storm, spent on posts that are full. Once a robot
# had a sixth of a minute's posts in the last 10 s, a post with room left waits for
# others to join it, up to the robot's average spacing (3 s at 20 a minute); full posts
# go at once.
# When every channel of the person failed, the whole route is tried again after AGAIN
# seconds (a modem back from a reboot, a robot back online), for up to GIVE_UP seconds.
AGAIN, GIVE_UP = 60.0, 3600.0


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


@dataclass
class Job:
    channel: str
    rows: list[dict]
    messages: list[Message]  # posted in order; the rows are sent when all are
    folded: frozenset[int] = frozenset()  # the rows that go in a storm's digest


class Worker:
    def __init__(self, engine: Engine, metrics: Metrics, threads: int = 8,
                 send: Callable = channels.send, inline: bool = False,
                 peer: Peer | None = None, confirm: Callable = channels.confirm) -> None:
        """`inline`: send in the caller's thread (the simulation's controlled clock);
        `peer`: the other pager of a pair, asked before anything is sent; `confirm`:
        what became of a message a channel took in without confirming it (SMS)."""
        self.engine, self.metrics, self.send, self.peer = engine, metrics, send, peer
        self.confirm = confirm
        self.config, self.store = engine.config, engine.store
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._pool = None if inline else ThreadPoolExecutor(threads,
                                                            thread_name_prefix="pager-send")
        self._busy: set[int] = set()  # delivery ids being sent
        self._unrecorded: dict[int, tuple[float, str, str]] = {}  # sent, not yet written
        # handed over, not yet confirmed: delivery id -> (channel, files, deadline)
        self._handed: dict[int, tuple[str, list[str], float]] = {
            r["id"]: (json.loads(r["route"])[r["hop"]], json.loads(r["receipt"]), r["due"])
            for r in records.handed(self.store)}
        self._lock = threading.Lock()
        self._sent: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque)  # channel -> send times in the last minute
        self.flows = Flows()  # per person and channel: a storm's digests
        self._thread = threading.Thread(target=self._loop, name="pager-worker", daemon=True)
        self.errors = 0
        # every team's failures from 0 on each channel (and none: set aside): a series
        # that appears at 1 has no increase(), PagerDeliveryFailing would miss the first
        for team in self.config.teams:
            for channel in ("", *self.config.channels):
                metrics.deliveries.labels(team, channel, "failed")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        self._thread.join(10)
        if self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.round()
            self.wake.wait(0.5)
            self.wake.clear()

    def round(self) -> None:
        """Timers, then the outbox: neither failing stops the other or the loop."""
        for step in (self.engine.tick, self._record, self._confirm, self._dispatch):
            try:
                step()
            except Exception:  # the worker must outlive any one bad row or a full disk
                self.errors += 1
                log.exception("pager round: %s failed", step.__name__)

    # ------------------------------------------------------------------ planning

    def _dispatch(self) -> None:
        now = self.engine.clock.now()
        with self._lock:
            skip = self._busy | set(self._unrecorded) | set(self._handed)
        rows = [r.asdict() for r in records.due_deliveries(self.store, now) if r.id not in skip]
        if self.peer is not None:
            rows = self.peer.gate(rows)
        by_channel: dict[str, list[dict]] = collections.defaultdict(list)
        for row in rows:
            channel = self._channel(row)
            if channel is not None:
                by_channel[channel].append(row)
        grades = records.grades(self.store, {row["incident"] for row in rows})
        for channel, due in by_channel.items():
            # a drill's pages flow apart: never in one digest with real ones
            mine: dict[tuple[str, bool], list[dict]] = collections.defaultdict(list)
            for row in due:
                row["grade"], drill = grades.get(row["incident"], (None, False))
                mine[(row["person"], drill)].append(row)
            single, digests = [], []
            for (person, drill), waiting in mine.items():
                one, together = self.flows.plan(channel, person, waiting, now, drill)
                single += one
                digests += [together] if together else []
            free = self._free(channel, now)
            jobs = self._jobs(channel, single, digests)
            config = self.config.channels[channel]
            if config.type in ROBOTS and jobs and self._busy_robot(channel, now) and \
                    now - min(r["due"] for r in jobs[-1].rows) < 60 / config.per_minute:
                jobs.pop()  # in a storm, a post not yet full waits for others to join it
            for job in jobs[:max(free, 0)]:
                with self._lock:
                    self._busy |= {r["id"] for r in job.rows}
                for message in job.messages:
                    named = self._named(message, job.rows)
                    self._sent[channel].extend([now] * channels.posts(
                        config, [self.config.people[p] for p in named]))
                    self.flows.went(channel, collections.Counter(
                        news[3] for news in message.news if news[3] in named), now,
                        any(grades.get(n[0], (None, False))[1] for n in message.news))
                if self._pool is None:
                    self._send(job)
                else:
                    self._pool.submit(self._send, job)
            for job in jobs[max(free, 0):]:  # over the channel's minute: they wait
                for row in job.rows:  # or take the next channel, where there is one
                    if now - row["due"] > QUEUE_LIMIT and \
                            row["hop"] + 1 < len(json.loads(row["route"])):
                        self._fail(channel, [row], "waited over a minute's limit",
                                   failover=True)

    def _channel(self, row: dict) -> str | None:
        """The channel the row goes out on now. The config may have changed since it was
        planned: a channel gone or no longer reaching the person is skipped; a person
        gone hands the page to their team's on-call (None: nothing to send here)."""
        route = json.loads(row["route"])
        hop = row["hop"]
        person = self.config.people.get(row["person"])
        if person is None:
            log.error("delivery %d: %s is no longer in the config", row["id"], row["person"])
            self.engine.reroute(row, "the person is no longer in the config")
            return None
        while hop < len(route) and not (
                route[hop] in self.config.channels
                and route[hop] in person.channels
                and person.reaches(self.config.channels[route[hop]])):
            hop += 1
        if hop >= len(route):
            route, hop = self.engine.route(row["person"]), 0
            if not route:
                self._set_aside(row, "no channel of the config reaches the person",
                                unreachable=True)
                return None
        if (route, hop) != (json.loads(row["route"]), row["hop"]):
            with self.store.transaction() as db:
                records.set_route(db, row["id"], route, hop)
            row["route"], row["hop"] = json.dumps(route), hop
        return route[hop]

    def _jobs(self, channel_id: str, rows: list[dict], digests: list[list[dict]]
              ) -> list[Job]:
        """A person's channel: one message per row or digest. A robot: all of them in
        as few posts as its size limit allows, each part naming only its own people's
        links; Level I first."""
        channel = self.config.channels[channel_id]
        groups: dict[tuple, list[dict]] = {}
        for row in rows:
            key = ((row["incident"], row["kind"], row["step"]) if channel.type in ROBOTS
                   else (row["id"],))
            groups.setdefault(key, []).append(row)
        parts: list[tuple[Message, list[dict]]] = []
        folded = {id(group) for group in digests}
        for group in sorted([*groups.values(), *digests],
                            key=lambda g: (not any(map(urgent, g)), min(r["id"] for r in g))):
            try:
                parts.append((self._digest(channel_id, group) if id(group) in folded
                              else self._message(group), group))
            except Exception as exc:  # one bad message never blocks the channel
                log.exception("cannot compose the message of deliveries %s",
                              [r["id"] for r in group])
                for row in group:
                    self._set_aside(row, f"cannot compose the message: {exc}")
        if channel.type not in ROBOTS:
            return [Job(channel_id, rows, [message], frozenset(
                r["id"] for r in rows if id(rows) in folded)) for message, rows in parts]
        everyone = [r for _, group in parts for r in group]
        posts = pack([m for m, _ in parts], lambda m: channels.fits(
            channel, [self.config.people[p] for p in self._named(m, everyone)], m))
        jobs: list[tuple[set[int], list[Message]]] = []
        for post in posts:
            indices = {i for i, _ in post}
            message = join([m for _, m in post])
            if jobs and indices & jobs[-1][0]:  # the rest of a part cut in pieces
                jobs[-1][0].update(indices)
                jobs[-1][1].append(message)
            else:
                jobs.append((indices, [message]))
        return [Job(channel_id, [r for i in sorted(indices) for r in parts[i][1]], messages,
                    frozenset(r["id"] for i in indices if id(parts[i][1]) in folded
                              for r in parts[i][1]))
                for indices, messages in jobs]

    def _named(self, message: Message, rows: list[dict]) -> list[str]:
        """Who a message names (once each, in the rows' order): its news' people."""
        named = {news[3] for news in message.news}
        return [p for p in dict.fromkeys(r["person"] for r in rows)
                if p in named and p in self.config.people]

    def _busy_robot(self, channel: str, now: float) -> bool:
        per_minute = self.config.channels[channel].per_minute
        return sum(t > now - 10 for t in self._sent[channel]) >= max(1, per_minute // 6)

    def _free(self, channel: str, now: float) -> int:
        sent = self._sent[channel]
        while sent and sent[0] < now - 60:
            sent.popleft()
        return self.config.channels[channel].per_minute - len(sent)

    def _digest(self, channel_id: str, rows: list[dict]) -> Message:
        """What waits for one person on one channel in a storm, as one message, with the
        link to the whole list of their incidents (the newest page's token opens it)."""
        channel, person = self.config.channels[channel_id], rows[0]["person"]
        incidents = {i: self.engine.incident(i) for i in {r["incident"] for r in rows}}
        page = records.page(self.store, max(incidents), person)
        link = (f"{self.engine.ack_links()[0].rstrip('/')}/list/{page.token}"
                if page else self.engine.ack_links()[0])
        people = [self.config.people[person]]
        return digest([(incidents[r["incident"]], r["kind"], r["step"], person) for r in rows],
                      min(r["created"] for r in rows), link,
                      lambda m: channels.fits(channel, people, m))

    def _message(self, rows: list[dict]) -> Message:
        incident = self.engine.incident(rows[0]["incident"])
        paged = records.pages(self.store, incident.id)
        tokens = {p.person: p.token for p in paged}
        return compose(self.config, incident, rows[0]["kind"], rows[0]["step"], paged,
                       {r["person"]: tokens.get(r["person"]) for r in rows},
                       self.engine.wall(), self.engine.ack_links())

    # ------------------------------------------------------------------ sending

    def _send(self, job: Job) -> None:
        try:
            channel = self.config.channels[job.channel]
            went, handed = 0, []
            try:
                for message in job.messages:
                    people = [self.config.people[p] for p in self._named(message, job.rows)]
                    handed += self.send(channel, people, message) or []
                    went += 1
            except Exception as exc:
                if isinstance(exc, channels.Failed):
                    error = str(exc)
                else:  # a bug in a channel must not lose the page
                    log.exception("channel %s crashed", job.channel)
                    error = f"crashed: {exc}"
                if went:  # not all of it arrived: not sent (whole, again, later)
                    error = (f"{went} of its {len(job.messages)} posts went, the next did "
                             f"not: {error}")
                self._fail(job.channel, job.rows, error,
                           rate_limited=isinstance(exc, channels.RateLimited))
            else:
                if handed:
                    self._hand(job, channel, handed)
                else:
                    self._done(job.channel, job.rows, job.folded)
        except Exception:
            self.errors += 1
            log.exception("recording a delivery on %s failed", job.channel)
        finally:
            with self._lock:
                self._busy -= {r["id"] for r in job.rows}
            self.wake.set()

    def _hand(self, job: Job, channel, files: list[str]) -> None:
        """Taken in, not yet confirmed (gammu-smsd's outbox): followed by `_confirm`, in
        the store too, so that a restart follows it rather than sending it again."""
        deadline = self.engine.clock.now() + channel.confirm_within
        with self._lock:
            self._handed |= {r["id"]: (job.channel, files, deadline) for r in job.rows}
        with self.store.transaction() as db:
            records.mark_handed(db, [r["id"] for r in job.rows], files, deadline)

    def _confirm(self) -> None:
        """The messages handed over: sent once confirmed; failed (the person's next
        channel) when the channel says so or the deadline passed (taken back first)."""
        now = self.engine.clock.now()
        with self._lock:
            handed = dict(self._handed)
        for row_id, (channel, files, deadline) in handed.items():
            over = now >= deadline
            config = self.config.channels.get(channel)
            try:
                if config is None:
                    raise channels.Failed(f"channel {channel} is gone from the config")
                state, why = self.confirm(config, files, withdraw=over), None
            except Exception as exc:  # cannot tell: wait, and at the deadline it failed
                log.warning("delivery %d on %s: cannot tell whether it went: %s", row_id,
                            channel, exc)
                state, why = (False if over else None), str(exc)
            if state is None:
                continue
            row = records.delivery(self.store, row_id)
            if state or row is None:  # sent: its mark is kept until it can be written
                with self._lock:
                    self._handed.pop(row_id, None)
            if row is None:
                continue
            try:
                if state:
                    self._done(channel, [row.asdict()])
                    continue
                self._fail(channel, [row.asdict()], why or (
                    f"not sent: still in gammu-smsd's outbox after "
                    f"{config.confirm_within:.0f} s, taken back (is gammu-smsd running?)"
                    if over else "gammu-smsd moved it to its error folder"), failover=True)
            except Exception:  # the store cannot be written (a full disk): next round
                self.errors += 1
                log.exception("delivery %d: its outcome on %s not recorded", row_id, channel)
                continue
            with self._lock:
                self._handed.pop(row_id, None)

    def _done(self, channel: str, rows: list[dict], folded: frozenset[int] = frozenset()
              ) -> None:
        wall = self.engine.wall()
        note = f" (in a digest of {len(folded)})"
        with self._lock:
            self._unrecorded |= {r["id"]: (wall, channel, note if r["id"] in folded else "")
                                 for r in rows}
        for row in rows:
            self.metrics.deliveries.labels(self._team(row), channel, "sent").inc()
            self.metrics.latency.labels(channel).observe(max(0.0, wall - row["created"]))
        self._record()

    def _record(self) -> None:
        """Writes the sent marks not yet written (the disk was full, say)."""
        with self._lock:
            marks = dict(self._unrecorded)
        if not marks:
            return
        with self.store.transaction() as db:
            for row_id, (at, channel, note) in marks.items():
                records.mark_sent(db, row_id, at, channel, note)
        with self._lock:
            for row_id in marks:
                self._unrecorded.pop(row_id, None)

    def _fail(self, channel: str, rows: list[dict], error: str, rate_limited: bool = False,
              failover: bool = False) -> None:
        now, wall = self.engine.clock.now(), self.engine.wall()
        config = self.config.channels.get(channel)  # gone since (an SMS followed across
        # a restart on another config): no more tries there
        with self.store.transaction() as db:
            for row in rows:
                route, attempts = json.loads(row["route"]), row["attempts"] + 1
                if failover or config is None or attempts >= config.retries:
                    if row["hop"] + 1 < len(route):
                        result, update = "failover", (Status.PENDING, row["hop"] + 1, 0, now)
                    elif now - (row["born"] or now) < GIVE_UP and \
                            self.engine.still_wanted(db, row):
                        result, update = "failed", (Status.PENDING, 0, 0, now + AGAIN)
                        log.error("page %d to %s failed on every channel, again in %.0f s: "
                                  "%s", row["id"], row["person"], AGAIN, error)
                        self.engine.unreachable(db, row, f"every channel failed ({error})")
                    else:
                        result, update = "failed", (Status.FAILED, row["hop"], attempts, now)
                        log.error("page %d to %s failed on every channel: %s", row["id"],
                                  row["person"], error)
                else:
                    result = "rate_limited" if rate_limited else "retry"
                    pause = 10.0 if rate_limited else BACKOFF[min(attempts, len(BACKOFF)) - 1]
                    update = (Status.PENDING, row["hop"], attempts, now + pause)
                records.mark_tried(db, row, channel, error, result, wall, *update)
                self.metrics.deliveries.labels(self._team(row), channel, result).inc()
        log.warning("%s: %s (%d message(s))", channel, error, len(rows))

    def _set_aside(self, row: dict, error: str, unreachable: bool = False) -> None:
        """A row that can never be sent as it is: failed, with why, logged and counted;
        `unreachable`: its person cannot get it (the backup and lead are paged)."""
        log.error("delivery %d to %s set aside: %s", row["id"], row["person"], error)
        with self.store.transaction() as db:
            records.mark_failed(db, row, error, self.engine.wall())
            if unreachable:
                self.engine.unreachable(db, row, error)
        self.metrics.deliveries.labels(self._team(row), "", "failed").inc()

    def _team(self, row: dict) -> str:
        page = records.page(self.store, row["incident"], row["person"])
        return page.team if page else ""
