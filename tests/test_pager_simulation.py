"""The pager's invariants, checked on thousands of seeded random histories.

The engine and the delivery worker run in this process on a clock the test controls,
on a real SQLite store, fed what Alertmanager really sends (groups, retries, repeats,
resolves, large groups, the Watchdog every minute), with channels that fail, hang up,
say "too fast" or refuse a message too large, restarts on other valid configs, a store
that cannot be written, wall-clock steps, and acknowledgements from the right and the
wrong people. After every history each invariant is asserted; a failing seed is printed:
replay it with PAGER_SEED=<seed> pytest tests/test_pager_simulation.py.

The invariants (issue 21):
1. every firing notification accepted for a team reaches that team's on-call (or the
   lead on a gap) on some channel within BOUND, unless acknowledged or resolved first;
2. nobody receives an incident they were not paged for, nor another person's ack link
   (a robot's group is one recipient);
3. a person gets each page once per channel and step;
4. the watchdog never pages while heartbeats arrive, and pages within its timeout plus a
   minute after the last one;
5. only people paged for an incident, or members of its teams, may acknowledge it;
6. a notification that cannot be stored is refused (Alertmanager sends it again);
7. a restart on another valid config never stops delivery, and a running incident keeps
   the escalation it opened with;
8. escalation steps come at their time on the pager's clock, whatever the wall clock does,
   and every one comes unless the incident was acknowledged or ended first.
Issue 31's:
9. sent implies the channel confirmed: a delivery is `sent` only when its channel
   confirmed it (an SMS: once the simulated gammu-smsd sent it, which may be down or
   give up for a while);
10. no person of an on-call rota unreachable without a page to the backup and lead: a
   page its person cannot get (no channel reaches them, every one failed) is paged at
   once to their team's backup and lead that a channel reaches;
11. a storm of N alerts gives each person at most 10 messages per channel (unless the
   pager restarted meanwhile: what a storm counts is in memory);
12. a Level I page is never folded into a digest: on a person's channel (SMS, mail) its
   message is its own, with its acknowledge line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import itertools
import json
import logging
import os
import random
import re
import sqlite3
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pager import channels, records
from pager.clock import Clock
from pager.config import PagerConfig
from pager.delivery import Metrics, Worker
from pager.engine import Engine
from pager.records import PAGES, Kind, Status
from pager.store import Store, StoreError

RUNS = int(os.environ.get("PAGER_RUNS", "2000"))  # histories in all, 40 steps each
BOUND = 60.0 + 60.0  # seconds: the invariant's 60 s plus a channel's minute
WATCHDOG_TIMEOUT = 180.0
TEAMS = ("network", "server_ops", "leadership")
ALERTS = ("PrimaryLineDown", "SettlementPathDown", "RaidArrayDegraded", "CpuHigh")


def config(variant: int) -> PagerConfig:
    """Valid configs a site moves between: a person leaves, a channel is renamed, an
    escalation step goes."""
    robot = "wecom" if variant != 2 else "wecom-it"
    people = {
        "zhang": {"name": "张三", "mobile": "13800000001", "wecom": "zhang",
                  "channels": [robot, "sms"]},
        "li": {"name": "李四", "mobile": "13800000002", "email": "li@h.test",
               "channels": [robot, "mail", "sms"]},
        "wang": {"name": "王五", "mobile": "13800000003", "channels": ["sms"]},
        "zhao": {"name": "赵六", "mobile": "13800000004", "channels": [robot, "sms"]},
        "vp": {"name": "钱副院长", "mobile": "13800000009", "channels": ["sms"]},
    }
    network_order = ["zhang", "li"]
    if variant == 1:  # 李四 left the hospital
        del people["li"]
        network_order = ["zhang"]
    if variant == 4:  # 张三's mobile number lost in an edit: no channel reaches him
        people["zhang"] = {"name": "张三", "channels": ["sms"]}
    steps = [{"after": 30, "notify": ["backup", "lead"], "channels": ["sms"]},
             {"after": 90, "notify": ["leadership"]}]
    if variant == 3:
        steps = steps[:1]
    return PagerConfig.model_validate({
        "auth": {"open": True},
        "channels": {robot: {"type": "wecom", "url": "http://127.0.0.1:9/x", "retries": 2},
                     "sms": {"type": "sms", "per_minute": 30, "retries": 3},
                     "mail": {"type": "email", "host": "127.0.0.1", "sender": "p@h.test"}},
        "people": people,
        "teams": {
            "network": {"name": "网络组", "rotation": {"since": "2026-01-01",
                                                    "order": network_order},
                        "backup": "zhao" if variant == 1 else "li", "lead": "wang"},
            "server_ops": {"name": "运维组", "rotation": {"since": "2026-01-01", "every": "week",
                                                       "order": ["zhao", "wang"]},
                           "lead": "wang"},
            "leadership": {"name": "领导", "rotation": {"since": "2026-01-01", "order": ["vp"]},
                           "lead": "vp"},
        },
        "escalation": {"I": steps, "II": steps[:1]},
        "watchdog": {"timeout": WATCHDOG_TIMEOUT, "notify": ["network"], "channels": ["sms"]},
    })


@functools.cache
def _migrated_store() -> bytes:
    """A new store file as the pager makes it (its schema, every migration, WAL mode),
    made once: thousands of histories each start on a copy of it."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "pager.db"
        Store(path).close()
        return path.read_bytes()


