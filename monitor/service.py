"""`insmon run`: the scheduler, the HTTP endpoint, signals and reloads.

SIGTERM/SIGINT stop cleanly; SIGHUP re-reads the config and keeps the running one if
the new one is invalid.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from exporters.http import HttpServer, make_app
from exporters.webconfig import BasicAuth, WebConfig, tls_context
from monitor import __version__, audit_socket
from monitor.audit import AuditError, Trail, socket_of, witness_value
from monitor.config import EMBEDDED, ConfigError, Loaded, load, split_listen
from monitor.runner import Check, build_checks
from monitor.scheduler import CheckScheduler
from monitor.store import ResultStore
from probes.base import ProbeFailure
from probes.calendar import WorkingCalendar, provisional_note
from vocabulary import SHANGHAI, plural

log = logging.getLogger("insmon")
audit = logging.getLogger("insmon.audit")

HEARTBEAT_SECONDS = 1.0
HEARTBEAT_STALE_SECONDS = 10.0  # /healthz fails when the loop has not ticked for this long
CALENDAR = "the working calendar"
WITNESS_EVERY = 5.0  # seconds between readings of the audit trail's HEAD for /metrics


class Service:
    def __init__(self, loaded: Loaded, path: Path | None, listen: str | None = None,
                 web: WebConfig | None = None, trail: Trail | None = None,
                 jobs: list[tuple[str, float, Callable[[datetime], object]]] = ()) -> None:
        """`jobs`: (what, every seconds, fn(now)) run in a thread beside the checks (the
        recurring maintenance windows); a failure is logged and tried again next time."""
        self._loaded = loaded
        self.trail = trail
        # insmon's own calendar series, whatever its checks (a minute: the day turns)
        self._jobs = [(CALENDAR, 60.0, self._read_calendar), *jobs]
        self._calendar_said: list[str] = []
        self._web = web or WebConfig()
        self._path = path
        self._listen = listen or loaded.config.listen
        self.store = ResultStore()
        self._beat = time.monotonic()
        self._records: asyncio.AbstractServer | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        host, port = split_listen(self._listen)
        web = self._web
        auth = BasicAuth(web.basic_auth_users) if web.basic_auth_users else None
        try:
            tls = tls_context(web.tls_server_config) if web.tls_server_config else None
            server = HttpServer(host, port, make_app(self.store.snapshot, self._alive, auth), tls)
        except ssl.SSLError as exc:
            log.error("cannot use the TLS certificate or key: %s", exc)
            return 1
        except OSError as exc:
            log.error("cannot listen on %s: %s", self._listen, exc.strerror or exc)
            return 1
        if self.trail is not None:
            await self._take_records(loop)
        self._scheduler = CheckScheduler(self.store)
        self._scheduler.start()
        self._scheduler.apply(build_checks(self._loaded.config.checks), self._loaded.source,
                              self._loaded.sha256)
        _audit("loaded", self._loaded.source, self._loaded.sha256,
               f"checks={len(self._scheduler.checks)}", self.trail,
               self.trail.last_config(self._loaded.source) if self.trail else None)

        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        heartbeat = asyncio.create_task(self._heartbeat())
        jobs = [asyncio.create_task(self._job(*job)) for job in self._jobs]
        if self.trail is not None:
            jobs.append(asyncio.create_task(self._witness()))
        url_host = f"[{host}]" if ":" in host else host
        log.info("insmon %s started with the %s (%s); metrics at "
                 "%s://%s:%d/metrics, status page at /%s%s", __version__,
                 _describe(self._loaded.source), plural(len(self._scheduler.checks), "check"),
                 "https" if tls else "http", url_host, server.port,
                 " (all interfaces)" if host in ("0.0.0.0", "::") else "",
                 "; basic auth required" if auth else "")
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            heartbeat.cancel()
            for job in jobs:
                job.cancel()
            self._scheduler.shutdown()
            await close_probes(self._scheduler.checks.values())
            server.close()
            if self._records is not None:
                self._records.close()
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return 0

    def reload(self) -> None:
        """Re-read the config (SIGHUP). An invalid file changes nothing but the
        `insmon_config_last_reload_successful` gauge and the log."""
        log.info("reloading the %s", _describe(self._loaded.source))
        try:
            loaded = load(self._path)
        except ConfigError as exc:
            self.store.reload_failed()
            log.error("config reload rejected, still running the previous config:\n%s", exc)
            _audit("rejected", self._loaded.source, "", f"errors={len(exc.problems)}",
                   self.trail, self._loaded.sha256)
            return
        if loaded.config.listen != self._loaded.config.listen:
            log.warning("listen address in the config changed to %s: it takes effect on "
                        "restart", loaded.config.listen)
        checks = build_checks(loaded.config.checks, self._scheduler.checks.values())
        self._scheduler.apply(checks, loaded.source, loaded.sha256)
        before, self._loaded = self._loaded.sha256, loaded
        log.info("config reloaded: %s", plural(len(checks), "check"))
        _audit("reloaded", loaded.source, loaded.sha256, f"checks={len(checks)}",
               self.trail, before)
        # its calendar file may be another now: the calendar series follow at once
        self._calendar_task = asyncio.ensure_future(self._run(CALENDAR, self._read_calendar))

    def _read_calendar(self, now: datetime) -> None:
        """Until when the working calendar is known and whether today is past it: the
        data the calendar checks and the recurring windows use. A file it cannot read
        leaves the package's dates (the calendar check fails with the reason). Its
        warnings are logged when they change, not every minute."""
        calendar, warnings = WorkingCalendar(self._loaded.config.calendar_file), []
        try:
            dates = calendar.dates()
        except ProbeFailure as exc:
            warnings.append(f"{exc}: insmon counts the chinesecalendar package's dates only")
            dates = WorkingCalendar().dates()
        today = dates.day(now.astimezone(SHANGHAI).date())
        self.store.set_calendar(dates.known_until_timestamp, today.provisional)
        if today.provisional:
            warnings.append(f"the working calendar: {provisional_note(dates, calendar.to_fill())}")
        for warning in warnings:
            if warning not in self._calendar_said:
                log.warning("%s", warning)
        self._calendar_said = warnings

    async def _take_records(self, loop: asyncio.AbstractEventLoop) -> None:
        """The one writer of the trail: records from commands over its socket."""
        trail = self.trail
        try:
            if trail.own():
                log.warning("the audit trail %s was writable by others than insmon: now "
                            "only by insmon (commands hand their records to it)",
                            trail.folder)
        except OSError as exc:
            log.error("the audit trail %s: %s", trail.folder, exc)
        try:
            self._records = await audit_socket.serve(
                trail, appended=lambda _: loop.create_task(self._witness_once()))
        except OSError as exc:
            log.error("the audit trail's socket %s cannot be made: %s (commands write the "
                      "trail themselves where they may)", socket_of(trail.folder), exc)

    async def _witness(self) -> None:
        """The trail's head for the witness (Prometheus keeps it): read again every few
        seconds, so a record written by any writer shows."""
        while True:
            await self._witness_once()
            await asyncio.sleep(WITNESS_EVERY)

    async def _witness_once(self) -> None:
        try:
            head = await asyncio.to_thread(self.trail.head)
        except (AuditError, OSError) as exc:
            head = None
            log.error("the audit trail's HEAD %s: %s", self.trail.folder / "HEAD", exc)
        self.store.audit_head(None if head is None or not head.id or not head.seq else
                              (head.id, head.seq, witness_value(head.hash)))

    async def _job(self, what: str, every: float, job: Callable[[datetime], object]) -> None:
        while True:
            await self._run(what, job)
            await asyncio.sleep(every)

    async def _run(self, what: str, job: Callable[[datetime], object]) -> None:
        try:
            await asyncio.to_thread(job, datetime.now(SHANGHAI))
        except Exception as exc:  # a job's failure must not stop insmon
            log.error("%s: %s", what, exc)

    async def _heartbeat(self) -> None:
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    def _alive(self) -> bool:
        """The loop ticks and every check's runs keep coming (skipped ones count: the
        scheduler decided). A probe stuck on a dead disk does not fail it; a stalled loop
        or scheduler does."""
        return (time.monotonic() - self._beat < HEARTBEAT_STALE_SECONDS
                and not self._scheduler.late())


async def close_probes(checks: Iterable[Check]) -> None:
    """What a probe does when insmon stops (the settlement check's sign-out), each within
    its check's timeout; a failure is logged and stops nothing."""
    closing = [(check, close()) for check in checks
               if (close := getattr(check.probe, "close", None)) is not None]
    results = await asyncio.gather(*(asyncio.wait_for(job, check.cfg.timeout + 1)
                                     for check, job in closing), return_exceptions=True)
    for (check, _), result in zip(closing, results, strict=True):
        if isinstance(result, BaseException):
            log.warning("check %s: closing failed: %s", check.name,
                        type(result).__name__ if isinstance(result, TimeoutError) else result)


def _audit(result: str, source: str, sha256: str, extra: str,
           trail: Trail | None = None, before: str | None = None) -> None:
    """One line per config load (等保: who changed what, when): the file, its SHA-256,
    the result, and the user the monitor runs as; with a trail, also a record there
    with the digest before and after."""
    audit.info("config %s source=%s sha256=%s uid=%d %s", result, source, sha256 or "-",
               os.getuid(), extra)
    if trail is None:
        return
    try:
        trail.append("config", f"insmon (uid {os.getuid()})", result,
                     {"file": source, "before": before, "after": sha256 or None,
                      "what": extra})
    except (OSError, AuditError) as exc:
        log.error("the audit trail %s cannot be written: %s", trail.folder, exc)


def _describe(source: str) -> str:
    return source if source == EMBEDDED else f"config file {source}"
