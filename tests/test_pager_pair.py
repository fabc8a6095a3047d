"""The hot-standby pair's invariants (pager/pair.py), on thousands of seeded random
histories: two pagers in this process, each with its own real SQLite store, engine,
worker and peer, on a clock the test controls; Alertmanager posting every notification
to both (and again to a pager that was down); one pager killed and started again, the
link between them cut and healed, channels failing, acknowledgements on either; every
question and answer between them signed (pager/keys.py), a rogue answering for a pager
that is down or apart and asking either with Alertmanager's token, another key or a
question it saw; now and then both started in one role. After each history:

1. never silence: every firing notification either pager accepted reaches the team's
   on-call within the single pager's bound plus the grace period (plus the time both
   could not act), unless acknowledged or resolved first;
2. once, by one of them: a person gets each message of an incident (kind, step) once on
   a channel, unless the pagers were apart or one was killed around it (a duplicate is
   the failure mode, never silence);
3. one acknowledgement: an incident acknowledged on either is acknowledged on both;
4. only the pair: an ack or an end a pager took from the other, the other had, and no
   rogue's question was answered;
5. an acknowledgement on either stops the other's pages once the two meet;
6. whom the other paged after the acknowledgement (apart) hears afterwards that it was
   acknowledged or is over.

A failing seed is printed: replay it with PAIR_SEED=<seed> pytest tests/test_pager_pair.py.
"""

from __future__ import annotations

import base64
import hmac
import itertools
import json
import os
import random
import sqlite3
import tempfile
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from prometheus_client import CollectorRegistry

from pager import records
from pager.clock import Clock
from pager.config import PagerConfig
from pager.delivery import Metrics, Worker
from pager.engine import Engine
from pager.keys import NONCE, SKEW, Secrets, sign_answer, sign_question
from pager.pair import PENDING_LIMIT, Peer, _incident
from pager.records import PAGES, Kind, Status, TimerKind
from pager.store import Store, StoreError
from tests.test_pager_simulation import (  # noqa: F401
    BOUND,
    TEAMS,
    Network,
    config,
    new_store_file,
    quiet,
)

RUNS = int(os.environ.get("PAIR_RUNS", "1000"))
GRACE = 15.0
TOKEN = "intake-token-0d5e"  # Alertmanager's
PAIR_KEY = "pair-key-7f3a9c2e"
TRUST = ("pair", "unsigned", "token", "replay")  # how a question or an answer is signed


def pair_config(directory: Path) -> PagerConfig:
    (directory / "token").write_text(TOKEN)
    (directory / "pair-key").write_text(PAIR_KEY)
    base = config(0).model_dump(mode="json")
    return PagerConfig.model_validate({
        **base, "auth": {"token_file": str(directory / "token")},
        "pair": {"active": {"url": "http://a.test:9095"},
                 "standby": {"url": "http://b.test:9095"},
                 "key_file": str(directory / "pair-key"),
                 "grace": GRACE, "down_after": 120, "notify": ["server_ops"]}})


class Node:
    """One pager of the pair, alive or killed."""

    def __init__(self, sim: PairSim, role: str) -> None:
        self.sim, self.role = sim, role
        self.path = new_store_file(sim.directory / f"pager-{sim.seed}-{role}.db")
        self.alive = False
        self.queue: list[tuple[str, bytes]] = []  # Alertmanager's posts it has to retry
        self.start()

    def start(self) -> None:
        sim = self.sim
        self.store = Store(self.path)
        clock = Clock(records.state(self.store, "clock"), wall=lambda: sim.wall,
                      monotonic=lambda: sim.mono, boot="boot-1")
        held = Secrets.load(sim.config)
        # its --role: its place in the pair, or (an operator's slip) the other's
        role = sim.misrole or self.role
        self.engine = Engine(sim.config, self.store, clock, role=role, keys=held)
        self.peer = Peer(self.engine, held, {
            member: (lambda method, target, headers, body, member=member: sim.carry(
                self, member, method, target, headers, body))
            for member in ("active", "standby")}, inline=True)
        self.started = sim.mono
        self.worker = Worker(self.engine, Metrics(CollectorRegistry()), inline=True,
                             send=lambda channel, people, message: sim.send_from(
                                 self, channel, people, message), peer=self.peer)
        self.alive = True

    def kill(self) -> None:
        self.alive = False
        self.peer.stop()  # (the thread of its loop never started here)
        self.store.close()

    def key(self, incident: int) -> str:
        """An incident's identity on both pagers: its key, the alerts' start and its
        opening on the active (the standby's incident of the same key and start, the one
        opened closest; the watchdog's and the peer's silences, which each dates itself:
        started within 5 minutes), else its own."""
        row = records.incident(self.store, incident)
        started, opened = row.started, row.opened
        if self.role == "standby" and self.sim.nodes["active"].alive:
            window = 60 if row.key in ("watchdog", "pager-peer-down") else 1.0
            near = [i for i in records.incidents(self.sim.nodes["active"].store)
                    if i.key == row.key and abs(i.started - row.started) <= window]
            same = min(near, key=lambda r: (abs(r.started - row.started),
                                            abs(r.opened - row.opened)), default=None)
            if same is not None:
                started, opened = same.started, same.opened
        return f"{row.key}|{started!r}|{opened!r}"