def new_store_file(path: Path) -> Path:
    """`path`: a pager's new store, as the first `Store(path)` leaves it."""
    path.write_bytes(_migrated_store())
    return path


@dataclass
class Sent:
    at: float  # the pager's clock (the test's monotonic time)
    channel: str
    type: str
    people: tuple[str, ...]
    incidents: frozenset[int]
    news: frozenset[tuple[int, str, int, str]]
    text: str
    first_piece: bool
    handed: float | None = None  # an SMS: when it was handed to gammu-smsd (`at`: sent)


@dataclass
class Network:
    """The channels' far ends: each type ok, failing, too fast, or crashing for a while;
    robots refuse what is over their size, as the real ones do. With `modem`, an SMS is
    handed to a simulated gammu-smsd (fault "smsd": "dead" or "error" for a while) that
    sends it a second or two later: only then has the person got it."""
    rng: random.Random
    now: float = 0.0
    faults: dict[str, tuple[str, float]] = field(default_factory=dict)  # type -> (mode, until)
    sent: list[Sent] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)  # mobile/wecom id -> person id
    modem: bool = False
    outbox: dict[str, tuple[float, Sent]] = field(default_factory=dict)  # file -> waiting
    spool: dict[str, str] = field(default_factory=dict)  # file -> sent, error, withdrawn

    def send(self, channel, people, message) -> list[str] | None:
        mode, until = self.faults.get(channel.type, ("ok", 0.0))
        if mode != "ok" and self.now < until:
            if mode == "fail":
                raise channels.Failed("simulated failure")
            if mode == "slow":
                raise channels.RateLimited("rate limited: simulated 45009")
            raise RuntimeError("simulated crash in a channel")
        if not channels.fits(channel, people, message):
            raise channels.Failed("refused: 40058 message too large")
        sent = Sent(self.now, channel.name if hasattr(channel, "name") else "",
                    channel.type, tuple(self.ids[p.mobile] for p in people),
                    message.incidents, message.news, message.text,
                    not message.title.endswith("(续)"))
        if self.modem and channel.type == "sms":
            name = f"OUT{len(self.spool)}"
            self.spool[name] = "outbox"
            self.outbox[name] = (self.now + self.rng.choice((0.5, 1.0, 2.0)), sent)
            return [name]
        self.sent.append(sent)
        return None

    def advance(self, now: float) -> None:
        """gammu-smsd's turn: what is due in its outbox goes, unless it is down."""
        self.now = now
        mode, until = self.faults.get("smsd", ("ok", 0.0))
        if mode == "dead" and now < until:
            return
        for name, (due, sent) in list(self.outbox.items()):
            if due <= now:
                del self.outbox[name]
                failed = mode == "error" and now < until
                self.spool[name] = "error" if failed else "sent"
                if not failed:
                    self.sent.append(dataclasses.replace(sent, at=now, handed=sent.at))

    def confirm(self, channel, files: list[str], withdraw: bool = False) -> bool | None:
        """As channels.confirm reads gammu-smsd's folders."""
        states = [self.spool[name] for name in files]
        if "error" in states:
            return False
        if all(state == "sent" for state in states):
            return True
        if withdraw:
            for name in files:
                if self.outbox.pop(name, None):
                    self.spool[name] = "withdrawn"
            return False
        return None


