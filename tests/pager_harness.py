"""The pager in the test's process, on a clock the test moves: the real engine, delivery
worker and HTTP server (webhooks, ack links, list pages, /metrics, the incident API on
a loopback port), on the real SQLite store file of its config, sending on the real
channels to the real far ends (robots, SMTP, gammu-smsd). It is `insmon pager run`
without its process: no thread of its own moves time, the test does.

- `advance(seconds)`: the pager's time passes (its timers, retries, rate limits and the
  watchdog's countdown), in rounds of the delivery worker; no real time is waited.
  To prove that nothing more comes, advance past the moment and look.
- `follow(probe, seconds, what)`: for the far ends that act in real time (gammu-smsd,
  Alertmanager, a CLI process on the store): rounds with the pager's clock moving as
  real time passes, until `probe` holds (bounded). While an SMS waits in gammu-smsd's
  outbox, follow rather than advance: a minute advanced at once is its `confirm_within`
  gone before gammu-smsd had a real second to send it.

What only a process shows (kill -9, signals, TLS, the CLI's start) stays with
tests/pager_rig.py's PagerProcess."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

from ops.stack import wait_for
from pager import records
from pager.clock import Clock, boot_id
from pager.config import load
from pager.delivery import Metrics, Worker
from pager.engine import Engine
from pager.keys import Secrets
from pager.server import PagerServer
from pager.store import Store
from tests.pager_rig import PagerClient


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class MovedClock:
    """The pager's two clocks as the test moves them (`mono`: its timers', `wall`: the
    date), a round of the delivery worker (inline) at each step."""

    mono: float
    wall: float
    store: Store
    worker: Worker

    def clock(self) -> Clock:
        """The pager's Clock on these times (`saved`: the store's, after a restart)."""
        return Clock(records.state(self.store, "clock"), wall=lambda: self.wall,
                     monotonic=lambda: self.mono, boot=boot_id())

    def round(self) -> None:
        self.worker.round()

    def advance(self, seconds: float, step: float = 1.0) -> None:
        """The pager's time moves on by `seconds`, a round of the worker every `step`."""
        left = seconds
        while left > 1e-9:
            tick = min(step, left)
            self.mono += tick
            self.wall += tick
            left -= tick
            self.worker.round()

    def follow(self, probe: Callable[[], object], seconds: float, what: str) -> object:
        """Rounds with the pager's clock moving as real time passes, until `probe` holds:
        for the far ends that act in real time."""
        last = time.monotonic()

        def step() -> object:
            nonlocal last
            now = time.monotonic()
            self.mono, self.wall, last = self.mono + now - last, self.wall + now - last, now
            self.worker.round()
            return probe()
        return wait_for(step, seconds, what)


class InProcessPager(PagerClient, MovedClock):
    def __init__(self, config_file: Path, wall: float | None = None) -> None:
        """`wall`: the wall-clock time it starts at (by default: now). Its timers' clock
        starts at the kernel's boot clock, so that a CLI process on the same store (an
        SMS reply, `insmon pager ack`) reads it as the pager's own time."""
        super().__init__(config_file)
        # whole seconds: a step's time is then exact (300 s after is 300.0, not 299.99...)
        self.wall = float(int(time.time() if wall is None else wall))
        self.mono = float(int(time.clock_gettime(time.CLOCK_BOOTTIME)))
        self.kept = _Kept()
        self._logger = logging.getLogger("insmon.pager")
        self._level = self._logger.level
        self._logger.setLevel(logging.INFO)
        self._logger.addHandler(self.kept)
        config = load(config_file)
        held = Secrets.load(config)
        self.store = Store(config.database)
        self.engine = Engine(config, self.store, self.clock(), keys=held)
        self.registry = CollectorRegistry()
        self.worker = Worker(self.engine, Metrics(self.registry), inline=True)
        host, _, port = config.listen.rpartition(":")
        self.server = PagerServer(self.engine, host, int(port), self.worker.wake,
                                  self.registry, config.max_body, held,
                                  lambda: self.worker.errors)
        self._serving = threading.Thread(target=self.server.httpd.serve_forever,
                                         kwargs={"poll_interval": 0.1}, daemon=True)
        self._serving.start()

    def incidents(self) -> list[dict]:
        """The API's window ends at the pager's time, not this process's wall clock."""
        return json.loads(self.get(f"/api/incidents?until={self.wall + 1}") or b"[]")

    def now(self) -> float:
        """The wall-clock time on the pager's clock (robots' minutes follow it)."""
        return self.wall

    def logged(self) -> str:
        return "\n".join(self.kept.lines)

    def stop(self) -> None:
        self.server.httpd.shutdown()
        self.server.httpd.server_close()
        self._serving.join(10)
        self.store.close()
        self._logger.removeHandler(self.kept)
        self._logger.setLevel(self._level)