class PairSim:
    def __init__(self, seed: int, directory: Path) -> None:
        self.seed, self.directory = seed, directory
        self.rng = random.Random(seed)
        self.mono, self.wall = 1000.0, 1_790_000_000.0
        self.config = pair_config(directory)
        self.net = Network(self.rng)
        self.net.ids = {p.mobile: pid for pid, p in self.config.people.items()}
        self.senders: list[Node] = []  # who sent net.sent[i]
        self.apart: list[tuple[float, float]] = []  # partitions and kills: (from, until)
        self.partitioned_until = -1.0
        # at, team, on-call, (pager, incident)
        self.expected: list[tuple[float, str, str, tuple[str, int]]] = []
        self.groups: dict[str, tuple[str, bytes]] = {}
        # a rogue at a pager's address answers for it (when it cannot) this often
        self.rogue_odds = self.rng.choice((0.0, 0.0, 0.3, 1.0))
        self.seen_answers: dict[str, tuple[int, dict, bytes]] = {}  # a sniffer's
        self.seen_questions: list[tuple] = []
        self.rogue_answered = 0  # rogue questions a pager answered (none may be)
        # both started in one role now and then: the one at the active's address acts
        self.misrole = self.rng.choice((None,) * 8 + ("active", "standby"))
        self.nodes = {"active": Node(self, "active"), "standby": Node(self, "standby")}

    # ---------------------------------------------------------------- the network

    def carry(self, node: Node, member: str, method: str, target: str,
              headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes] | None:
        """A question from `node` to the pager at `member`'s address, and its answer:
        none while either is down or the two are apart, or a rogue's there (unsigned,
        signed with Alertmanager's token, or an answer seen before), now and then."""
        other = self.nodes[member]
        if not (node.alive and other.alive) or self.mono < self.partitioned_until:
            if self.rng.random() < self.rogue_odds:
                return self.forged_answer(member, target, headers)
            return None
        status, answer_headers, answer = other.peer.serve(method, target, headers, body)
        self.seen_answers[member] = (status, answer_headers, answer)
        self.seen_questions.append((other, self.mono, method, target, headers, body))
        del self.seen_questions[:-20]
        return status, answer_headers, answer

    def forged_answer(self, member: str, target: str, question: dict[str, str]
                      ) -> tuple[int, dict, bytes] | None:
        """What a rogue at the address answers: acknowledged, sent, resolved."""
        how = self.rng.choice(TRUST[1:])
        if how == "replay":
            return self.seen_answers.get(member)
        path = urlsplit(target).path
        person = self.rng.choice([*self.config.people, "mallory"])
        answer = {"role": member, "declared": member} if path.endswith("hello") else \
            {"taken": True} if path.endswith("ack") else \
            {"found": True, "acked": self.wall - 5, "acked_by": person, "teams": list(TEAMS),
             "resolved": self.rng.choice((None, self.wall - 5)), "superseded": False,
             "deliveries": [{"person": p, "kind": k, "step": step, "status": "sent",
                             "age": 5.0} for p in self.config.people
                            for k in ("page", "escalation", "repeat", "ack", "resolved")
                            for step in range(3)]}
        data = json.dumps(answer).encode()
        signed = {} if how == "unsigned" else sign_answer(
            [TOKEN.encode()], "rogue", question[NONCE], 200, data)
        return 200, signed, data

    def rogue_asks(self) -> None:
        """A rogue on the LAN tells a pager that an open incident was acknowledged:
        unsigned (with Alertmanager's token), signed with that token, or a question of
        the pair's seen before, sent again. Each is refused."""
        node = self.nodes[self.rng.choice(("active", "standby"))]
        # by key: the order the seeded histories drew them in
        rows = sorted((i for i in records.incidents(node.store)
                       if i.resolved is None and i.acked is None),
                      key=lambda i: i.key) if node.alive else []
        if not rows:
            return
        how = self.rng.choice(TRUST[1:])
        if how == "replay" and self.seen_questions:
            _to, at, method, target, headers, body = self.rng.choice(self.seen_questions)
            status = node.peer.serve(method, target, headers, body)[0]
            # refused by the process that answered it (the nonce) or asked it (its own;
            # but its own hello, which says only where it is), and by any after SKEW; a
            # process started since sees a question it never saw (one the pair asked: it
            # says nothing a sniffer did not see)
            if (node.started <= at and target != "/api/peer/hello") or \
                    self.mono - at > SKEW:
                self.rogue_answered += status != 401
            return
        row = self.rng.choice(rows)
        body = json.dumps({"key": row["key"], "started": row["started"],
                           "opened": row["opened"], "person": self.rng.choice(
                               [*self.config.people, "mallory"]), "via": "link",
                           "at": self.wall, "teams": list(TEAMS)}).encode()
        headers = {"Authorization": f"Bearer {TOKEN}"} if how == "unsigned" else \
            sign_question([TOKEN.encode()], "rogue", "POST", "/api/peer/ack", body, self.wall)
        status = node.peer.serve("POST", "/api/peer/ack", headers, body)[0]
        self.rogue_answered += status != 401

    def send_from(self, node: Node, channel, people, message) -> None:
        before = len(self.net.sent)
        self.net.send(channel, people, message)
        self.senders += [node] * (len(self.net.sent) - before)

    # ---------------------------------------------------------------- Alertmanager

    def notification(self, team: str, status: str = "firing", alertname: str | None = None,
                     grade: str | None = None) -> None:
        alertname = alertname or self.rng.choice(("PrimaryLineDown", "SettlementPathDown",
                                                  "RaidArrayDegraded"))
        grade = grade or self.rng.choice(("I", "II", "III"))
        labels = {"alertname": alertname, "grade": grade, "site": "h1", "team": team}
        body = {"version": "4", "status": status, "receiver": team,
                "groupKey": f'{{}}:{{alertname="{alertname}", grade="{grade}"}}',
                "groupLabels": {"alertname": alertname, "grade": grade},
                "commonLabels": labels, "commonAnnotations": {"summary_zh": alertname},
                "alerts": [{"status": status, "labels": labels, "annotations": {},
                            "startsAt": f"2026-09-01T00:{self.rng.randrange(60):02d}:00Z",
                            "fingerprint": f"{alertname}{grade}"}]}
        self.post(team, json.dumps(body).encode())

    def post(self, receiver: str, body: bytes) -> None:
        """The Alertmanager pair posts to both pagers; a pager down gets it again later."""
        payload = json.loads(body)
        self.groups[payload["groupKey"] + receiver] = (receiver, body)
        for node in self.nodes.values():
            if not node.alive:
                node.queue.append((receiver, body))
                continue
            try:
                result = node.engine.intake(receiver, body)
            except StoreError:
                node.queue.append((receiver, body))
                continue
            self._expect(node, receiver, payload, result)

    def _expect(self, node: Node, receiver: str, payload: dict, result) -> None:
        if receiver == "watchdog" or result.incident is None or \
                payload["status"] != "firing" or result.status not in ("accepted", "repeat"):
            return
        incident = node.engine.incident(result.incident)
        if incident["resolved"] or incident["acked"]:
            return
        team = receiver if receiver in self.config.teams else "server_ops"
        import datetime as dt

        on_call = node.engine.rota.role(team, "oncall", dt.datetime.fromtimestamp(
            self.wall, dt.UTC)) or self.config.teams[team].lead
        self.expected.append((self.mono, team, on_call, (node.role, result.incident)))

    # ---------------------------------------------------------------- a history

    def tick(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds
        self.net.now = self.mono
        for node in self.nodes.values():
            if not node.alive:
                continue
            for receiver, body in node.queue[:]:
                node.queue.remove((receiver, body))
                result = node.engine.intake(receiver, body)
                self._expect(node, receiver, json.loads(body), result)
            node.peer.round()
            node.worker.round()

    def run(self, steps: int) -> None:
        rng = self.rng
        next_beat = self.mono
        for _ in range(steps):
            for _ in range(rng.choice((1, 2, 5, 10))):
                self.tick(rng.choice((1.0, 2.0, 5.0)))
                if self.mono >= next_beat:
                    self.post("watchdog", b'{"status": "firing", "groupKey": "w", "alerts": '
                              b'[{"labels": {"alertname": "Watchdog"}, "startsAt": '
                              b'"2026-09-01T00:00:00Z", "fingerprint": "w"}]}')
                    next_beat = self.mono + 60.0
                self._revive()
            action = rng.random()
            if action < 0.35:
                self.notification(rng.choice(TEAMS))
            elif action < 0.45 and self.groups:  # a retry, or a repeat
                self.post(*rng.choice(list(self.groups.values())))
            elif action < 0.55 and self.groups:  # the group resolves
                receiver, body = rng.choice(list(self.groups.values()))
                if receiver != "watchdog":
                    payload = json.loads(body)
                    payload["status"] = "resolved"
                    self.post(receiver, json.dumps(payload).encode())
            elif action < 0.67:
                self.ack()
            elif action < 0.74 and all(n.alive for n in self.nodes.values()):
                victim = self.nodes[rng.choice(("active", "standby"))]
                victim.kill()
                victim.back_at = self.mono + rng.choice((10.0, 40.0, 150.0))
                self.apart.append((self.mono, victim.back_at))
            elif action < 0.80 and self.mono >= self.partitioned_until:
                self.partitioned_until = self.mono + rng.choice((10.0, 40.0, 150.0))
                self.apart.append((self.mono, self.partitioned_until))
            elif action < 0.83:
                self.rogue_asks()
            elif action < 0.87:
                kind = rng.choice(("wecom", "sms"))
                self.net.faults[kind] = (rng.choice(("fail", "slow")),
                                         self.mono + rng.choice((5, 20, 40)))
        # a quiet end: both back, together, every channel working
        self.net.faults.clear()
        for _ in range(int(BOUND + GRACE + 200) // 5):
            self.tick(5.0)
            self._revive()

    def _revive(self) -> None:
        for node in self.nodes.values():
            if not node.alive and self.mono >= node.back_at:
                node.start()

    def ack(self) -> None:
        node = self.nodes[self.rng.choice(("active", "standby"))]
        if not node.alive:
            return
        open_ = {i.id: i.key for i in records.incidents(node.store) if i.resolved is None}
        # by incident key and person: the order the seeded histories drew them in
        rows = sorted((p for p in records.pages(node.store) if p.incident in open_),
                      key=lambda p: (open_[p.incident], p.person))
        if rows:
            row = self.rng.choice(rows)
            node.engine.ack(row.incident, row.person, "link")

    # ---------------------------------------------------------------- the invariants

    def check(self) -> None:
        nodes = list(self.nodes.values())
        incidents = {n.role: records.incidents(n.store) for n in nodes}
        keys = {(n.role, i.id): n.key(i.id) for n in nodes for i in incidents[n.role]}
        ended = {keys[(n.role, i.id)] for n in nodes for i in incidents[n.role]
                 if i.acked is not None or i.resolved is not None}
        paged = defaultdict(set)  # key -> people paged for it on either pager
        for n in nodes:
            for row in records.pages(n.store):
                paged[keys[(n.role, row.incident)]].add(row.person)
        sent = [(s, keys[(node.role, i)]) for s, node in zip(self.net.sent, self.senders,
                                                             strict=True)
                for i in s.incidents]

        def apart_during(start: float, end: float) -> float:
            return sum(max(0.0, min(end, b) - max(start, a)) for a, b in self.apart)

        # 1. never silence
        for at, _team, on_call, incident in self.expected:
            key = keys[incident]
            # one pager is down at a time: the other is there to send (no allowance)
            bound = BOUND + GRACE + 10
            people = {on_call} | paged[key]
            got = [s for s, k in sent if k == key and people & set(s.people)]
            if got and min(s.at for s in got) - at <= bound:
                continue
            # a pager that was down as the fault began opens it late, apart from the
            # other's: the page the other sent for the fault reached them
            fault = key.rsplit("|", 2)[0]
            if any(k.rsplit("|", 2)[0] == fault and people & set(s.people)
                   and at - 600 <= s.at <= at + bound for s, k in sent):
                continue
            assert key in ended, (f"{key} accepted at {at} never reached {people} "
                                  f"(first send {min((s.at for s in got), default=None)})")
        # 2. once, unless apart or killed around it
        times: dict[tuple, list[float]] = defaultdict(list)
        for s, node in zip(self.net.sent, self.senders, strict=True):
            if not s.first_piece:
                continue
            for incident, kind, step, person in s.news:
                times[(s.type, keys[(node.role, incident)], kind,
                       step if kind != "repeat" else 0, person)].append(s.at)
        # the standby sends too what the active failed, or took over a minute to send
        slow = {(keys[("active", r.incident)], r.kind, r.step, r.person)
                for r in records.deliveries(self.nodes["active"].store)
                if r.status == Status.FAILED
                or (r.sent is not None and r.sent - r.created >= PENDING_LIMIT)}
        for news, at in times.items():
            at.sort()
            if news[1:] in slow:
                continue
            for first, second in itertools.pairwise(at):
                if news[2] == "repeat" and second - first > 60:
                    continue  # another repeat of Alertmanager's
                assert apart_during(first - GRACE - 70, second + 1) > 0, (
                    f"{news} sent at {first} and again at {second} while the pagers "
                    f"were together")
        # 3. one acknowledgement: the other pager's incident that is the same (as the
        # pair matches them: the key, the alerts' start, not ended before it opened) is
        # acknowledged too
        for node in nodes:
            other = self.nodes["standby" if node.role == "active" else "active"]
            for row in (i for i in incidents[node.role] if i.acked is not None):
                same = _incident(other.engine, row["key"], row["started"], row["opened"],
                                 None, row["resolved"])
                assert same is None or same["acked"] is not None, (
                    f"{keys[(node.role, row['id'])]} acknowledged on the {node.role}, not "
                    f"on the {other.role}")
        # 4. only the pair: what a pager took from the other (an ack, an end), the other
        # had; no question of a rogue's was answered
        assert not self.rogue_answered, f"{self.rogue_answered} rogue question(s) answered"
        for node in nodes:
            other = self.nodes["standby" if node.role == "active" else "active"]
            mine = {i.id: i for i in incidents[node.role]}
            for event in records.events(node.store):
                if not ((event.what == "acknowledged" and event.channel == "peer")
                        or event.what == "peer"):
                    continue
                row = mine[event.incident]
                same = _incident(other.engine, row.key, row.started, row.opened,
                                 None, row.resolved)
                took = "acknowledged" if event.what == "acknowledged" else "ended"
                assert same is not None and (same["acked_by"] == row["acked_by"] if took ==
                                             "acknowledged" else same["resolved"]), (
                    f"{keys[(node.role, row['id'])]} {took} on the {node.role} from the "
                    f"{other.role}, which has {dict(same) if same else None}")
        # 5. an ack on either stops the other's pages once the two meet; 6. whom the other
        # paged after the ack (apart) hears afterwards that it was acknowledged (or over)
        offset = self.wall - self.mono

        def met(at: float) -> float:
            moved = True
            while moved:
                moved = False
                for start, end in self.apart:
                    if start <= at < end:
                        at, moved = end, True
            return at

        closing = defaultdict(list)  # (key, person) -> when they were told it ended
        for s, node in zip(self.net.sent, self.senders, strict=True):
            for incident, kind, _step, person in s.news:
                if kind in (Kind.ACK, Kind.RESOLVED):
                    closing[(keys[(node.role, incident)], person)].append(s.at)
        for node in nodes:
            other = self.nodes["standby" if node.role == "active" else "active"]
            mine = {i.id: i for i in incidents[node.role]}
            for ack in records.events(node.store):
                if ack.what != "acknowledged" or ack.channel in (None, "peer"):
                    continue
                key, at = keys[(node.role, ack.incident)], ack.at - offset
                resolved = mine[ack.incident].resolved
                meet = met(at)
                if resolved is not None and resolved - offset <= meet:
                    continue  # over before they met: the other's is another episode
                for s, sender in zip(self.net.sent, self.senders, strict=True):
                    if sender is not other or s.at <= at:
                        continue
                    for incident, kind, _step, person in s.news:
                        if keys[(other.role, incident)] != key or kind not in PAGES:
                            continue
                        theirs = records.incident(other.store, incident)
                        if theirs.acked is not None and theirs.acked - offset <= s.at:
                            continue  # a page that says who acknowledged (a team joining)
                        if resolved is not None and resolved < theirs.opened:
                            continue  # a late copy of an episode over here: no match
                        assert s.at <= meet + 10 or apart_during(s.at - 10, s.at), (
                            f"{key} acknowledged on the {node.role} at {at}: the "
                            f"{other.role}'s {kind} to {person} at {s.at}, after they met "
                            f"at {meet}")
                        assert person in (ack["person"], theirs["acked_by"]) or any(
                            t >= s.at for t in closing[(key, person)]), (
                            f"{key} acknowledged on the {node.role} at {at}: {person}, "
                            f"paged by the {other.role} at {s.at}, never told")


@pytest.mark.timeout(900)
@pytest.mark.usefixtures("quiet")
@pytest.mark.parametrize("share", range(2))
def test_pair_invariants_hold_on_random_histories(share: int) -> None:
    seeds = ([int(os.environ["PAIR_SEED"])] if "PAIR_SEED" in os.environ
             else range(share, RUNS, 2))
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=base) as directory:
        for seed in seeds:
            sim = PairSim(seed, Path(directory))
            try:
                sim.run(steps=30)
                sim.check()
            except Exception as exc:
                pytest.fail(f"seed {seed}: {exc!r} (replay: PAIR_SEED={seed} pytest "
                            f"tests/test_pager_pair.py)")
            finally:
                for node in sim.nodes.values():
                    if node.alive:
                        node.kill()
                    node.path.unlink(missing_ok=True)


# ------------------------------------------------------------------ examples beside it

def _pair(tmp_path: Path) -> PairSim:
    sim = PairSim(0, tmp_path)
    sim.rng = random.Random(0)
    sim.rogue_odds = 0.0
    assert sim.misrole is None
    return sim


def _advance(sim: PairSim, seconds: int) -> None:
    for _ in range(seconds):
        sim.tick(1.0)
        sim._revive()


def _to(sim: PairSim, person: str, alertname: str) -> list[str]:
    return [s.text for s in sim.net.sent if person in s.people and alertname in s.text]


@pytest.mark.usefixtures("quiet")
@pytest.mark.parametrize("answer", [{"deliveries": None}, {"deliveries": ["x"]},
                                    {"deliveries": [{"person": "vp", "age": None}]}, "x"])
def test_a_malformed_answer_is_no_answer_the_standby_pages(tmp_path: Path, answer) -> None:
    sim = _pair(tmp_path)
    sim.nodes["active"].kill()
    sim.nodes["active"].back_at = float("inf")
    standby = sim.nodes["standby"].peer
    standby.transports["active"] = lambda method, target, headers, body: (  # another
        200, sign_answer([PAIR_KEY.encode()], "v0", headers[NONCE], 200,  # version's
                         json.dumps(answer).encode()), json.dumps(answer).encode())
    sim.notification("leadership", alertname="SettlementPathDown", grade="I")
    _advance(sim, int(GRACE) + 5)
    assert _to(sim, "vp", "SettlementPathDown")


@pytest.mark.usefixtures("quiet")
def test_a_standby_whose_disk_is_full_still_pages_for_a_dead_active(tmp_path: Path) -> None:
    sim = _pair(tmp_path)
    sim.notification("leadership", alertname="SettlementPathDown", grade="I")
    sim.nodes["active"].kill()
    sim.nodes["active"].back_at = float("inf")
    standby = sim.nodes["standby"]
    real = standby.peer._mark

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    standby.peer._mark = full
    _advance(sim, int(GRACE) + 5)
    assert _to(sim, "vp", "SettlementPathDown")
    standby.peer._mark = real


@pytest.mark.usefixtures("quiet")
def test_a_pager_that_missed_the_resolve_pages_the_next_episode(tmp_path: Path) -> None:
    """The standby is down while the fault ends: once the two meet it closes the incident
    too, and the same alerts firing again later page the on-call again."""
    sim = _pair(tmp_path)
    sim.notification("leadership", alertname="SettlementPathDown", grade="I")
    receiver, body = sim.groups[next(k for k in sim.groups if "SettlementPathDown" in k)]
    _advance(sim, 5)
    standby = sim.nodes["standby"]
    standby.kill()
    resolved = json.loads(body)
    resolved["status"] = "resolved"
    for node in sim.nodes.values():  # Alertmanager's resolve reaches the active only
        if node.alive:
            node.engine.intake(receiver, json.dumps(resolved).encode())
    standby.back_at = sim.mono + 1
    _advance(sim, 40)  # back, and the two meet
    assert not [i for i in records.incidents(standby.store)
                if i.resolved is None and i.alertname == "SettlementPathDown"]
    before = len(_to(sim, "vp", "SettlementPathDown"))
    sim.nodes["active"].kill()  # the next day the active's host is gone
    sim.nodes["active"].back_at = float("inf")
    sim.notification("leadership", alertname="SettlementPathDown", grade="I")
    _advance(sim, int(GRACE) + 5)
    assert len(_to(sim, "vp", "SettlementPathDown")) > before


# ------------------------------------------------------------------ trust (issue 31)

def _rogue_at(sim: PairSim, member: str, body: dict, sign_with: bytes | None) -> None:
    """A rogue answers every question at `member`'s address with `body`."""
    data = json.dumps(body).encode()
    sim.nodes["standby" if member == "active" else "active"].peer.transports[member] = \
        lambda method, target, headers, _body: (200, {} if sign_with is None else sign_answer(
            [sign_with], "rogue", headers[NONCE], 200, data), data)


@pytest.mark.usefixtures("quiet")
@pytest.mark.parametrize("sign_with", [None, TOKEN.encode()], ids=["unsigned", "intake-token"])
def test_a_rogue_acked_at_the_dead_actives_address_is_no_answer(tmp_path: Path,
                                                                sign_with) -> None:
    sim = _pair(tmp_path)
    sim.nodes["active"].kill()
    sim.nodes["active"].back_at = float("inf")
    _rogue_at(sim, "active", {"role": "active", "declared": "active", "found": True,
                              "acked": sim.wall, "acked_by": "wang", "teams": list(TEAMS),
                              "resolved": None, "deliveries": [], "taken": True}, sign_with)
    sim.notification("leadership", alertname="SettlementPathDown", grade="I")
    _advance(sim, int(GRACE) + 5)
    assert _to(sim, "vp", "SettlementPathDown"), "the standby paged"
    _advance(sim, 40)  # and escalates
    assert any("【升级】" in t for t in _to(sim, "vp", "SettlementPathDown"))
    peer = sim.nodes["standby"].peer
    assert not peer.reachable
    assert peer.untrusted[("answer", "unsigned" if sign_with is None else "signature")] > 0


@pytest.mark.usefixtures("quiet")
def test_alertmanagers_token_acknowledges_nothing(tmp_path: Path) -> None:
    """Neither on the peer API (as a Bearer token, or as the key of a signature) nor as
    the secret of an ack link."""
    sim = _pair(tmp_path)
    sim.notification("leadership", alertname="SettlementPathDown", grade="I")
    _advance(sim, 2)
    standby = sim.nodes["standby"]
    [incident] = records.incidents(standby.store)
    body = json.dumps({"key": incident["key"], "started": incident["started"],
                       "opened": incident["opened"], "person": "vp", "via": "link",
                       "at": sim.wall}).encode()
    for headers in ({"Authorization": f"Bearer {TOKEN}"},
                    sign_question([TOKEN.encode()], "x", "POST", "/api/peer/ack", body,
                                  sim.wall)):
        status, _, _ = standby.peer.serve("POST", "/api/peer/ack", headers, body)
        assert status == 401
    # the link a pager derives for vp, and what it would be from Alertmanager's token
    [token] = [p.token for p in records.pages(standby.store, person="vp")]
    text = f"ack-link|{incident['key']}|{incident['started']!r}|vp"
    forged = base64.urlsafe_b64encode(hmac.new(TOKEN.encode(), text.encode(),
                                               "sha256").digest()[:18]).decode()
    assert forged != token
    assert standby.engine.ack_token(forged) is None
    assert standby.engine.incident(incident["id"])["acked"] is None
    assert standby.peer.untrusted[("question", "unsigned")] == 1
    assert standby.peer.untrusted[("question", "signature")] == 1


@pytest.mark.usefixtures("quiet")
def test_an_ack_naming_someone_who_may_not_acknowledge_is_refused(tmp_path: Path) -> None:
    """Signed with the pair's key (a pager whose config differs, or a stolen key): the
    person must be one this pager's config lets acknowledge the incident."""
    sim = _pair(tmp_path)
    sim.notification("leadership", alertname="SettlementPathDown", grade="I")
    _advance(sim, 2)
    standby = sim.nodes["standby"]
    [incident] = records.incidents(standby.store)
    for person in ("mallory", "li"):  # not in the config; in it, but in no paged team
        body = json.dumps({"key": incident["key"], "started": incident["started"],
                           "opened": incident["opened"], "person": person, "via": "link",
                           "at": sim.wall, "teams": ["leadership"]}).encode()
        headers = sign_question([PAIR_KEY.encode()], "active-1", "POST", "/api/peer/ack",
                                body, sim.wall)
        status, _, answer = standby.peer.serve("POST", "/api/peer/ack", headers, body)
        assert status == 200 and json.loads(answer)["taken"] is False, answer
        assert "may not acknowledge" in json.loads(answer)["refused"]
    assert standby.engine.incident(incident["id"])["acked"] is None
    assert standby.peer.untrusted[("question", "person")] == 2
    # an answer saying so is no answer either: the standby pages as for a dead active
    sim.nodes["active"].kill()
    sim.nodes["active"].back_at = float("inf")
    _rogue_at(sim, "active", {"found": True, "acked": sim.wall, "acked_by": "mallory",
                              "teams": ["leadership"], "resolved": None, "deliveries": []},
              PAIR_KEY.encode())
    sim.notification("leadership", alertname="PrimaryLineDown", grade="I")
    _advance(sim, int(GRACE) + 5)
    assert _to(sim, "vp", "PrimaryLineDown")
    assert standby.peer.untrusted[("answer", "person")] > 0


@pytest.mark.usefixtures("quiet")
def test_a_question_seen_on_the_wire_is_not_answered_twice(tmp_path: Path) -> None:
    sim = _pair(tmp_path)
    standby = sim.nodes["standby"].peer
    headers = sign_question([PAIR_KEY.encode()], "active-1", "GET", "/api/peer/hello", b"",
                            sim.wall)
    assert standby.serve("GET", "/api/peer/hello", headers, b"")[0] == 200
    assert standby.serve("GET", "/api/peer/hello", headers, b"")[0] == 401
    late = sign_question([PAIR_KEY.encode()], "active-1", "GET", "/api/peer/hello", b"",
                         sim.wall - SKEW - 1)
    assert standby.serve("GET", "/api/peer/hello", late, b"")[0] == 401
    # its own question sent back to it: only its hello is answered (where is it?)
    ask = "/api/peer/incident?key=k&started=1&opened=1"
    own = sign_question([PAIR_KEY.encode()], standby.id, "GET", ask, b"", sim.wall)
    assert standby.serve("GET", ask, own, b"")[0] == 401
    assert {why for (what, why) in standby.untrusted} == {"replay", "clock", "reflected"}


@pytest.mark.usefixtures("quiet")
def test_an_ack_during_a_partition_ends_the_other_sides_escalation_when_they_meet(
        tmp_path: Path) -> None:
    """Apart, the standby escalates what the active had acknowledged (duplicates, not
    silence); when the two meet, whom it woke after the active's notice hears once that
    it was acknowledged, nobody else hears it twice, and nothing more escalates."""
    sim = _pair(tmp_path)
    apart = 400
    sim.partitioned_until = sim.mono + apart
    sim.apart.append((sim.mono, sim.partitioned_until))
    start = sim.mono
    sim.notification("network", alertname="SettlementPathDown", grade="I")
    sim.notification("leadership", alertname="SettlementPathDown", grade="I")
    _advance(sim, 20)
    active = sim.nodes["active"]
    [incident] = [i for i in records.incidents(active.store)
                  if i.alertname == "SettlementPathDown"]
    on_call = records.pages(active.store, team="network")[0].person
    assert active.engine.ack(incident["id"], on_call, "link")
    acked = sim.mono
    _advance(sim, apart + 60)
    sent = [(s.at, node.role, kind, person) for s, node in zip(sim.net.sent, sim.senders,
                                                                strict=True)
            if "SettlementPathDown" in s.text for _, kind, _, person in s.news]
    woken = {p for at, role, kind, p in sent if role == "standby" and kind in PAGES
             and at > acked}
    # the standby's escalation steps (30 s, 90 s) while apart: the backup, the lead, the
    # vice-president woken for nothing, for as long as the partition lasted
    assert {"li", "wang", "vp"} - {on_call} <= woken
    for person in woken - {on_call}:
        told = [at for at, role, kind, p in sent if p == person and kind == "ack"
                and role == "standby"]
        assert len(told) == 1 and told[0] >= start + apart, (person, sent)
    assert all(at <= start + apart for at, role, kind, p in sent if role == "standby"
               and kind in PAGES), "the standby paged after they met"
    # whom the active told already and the standby did not wake since: told once
    for person in {p for _, role, kind, p in sent if role == "active" and kind == Kind.ACK}:
        assert sum(p == person and kind == Kind.ACK for _, _, kind, p in sent) == (
            2 if person in woken else 1), (person, sent)
    standby = sim.nodes["standby"]
    [mine] = [i for i in records.incidents(standby.store)
              if i.alertname == "SettlementPathDown"]
    assert mine.acked_by == on_call
    assert not [t for t in records.timers(standby.store, mine.id)
                if t.kind == TimerKind.ESCALATION and t.done == 0]


@pytest.mark.usefixtures("quiet")
@pytest.mark.parametrize("reach_itself", [True, False])
def test_both_started_as_standbys_a_page_goes_out_within_the_grace(
        tmp_path: Path, reach_itself: bool) -> None:
    """The one at the active's address finds itself there and acts as the active: each
    page once, at once. A pager that cannot reach its own address cannot find out: then
    each sends after the grace unless the other just did (at most twice, never a minute
    late)."""
    sim = _pair(tmp_path)
    for node in sim.nodes.values():
        node.engine.role = node.peer.declared = "standby"
    if not reach_itself:
        carry = sim.carry
        sim.carry = lambda node, member, *rest: None if sim.nodes[member] is node else \
            carry(node, member, *rest)
    _advance(sim, 2)  # the first beat
    sim.notification("leadership", alertname="SettlementPathDown", grade="I")
    start = sim.mono
    _advance(sim, int(GRACE) + 5)
    got = [s.at - start for s in sim.net.sent if "vp" in s.people]
    assert got and max(got) <= GRACE + 3, got
    assert len(got) == 1 if reach_itself else 1 <= len(got) <= 2, got
    assert got[0] <= (2 if reach_itself else GRACE + 3)
    assert sim.nodes["active"].engine.role == ("active" if reach_itself else "standby")
    # told by the one that reaches the other (PagerPairMisconfigured)
    assert sim.nodes["standby"].peer.conflict
