"""The pager's HTTP side: Alertmanager's webhooks in, the acknowledgement pages for
phones, the incident API for `insmon review`, and its own /metrics.

    POST /<receiver>        Alertmanager webhook (receiver = team, watchdog, drill, unrouted)
    GET  /ack/<token>       the incident, in Chinese, with one button; POST acknowledges
    GET  /list/<token>      a storm digest's link: the incidents paged to that token's
                            person, each with its button; POST (shown=ids) acknowledges
                            those of them the page showed still open
    GET  /api/incidents     incidents with who was paged, deliveries and events (JSON)
    GET  /api/peer/hello, /api/peer/incident?key=K&started=T, POST /api/peer/ack
                            the other pager of a pair asking, signed with the pair's key
                            (pager/pair.py, pager/keys.py)
    GET  /                  a status page: whether it pages anyone, what is open
    GET  /metrics, /healthz

Webhooks and the API want Alertmanager's token (Bearer, or a basic-auth password):
nobody else on the hospital network opens, resolves or reads incidents. That token
acknowledges nothing: the pair's questions are signed with a key of its own, and an ack
link's token is the person's own (it acknowledges that person's page, nothing else).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import sqlite3
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from pager import audit, pair, records
from pager.engine import BadNotification, Engine
from pager.keys import Secrets
from pager.messages import when
from pager.records import Incident, Status
from pager.store import StoreError
from vocabulary import GRADE_ZH

log = logging.getLogger("insmon.pager.http")
RECEIVER = re.compile(r"^/([A-Za-z0-9_.-]{1,64})$")
ACK = re.compile(r"^/ack/([A-Za-z0-9_-]{10,64})$")
PEER = "/api/peer/"  # the other pager's questions (pager/pair.py)
LIST = re.compile(r"^/list/([A-Za-z0-9_-]{10,64})$")
LISTED = 2000  # incidents on a list page at the most (open ones first)
ACK_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600)
TEAM_NAMES = {"drill": "演练名单"}  # who is paged that is no team: the drill rota


class StoreCollector:
    """Gauges and the time-to-acknowledge histogram, read from the store at each scrape:
    right across restarts, and acks made by `insmon pager ack` in another process."""

    def __init__(self, engine: Engine, worker_errors=lambda: 0) -> None:
        self.engine, self.worker_errors = engine, worker_errors

    def collect(self):  # prometheus_client's collector protocol
        store = self.engine.store
        open_ = GaugeMetricFamily("insmon_pager_open_incidents", "Incidents not resolved, "
                                  "by grade and whether somebody acknowledged",
                                  labels=["grade", "acknowledged"])
        for grade, acked, n in records.open_by_grade(store):
            open_.add_metric([grade, "true" if acked else "false"], n)
        yield open_
        pending = GaugeMetricFamily("insmon_pager_pending_deliveries",
                                    "Messages waiting to be sent (retry, rate limit, new)")
        pending.add_metric([], records.count_deliveries(store, Status.PENDING))
        yield pending
        failed = GaugeMetricFamily("insmon_pager_failed_deliveries",
                                   "Messages that failed on every channel of the person")
        failed.add_metric([], records.count_deliveries(store, Status.FAILED))
        yield failed
        errors = CounterMetricFamily("insmon_pager_errors", "Decisions and delivery rounds "
                                     "that failed and were set aside or retried (see the log)")
        errors.add_metric([], self.engine.errors + self.worker_errors())
        yield errors
        seen = GaugeMetricFamily("insmon_pager_watchdog_last_seen_timestamp_seconds",
                                 "When the Watchdog alert last arrived through Alertmanager")
        seen.add_metric([], float(records.state(store, "watchdog_seen") or 0))
        yield seen
        gaps = GaugeMetricFamily("insmon_pager_rota_gaps", "Pages that found nobody on call "
                                 "since the pager started (the team lead was paged)",
                                 labels=["team"])
        for team in dict.fromkeys([*self.engine.config.teams, *self.engine.gaps]):
            gaps.add_metric([team], self.engine.gaps.get(team, 0))
        yield gaps
        configured = GaugeMetricFamily(
            "insmon_pager_configured", "1 when its config names teams to page; 0 (the "
            "starting point install.sh writes): notifications are kept, nobody is paged")
        configured.add_metric([], 1.0 if self.engine.config.configured else 0.0)
        yield configured
        unreached = CounterMetricFamily(
            "insmon_pager_unreachable", "Pages their person could not get (no channel "
            "reaches them, or every one failed) since the pager started: the team's "
            "backup and lead were paged instead", labels=["team"])
        # every team from 0: a series that appears at 1 has no increase() in Prometheus,
        # and PagerPersonUnreachable would miss a team's first since the start
        for team in dict.fromkeys([*self.engine.config.teams, *self.engine.unreached]):
            unreached.add_metric([team], self.engine.unreached.get(team, 0))
        yield unreached
        yield self._ack_histogram()

    def _ack_histogram(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "insmon_pager_ack_seconds", "From the first page to the acknowledgement, by "
            "grade and owning team", labels=["grade", "team"])
        groups: dict[tuple[str, str], list[float]] = {}
        for grade, owners, took in records.ack_times(self.engine.store):
            groups.setdefault((grade, (owners or [""])[0]), []).append(took)
        for (grade, team), values in sorted(groups.items()):
            buckets = [(str(b), sum(v <= b for v in values)) for b in ACK_BUCKETS]
            buckets.append(("+Inf", len(values)))
            family.add_metric([grade, team], buckets, sum(values))
        return family


REFUSED_EVERY = 60.0  # seconds: a client's refused requests recorded once a minute
REFUSED_CLIENTS = 10000  # clients recorded in a minute at the most

class PagerServer:
    def __init__(self, engine: Engine, host: str, port: int, wake, registry: CollectorRegistry,
                 max_body: int, held: Secrets, worker_errors=lambda: 0,
                 peer: pair.Peer | None = None) -> None:
        """`held.intake`: the token webhooks and the incident API must present (None:
        open, auth.open), read at each request (SIGHUP reads it again); `peer`: this
        pager's side of a pair, which answers the other pager's signed questions."""
        self.engine, self.wake, self.registry = engine, wake, registry
        self.max_body, self.held, self.peer = max_body, held, peer
        self._refused_at: dict[str, float] = {}
        self._refused_lock = threading.Lock()
        registry.register(StoreCollector(engine, worker_errors))
        self.intake = Counter("insmon_pager_notifications", "Alertmanager notifications by "
                              "result (accepted, repeat, duplicate, invalid, unauthorized, "
                              "unstored)", ["result"], registry=registry)
        self.httpd = _Listener((host, port), _Handler)
        self.httpd.pager = self
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]

    def refused(self, client: str, why: str) -> None:
        """A refused request, into the store's events (so the audit trail): one a minute
        per client at the most, so a storm of them does not flood the store."""
        now = time.monotonic()
        with self._refused_lock:
            if now - self._refused_at.get(client, -REFUSED_EVERY) < REFUSED_EVERY:
                return
            if len(self._refused_at) >= REFUSED_CLIENTS:  # a scan from many addresses
                self._refused_at = {c: at for c, at in self._refused_at.items()
                                    if now - at < REFUSED_EVERY}
                if len(self._refused_at) >= REFUSED_CLIENTS:
                    return  # logged above; the store is not made to keep up with a flood
            self._refused_at[client] = now
        try:
            audit.refused(self.engine.store, client, why)
        except (sqlite3.Error, StoreError) as exc:
            log.error("refused request from %s not recorded: %s", client, exc)

    def incidents(self, since: float, until: float) -> list[dict]:
        """Incidents open in [since, until], each with its pages, deliveries and events."""
        store = self.engine.store
        people, teams = self.engine.config.people, self.engine.config.teams
        name = lambda pid: people[pid].name if pid in people else pid  # noqa: E731
        found = []
        for incident in records.incidents_between(store, since, until):
            item = dict(incident)
            item["owners"], item["teams"] = json.loads(item["owners"]), json.loads(item["teams"])
            item["acked_by_name"] = name(incident["acked_by"]) if incident["acked_by"] else None
            item["pages"] = [{"person": p["person"], "name": name(p["person"]),
                              "team": p["team"], "team_name": teams[p["team"]].name
                              if p["team"] in teams else TEAM_NAMES.get(p["team"], p["team"]),
                              "role": p["role"],
                              "paged": p["paged"]} for p in records.pages(store, incident.id)]
            item["deliveries"] = [
                {"person": d["person"], "name": name(d["person"]), "kind": d["kind"],
                 "step": d["step"],
                 "channel": json.loads(d["route"])[d["hop"]], "status": d["status"],
                 "created": d["created"], "sent": d["sent"], "error": d["error"]}
                for d in records.deliveries(store, incident.id)]
            item["events"] = [{"at": e["at"], "what": e["what"], "person": e["person"],
                               "name": name(e["person"]) if e["person"] else None,
                               "channel": e["channel"], "detail": e["detail"]}
                              for e in records.events(store, incident.id)]
            found.append(item)
        return found


class _Handler(BaseHTTPRequestHandler):
    """One request to the pager: Alertmanager's webhooks, the ack links and lists, the
    pair's questions, /metrics, /healthz and the incident API."""

    server: _Listener
    protocol_version = "HTTP/1.1"
    timeout = 30  # a client that stops sending mid-request is dropped

    @property
    def pager(self) -> PagerServer:
        return self.server.pager

    @property
    def engine(self) -> Engine:
        return self.server.pager.engine

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if (match := ACK.match(path)):
            return self._ack(match.group(1), post=True)
        if (match := LIST.match(path)):
            return self._list(match.group(1), post=True)
        if path.startswith(PEER):
            return self._peer()
        match = RECEIVER.match(path)
        if not match:
            return self._reply(404, "text/plain", b"no such receiver\n")
        if not self._authorized():
            self.pager.intake.labels("unauthorized").inc()
            return None
        length = self.headers.get("Content-Length", "")
        length = int(length) if length.isdigit() else -1
        if length < 0:
            return self._reply(411, "text/plain", b"Content-Length required\n")
        if length > self.pager.max_body:
            self.pager.intake.labels("invalid").inc()
            log.warning("notification of %d bytes refused (limit %d)", length,
                        self.pager.max_body)
            self.close_connection = True
            return self._reply(413, "text/plain", b"too large\n")
        body = self.rfile.read(length)
        try:
            lost = self.engine.store.lost()
            if lost:
                raise StoreError(lost)
            result = self.engine.intake(match.group(1), body)
        except BadNotification as exc:
            self.pager.intake.labels("invalid").inc()
            log.warning("notification for %s refused: %s", match.group(1), exc)
            return self._reply(400, "text/plain", f"{exc}\n".encode())
        except StoreError as exc:  # not stored: Alertmanager must send it again
            self.pager.intake.labels("unstored").inc()
            log.error("notification for %s NOT stored: %s", match.group(1), exc)
            return self._reply(503, "text/plain", b"cannot store the notification\n")
        self.pager.intake.labels(result.status).inc()
        self.pager.wake.set()
        self._reply(200, "application/json", json.dumps(
            {"status": result.status, "incident": result.incident}).encode())

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if (match := ACK.match(url.path)):
            return self._ack(match.group(1), post=False)
        if url.path == "/":
            return self._reply(200, "text/html; charset=utf-8", _status_page(self.engine))
        if (match := LIST.match(url.path)):
            return self._list(match.group(1), post=False)
        if url.path == "/metrics":
            return self._reply(200, "text/plain; version=0.0.4",
                               generate_latest(self.pager.registry))
        if url.path == "/healthz":
            problem = self.engine.store.check()
            if problem:
                return self._reply(503, "text/plain", f"{problem}\n".encode())
            return self._reply(200, "text/plain", b"ok\n")
        if url.path.startswith(PEER):
            return self._peer()
        if url.path == "/api/incidents":
            if not self._authorized():
                return None
            query = urllib.parse.parse_qs(url.query)
            try:
                since = float(query.get("since", ["0"])[0])
                until = float(query.get("until", [str(time.time() + 1)])[0])
            except ValueError:
                return self._reply(400, "text/plain", b"since and until are Unix "
                                   b"times in seconds\n")
            return self._reply(200, "application/json", json.dumps(
                self.pager.incidents(since, until), ensure_ascii=False).encode())
        self._reply(404, "text/plain", b"not found\n")

    def _peer(self) -> None:
        """The other pager's question, answered if signed with the pair's key (not
        Alertmanager's token: that one acknowledges nothing)."""
        if self.pager.peer is None:
            return self._reply(404, "text/plain", b"not a pager of a pair\n")
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit() or int(length) > 65536:
            return self._reply(400, "text/plain", b"a small JSON body wanted\n")
        body = self.rfile.read(int(length))
        status, headers, answer = self.pager.peer.serve(self.command, self.path,
                                                        self.headers, body)
        if status == 401:
            self.pager.refused(self.client_address[0], f"{self.command} "
                               f"{self.path.split('?')[0]}: not signed with the pair's key")
            self.close_connection = True
        if self.command == "POST" and status == 200:
            self.pager.wake.set()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json" if headers
                         else "text/plain")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def _ack(self, token: str, post: bool) -> None:
        page = records.page_by_token(self.engine.store, token)
        if page is None:
            log.warning("acknowledgement with an unknown token from %s refused",
                        self.client_address[0])
            return self._reply(404, "text/html; charset=utf-8", _page(
                "链接无效", "<p>此确认链接无效或已失效。This link is not valid.</p>"))
        if post:
            self.engine.ack_token(token)
            self.pager.wake.set()
        incident = self.engine.incident(page.incident)
        self._reply(200, "text/html; charset=utf-8", _incident_page(
            incident, self.engine.config.people, token))

    def _list(self, token: str, post: bool) -> None:
        page = records.page_by_token(self.engine.store, token)
        if page is None:
            log.warning("a list with an unknown token from %s refused",
                        self.client_address[0])
            return self._reply(404, "text/html; charset=utf-8", _page(
                "链接无效", "<p>此链接无效或已失效。This link is not valid.</p>"))
        person = page.person
        if post:  # the open incidents the page showed them: not one that opened
            # since (a Level I they never saw), nor one past the page's LISTED
            length = self.headers.get("Content-Length", "0")
            if not length.isdigit() or int(length) > 65536:
                return self._reply(400, "text/plain", b"a small form wanted\n")
            form = urllib.parse.parse_qs(self.rfile.read(int(length)).decode(
                "ascii", "replace"))
            shown = {int(i) for i in ",".join(form.get("shown", [])).split(",")
                     if i.isdigit()}
            for incident_id in records.open_unacked_paged(self.engine.store, person):
                if incident_id in shown:
                    self.engine.ack(incident_id, person, "link")
            self.pager.wake.set()
        listed = records.listed(self.engine.store, person, self.engine.wall() - 86400,
                                LISTED)
        self._reply(200, "text/html; charset=utf-8", _list_page(
            listed, self.engine.config.people, person, token))

    def _authorized(self) -> bool:
        """The token as Bearer or as a basic-auth password; else 401, logged."""
        if self.pager.held.intake is None:
            return True
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "basic":
            try:
                value = base64.b64decode(value, validate=True).decode().partition(
                    ":")[2]
            except ValueError:
                value = ""
        elif scheme.lower() != "bearer":
            value = ""
        if value and self.pager.held.takes(value, time.monotonic()):
            return True
        why = "wrong token" if value else "no token"
        log.warning("%s %s from %s refused: %s", self.command, self.path.split("?")[0],
                    self.client_address[0], why)
        self.pager.refused(self.client_address[0], f"{self.command} "
                           f"{self.path.split('?')[0]}: {why}")
        self.close_connection = True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Bearer realm="insmon pager"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def _reply(self, code: int, kind: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        pass


class _Listener(ThreadingHTTPServer):
    # Alertmanager posts a storm's groups all at once: with socketserver's backlog of 5
    # the kernel dropped their connections, and Alertmanager sent them again a minute
    # later (its next flush)
    request_queue_size = 1024
    pager: PagerServer  # whose requests it takes


def _page(title: str, body: str) -> bytes:
    return f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>
body{{font-family:sans-serif;margin:1em;font-size:18px;line-height:1.5}}
button{{font-size:24px;width:100%;padding:.8em;background:#c00;color:#fff;border:0;
border-radius:.3em}} .ok{{color:#070;font-weight:bold}} .muted{{color:#666}}
</style></head><body>{body}</body></html>""".encode()


def _status_page(engine: Engine) -> bytes:
    """For people at the pager's address: whether it pages anyone, what is open, what
    waits (the figures of /metrics)."""
    config = engine.config
    open_, pending = (records.count_open(engine.store),
                      records.count_deliveries(engine.store, Status.PENDING))
    rows = [f"<h2>insmon pager{f' ({engine.role})' if engine.role else ''}</h2>"]
    if config.configured:
        rows.append(f"<p class=ok>值班通知已配置 · pages {len(config.teams)} teams, "
                    f"{len(config.people)} people</p>")
    else:
        rows.append("<p><b>未配置：不会通知任何人 · not configured: pages nobody</b> "
                    "(insmon_pager_configured 0). Its config has no teams yet: fill in the "
                    "channels, people and teams, then restart the pager.</p>")
    rows.append(f"<p>未恢复事件 open incidents: {open_} · 待发送 waiting to be sent: "
                f"{pending}</p>")
    return _page("insmon pager", "\n".join(rows))


def _incident_page(incident: Incident, people: dict, token: str) -> bytes:
    grade = GRADE_ZH.get(incident["grade"], "未分级")
    rows = [f"<h2>【{grade}】{html.escape(incident['summary'])}</h2>",
            f"<p class=muted>{html.escape(incident['alertname'])} · "
            f"{html.escape(incident['site'])} · 事件 {incident['id']}"
            f"{' · 【演练】' if incident['drill'] else ''}</p>",
            f"<p>开始：{when(incident['started'])}</p>"]
    if incident["resolved"]:
        rows.append(f"<p class=ok>已恢复 {when(incident['resolved'])}</p>")
    if incident["acked"]:
        who = people.get(incident["acked_by"])
        rows.append(f"<p class=ok>{html.escape(who.name if who else incident['acked_by'])} "
                    f"已确认 {when(incident['acked'])}</p>")
    else:
        rows.append(f"<form method=post action=\"/ack/{token}\"><button>确认收到 · "
                    "Acknowledge</button></form>"
                    "<p class=muted>确认后停止升级通知（告警本身不会消除）。</p>")
    return _page(f"【{grade}】{incident['alertname']}", "\n".join(rows))


def _list_page(incidents: list[tuple[Incident, str]], people: dict, person: str,
               token: str) -> bytes:
    """A person's incidents (open, then those over in the last day), each with its own
    acknowledge button (its page's token), and one for all those it shows still open."""
    who = people[person].name if person in people else person
    waiting = [i.id for i, _ in incidents if i.resolved is None and i.acked is None]
    rows = [f"<h2>{html.escape(who)}：{len(incidents)} 个事件，{len(waiting)} 个待确认</h2>"]
    if waiting:  # all: those shown here (one opened since is not acknowledged unseen)
        rows.append(f"<form method=post action=\"/list/{token}\"><input type=hidden "
                    f"name=shown value=\"{','.join(map(str, waiting))}\"><button>全部确认 · "
                    f"Acknowledge all {len(waiting)}</button></form>")
    rows.append("<table>")
    for incident, link in incidents:
        grade = GRADE_ZH.get(incident["grade"], "未分级")
        if incident["resolved"]:
            state = f"<span class=ok>已恢复 {when(incident['resolved'])}</span>"
        elif incident["acked"]:
            acker = people.get(incident["acked_by"])
            state = (f"<span class=ok>{html.escape(acker.name if acker else incident['acked_by'])}"
                     f" 已确认</span>")
        else:
            state = f"<a href=\"/ack/{link}\">确认 ack</a>"
        rows.append(f"<tr><td>【{grade}】</td><td>{html.escape(incident['site'])}</td>"
                    f"<td>{html.escape(incident['alertname'])}</td>"
                    f"<td class=muted>{when(incident['opened'])}</td><td>{state}</td></tr>")
    rows.append("</table>")
    return _page(f"{who}：{len(incidents)} 个事件", "\n".join(rows))