class BrokenDisk(Exception):
    pass


class Sim:
    """One random history."""

    def __init__(self, seed: int, directory: Path) -> None:
        self.rng = random.Random(seed)
        self.mono, self.wall = 1000.0, 1_790_000_000.0  # 2026-09
        self.path = new_store_file(directory / f"pager-{seed}.db")
        self.variant = 0
        self.boot = "boot-1"  # a reboot changes it
        self.net = Network(self.rng, modem=True)
        self.disk_full_until = -1.0
        self.store: Store | None = None
        self.accepted: list[tuple[float, str, int]] = []  # (at, team, incident)
        self.expected: list[tuple[float, str, str, int]] = []  # at, team, person, incident
        self.heartbeats: list[float] = []
        self.opened_at: dict[int, float] = {}
        self.snapshot: dict[int, int] = {}  # incident -> escalation steps at open
        self.refused_acks = 0
        self.escalated: list[tuple[int, int, float]] = []  # (incident, step, when)
        self.ended: dict[int, float] = {}  # incident -> when acknowledged, resolved, superseded
        self.last_event = 0
        self.outages: list[tuple[str, float, float]] = []  # (channel type, from, until)
        self.restarts: list[float] = []
        self.disk_full: list[tuple[float, float]] = []  # (from, until)
        self.queue: list[tuple[str, bytes]] = []  # Alertmanager's unsent notifications
        self.groups: dict[str, tuple[str, bytes]] = {}  # what was last sent per group
        # pages their person could not get: (incident, person, the backup and lead then
        # reachable); and those of an on-call no channel reached when the page came
        self.covers: list[tuple[int, str, set[str]]] = []
        self.unreachable: list[tuple[int, str]] = []
        self.storms: list[tuple[float, set[int]]] = []  # (when, its incidents)
        self.start()

    # ---------------------------------------------------------------- the pager

    def start(self) -> None:
        if self.store is not None:
            self.store.close()
        self.config = config(self.variant)
        self.net.ids = {p.mobile: pid for pid, p in self.config.people.items()}
        self.store = Store(self.path)
        self._patch_store()
        clock = Clock(records.state(self.store, "clock"), wall=lambda: self.wall,
                      monotonic=lambda: self.mono, boot=self.boot)
        self.engine = Engine(self.config, self.store, clock)
        self.worker = Worker(self.engine, Metrics(CollectorRegistry()), send=self.net.send,
                             inline=True, confirm=self.net.confirm)

    def _patch_store(self) -> None:
        """A disk that fills up: every write fails while it is full."""
        store, sim = self.store, self
        real = store.transaction

        @contextmanager
        def transaction():
            if sim.mono < sim.disk_full_until:
                raise sqlite3.OperationalError("database or disk is full")
            with real() as db:
                yield db

        store.transaction = transaction

    def round(self) -> None:
        self.net.advance(self.mono)
        self.worker.round()
        self._events()

    def _events(self) -> None:
        """The escalations and the pages nobody could get, as they happen: who was then
        the team's backup and lead that a channel reached."""
        at = dt.datetime.fromtimestamp(self.wall, dt.UTC)
        for event in records.events(self.store, after=self.last_event):
            self.last_event = event.id
            if event.what in ("acknowledged", "resolved", "superseded"):
                self.ended.setdefault(event.incident, self.mono)
            if event.what not in ("escalated", "unreachable"):
                continue
            if event.what == "escalated":
                self.escalated.append((event["incident"],
                                       int(event["detail"].split()[1][:-1]), self.mono))
                continue
            page = records.page(self.store, event.incident, event.person)
            team = page.team if page else None
            if team not in self.config.teams or event["detail"].split(":")[0] not in PAGES:
                continue  # a drill's, or news nobody must act on (resolved, ack)
            reachable = {p for p in (self.engine.rota.role(team, r, at) for r in
                                     ("backup", "lead"))
                         if p not in (None, event["person"]) and self.engine.route(p)}
            self.covers.append((event["incident"], event["person"], reachable))

    # ---------------------------------------------------------------- Alertmanager

    def notification(self, team: str, status: str = "firing", alerts: int = 1,
                     alertname: str | None = None, grade: str | None = None) -> int | None:
        alertname = alertname or self.rng.choice(ALERTS)
        grade = grade or self.rng.choice(("I", "II", "III"))
        labels = {"alertname": alertname, "grade": grade, "site": "h1", "team": team}
        body = {"version": "4", "status": status, "receiver": team,
                "groupKey": f'{{}}:{{alertname="{alertname}", grade="{grade}"}}',
                "groupLabels": {"alertname": alertname, "grade": grade},
                "commonLabels": labels, "commonAnnotations": {"summary_zh": alertname},
                "alerts": [{"status": status, "labels": {**labels, "instance": f"i{i}"},
                            "annotations": {"description": "x" * self.rng.choice((10, 300))},
                            "startsAt": "2026-09-01T00:00:00Z",
                            "fingerprint": f"{alertname}{grade}{i}"} for i in range(alerts)]}
        return self.send(team, json.dumps(body).encode())

    def send(self, receiver: str, body: bytes) -> int | None:
        """Alertmanager posts; what is refused (5xx) it keeps and sends again. The
        incident a firing notification opened or joined."""
        try:
            result = self.engine.intake(receiver, body)
        except StoreError:
            self.queue.append((receiver, body))
            return None
        self._events()
        payload = json.loads(body)
        self.groups[payload["groupKey"] + receiver] = (receiver, body)
        if receiver == "watchdog":
            self.heartbeats.append(self.mono)
            return None
        if result.incident is None or payload["status"] != "firing":
            return None
        incident = self.engine.incident(result.incident)
        if incident["resolved"] or incident["acked"] or incident["drill"]:
            return result.incident
        self.opened_at.setdefault(result.incident, self.mono)
        self.snapshot.setdefault(result.incident, len(json.loads(incident["escalation"])))
        if result.status in ("accepted", "repeat"):
            team = receiver if receiver in self.config.teams else "server_ops"
            on_call = self.engine.rota.role(team, "oncall", dt.datetime.fromtimestamp(
                self.wall, dt.UTC)) or self.config.teams[team].lead
            self.expected.append((self.mono, team, on_call, result.incident))
            if result.status == "accepted" and not self.engine.route(on_call):
                self.unreachable.append((result.incident, on_call))  # (a repeat: who was)
        return result.incident

    # ---------------------------------------------------------------- a history

    def run(self, steps: int) -> None:
        rng = self.rng
        next_heartbeat = self.mono
        watchdog_alive = True
        for _ in range(steps):
            # time passes, in the small steps of a busy minute or a quiet gap
            for _ in range(rng.choice((1, 1, 3, 10))):
                tick = rng.choice((0.5, 1.0, 2.0, 5.0))
                self.mono += tick
                self.wall += tick
                self.round()
                if watchdog_alive and self.mono >= next_heartbeat:
                    self.send("watchdog", b'{"status": "firing", "groupKey": "{}/{}:{}", '
                              b'"alerts": [{"labels": {"alertname": "Watchdog"}, '
                              b'"startsAt": "2026-09-01T00:00:00Z", "fingerprint": "w"}]}')
                    next_heartbeat = self.mono + 60.0
                for receiver, body in self.queue[:]:
                    self.queue.remove((receiver, body))
                    self.send(receiver, body)
            if rng.random() < 0.03:  # an NTP step, or a wrong date set by hand
                self.wall += rng.choice((-3600.0, 3600.0, -86400.0))
            action = rng.random()
            if action < 0.35:
                self.notification(rng.choice(TEAMS))
            elif action < 0.40:
                self.notification(rng.choice(TEAMS), alerts=rng.choice((20, 100)))
            elif action < 0.50 and self.groups:  # Alertmanager's retry or repeat
                self.send(*rng.choice(list(self.groups.values())))
            elif action < 0.60 and self.groups:  # the group resolves
                receiver, body = rng.choice(list(self.groups.values()))
                payload = json.loads(body)
                payload["status"] = "resolved"
                for alert in payload["alerts"]:
                    alert["status"] = "resolved"
                self.send(receiver, json.dumps(payload).encode())
            elif action < 0.70:
                self.ack()
            elif action < 0.76:
                kind, until = rng.choice(("wecom", "sms", "email", "smsd")), \
                    self.mono + rng.choice((5, 20, 40))
                self.net.faults[kind] = (rng.choice(("dead", "error") if kind == "smsd" else
                                                    ("fail", "slow", "crash")), until)
                # gammu-smsd down is an outage of SMS, for a minute more (the bound)
                self.outages.append(("sms", self.mono, until + 60) if kind == "smsd"
                                    else (kind, self.mono, until))
            elif action < 0.79:
                self.variant = rng.choice((0, 1, 2, 3, 4))
                self.restarts.append(self.mono)
                self.start()
            elif action < 0.81:
                self.disk_full_until = self.mono + rng.choice((3, 15))
                self.disk_full.append((self.mono, self.disk_full_until))
            elif action < 0.83:
                watchdog_alive = not watchdog_alive
                if watchdog_alive:
                    next_heartbeat = self.mono
            elif action < 0.86:  # a storm: many groups at once
                storm = {self.notification(rng.choice(TEAMS), grade="III",
                                           alertname=f"Storm{rng.randrange(99)}")
                         for _ in range(rng.choice((10, 40)))}
                # the incidents it opened (an alert of an open one repeats it)
                self.storms.append((self.mono, {i for i in storm - {None}
                                                if self.opened_at.get(i) == self.mono}))
                if rng.random() < 0.5:  # a Level I amid it: never folded into a digest
                    self.notification(rng.choice(TEAMS), grade="I")
        # quiet end: everything due has the time to go out (faults end, disk frees)
        self.net.faults.clear()
        self.disk_full_until = -1.0
        for _ in range(int(BOUND + 120) // 5):
            self.mono += 5.0
            self.wall += 5.0
            self.round()
            for receiver, body in self.queue[:]:
                self.queue.remove((receiver, body))
                self.send(receiver, body)

    def ack(self) -> None:
        # the open incidents by key (the order the seeded histories drew them in)
        rows = sorted((i for i in records.incidents(self.store) if i.resolved is None),
                      key=lambda i: i.key)
        if not rows:
            return
        incident = self.rng.choice(rows).id
        person = self.rng.choice(list(self.config.people))
        # 5. only a person paged for it, or one of its teams' people, may acknowledge
        paged = {p.person for p in records.pages(self.store, incident)}
        teams = json.loads(self.engine.incident(incident)["teams"])
        team_people = {p for t in teams if t in self.config.teams for p in (
            self.config.teams[t].lead, self.config.teams[t].backup,
            *self.config.teams[t].rotation.order)}
        assert self.engine.may_ack(incident, person) == (person in paged | team_people), (
            f"{person} acknowledging incident {incident} of {teams}, paged {paged}")
        if person in paged | team_people:
            with contextlib.suppress(sqlite3.OperationalError):  # a full disk: try again
                self.engine.ack(incident, person, "sim")
            self._events()
        else:
            self.refused_acks += 1

    # ---------------------------------------------------------------- the invariants

    def check(self) -> None:
        db = self.store
        incidents = {r.id: r for r in records.incidents(db)}
        pages = records.pages(db)
        paged = defaultdict(set)
        for page in pages:
            paged[page.incident].add(page.person)
        tokens = {p.token: p.person for p in pages}
        events = records.events(db)
        # 1. every accepted firing page reached its person within BOUND, unless it was
        # acknowledged or resolved first
        types = {c: ch.type for c, ch in self.config.channels.items()}
        for at, team, on_call, incident in self.expected:
            row = incidents[incident]
            # the team's person for it: the on-call, or who took over from them
            people = {on_call} | {p.person for p in pages
                                  if p.incident == incident and p.team == team}
            # "on some working channel": the clock starts when one of theirs works
            mine = {types[c] for p in people if p in self.config.people
                    for c in self.config.people[p].channels}
            for kind, start, until in sorted(self.outages, key=lambda o: o[1]):
                if kind in mine and start <= at + BOUND and until > at:
                    at = max(at, until)
            got = [s for s in self.net.sent if people & set(s.people)
                   and incident in s.incidents]
            first = min(got, key=lambda s: s.at) if got else None
            # the bound, plus the time a channel's per-minute limit made it queue
            queued = first and sum(at <= s.at <= first.at for s in self.net.sent
                                   if s.type == first.type)
            if first and first.at - at <= BOUND + 60 * queued / 30:  # paged, or since
                continue
            ended = [e["at"] for e in events if e["incident"] == incident
                     and e["what"] in ("acknowledged", "resolved", "superseded")]
            assert ended or row["resolved"] is not None or row["acked"] is not None, (
                f"incident {incident} accepted at {at} never reached {team}: {people} "
                f"(first send {first})")
        # 2. nobody gets another's incident or ack link
        for sent in self.net.sent:
            for incident in sent.incidents:
                if sent.type != "wecom":
                    assert set(sent.people) <= paged[incident], (
                        f"{sent.people} got incident {incident} paged to {paged[incident]}")
            for token in re.findall(r"/ack/([A-Za-z0-9_-]+)", sent.text):
                assert tokens[token] in sent.people, (
                    f"{tokens[token]}'s ack link went to {sent.people} on {sent.type}")
        # 3. once per person, incident, kind, step and channel
        # (a crash, which is what a restart here is, may repeat one: sent, not yet marked
        # (on a full disk: as often as it restarts); an SMS handed, the hand not written)
        times: dict[tuple, list[float]] = defaultdict(list)
        for sent in self.net.sent:
            if sent.first_piece:
                for news in sent.news:
                    assert news[3] in sent.people, f"{news} posted without its person"
                    times[(sent.type, news)].append(sent.at if sent.handed is None
                                                    else sent.handed)
        doubled = [key for key, at in times.items()  # once more for each crash between
                   if len(at) - 1 > sum(min(at) <= r <= max(at) for r in self.restarts)]
        assert not doubled, f"sent more than once: {doubled[:3]}"
        # 4. the watchdog: never while heartbeats came in time, always after a silence
        watch = [r for r in incidents.values() if r["alertname"] == "MonitoringPathDown"]
        beats = sorted(self.heartbeats)
        if not watch:
            gaps = [b - a for a, b in itertools.pairwise(beats)]
            assert all(g < WATCHDOG_TIMEOUT + 60 for g in gaps), "a silence was never paged"
        # 7 and 8: escalation steps as the incident opened with, at their time
        for incident, step, at in self.escalated:
            assert step <= self.snapshot[incident], "a step the incident did not open with"
            after = json.loads(incidents[incident]["escalation"])[step - 1]["after"]
            due = self.opened_at[incident] + after
            # a round at most every 5 s, and timers wait while the disk is full
            full = sum(max(0.0, min(until, at) - max(start, due))
                       for start, until in self.disk_full)
            late = at - due
            assert -0.01 <= late <= 5 + full, f"incident {incident} step {step} {late:+.1f} s"
        # and each step comes (a round at most 5 s late, later while the disk is full)
        # unless the incident was acknowledged or over by then
        came = {(incident, step) for incident, step, _ in self.escalated}
        for incident, opened in self.opened_at.items():
            for step, policy in enumerate(json.loads(incidents[incident].escalation), 1):
                due = opened + policy["after"]
                late = 5 + sum(max(0.0, until - max(start, due))
                               for start, until in self.disk_full)
                if self.ended.get(incident, float("inf")) <= due + late \
                        or self.mono < due + late:
                    continue
                assert (incident, step) in came, (
                    f"incident {incident} step {step} due at {due}, never came")
        assert not [t for t in records.timers(db) if t.done == 2], "a timer was set aside"
        # 9. sent implies the channel confirmed (for SMS: the simulated gammu-smsd sent it)
        kinds = {"wecom": "wecom", "wecom-it": "wecom", "sms": "sms", "mail": "email"}
        confirmed = {(s.type, news) for s in self.net.sent for news in s.news}
        for row in (d for d in records.deliveries(db) if d.status == Status.SENT):
            channel = kinds[json.loads(row["route"])[row["hop"]]]
            news = (row["incident"], row["kind"], row["step"], row["person"])
            assert (channel, news) in confirmed, f"{news} marked sent on {channel}, never sent"
        # 10. a page nobody could get went to the backup and lead a channel reached
        for incident, person in self.unreachable:
            assert any(c[:2] == (incident, person) for c in self.covers), (
                f"incident {incident}: {person} unreachable, no backup or lead paged")
        for incident, person, reachable in self.covers:
            missing = reachable - paged[incident]
            assert not missing, (f"incident {incident}: {person} unreachable, {missing} "
                                 "not paged")
        # 11. a storm: at most 10 messages per person and channel
        for at, storm in self.storms:
            carrying = [sent for sent in self.net.sent
                        if any(n[0] in storm and n[1] == "page" for n in sent.news)]
            if any(at <= r <= max((s.at for s in carrying), default=at)
                   for r in self.restarts):
                continue
            counts: dict[tuple[str, str], int] = defaultdict(int)
            for sent in carrying:
                for person in {n[3] for n in sent.news if n[0] in storm and n[1] == "page"}:
                    counts[(person, sent.type)] += 1
            crowded = {k: n for k, n in counts.items() if n > 10}
            assert not crowded, f"a storm of {len(storm)} gave {crowded} messages"
        # 12. a Level I page goes as a message of its own (with its acknowledge line) on a
        # person's channel, never folded into a digest
        level_one = {i.id for i in incidents.values() if i.grade == "I"}
        for sent in self.net.sent:
            if sent.type in ("sms", "email") and any(
                    n[0] in level_one and n[1] in PAGES for n in sent.news):
                assert len({n[0] for n in sent.news}) == 1, (
                    f"a Level I page folded into a digest on {sent.type}: {sent.news}")


@pytest.fixture
def quiet() -> Iterator[None]:
    """The histories fail channels on purpose, thousands of times: not worth a log line."""
    pager = logging.getLogger("insmon.pager")
    level = pager.level
    pager.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        pager.setLevel(level)


@pytest.mark.timeout(900)  # about 75 ms of CPU a history: a busy two-core host is slow
@pytest.mark.parametrize("share", range(4))  # four shares, side by side on xdist
def test_invariants_hold_on_random_histories(share: int, quiet: None) -> None:
    seeds = ([int(os.environ["PAGER_SEED"])] if "PAGER_SEED" in os.environ
             else range(share, RUNS, 4))
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=base) as directory:
        for seed in seeds:
            sim = Sim(seed, Path(directory))
            try:
                sim.run(steps=40)
                sim.check()
            except Exception as exc:
                pytest.fail(f"seed {seed}: {exc!r} (replay: PAGER_SEED={seed} pytest "
                            f"tests/test_pager_simulation.py)")
            finally:
                sim.store.close()
                sim.path.unlink(missing_ok=True)


