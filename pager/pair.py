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

Trust: every question and answer is signed with the pair's key (pager/keys.py), never
Alertmanager's token. An answer that is not signed with it, not an answer to this
question, or this pager's own question sent back, is no answer (counted in
insmon_pager_peer_untrusted_total: PagerPeerUntrusted); so is an acknowledgement naming
a person this pager's config does not let acknowledge the incident. A rogue at the other
pager's address can therefore only keep quiet, and a quiet peer is one the standby sends
for.

Roles: the pager at the pair's `active.url` is the active, whatever its --role: a pager
that asks the other's address and hears itself answer (and not at its own address) is
started in the wrong role, and takes the other's. Both in one role is still told
(insmon_pager_peer_same_role: PagerPairMisconfigured), but pages neither wait a minute
nor go out twice.
"""

from __future__ import annotations

import http.client
import json
import logging
import secrets
import sqlite3
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from pager import keys, records
from pager.engine import PEER_KEY, WATCHDOG_KEY, Engine
from pager.records import CLOSING, PAGES, Incident, Kind, Status
from pager.store import StoreError

log = logging.getLogger("insmon.pager.pair")
PENDING_LIMIT = 60.0  # the active trying this long (rate limits, retries): the standby sends
ASK_EVERY = 2.0  # an incident's answer is used this long before asking again
BEAT_EVERY = 5.0  # the peer's liveness is asked this often
RECONCILE_EVERY = 30.0  # open incidents the other pager saw end, looked for this often
ACK_KEEP = 600.0  # an ack is passed on until the peer has the incident, this long at most
MATCH_WINDOW = 60.0  # a silence's start as each pager dates it (see _incident)
# the alerts' start on both: Prometheus sets it; an alert posted without one is dated by
# each Alertmanager of the pair as it arrives, a moment apart
SAME_START = 1.0
SELF_DATED = (WATCHDOG_KEY, PEER_KEY)
MAX_ANSWER = 32 << 20  # bytes read of an answer at the most
LOG_EVERY = 60.0  # seconds: an untrusted question or answer of one kind logged this often
UNTRUSTED = ("unsigned", "signature", "clock", "replay", "reflected", "person", "refused")

# method, path (with its query), headers, body -> (status, headers, body); None: no
# answer within the pair's timeout
Transport = Callable[[str, str, dict[str, str], bytes],
                     tuple[int, Mapping[str, str], bytes] | None]


def http_transport(url: str, timeout: float) -> Transport:
    """Questions to the other pager's API at `url`; None when it does not answer within
    `timeout`."""
    # no proxy (a site's HTTP_PROXY is for the robots on the internet, not for the
    # pair), no redirect (the other pager never answers with one)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)

    def send(method: str, target: str, headers: dict[str, str], body: bytes
             ) -> tuple[int, Mapping[str, str], bytes] | None:
        request = urllib.request.Request(
            url.rstrip("/") + target, data=body if method == "POST" else None,
            headers={**headers, "Content-Type": "application/json"}, method=method)
        try:
            with opener.open(request, timeout=timeout) as response:
                return response.status, response.headers, response.read(MAX_ANSWER)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.headers, exc.read(MAX_ANSWER)
        except (OSError, ValueError, http.client.HTTPException):
            return None
    return send


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs) -> None:
        return None


class Peer:
    """This pager's side of the pair: what it asks the other before sending, the
    acknowledgements it passes on, whether the other lives, and the duplicates a
    partition left."""

    def __init__(self, engine: Engine, held: keys.Secrets,
                 transports: dict[str, Transport], inline: bool = False) -> None:
        """`held`: the pager's secrets (the pair's key, read again on SIGHUP);
        `transports`: the way to each member's address, {"active": ..., "standby": ...};
        `inline`: a storm's questions one after the other in the caller's thread (the
        simulation's controlled clock: its transports answer at once, and in order)."""
        assert engine.config.pair is not None and engine.role in ("active", "standby")
        self.engine, self.store, self.held = engine, engine.store, held
        self.transports = transports
        self.pair = engine.config.pair
        self.declared = engine.role  # its --role; engine.role is the role it acts in
        self.id = secrets.token_hex(8)  # this process: its own questions are told apart
        self.nonces = keys.Nonces()
        now = engine.clock.now()
        self.last_seen = now  # from the start: a peer never heard pages after down_after
        self.seen_wall = 0.0
        self.reachable = True  # until a question goes unanswered
        self.conflict = False  # the other pager was started in the same role
        self.peer_role: str | None = None  # the role the other acts in, as it says
        self.untrusted: dict[tuple[str, str], int] = {}  # (question|answer, why) -> count
        self._logged: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._silent_since = now
        self._answers: dict[int, tuple[float, dict | None]] = {}
        self._next_beat = self._next_reconcile = now
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pager-peer", daemon=True)
        self._pool = None if inline else ThreadPoolExecutor(8, thread_name_prefix="pager-ask")

    @property
    def standby(self) -> bool:
        return self.engine.role == "standby"

    @property
    def other(self) -> str:
        return "standby" if self.engine.role == "active" else "active"

    # ------------------------------------------------------------------ asking, answering

    def ask(self, path: str, body: dict | None = None) -> dict | None:
        """The other pager's answer; None when none comes, or one that is not the other
        pager's (counted and logged): its own question sent back counts as none too."""
        answer = self._exchange(self.other, path, body)
        if answer is not None and answer["from"] == self.id:
            self.distrust("answer", "reflected", "the other pager's address answers as this "
                          "pager (its questions are sent back to it)")
            return None
        return answer

    def _exchange(self, member: str, path: str, body: dict | None) -> dict | None:
        """A question signed with the pair's key to the pager at `member`'s address, and
        its answer if signed with it; `from` in the answer is the answering process."""
        method = "GET" if body is None else "POST"
        data = b"" if body is None else json.dumps(body).encode()
        question = keys.sign_question(self.held.pair, self.id, method, path, data,
                                      self.engine.wall())
        reply = self.transports[member](method, path, question, data)
        if reply is None:
            return None
        status, headers, text = reply
        try:
            answerer = keys.check_answer(self.held.pair, question, status, headers, text)
        except keys.Untrusted as exc:
            self.distrust("answer", exc.why, f"{member} {path.split('?')[0]}: {exc}")
            return None
        try:
            answer = json.loads(text) if status == 200 else None
        except ValueError:
            return None
        return {**answer, "from": answerer} if isinstance(answer, dict) else None

    def serve(self, method: str, target: str, headers: Mapping[str, str], body: bytes
              ) -> tuple[int, dict[str, str], bytes]:
        """The other pager's question (GET /api/peer/hello, /api/peer/incident, POST
        /api/peer/ack): (status, headers, body). Unsigned with the pair's key: 401."""
        try:
            sender = keys.check_question(self.held.pair, headers, method, target, body,
                                         self.engine.wall(), self.nonces)
            # its own hello tells a pager where it is (_place); nothing else of its own
            if sender == self.id and (method, target) != ("GET", "/api/peer/hello"):
                raise keys.Untrusted("reflected", "this pager's own question, sent back")
        except keys.Untrusted as exc:
            self.distrust("question", exc.why, f"{method} {target.split('?')[0]}: {exc}")
            return 401, {}, f"not the pair's: {exc}\n".encode()
        status, answer = self._answer(method, target, body)
        data = json.dumps(answer).encode()
        return status, keys.sign_answer(self.held.pair, self.id, headers[keys.NONCE], status,
                                        data), data

    def _answer(self, method: str, target: str, body: bytes) -> tuple[int, dict]:
        url = urllib.parse.urlsplit(target)
        engine = self.engine
        problem = engine.store.check()
        if problem:  # a pager that cannot store a page is no peer to wait for
            return 503, {"error": problem}
        try:
            if (method, url.path) == ("GET", "/api/peer/hello"):
                return 200, {"role": engine.role, "declared": self.declared}
            if (method, url.path) == ("GET", "/api/peer/incident"):
                query = urllib.parse.parse_qs(url.query)
                return 200, describe(engine, query["key"][0], float(query["started"][0]),
                                     float(query["opened"][0]),
                                     float(query["ended"][0]) if "ended" in query else None)
            if (method, url.path) == ("POST", "/api/peer/ack"):
                answer = take_ack(engine, json.loads(body))
                if answer.get("refused"):
                    self.distrust("question", "person", answer["refused"])
                return 200, answer
        except (KeyError, TypeError, ValueError):
            return 400, {"error": "key, started and opened wanted (ack: and person)"}
        except (StoreError, sqlite3.Error) as exc:
            return 503, {"error": f"cannot store it: {exc}"}
        return 404, {"error": "no such question"}

    def distrust(self, what: str, why: str, detail: str) -> None:
        """A question or answer that is not the pair's: counted, logged once a minute for
        each kind."""
        now = time.monotonic()
        with self._lock:
            self.untrusted[(what, why)] = self.untrusted.get((what, why), 0) + 1
            quiet = now - self._logged.get((what, why), -LOG_EVERY) < LOG_EVERY
            if not quiet:
                self._logged[(what, why)] = now
        if not quiet:
            log.warning("untrusted %s (%s), taken as none: %s", what, why, detail)

    # ------------------------------------------------------------------ before sending

    def gate(self, rows: list[dict]) -> list[dict]:
        """Of the due deliveries, those this pager sends now; the peer's are marked so,
        the rest wait for a later round. In doubt (a malformed answer, a store that
        cannot be written), it sends."""
        now = self.engine.clock.now()
        asking = {row["incident"] for row in rows if self._asks(row, now)}
        self._ask_about([i for i in asking if now - self._answers.get(i, (-1e18, None))[0]
                         >= ASK_EVERY], now)
        send = []
        for row in rows:
            try:
                # not asked: decided before (sending for the peer), the standby within
                # its grace (waits), the active while the standby is silent (sends)
                ok = self._verdict(row, now) if self._asks(row, now) else \
                    bool(row.get("peer")) or not self.standby
            except Exception:
                log.exception("delivery %d: the peer's answer could not be used: sending",
                              row["id"])
                ok = True
            if ok:
                send.append(row)
        if len(self._answers) > 1000:  # the questions of a storm long past
            self._answers = {k: v for k, v in self._answers.items() if now - v[0] < 60}
        return send

    def _ask_about(self, incident_ids: list[int], now: float) -> None:
        """Each incident's question at once: a slow peer costs one timeout, not one per
        incident of a storm; silent a moment ago, it is not asked again before the beat."""
        if not incident_ids:
            return
        if not self.reachable and now - self._silent_since < BEAT_EVERY:
            self._answers.update({i: (now, None) for i in incident_ids})
            return
        incidents = [i for i in map(self.engine.incident, incident_ids) if i is not None]
        one = lambda incident: self._vouched(  # noqa: E731
            incident, _valid(self.ask(question(incident), None)))
        answers = list(self._pool.map(one, incidents) if len(incidents) > 1 and self._pool
                       else map(one, incidents))
        self._answers.update({i["id"]: (now, a) for i, a in zip(incidents, answers,
                                                                 strict=True)})
        self._seen(any(a is not None for a in answers), now)

    def _vouched(self, incident, answer: dict | None) -> dict | None:
        """The answer, unless it says acknowledged by someone this pager's config does
        not let acknowledge the incident: then none (counted)."""
        if answer is not None and answer["acked"] is not None and not may_ack(
                self.engine, incident, answer["acked_by"], answer["teams"]):
            self.distrust("answer", "person", f"incident {incident['id']} acknowledged by "
                          f"{answer['acked_by']!r}, who may not acknowledge it here")
            return None
        return answer

    def _asks(self, row: dict, now: float) -> bool:
        """Whether the peer is asked about this row now: not when decided before (sent
        for the peer: a retry, a failover), not by the standby within its grace, not by
        the active while the standby does not answer."""
        if row.get("peer"):
            return False
        if self.standby:
            return now >= (row["born"] or now) + self.pair.grace
        return self.reachable or now - self._silent_since >= BEAT_EVERY

    def _verdict(self, row: dict, now: float) -> bool:
        incident = self.engine.incident(row["incident"])
        answer = self._answers.get(row["incident"], (0.0, None))[1]
        if incident is None:
            return True
        if answer is None:  # no answer: the standby sends for the active
            if self.standby:
                self._mark(row, "sent-for-peer", "unreachable", "the active does not answer")
            return True
        if row["kind"] in PAGES and answer["found"] and incident["resolved"] is not None \
                and answer["resolved"] is not None:  # over on both: a page is news no more
            self._mark(row, "sent-by-peer", None, "over on both", status=Status.PEER)
            return False
        if row["kind"] in PAGES and answer["found"] and incident["resolved"] is None:
            if answer["resolved"] is not None:  # it missed the end: over here too
                self.engine.resolve(incident["id"], "ended on the other pager",
                                    answer["superseded"])
                self._mark(row, "sent-by-peer", None, "ended on the peer", status=Status.PEER)
                return False
            if answer["acked"] is not None:  # its ack reaches this pager by POST
                self._mark(row, "sent-by-peer", None, "acknowledged on the peer",
                           status=Status.PEER)
                return False
        theirs = same_delivery(answer, row, now)
        if any(d["status"] == Status.SENT for d in theirs):
            if row["kind"] in CLOSING and self._woke_since(row, theirs):
                self._mark(row, "sent-for-peer", "woken", "it paged them after the peer's "
                           "notice (the two were apart)")
                return True
            self._mark(row, "sent-by-peer", None, "sent by the peer", status=Status.PEER)
            return False
        if not self.standby:
            return True
        if self.peer_role != "standby" and any(
                d["status"] == Status.PENDING and d["age"] < PENDING_LIMIT for d in theirs):
            return False  # the active is on it: ask again in a while
        why = "failed" if theirs else "not-there"
        self._mark(row, "sent-for-peer", why, "the active has not sent it" if theirs
                   else "the active has no such page")
        return True

    def _woke_since(self, row: dict, theirs: list[dict]) -> bool:
        """Whether this pager paged the person about the incident after the peer told them
        it was acknowledged or over (apart, each knew only its own): then this pager says
        so too, once; the peer's notice alone would have come before the page."""
        sent = records.last_sent(self.store, row["incident"], row["person"], PAGES)
        if sent is None:
            return False
        told = min(d["age"] for d in theirs if d["status"] == Status.SENT)
        return self.engine.wall() - sent < told

    def _mark(self, row: dict, what: str, why: str | None, detail: str,
              status: str | None = None) -> None:
        with self.store.transaction() as db:
            records.mark_peer(db, row["id"], why or what, status, detail)
            records.add_event(db, row["incident"], self.engine.wall(), what, row["person"],
                              detail=f"{row['kind']}: {detail}")
        row["peer"] = why or what

    # ------------------------------------------------------------------ in the background

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        if self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)

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
        for ack in records.waiting_peer_acks(self.store, 50):
            mine = records.incident_at(self.store, ack.key, ack.started, ack.opened)
            taken = self.ask("/api/peer/ack", {
                **{k: ack[k] for k in ("key", "started", "opened", "person", "via", "at")},
                "ended": mine.resolved if mine else None,
                "teams": json.loads(mine.teams) if mine else []})
            self._seen(taken is not None, self.engine.clock.now())
            if taken is None:
                return  # kept: passed on once the peer answers
            if taken.get("refused"):
                log.error("the other pager refused %s's acknowledgement: %s", ack["person"],
                          taken["refused"])
            elif not taken.get("taken") and self.engine.wall() - ack["at"] < ACK_KEEP:
                continue  # the peer has not opened it yet (a notification it gets late)
            with self.store.transaction() as db:
                records.peer_ack_done(db, ack.id)

    def beat(self) -> None:
        now = self.engine.clock.now()
        if now < self._next_beat:
            return
        self._next_beat = now + BEAT_EVERY
        hello = self._exchange(self.other, "/api/peer/hello", None)
        if hello is not None and hello["from"] == self.id:
            hello = self._exchange(self.other, "/api/peer/hello", None) if self._place() \
                else None  # moved: the other is at the other address now
        self._seen(hello is not None, now)
        if hello is not None:
            self.peer_role = str(hello.get("role"))
            same = hello.get("declared", hello.get("role")) == self.declared
            if same and not self.conflict:
                log.error("the other pager was started --role %s too: check --role on both "
                          "hosts (the one at the pair's active url acts as the active)",
                          self.declared)
            self.conflict = same or self.declared != self.engine.role
        if self.reachable:
            self.engine.peer_heard()
            if now >= self._next_reconcile:
                self._next_reconcile = now + RECONCILE_EVERY
                self.reconcile_open()
        elif now - self.last_seen >= self.pair.down_after:
            self.engine.peer_silent(now - self.last_seen)

    def _place(self) -> bool:
        """The other's address answered as this pager: is this pager the one there (it
        was started in the wrong role: it takes the role of that address; True), or does
        something send its questions back to it (its own address answers as it too)?"""
        mine = self._exchange(self.engine.role, "/api/peer/hello", None)
        if mine is not None and mine["from"] == self.id:
            self.distrust("answer", "reflected", "both addresses of the pair answer as this "
                          "pager: something sends its questions back")
            return False
        log.error("this pager is the one at the pair's %s url (%s), started --role %s: it "
                  "acts as the %s; start it with --role %s", self.other,
                  getattr(self.pair, self.other).url, self.declared, self.other, self.other)
        self.engine.role = self.other
        self.conflict = True
        return True

    def reconcile_open(self) -> None:
        """An incident open here that the other pager saw resolve (this one was down or
        apart as the resolve came) is over here too: left open it would take the next
        episode of the same alerts without paging anyone."""
        for incident in records.open_incidents(self.store, 50, except_keys=SELF_DATED):
            answer = _valid(self.ask(question(incident), None))
            if answer is None:
                return
            if answer["found"] and answer["resolved"] is not None:
                self.engine.resolve(incident["id"], "ended on the other pager",
                                    answer["superseded"])

    def reconcile(self) -> None:
        """Pages sent for an unreachable peer: did it send them too (a duplicate)?"""
        if not self.reachable:
            return
        for row in records.sent_for_peer(self.store, "unreachable", 20):
            incident = self.engine.incident(row["incident"])
            answer = _valid(self.ask(question(incident), None))
            if answer is None:
                return
            both = any(d.get("status") == Status.SENT for d in same_delivery(
                answer, dict(row), self.engine.clock.now()))
            with self.store.transaction() as db:
                records.mark_peer(db, row.id, "duplicate" if both else "alone")
                if both:
                    records.add_event(db, row.incident, self.engine.wall(), "duplicate",
                                      row.person,
                                      detail=f"{row.kind}: both pagers sent it while apart")
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
    ended = {} if incident["resolved"] is None else {"ended": repr(incident["resolved"])}
    return "/api/peer/incident?" + urllib.parse.urlencode(
        {"key": incident["key"], "started": repr(incident["started"]),
         "opened": repr(incident["opened"]), **ended})


