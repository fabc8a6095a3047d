"""What the pager decides: an incident per alert group, who is paged, escalation while
nobody answers, acknowledgement, the watchdog, the report reminder. All of it is rows in
the store, written in one transaction per decision; the delivery worker sends them.

An incident is Alertmanager's group (site, alertname, grade, and drill or not): every
team's notification of the group joins the one incident, so one acknowledgement stops
the escalation for everyone and everyone paged hears of it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from pager import channels
from pager.config import DRILL, GRADE_ZH, GRADES, UNROUTED, WATCHDOG, PagerConfig
from pager.rota import Rota
from pager.store import Store

log = logging.getLogger("insmon.pager")
WATCHDOG_KEY = "watchdog"


class BadNotification(ValueError):
    pass


@dataclass(frozen=True)
class Intake:
    status: str  # accepted, duplicate
    incident: int | None


class Engine:
    def __init__(self, config: PagerConfig, store: Store,
                 clock: Callable[[], float] = time.time) -> None:
        self.config, self.store, self.clock = config, store, clock
        self.rota = Rota(config)
        self.gaps: dict[str, int] = {}  # team -> pages that found nobody on call
        started = clock()
        # a pager that was down did not hear the Watchdog: count from now, not from then
        self.watchdog_since = max(float(store.get("watchdog_seen") or 0), started)

    # ------------------------------------------------------------------ intake

    def intake(self, receiver: str, body: bytes) -> Intake:
        """A webhook from Alertmanager, stored (and decided) before the caller answers."""
        payload = _payload(body)
        now = self.clock()
        key = hashlib.sha256(json.dumps(
            [receiver, payload.get("groupKey"), payload["status"],
             sorted((a.get("fingerprint") or json.dumps(a["labels"], sort_keys=True),
                     a.get("status"), a.get("startsAt"), a.get("endsAt"))
                    for a in payload["alerts"])]).encode()).hexdigest()
        with self.store.transaction() as db:
            try:
                db.execute("INSERT INTO notifications (key, team, received, body) "
                           "VALUES (?, ?, ?, ?)", (key, receiver, now, body.decode()))
            except sqlite3.IntegrityError:
                return Intake("duplicate", None)  # Alertmanager's retry: paged already
            if receiver == WATCHDOG:
                self._watchdog_seen(db, now)
                return Intake("accepted", None)
            return Intake("accepted", self._notification(db, receiver, payload, now))

    def _notification(self, db: sqlite3.Connection, receiver: str, payload: dict,
                      now: float) -> int | None:
        labels = {**payload.get("commonLabels", {}), **payload.get("groupLabels", {})}
        first = payload["alerts"][0]
        labels = {**first["labels"], **labels}
        drill = receiver == DRILL or labels.get("drill") == "true"
        grade = labels.get("grade", "")
        key = "|".join((labels.get("site", ""), labels.get("alertname", ""), grade,
                        "drill" if drill else ""))
        incident = db.execute("SELECT * FROM incidents WHERE key = ? AND resolved IS NULL",
                              (key,)).fetchone()
        if payload["status"] == "resolved":
            if incident is not None:
                self._resolve(db, incident, now)
            return incident["id"] if incident else None
        if incident is None:
            incident = self._open(db, key, labels, first, payload, drill, now)
        if drill:
            for person in self.config.drill.people:
                self._page(db, incident, person, DRILL, "drill", "page", 0, now)
            return incident["id"]
        team = receiver
        if team not in self.config.teams:
            self._event(db, incident["id"], now, "unknown-team", detail=(
                f"receiver {receiver!r} is no team of the pager: paged "
                f"{self.config.fallback_team} instead"))
            if receiver != UNROUTED:
                log.error("notification for unknown team %r: paging %s", receiver,
                          self.config.fallback_team)
            team = self.config.fallback_team
        self._page_team(db, incident, team, "page", 0, now)
        return incident["id"]

    def _open(self, db: sqlite3.Connection, key: str, labels: dict, first: dict,
              payload: dict, drill: bool, now: float) -> sqlite3.Row:
        notes = {**payload.get("commonAnnotations", {}), **first.get("annotations", {})}
        owners = [t for t in [labels.get("team", ""), *labels.get("also", "").split(",")] if t]
        started = min((_time(a.get("startsAt")) or now) for a in payload["alerts"])
        summary = notes.get("summary_zh") or notes.get("summary") or labels.get("alertname", "?")
        grade = labels.get("grade", "")
        # The same fault at a higher grade (peak hours began, or it got worse): the lower
        # incident is over without a "resolved" (the fault is not), and this one says so.
        lower = [i for i in db.execute(
            "SELECT * FROM incidents WHERE resolved IS NULL AND site = ? AND alertname = ? "
            "AND drill = ? AND key != ?", (labels.get("site", ""), labels.get("alertname", "?"),
                                           int(drill), key)).fetchall()
            if i["grade"] in GRADES and grade in GRADES
            and GRADES.index(i["grade"]) > GRADES.index(grade)]
        for old in lower:
            db.execute("UPDATE incidents SET resolved = ? WHERE id = ?", (now, old["id"]))
            # its escalation and report reminder are the new incident's now
            db.execute("UPDATE timers SET done = 1 WHERE incident = ?", (old["id"],))
            self._event(db, old["id"], now, "superseded", detail=f"raised to grade {grade}")
        if lower:
            summary = f"【升级为{GRADE_ZH[grade]}】{summary}"
        cursor = db.execute(
            "INSERT INTO incidents (key, grade, alertname, site, drill, owners, teams, "
            "summary, description, runbook, started, opened) "
            "VALUES (?, ?, ?, ?, ?, ?, '[]', ?, ?, ?, ?, ?)",
            (key, labels.get("grade", ""), labels.get("alertname", "?"),
             labels.get("site", ""), int(drill), json.dumps(owners), summary,
             notes.get("description", ""), notes.get("runbook", ""), started, now))
        incident_id = cursor.lastrowid
        self._event(db, incident_id, now, "opened",
                    detail=f"{labels.get('grade', '?')} {labels.get('alertname')}")
        if not drill:
            for step, policy in enumerate(self.config.escalation.get(labels.get("grade"), [])):
                db.execute("INSERT INTO timers (incident, kind, step, due) VALUES (?, ?, ?, ?)",
                           (incident_id, "escalation", step + 1, now + policy.after))
            deadline = (self.config.reports.major if labels.get("grade") in ("I", "II")
                        else self.config.reports.other)
            db.execute("INSERT INTO timers (incident, kind, step, due) VALUES (?, ?, 0, ?)",
                       (incident_id, "reminder",
                        now + deadline - self.config.reports.remind_before))
        return db.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()

    def _page_team(self, db: sqlite3.Connection, incident: sqlite3.Row, team: str,
                   kind: str, step: int, now: float, role: str = "oncall",
                   prefer: tuple[str, ...] = ()) -> None:
        person = self.rota.role(team, role, dt.datetime.fromtimestamp(now, dt.UTC))
        if person is None:
            lead = self.config.teams[team].lead
            self.gaps[team] = self.gaps.get(team, 0) + 1
            log.error("nobody is on call for %s (%s): paging the team lead %s", team, role,
                      lead)
            self._event(db, incident["id"], now, "rota-gap", lead, detail=(
                f"nobody on call for {team} ({role}): paged the lead"))
            person, role = lead, "lead"
        self._page(db, incident, person, team, role, kind, step, now, prefer)

    def _page(self, db: sqlite3.Connection, incident: sqlite3.Row, person: str, team: str,
              role: str, kind: str, step: int, now: float, prefer: tuple[str, ...] = ()) -> None:
        db.execute("INSERT OR IGNORE INTO pages (incident, person, team, role, token, paged) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   (incident["id"], person, team, role, secrets.token_urlsafe(18), now))
        teams = json.loads(incident["teams"])
        if team not in teams:
            db.execute("UPDATE incidents SET teams = ? WHERE id = ?",
                       (json.dumps([*teams, team]), incident["id"]))
        self._deliver(db, incident["id"], person, kind, step, now, prefer)

    def _deliver(self, db: sqlite3.Connection, incident: int, person: str, kind: str,
                 step: int, now: float, prefer: tuple[str, ...] = ()) -> None:
        """An outbox row: the person's channels in order, `prefer`'s types first."""
        who = self.config.people[person]
        usable = [c for c in who.channels if channels.reachable(self.config.channels[c], who)]
        first = [c for c in usable if self.config.channels[c].type in prefer]
        route = first + [c for c in usable if c not in first]
        if not route:
            log.error("%s has no channel that can reach them", person)
            self._event(db, incident, now, "unreachable", person)
            return
        db.execute("INSERT OR IGNORE INTO deliveries (incident, person, kind, step, route, "
                   "hop, status, attempts, due, created) VALUES (?, ?, ?, ?, ?, 0, 'pending', "
                   "0, ?, ?)", (incident, person, kind, step, json.dumps(route), now, now))

    def _resolve(self, db: sqlite3.Connection, incident: sqlite3.Row, now: float) -> None:
        db.execute("UPDATE incidents SET resolved = ? WHERE id = ?", (now, incident["id"]))
        # no escalation once it is over; the written report is still due
        db.execute("UPDATE timers SET done = 1 WHERE incident = ? AND kind = 'escalation' "
                   "AND done = 0", (incident["id"],))
        self._event(db, incident["id"], now, "resolved")
        for page in db.execute("SELECT person FROM pages WHERE incident = ?",
                               (incident["id"],)).fetchall():
            self._deliver(db, incident["id"], page["person"], "resolved", 0, now)

    # ------------------------------------------------------------------ acknowledgement

    def ack(self, incident_id: int, person: str, via: str) -> bool:
        """Stops the escalation (not the alert) and tells everyone paged. False: no such
        open incident, or acknowledged already."""
        now = self.clock()
        with self.store.transaction() as db:
            incident = db.execute("SELECT * FROM incidents WHERE id = ?",
                                  (incident_id,)).fetchone()
            if incident is None or incident["acked"] is not None:
                return False
            db.execute("UPDATE incidents SET acked = ?, acked_by = ? WHERE id = ?",
                       (now, person, incident_id))
            db.execute("UPDATE timers SET done = 1 WHERE incident = ? AND kind = 'escalation' "
                       "AND done = 0", (incident_id,))
            self._event(db, incident_id, now, "acknowledged", person, via)
            for page in db.execute("SELECT person FROM pages WHERE incident = ?",
                                   (incident_id,)).fetchall():
                if page["person"] != person:
                    self._deliver(db, incident_id, page["person"], "ack", 0, now)
        return True

    def ack_token(self, token: str, via: str = "link") -> sqlite3.Row | None:
        """The incident a page's token belongs to, acknowledged by that person; None for a
        token nobody was given (refused and logged by the caller)."""
        rows = self.store.query("SELECT incident, person FROM pages WHERE token = ?", (token,))
        if not rows:
            return None
        self.ack(rows[0]["incident"], rows[0]["person"], via)
        return self.incident(rows[0]["incident"])

    def sms_reply(self, number: str, text: str) -> int | None:
        """A reply to a page: `1` acknowledges the newest open incident paged to that
        number, `ACK 4821` incident 4821. Returns the incident acknowledged."""
        digits = re.sub(r"\D", "", number)
        person = next((pid for pid, p in self.config.people.items()
                       if p.mobile and re.sub(r"\D", "", p.mobile)[-11:] == digits[-11:]),
                      None)
        match = re.fullmatch(r"\s*(?:1|(?:ack|确认)\s*(\d+))\s*", text, re.IGNORECASE)
        if person is None or match is None:
            log.warning("SMS from %s not understood as an acknowledgement: %r", number, text)
            return None
        if match.group(1):
            wanted = int(match.group(1))
            rows = self.store.query("SELECT incident FROM pages WHERE person = ? AND "
                                    "incident = ?", (person, wanted))
        else:
            rows = self.store.query(
                "SELECT p.incident FROM pages p JOIN incidents i ON i.id = p.incident "
                "WHERE p.person = ? AND i.resolved IS NULL AND i.acked IS NULL "
                "ORDER BY i.opened DESC LIMIT 1", (person,))
        if not rows:
            log.warning("SMS from %s acknowledges no incident paged to them: %r", number, text)
            return None
        return rows[0]["incident"] if self.ack(rows[0]["incident"], person, "sms") else None

    # ------------------------------------------------------------------ time

    def tick(self) -> None:
        """Due escalations and reminders; the watchdog's silence."""
        now = self.clock()
        with self.store.transaction() as db:
            for timer in db.execute("SELECT * FROM timers WHERE done = 0 AND due <= ?",
                                    (now,)).fetchall():
                incident = db.execute("SELECT * FROM incidents WHERE id = ?",
                                      (timer["incident"],)).fetchone()
                db.execute("UPDATE timers SET done = 1 WHERE id = ?", (timer["id"],))
                if timer["kind"] == "escalation":
                    self._escalate(db, incident, timer["step"], now)
                else:
                    self._remind(db, incident, now)
            self._watch(db, now)

    def _escalate(self, db: sqlite3.Connection, incident: sqlite3.Row, step: int,
                  now: float) -> None:
        policy = self.config.escalation[incident["grade"]][step - 1]
        self._event(db, incident["id"], now, "escalated", detail=f"step {step}: "
                    f"{', '.join(policy.notify)} unacknowledged after {policy.after:.0f}s")
        owners = [t if t in self.config.teams else self.config.fallback_team
                  for t in json.loads(incident["owners"])] or [self.config.fallback_team]
        for target in policy.notify:
            if target in self.config.teams:
                self._page_team(db, incident, target, "escalation", step, now,
                                prefer=tuple(policy.channels))
                continue
            for team in dict.fromkeys(owners):
                self._page_team(db, incident, team, "escalation", step, now, role=target,
                                prefer=tuple(policy.channels))

    def _remind(self, db: sqlite3.Connection, incident: sqlite3.Row, now: float) -> None:
        """The written report is due soon: remind whoever acknowledged, else the owners'
        on-call."""
        if incident["acked_by"] in self.config.people:
            self._deliver(db, incident["id"], incident["acked_by"], "reminder", 0, now)
        else:
            for team in json.loads(incident["owners"]) or [self.config.fallback_team]:
                self._page_team(db, incident, team if team in self.config.teams
                                else self.config.fallback_team, "reminder", 0, now)
        self._event(db, incident["id"], now, "report-reminder")

    # ------------------------------------------------------------------ watchdog

    def _watchdog_seen(self, db: sqlite3.Connection, now: float) -> None:
        db.execute("INSERT OR REPLACE INTO state (key, value) VALUES ('watchdog_seen', ?)",
                   (str(now),))
        self.watchdog_since = now
        silent = db.execute("SELECT * FROM incidents WHERE key = ? AND resolved IS NULL",
                            (WATCHDOG_KEY,)).fetchone()
        if silent is not None:
            self._resolve(db, silent, now)

    def _watch(self, db: sqlite3.Connection, now: float) -> None:
        """No Watchdog for `timeout`: Prometheus, Alertmanager or the path between them is
        down, and no alert can reach anyone. The pager pages on its own, SMS first."""
        watchdog = self.config.watchdog
        if now - self.watchdog_since < watchdog.timeout:
            return
        if db.execute("SELECT 1 FROM incidents WHERE key = ? AND resolved IS NULL",
                      (WATCHDOG_KEY,)).fetchone():
            return
        owners = json.dumps(watchdog.notify)
        cursor = db.execute(
            "INSERT INTO incidents (key, grade, alertname, site, drill, owners, teams, "
            "summary, description, runbook, started, opened) VALUES (?, 'I', "
            "'MonitoringPathDown', '', 0, ?, '[]', ?, ?, 'runbooks/Watchdog.md', ?, ?)",
            (WATCHDOG_KEY, owners, "监控告警通道中断：告警可能无法送达",
             f"The Watchdog alert has not arrived for {now - self.watchdog_since:.0f} s: "
             "Prometheus, Alertmanager or the path to the pager is down, so no alert can "
             "page anyone. Check them now.", self.watchdog_since, now))
        incident = db.execute("SELECT * FROM incidents WHERE id = ?",
                              (cursor.lastrowid,)).fetchone()
        self._event(db, incident["id"], now, "opened", detail="watchdog silent")
        log.error("no Watchdog for %.0f s: paging %s", now - self.watchdog_since,
                  ", ".join(watchdog.notify))
        for team in watchdog.notify:
            self._page_team(db, incident, team, "page", 0, now,
                            prefer=tuple(watchdog.channels))

    # ------------------------------------------------------------------ reading

    def incident(self, incident_id: int) -> sqlite3.Row | None:
        rows = self.store.query("SELECT * FROM incidents WHERE id = ?", (incident_id,))
        return rows[0] if rows else None

    def _event(self, db: sqlite3.Connection, incident: int | None, at: float, what: str,
               person: str | None = None, channel: str | None = None,
               detail: str | None = None) -> None:
        db.execute("INSERT INTO events (incident, at, what, person, channel, detail) "
                   "VALUES (?, ?, ?, ?, ?, ?)", (incident, at, what, person, channel, detail))


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


def _time(text: str | None) -> float | None:
    if not text or text.startswith("0001-"):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
