"""What the pager decides: an incident per alert group, who is paged, escalation while
nobody answers, acknowledgement, the watchdog, the report reminder. All of it is rows in
the store, written in one transaction per decision; the delivery worker sends them.

An incident is Alertmanager's group (site, alertname, grade, and drill or not): every
team's notification of the group joins the one incident, so one acknowledgement stops
the escalation for everyone and everyone paged hears of it.

Timers (escalation, reminders, retries, the watchdog) run on the pager's clock
(`Clock.now`), dates a person reads on the wall clock. An incident keeps the escalation
it opened with: a config changed and restarted never rewrites a running incident's steps,
and a team, person or channel that is gone falls back, it never stops the loop.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import secrets
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pager import records
from pager.clock import Clock
from pager.config import DRILL, UNROUTED, WATCHDOG, PagerConfig
from pager.records import PAGES, Incident, Kind, TimerKind
from pager.rota import Rota
from pager.store import Store, StoreError
from vocabulary import GRADE_ZH, GRADES

if TYPE_CHECKING:
    from pager.keys import Secrets

log = logging.getLogger("insmon.pager")
WATCHDOG_KEY = "watchdog"
PEER_KEY = "pager-peer-down"
# The same notification again within this many seconds is Alertmanager retrying a send
# (or the HA pair's second copy): it refreshes, it pages nobody again. Later, it is a
# repeat (repeat_interval): news that the alert still fires.
RETRY_WINDOW = 60.0


class BadNotification(ValueError):
    pass


@dataclass(frozen=True)
class Intake:
    status: str  # accepted, duplicate
    incident: int | None


class Engine:
    def __init__(self, config: PagerConfig, store: Store, clock: Clock | None = None,
                 rota: Rota | None = None, role: str | None = None,
                 keys: Secrets | None = None) -> None:
        """`role`: active or standby in a pair (pager/pair.py); `keys`: the pager's
        secrets, whose pair key both pagers derive the same ack token for a page from."""
        self.config, self.store = config, store
        self.role, self.keys = role, keys
        self.clock = clock or Clock(records.state(store, "clock"))
        self.rota = rota or Rota(config)
        self.gaps: dict[str, int] = {}  # team -> pages that found nobody on call
        self.unreached: dict[str, int] = {}  # team -> pages their person could not get
        self.errors = 0  # decisions set aside because they failed
        # The countdown goes on across a restart, less the time the pager was down and
        # could not hear the Watchdog (a pager restarting every minute must not keep it
        # from ever ending, nor page for what it missed while down).
        now, heard = self.clock.now(), records.state(store, "watchdog_heard")
        down = now - self.clock.stopped if self.clock.stopped is not None else 0.0
        self.watchdog_since = float(heard) + max(0.0, down) if heard else now
        if not heard:  # never heard yet: the first start counts, not each restart
            with store.transaction() as db:
                records.put_state(db, "watchdog_heard", repr(now))

    def wall(self) -> float:
        return self.clock.wall()

    # ------------------------------------------------------------------ intake

    def intake(self, receiver: str, body: bytes) -> Intake:
        """A webhook from Alertmanager, stored (and decided) before the caller answers.
        StoreError when it cannot be stored: the caller answers 5xx, Alertmanager retries."""
        payload = _payload(body)
        now, wall = self.clock.now(), self.wall()
        key = hashlib.sha256(json.dumps(
            [payload["status"], sorted(
                (a.get("fingerprint") or json.dumps(a["labels"], sort_keys=True),
                 a.get("status"), a.get("startsAt"), a.get("endsAt"))
                for a in payload["alerts"])]).encode()).hexdigest()
        group = str(payload.get("groupKey") or key)
        try:
            with self.store.transaction() as db:
                records.add_received(db, receiver, key, wall, body.decode())
                last = records.stream(db, receiver, group)
                records.put_stream(db, receiver, group, key, now)
                if receiver == WATCHDOG:  # every copy, repeat or retry, is a heartbeat
                    self._watchdog_seen(db, now)
                    return Intake("accepted", None)
                same = last is not None and last[0] == key
                if same and now - last[1] < RETRY_WINDOW:
                    return Intake("duplicate", None)
                if self._stale(db, payload, now):
                    log.info("a late copy of a firing notification for %s after its "
                             "resolve: nothing opened", receiver)
                    return Intake("stale", None)
                return Intake("repeat" if same else "accepted",
                              self._notification(db, receiver, payload, now, repeat=same))
        except sqlite3.Error as exc:
            raise StoreError(f"{self.store.path}: {exc}") from exc

    @staticmethod
    def _stale(db: sqlite3.Connection, payload: dict, now: float) -> bool:
        """A resolve remembers its alerts (fingerprint and start) for RETRY_WINDOW: a
        firing of exactly those alerts within it is a late copy (the HA peer's, a retry)
        of what came before the resolve. Later, the same alerts firing again (Prometheus
        back after resolve_timeout) are news, and open the incident again."""
        marks = [_mark(a) for a in payload["alerts"]]
        if payload["status"] == "resolved":
            records.mark_ended(db, marks, now, forget_before=now - RETRY_WINDOW)
            return False
        unique = sorted(set(marks))
        return records.ended_since(db, unique, now - RETRY_WINDOW) == len(unique)

    def _notification(self, db: sqlite3.Connection, receiver: str, payload: dict,
                      now: float, repeat: bool) -> int | None:
        labels = {**payload.get("commonLabels", {}), **payload.get("groupLabels", {})}
        first = payload["alerts"][0]
        labels = {**first["labels"], **labels}
        drill = receiver == DRILL or labels.get("drill") == "true"
        grade = labels.get("grade", "")
        key = "|".join((labels.get("site", ""), labels.get("alertname", ""), grade,
                        "drill" if drill else ""))
        incident = records.open_incident(db, key)
        if payload["status"] == "resolved":
            if incident is not None and not repeat:
                self._resolve(db, incident, now)
            return incident["id"] if incident else None
        if incident is not None and self.config.configured:
            self._arm_kept(db, incident, now)
        if incident is None:
            incident = self._open(db, key, labels, first, payload, drill, now)
            repeat = False
        elif repeat and records.pages(db, incident.id, team=self._team(receiver)):
            if incident["acked"] is None and self.config.repeat_unacknowledged:
                self._repeat(db, incident, self._team(receiver), now)
            return incident["id"]
        if drill:
            for person in self.config.drill.people:
                self._page(db, incident, person, DRILL, "drill", Kind.PAGE, 0, now)
            return incident["id"]
        team = receiver
        if team not in self.config.teams and self.config.configured:
            self._event(db, incident["id"], self.wall(), "unknown-team", detail=(
                f"receiver {receiver!r} is no team of the pager: paged "
                f"{self.config.fallback_team} instead"))
            if receiver != UNROUTED:
                log.error("notification for unknown team %r: paging %s", receiver,
                          self.config.fallback_team)
            team = self.config.fallback_team
        self._page_team(db, incident, team, Kind.PAGE, 0, now)
        return incident["id"]

    def _open(self, db: sqlite3.Connection, key: str, labels: dict, first: dict,
              payload: dict, drill: bool, now: float) -> Incident:
        notes = {**payload.get("commonAnnotations", {}), **first.get("annotations", {})}
        owners = [t for t in [labels.get("team", ""), *labels.get("also", "").split(",")] if t]
        wall = self.wall()
        started = min((_time(a.get("startsAt")) or wall) for a in payload["alerts"])
        summary = notes.get("summary_zh") or notes.get("summary") or labels.get("alertname", "?")
        grade = labels.get("grade", "")
        # The same fault at a higher grade (peak hours began, or it got worse): the lower
        # incident is over without a "resolved" (the fault is not), and this one says so.
        lower = [i for i in records.same_fault(db, labels.get("site", ""),
                                               labels.get("alertname", "?"), drill, key)
                 if i.grade in GRADES and grade in GRADES
                 and GRADES.index(i.grade) > GRADES.index(grade)]
        for old in lower:
            records.set_resolved(db, old.id, wall)
            # its escalation and report reminder are the new incident's now
            records.stop_timers(db, old.id)
            self._event(db, old.id, wall, "superseded", detail=f"raised to grade {grade}")
        if lower:
            summary = f"【升级为{GRADE_ZH[grade]}】{summary}"
        steps = [] if drill else [s.model_dump() for s in self.config.escalation.get(grade, [])]
        incident = records.add_incident(
            db, key, grade, labels.get("alertname", "?"), labels.get("site", ""), drill,
            owners, summary, notes.get("description", ""), notes.get("runbook", ""), started,
            wall, escalation=steps)
        self._event(db, incident.id, wall, "opened",
                    detail=f"{labels.get('grade', '?')} {labels.get('alertname')}")
        if not drill and self.config.configured:  # unconfigured: nobody to escalate to
            # until the site fills in its teams and a repeat pages it (_arm then)
            self._arm(db, incident.id, grade, steps, now, wall)
        return incident

    def _arm(self, db: sqlite3.Connection, incident_id: int, grade: str, steps: list[dict],
             now: float, opened: float) -> None:
        """The incident's escalation steps from `now` (its first page) and its report
        reminder from when it opened (`opened`, wall clock); a reminder already past is
        not sent (the page, late, is the news)."""
        for step, policy in enumerate(steps):
            records.add_timer(db, incident_id, TimerKind.ESCALATION, step + 1,
                              now + policy["after"])
        deadline = (self.config.reports.major if grade in ("I", "II")
                    else self.config.reports.other)
        due = now + (opened - self.wall()) + deadline - self.config.reports.remind_before
        if due >= now:
            records.add_timer(db, incident_id, TimerKind.REMINDER, 0, due)

    def _arm_kept(self, db: sqlite3.Connection, incident: Incident, now: float) -> None:
        """An incident kept while the pager had no teams (no timers, nobody told), paged
        now that it has: it escalates from this page, on the escalation of the config that
        pages it (the one it opened with paged nobody)."""
        if json.loads(incident["teams"]):  # paged before: the usual case, no lookup
            return
        kept = records.happened(db, incident.id, ("unconfigured", "armed"))
        if incident["drill"] or incident["acked"] is not None or kept != {"unconfigured"}:
            return
        steps = [s.model_dump() for s in self.config.escalation.get(incident["grade"], [])]
        records.set_escalation(db, incident.id, steps)
        self._event(db, incident["id"], self.wall(), "armed", detail=(
            "kept while the pager had no teams: escalates from this page"))
        self._arm(db, incident["id"], incident["grade"], steps, now, incident["opened"])

    def _page_team(self, db: sqlite3.Connection, incident: Incident, team: str,
                   kind: str, step: int, now: float, role: str = "oncall",
                   prefer: tuple[str, ...] = ()) -> None:
        if team not in self.config.teams:  # gone from the config since the incident opened
            team = self.config.fallback_team
        if not self.config.configured:  # no teams yet: the incident is kept, nobody paged
            self._event(db, incident["id"], self.wall(), "unconfigured",
                        detail=f"the config has no teams: {team} not paged")
            return
        person = self.rota.role(team, role, dt.datetime.fromtimestamp(self.wall(), dt.UTC))
        if person is None or person not in self.config.people:
            lead = self.config.teams[team].lead
            self.gaps[team] = self.gaps.get(team, 0) + 1
            log.error("nobody is on call for %s (%s): paging the team lead %s", team, role,
                      lead)
            self._event(db, incident["id"], self.wall(), "rota-gap", lead, detail=(
                f"nobody on call for {team} ({role}): paged the lead"))
            person, role = lead, "lead"
        self._page(db, incident, person, team, role, kind, step, now, prefer)

    def _page(self, db: sqlite3.Connection, incident: Incident, person: str, team: str,
              role: str, kind: str, step: int, now: float, prefer: tuple[str, ...] = (),
              born: float | None = None) -> None:
        records.add_page(db, incident.id, person, team, role,
                         self._token(db, incident, person), self.wall())
        records.add_team(db, incident.id, team)
        self._deliver(db, incident["id"], person, kind, step, now, prefer, born)

    def _deliver(self, db: sqlite3.Connection, incident: int, person: str, kind: str,
                 step: int, now: float, prefer: tuple[str, ...] = (),
                 born: float | None = None) -> None:
        """An outbox row: the person's channels in order, `prefer`'s types first; `born`:
        when the message was first decided (another person's that did not reach them).
        The same message decided again after it failed (the person back in the config,
        paged as a backup or lead): tried again."""
        born = now if born is None else min(born, now)
        route = self.route(person, prefer)
        if not route:
            self._unreachable(db, incident, person, kind, step, now,
                              "has no channel that can reach them")
            return
        if not records.add_delivery(db, incident, person, kind, step, route, now,
                                    self.wall(), born):
            records.retry_failed(db, incident, person, kind, step, route, now)

    def _unreachable(self, db: sqlite3.Connection, incident_id: int, person: str, kind: str,
                     step: int, now: float, why: str, born: float | None = None) -> None:
        """A page `person` cannot get (no channel reaches them, or every one failed): the
        team it was for must not stay in silence, so its backup and lead (those a channel
        reaches) are paged at once; an event, the metric and the log say so."""
        page = records.page(db, incident_id, person)
        incident = records.incident(db, incident_id)
        team = page.team if page else None
        if kind not in PAGES or team not in self.config.teams or incident["drill"]:
            log.error("%s %s: not told of incident %d (%s)", person, why, incident_id, kind)
            self._event(db, incident_id, self.wall(), "unreachable", person, detail=(
                f"{kind}: {why}: not told"))
            return
        at = dt.datetime.fromtimestamp(self.wall(), dt.UTC)
        covered = []
        for role in ("backup", "lead"):
            other = self.rota.role(team, role, at)
            if other not in (None, person, *covered) and other in self.config.people \
                    and self.route(other):
                self._page(db, incident, other, team, role, kind, step, now, born=born)
                covered.append(other)
        self.unreached[team] = self.unreached.get(team, 0) + 1
        told = ", ".join(covered) or "nobody else: no backup or lead a channel reaches"
        log.error("%s of %s %s: incident %d paged to %s", person, team, why, incident_id,
                  told)
        self._event(db, incident_id, self.wall(), "unreachable", person,
                    detail=f"{kind}: {why}: paged to {told} ({team})")

    def unreachable(self, db: sqlite3.Connection, row: dict, why: str) -> None:
        """A page that failed on every channel of its person (or that no channel reaches
        any more): once per incident and person, its team's backup and lead are paged
        (`_unreachable`), as old as it is (a storm's digest holds them no longer)."""
        if not records.happened(db, row["incident"], ("unreachable",), row["person"]):
            self._unreachable(db, row["incident"], row["person"], row["kind"], row["step"],
                              self.clock.now(), why, row["born"])

    def still_wanted(self, db: sqlite3.Connection, row: dict) -> bool:
        """Whether a message that failed on every channel is still worth trying: a page
        is news until its incident is acknowledged or over; the rest always."""
        if row["kind"] not in PAGES:
            return True
        incident = records.incident(db, row["incident"])
        return incident is not None and incident.resolved is None and incident.acked is None

    def _token(self, db: sqlite3.Connection, incident: Incident, person: str) -> str:
        """A page's ack token: random; in a pair the same on both pagers (from the pair's
        key, the incident and the person), so a link works on either. Never from
        Alertmanager's token: whoever holds that cannot make a link."""
        key = self.keys.ack_links if self.keys is not None else None
        if key is None:
            return secrets.token_urlsafe(18)
        text = f"ack-link|{incident['key']}|{incident['started']!r}|{person}"
        token = base64.urlsafe_b64encode(hmac.new(key, text.encode(),
                                                  "sha256").digest()[:18]).decode()
        taken = records.page_by_token(db, token) is not None
        # an incident of the same alerts again (the lower grade under a raised one): its
        # own link, on this pager only
        return secrets.token_urlsafe(18) if taken else token

    def ack_links(self) -> list[str]:
        """Where phones acknowledge: this pager; in a pair also the other as a fallback."""
        pair = self.config.pair
        if pair is None or self.role is None:
            return [self.config.public_url]
        me, other = (pair.active, pair.standby) if self.role == "active" \
            else (pair.standby, pair.active)
        return [me.public_url or me.url, other.public_url or other.url]

    def route(self, person: str, prefer: tuple[str, ...] = ()) -> list[str]:
        """The person's channels that can reach them, `prefer`'s types first; [] for a
        person the config does not know (any more)."""
        who = self.config.people.get(person)
        if who is None:
            return []
        usable = [c for c in who.channels if who.reaches(self.config.channels[c])]
        first = [c for c in usable if self.config.channels[c].type in prefer]
        return first + [c for c in usable if c not in first]

    def reroute(self, row: dict, why: str) -> None:
        """A page whose person left the config, in one transaction: set aside, and their
        team's on-call now takes it (on the step's channels first); a drill page goes to
        nobody else but the drill rota."""
        with self.store.transaction() as db:
            records.mark_failed(db, row, why, self.wall())
            incident = records.incident(db, row["incident"])
            page = records.page(db, row["incident"], row["person"])
            if incident is None or page is None or incident.drill or row["kind"] not in PAGES:
                return
            team = page["team"] if page["team"] in self.config.teams \
                else self.config.fallback_team
            self._event(db, row["incident"], self.wall(), "rerouted", row["person"],
                        detail=f"{row['person']} is no longer in the config: paging {team}")
            role = page["role"] if page["role"] in ("oncall", "backup", "lead") else "oncall"
            steps = json.loads(incident["escalation"])
            prefer = tuple(steps[row["step"] - 1]["channels"]) if row["kind"] == Kind.ESCALATION \
                and 0 < row["step"] <= len(steps) else ()
            self._page_team(db, incident, team, row["kind"], row["step"], self.clock.now(),
                            role=role, prefer=prefer)

    def _team(self, receiver: str) -> str:
        """The team a receiver's pages go to: itself, or the fallback for one unknown."""
        return receiver if receiver in self.config.teams else self.config.fallback_team

    def _repeat(self, db: sqlite3.Connection, incident: Incident, team: str,
                now: float) -> None:
        """Alertmanager says again that an unacknowledged incident fires: its receiver's
        people hear it again (a new step, so nothing is folded away)."""
        repeats = incident["repeats"] + 1
        records.set_repeats(db, incident.id, repeats)
        if incident["drill"]:
            return
        self._event(db, incident["id"], self.wall(), "repeated", detail=f"for {team}")
        for page in records.pages(db, incident.id, team=team):
            if not records.has_pending(db, incident.id, page.person):  # a page still
                # queued says it already
                self._deliver(db, incident.id, page.person, Kind.REPEAT, repeats, now)

    def _resolve(self, db: sqlite3.Connection, incident: Incident, now: float) -> None:
        records.set_resolved(db, incident.id, self.wall())
        # no escalation once it is over; the written report is still due
        records.stop_escalation(db, incident.id)
        self._event(db, incident.id, self.wall(), "resolved")
        for page in records.pages(db, incident.id):
            self._deliver(db, incident.id, page.person, Kind.RESOLVED, 0, now)

    # ------------------------------------------------------------------ acknowledgement

    def may_ack(self, incident_id: int, person: str) -> bool:
        """Who may acknowledge: a person paged for the incident, or a member (on call,
        backup, lead, in the rotation or an override) of a team it paged."""
        if records.page(self.store, incident_id, person) is not None:
            return True
        incident = records.incident(self.store, incident_id)
        teams = json.loads(incident.teams) if incident else []
        return any(person in self.config.members(t) for t in teams if t in self.config.teams)

    def ack(self, incident_id: int, person: str, via: str) -> bool:
        """Stops the escalation (not the alert) and tells everyone paged. False: no such
        open incident, or acknowledged already."""
        wall = self.wall()
        with self.store.transaction() as db:
            incident = records.incident(db, incident_id)
            if incident is None or incident.acked is not None:
                return False
            records.set_acked(db, incident_id, wall, person)
            records.stop_escalation(db, incident_id)
            self._event(db, incident_id, wall, "acknowledged", person, via)
            if self.config.pair is not None and via != "peer":  # the other pager stops too
                records.add_peer_ack(db, incident, person, via, wall)
            for page in records.pages(db, incident_id):
                if page.person != person:
                    self._deliver(db, incident_id, page.person, Kind.ACK, 0, self.clock.now())
        return True

    def ack_token(self, token: str, via: str = "link") -> Incident | None:
        """The incident a page's token belongs to, acknowledged by that person; None for a
        token nobody was given (refused and logged by the caller)."""
        page = records.page_by_token(self.store, token)
        if page is None:
            return None
        self.ack(page.incident, page.person, via)
        return self.incident(page.incident)

    def sms_reply(self, number: str, text: str) -> int | None:
        """A reply to a page: `1` acknowledges the newest open incident paged to that
        number in a message of its own (not one only counted in a storm's digest),
        `ACK 4821` incident 4821 if it was paged to that number. Returns the incident
        acknowledged."""
        digits = re.sub(r"\D", "", number)
        person = next((pid for pid, p in self.config.people.items()
                       if p.mobile and len(digits) >= 5
                       and re.sub(r"\D", "", p.mobile)[-11:] == digits[-11:]), None)
        match = re.fullmatch(r"\s*(?:1|(?:ack|确认)\s*(\d+))\s*", text, re.IGNORECASE)
        if person is None or match is None:
            log.warning("SMS from %s not understood as an acknowledgement: %r", number, text)
            return None
        if match.group(1):
            wanted = int(match.group(1))
            found = wanted if records.page(self.store, wanted, person) else None
        else:  # the newest open incident whose page reached them as a message of its
            # own, on any channel (every page says "reply 1"): in a storm the newest
            # incident is only counted in a digest; else the newest open one paged to them
            found = records.newest_open_delivered(self.store, person, PAGES)
            if found is None:
                found = records.newest_open_paged(self.store, person)
        if found is None:
            log.warning("SMS from %s acknowledges no incident paged to them: %r", number, text)
            return None
        return found if self.ack(found, person, "sms") else None

    # ------------------------------------------------------------------ time

    def tick(self) -> None:
        """Due escalations and reminders, each in a transaction of its own (one that
        fails is set aside, logged and counted: it never holds back the others); the
        watchdog's silence."""
        now = self.clock.now()
        for timer_id in records.due_timers(self.store, now):
            try:
                with self.store.transaction() as db:
                    timer = records.take_timer(db, timer_id)
                    if timer is None:
                        continue
                    incident = records.incident(db, timer.incident)
                    if timer.kind == TimerKind.ESCALATION:
                        self._escalate(db, incident, timer.step, now)
                    else:
                        self._remind(db, incident, now)
            except sqlite3.Error:
                raise  # the store itself: nothing was decided, the next round tries again
            except Exception as exc:
                self.errors += 1
                log.exception("timer %d failed: set aside", timer_id)
                with self.store.transaction() as db:
                    records.set_timer_aside(db, timer_id, f"{type(exc).__name__}: {exc}")
        if now - self.watchdog_since >= self.config.watchdog.timeout and \
                records.open_incident(self.store, WATCHDOG_KEY) is None:  # else paged: no write
            with self.store.transaction() as db:
                self._watch(db, now)
        if self.clock.due_for_save():
            with self.store.transaction() as db:
                records.put_state(db, "clock", self.clock.saved())

    def _escalate(self, db: sqlite3.Connection, incident: Incident, step: int,
                  now: float) -> None:
        steps = json.loads(incident["escalation"])
        if step > len(steps):
            return
        policy = steps[step - 1]
        self._event(db, incident["id"], self.wall(), "escalated", detail=f"step {step}: "
                    f"{', '.join(policy['notify'])} unacknowledged after "
                    f"{policy['after']:.0f}s")
        owners = [t if t in self.config.teams else self.config.fallback_team
                  for t in json.loads(incident["owners"])] or [self.config.fallback_team]
        for target in policy["notify"]:
            if target not in ("oncall", "backup", "lead"):  # a team by its id
                self._page_team(db, incident, target, Kind.ESCALATION, step, now,
                                prefer=tuple(policy["channels"]))
                continue
            for team in dict.fromkeys(owners):
                self._page_team(db, incident, team, Kind.ESCALATION, step, now, role=target,
                                prefer=tuple(policy["channels"]))

    def _remind(self, db: sqlite3.Connection, incident: Incident, now: float) -> None:
        """The written report is due soon: remind whoever acknowledged, else the owners'
        on-call."""
        if incident["acked_by"] in self.config.people:
            self._deliver(db, incident.id, incident.acked_by, Kind.REMINDER, 0, now)
        else:
            for team in json.loads(incident.owners) or [self.config.fallback_team]:
                self._page_team(db, incident, team, Kind.REMINDER, 0, now)
        self._event(db, incident["id"], self.wall(), "report-reminder")

    # ------------------------------------------------------------------ watchdog

    def _watchdog_seen(self, db: sqlite3.Connection, now: float) -> None:
        records.put_state(db, "watchdog_seen", str(self.wall()))  # for people: a date
        records.put_state(db, "watchdog_heard", repr(now))  # for the countdown: its clock
        self.watchdog_since = now
        silent = records.open_incident(db, WATCHDOG_KEY)
        if silent is not None:
            self._resolve(db, silent, now)

    def _watch(self, db: sqlite3.Connection, now: float) -> None:
        """No Watchdog for `timeout`: Prometheus, Alertmanager or the path between them is
        down, and no alert can reach anyone. The pager pages on its own, SMS first."""
        watchdog = self.config.watchdog
        if now - self.watchdog_since < watchdog.timeout:
            return
        if records.open_incident(db, WATCHDOG_KEY):
            return
        wall = self.wall()
        silent_for = now - self.watchdog_since
        incident = records.add_incident(
            db, WATCHDOG_KEY, "I", "MonitoringPathDown", "", False, list(watchdog.notify),
            "监控告警通道中断：告警可能无法送达",
            f"The Watchdog alert has not arrived for {silent_for:.0f} s: "
            "Prometheus, Alertmanager or the path to the pager is down, so no alert can "
            "page anyone. Check them now.", "runbooks/Watchdog.md", wall - silent_for, wall)
        self._event(db, incident.id, wall, "opened", detail="watchdog silent")
        log.error("no Watchdog for %.0f s: paging %s", silent_for, ", ".join(watchdog.notify))
        for team in watchdog.notify:
            self._page_team(db, incident, team, Kind.PAGE, 0, now,
                            prefer=tuple(watchdog.channels))

    # ------------------------------------------------------------------ the pair's peer

    def peer_silent(self, silent_for: float) -> None:
        """The other pager of the pair has not answered for `silent_for` seconds: its host,
        its process or the path between them is down, and nothing stands behind this one.
        PagerPeerDown (grade III) to the pair's `notify` teams, once."""
        pair = self.config.pair
        assert pair is not None
        with self.store.transaction() as db:
            if records.open_incident(db, PEER_KEY):
                return
            wall = self.wall()
            other = "standby" if self.role == "active" else "active"
            incident = records.add_incident(
                db, PEER_KEY, "III", "PagerPeerDown", "", False, list(pair.notify),
                f"值班通知备机（{other}）失联：告警通道无冗余",
                f"The {other} pager has not answered for {silent_for:.0f} s (not with the "
                "pair's key): its host, its process or the network between the two pagers "
                "is down, or something else answers at its address. Pages still go "
                "out through this one, with nothing behind it. Bring the other back.",
                "runbooks/PagerPeerDown.md", wall - silent_for, wall)
            self._event(db, incident.id, wall, "opened", detail=f"{other} pager silent")
            log.error("the %s pager has not answered for %.0f s: paging %s", other,
                      silent_for, ", ".join(pair.notify))
            for team in pair.notify:
                self._page_team(db, incident, team, Kind.PAGE, 0, self.clock.now())

    def resolve(self, incident_id: int, why: str, superseded: bool = False) -> None:
        """An incident the other pager of the pair saw end (this one missed the
        notification, down or apart): over here too. Resolved, its people are told;
        superseded by a higher grade, the fault goes on and nobody is told it is over."""
        with self.store.transaction() as db:
            incident = records.incident(db, incident_id)
            if incident is None or incident.resolved is not None:
                return
            self._event(db, incident_id, self.wall(), "peer", detail=why)
            if superseded:
                records.set_resolved(db, incident_id, self.wall())
                records.stop_timers(db, incident_id)
                self._event(db, incident_id, self.wall(), "superseded", detail=why)
            else:
                self._resolve(db, incident, self.clock.now())

    def peer_heard(self) -> None:
        if records.open_incident(self.store, PEER_KEY) is None:
            return  # the usual answer: nothing to write
        with self.store.transaction() as db:
            silent = records.open_incident(db, PEER_KEY)
            if silent is not None:
                self._resolve(db, silent, self.clock.now())

    # ------------------------------------------------------------------ reading

    def incident(self, incident_id: int) -> Incident | None:
        return records.incident(self.store, incident_id)

    def _event(self, db: sqlite3.Connection, incident: int | None, at: float, what: str,
               person: str | None = None, channel: str | None = None,
               detail: str | None = None) -> None:
        records.add_event(db, incident, at, what, person, channel, detail)


def _payload(body: bytes) -> dict:
    """Alertmanager's webhook JSON (version 4), or BadNotification saying what is wrong."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadNotification(f"not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadNotification("expected a JSON object")
    if payload.get("status") not in ("firing", "resolved"):
        raise BadNotification("status must be firing or resolved")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not alerts or not all(
            isinstance(a, dict) and isinstance(a.get("labels"), dict) for a in alerts):
        raise BadNotification("alerts must be a non-empty list of alerts with labels")
    for field in ("commonLabels", "groupLabels", "commonAnnotations"):
        if not isinstance(payload.get(field, {}), dict):
            raise BadNotification(f"{field} must be an object")
    return payload


def _mark(alert: dict) -> str:
    """One alert's identity in one episode: its fingerprint (or labels) and its start."""
    who = alert.get("fingerprint") or json.dumps(alert["labels"], sort_keys=True)
    return hashlib.sha256(f"{who}|{alert.get('startsAt')}".encode()).hexdigest()


def _time(text: str | None) -> float | None:
    if not text or text.startswith("0001-"):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