# ------------------------------------------------------------------ examples beside it

def _sim(tmp_path: Path) -> Sim:
    sim = Sim(0, tmp_path)
    sim.rng = random.Random(0)
    return sim


def _advance(sim: Sim, seconds: float, wall_step: float = 0.0) -> None:
    sim.wall += wall_step
    for _ in range(int(seconds)):
        sim.mono += 1.0
        sim.wall += 1.0
        sim.round()


def _escalations(sim: Sim, alertname: str) -> list[str]:
    ids = {i.id for i in records.incidents(sim.store) if i.alertname == alertname}
    return [e.detail for e in records.events(sim.store)
            if e.incident in ids and e.what == "escalated"]


def test_a_message_that_cannot_be_composed_is_set_aside_and_blocks_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet: None) -> None:
    from pager import delivery

    real = delivery.compose

    def compose(config, incident, *args):
        if incident["alertname"] == "Broken":
            raise ValueError("a template bug")
        return real(config, incident, *args)

    monkeypatch.setattr(delivery, "compose", compose)
    sim = _sim(tmp_path)
    sim.notification("network", alertname="Broken", grade="I")
    sim.notification("network", alertname="SettlementPathDown", grade="I")
    _advance(sim, 3)
    [on_call] = {p.person for p in records.pages(sim.store)}
    assert [s.incidents for s in sim.net.sent if on_call in s.people] == [frozenset({2})]
    broken = records.deliveries(sim.store, incident=1)
    assert [(r.status, r.error) for r in broken] == [
        ("failed", "cannot compose the message: a template bug")]
    sim.store.close()