def _valid(answer: dict | None) -> dict | None:
    """The peer's answer about an incident in the shape the verdicts read, or None (as
    no answer) when it is not: an older or newer pager, or something else answering."""
    if not isinstance(answer, dict) or not isinstance(answer.get("deliveries"), list):
        return None
    deliveries = []
    for d in answer["deliveries"]:
        if not isinstance(d, dict):
            return None
        try:
            deliveries.append({"person": str(d["person"]), "kind": str(d["kind"]),
                               "step": int(d["step"]), "status": str(d["status"]),
                               "age": float(d["age"])})
        except (KeyError, TypeError, ValueError):
            return None
    numbers = [answer.get(k) for k in ("acked", "resolved")]
    if not all(n is None or isinstance(n, int | float) for n in numbers):
        return None
    return {"found": answer.get("found") is True, "acked": numbers[0],
            "acked_by": answer.get("acked_by"), "teams": answer.get("teams") or [],
            "resolved": numbers[1], "superseded": answer.get("superseded") is True,
            "deliveries": deliveries}


class Unanswered(ValueError):
    """The pair's hello not answered as the pair's: `kind` is secret (this host cannot
    read the key), unreachable, refused (the pager holds another key), untrusted (an
    answer not signed with the key) or not-a-pager."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def hello(config, member: str) -> dict:
    """What the pager at `member`'s url ("active" or "standby") says of itself ({"role":
    the role it acts in, "declared": its --role}), asked with a question signed with the
    pair's key and trusted only if its answer is signed with it: how `insmon pager
    check-pair` and `insmon doctor` check the pair. Unanswered saying why not."""
    try:
        held = keys.Secrets.load(config)
    except ValueError as exc:
        raise Unanswered("secret", str(exc)) from None
    url = getattr(config.pair, member).url
    question = keys.sign_question(held.pair, f"check-{secrets.token_hex(4)}", "GET",
                                  "/api/peer/hello", b"", time.time())
    reply = http_transport(url, config.pair.timeout)("GET", "/api/peer/hello", question, b"")
    if reply is None:
        raise Unanswered("unreachable", f"no answer within {config.pair.timeout:g} s")
    status, headers, body = reply
    try:
        keys.check_answer(held.pair, question, status, headers, body)
    except keys.Untrusted as exc:
        raise Unanswered("refused" if exc.why == "refused" else "untrusted",
                         f"{exc} ({exc.why})") from None
    try:
        answer = json.loads(body)
        if status == 200 and answer["role"] in ("active", "standby"):
            return {"role": answer["role"], "declared": answer.get("declared", answer["role"])}
    except (ValueError, KeyError, TypeError):
        pass
    raise Unanswered("not-a-pager", f"HTTP {status}, signed with the pair's key but not a "
                     f"pager's hello: {body[:100]!r}")


def same_delivery(answer: dict, row: dict, now: float) -> list[dict]:
    """The peer's deliveries that are this one: the same person, kind and step (a repeat:
    one born within a minute of this one, as the pagers count Alertmanager's repeats
    apart when one of them missed some)."""
    age = now - (row["born"] or now)
    return [d for d in answer["deliveries"]
            if d["person"] == row["person"] and d["kind"] == row["kind"]
            and (d["step"] == row["step"] if row["kind"] != Kind.REPEAT
                 else abs(d["age"] - age) <= 60)]


def describe(engine: Engine, key: str, started: float, opened: float,
             ended: float | None) -> dict:
    """What this pager knows of an incident the other pager asks about."""
    incident = _incident(engine, key, started, opened, ended is None, ended)
    if incident is None:
        return {"found": False, "deliveries": []}
    now = engine.clock.now()
    deliveries = records.deliveries(engine.store, incident.id)
    superseded = records.happened(engine.store, incident.id, ("superseded",))
    return {"found": True, "acked": incident["acked"], "acked_by": incident["acked_by"],
            "teams": json.loads(incident["teams"]),
            "resolved": incident["resolved"], "superseded": bool(superseded),
            "deliveries": [{"person": d["person"], "kind": d["kind"], "step": d["step"],
                            "status": d["status"], "age": now - (d["born"] or now)}
                           for d in deliveries]}


def take_ack(engine: Engine, body: dict) -> dict:
    """The other pager's acknowledgement: this pager's incident stops escalating too,
    if this pager's config lets the person acknowledge it."""
    ended = body.get("ended")
    incident = _incident(engine, str(body["key"]), float(body["started"]),
                         float(body["opened"]), None,  # the episode opened closest
                         None if ended is None else float(ended))
    if incident is None:
        return {"taken": False}
    person, teams = str(body["person"]), body.get("teams") or []
    if not isinstance(teams, list) or not may_ack(engine, incident, person, teams):
        return {"taken": False, "refused": f"{person!r} may not acknowledge incident "
                f"{incident['alertname']} here"}
    engine.ack(incident["id"], person, "peer")
    return {"taken": True}


def may_ack(engine: Engine, incident, person: object, teams: object) -> bool:
    """Whether this pager's config lets `person` acknowledge `incident` (a row of its
    own) as the other pager says they did: a person of the config, paged for it or in
    one of its teams here, in a team its escalation names, or in one of `teams` (those
    the other pager paged for it: it may have paged a step this one has not yet)."""
    config = engine.config
    if not isinstance(person, str) or person not in config.people:
        return False
    if engine.may_ack(incident["id"], person):
        return True
    if incident["drill"]:
        return person in config.drill.people
    named = {*json.loads(incident["owners"]), *(t for step in json.loads(
        incident["escalation"]) for t in step["notify"]),
        *(t for t in (teams if isinstance(teams, list) else []) if isinstance(t, str))}
    return any(person in config.members(t) for t in named if t in config.teams)


def _incident(engine: Engine, key: str, started: float, opened: float,
              is_open: bool | None, ended: float | None = None
              ) -> Incident | None:
    """This pager's incident that is the other's: the same key and the alerts' own start
    (Prometheus said it: the same on both pagers, whatever their clocks; within a second,
    for alerts whose start each Alertmanager set as they arrived); for the watchdog's
    and the peer's silences, which each pager dates itself, the closest start within
    MATCH_WINDOW. Not one that ended before the other's opened, nor one opened after the
    other's `ended` (other episodes; with the hosts' clocks apart, a match missed is a
    page sent twice, never one lost). Of
    several (the same alerts again after a resolve), the one open or not as the other's
    is, then the one opened closest. None: this pager never opened it."""
    window = MATCH_WINDOW if key in SELF_DATED else SAME_START
    return records.matching(engine.store, key, started, window, opened, is_open, ended)


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
        conflict = GaugeMetricFamily("insmon_pager_peer_same_role", "1 when the two "
                                     "pagers were started in one role (check --role; the "
                                     "one at the pair's active url acts as the active)")
        conflict.add_metric([], float(peer.conflict))
        yield conflict
        untrusted = CounterMetricFamily(
            "insmon_pager_peer_untrusted", "Questions from and answers at the other "
            "pager's address that are not the pair's, taken as none, by why: unsigned, "
            "signature (another key), clock, replay, reflected (this pager's own), person "
            "(an ack by someone who may not), refused (the other refused this one's)",
            labels=["what", "why"])
        with peer._lock:
            counts = dict(peer.untrusted)
        for what in ("question", "answer"):
            for why in UNTRUSTED:
                untrusted.add_metric([what, why], counts.get((what, why), 0))
        yield untrusted
        seen = GaugeMetricFamily("insmon_pager_peer_last_seen_timestamp_seconds",
                                 "When the other pager last answered")
        seen.add_metric([], peer.seen_wall)
        yield seen
        sent_for = CounterMetricFamily(
            "insmon_pager_peer_deliveries", "Messages this pager sent on the other's "
            "behalf, by why: unreachable (no answer; after the partition: duplicate or "
            "alone), failed or not-there (the active did not send it), woken (an ack or "
            "resolve notice the other sent before this one paged the person)",
            labels=["why"])
        sent_by = CounterMetricFamily("insmon_pager_peer_sent", "Messages this pager left "
                                      "out because the other pager sent them")
        duplicates = CounterMetricFamily("insmon_pager_peer_duplicates", "Messages both "
                                         "pagers sent while they could not reach each other")
        counts = records.sent_by_peer_reason(peer.store)
        for why in ("unreachable", "duplicate", "alone", "failed", "not-there", "woken"):
            sent_for.add_metric([why], counts.get(why, 0))
        sent_by.add_metric([], records.count_deliveries(peer.store, Status.PEER))
        duplicates.add_metric([], counts.get("duplicate", 0))
        yield sent_for
        yield sent_by
        yield duplicates