def test_a_running_incident_keeps_its_escalation_across_a_restart_on_a_shorter_one(
        tmp_path: Path, quiet: None) -> None:
    sim = _sim(tmp_path)
    sim.notification("network", alertname="SettlementPathDown", grade="I")
    _advance(sim, 5)
    sim.variant = 3  # the config now has one Level I step, not two
    sim.start()
    _advance(sim, 100)
    assert [d.split(":")[0] for d in _escalations(sim, "SettlementPathDown")] == [
        "step 1", "step 2"]
    assert any("vp" in s.people for s in sim.net.sent)  # step 2: leadership
    sim.notification("network", alertname="PrimaryLineDown", grade="I")  # opens under 3
    _advance(sim, 100)
    assert [d.split(":")[0] for d in _escalations(sim, "PrimaryLineDown")] == ["step 1"]
    sim.store.close()


def test_a_wall_clock_step_neither_hastens_nor_holds_back_an_escalation(
        tmp_path: Path, quiet: None) -> None:
    sim = _sim(tmp_path)
    sim.notification("network", alertname="SettlementPathDown", grade="I")
    _advance(sim, 10, wall_step=+86400.0)  # NTP puts the clock a day ahead
    assert _escalations(sim, "SettlementPathDown") == []  # 30 s after the page, not a day
    # early
    _advance(sim, 25, wall_step=-86400.0)  # and back
    assert len(_escalations(sim, "SettlementPathDown")) == 1  # 35 s: on time, not a day late
    sim.store.close()


def _heartbeat(sim: Sim) -> None:
    sim.send("watchdog", b'{"status": "firing", "groupKey": "w", "alerts": [{"labels": '
             b'{"alertname": "Watchdog"}, "startsAt": "2026-09-01T00:00:00Z"}]}')


def test_restarting_the_pager_does_not_hold_off_the_watchdog(tmp_path: Path,
                                                             quiet: None) -> None:
    sim = _sim(tmp_path)
    _heartbeat(sim)
    last = sim.mono
    for _ in range(20):  # restarted every 30 s (crashing, redeployed) and no heartbeat
        _advance(sim, 30)
        sim.start()
        if any(i.alertname == "MonitoringPathDown" for i in records.incidents(sim.store)):
            break
    assert sim.mono - last <= WATCHDOG_TIMEOUT + 60


def test_a_late_copy_of_a_firing_after_its_resolve_opens_nothing_a_real_refire_does(
        tmp_path: Path, quiet: None) -> None:
    sim = _sim(tmp_path)
    sim.notification("network", alertname="Flap", grade="III")
    _advance(sim, 2)
    firing = sim.groups[next(iter(sim.groups))]
    payload = json.loads(firing[1])
    payload["status"] = "resolved"
    for alert in payload["alerts"]:
        alert["status"] = "resolved"
    sim.send("network", json.dumps(payload).encode())
    _advance(sim, 2)
    sim.send(*firing)  # the HA peer's copy, two seconds late
    flaps = lambda: [i for i in records.incidents(sim.store) if i.alertname == "Flap"]  # noqa: E731
    assert len(flaps()) == 1
    _advance(sim, 120)  # Prometheus back after resolve_timeout: the same alert fires
    sim.send(*firing)
    assert [r.resolved is None for r in flaps()] == [False, True]


def test_a_repeat_of_an_unrouted_alert_pages_the_fallback_again(tmp_path: Path,
                                                                 quiet: None) -> None:
    sim = _sim(tmp_path)
    sim.notification("unrouted", alertname="Mystery", grade="III")
    _advance(sim, 5)
    first = len(sim.net.sent)
    assert first >= 1
    _advance(sim, 70)
    sim.send(*sim.groups[next(iter(sim.groups))])  # Alertmanager's repeat
    _advance(sim, 5)
    assert len(sim.net.sent) > first
    assert records.deliveries(sim.store)[-1].kind == Kind.REPEAT
