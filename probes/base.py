"""The probe contract: what every kind of check is made of.

A probe kind is one module in `probes/` that exports one `KIND = Kind(Config, METRICS,
Probe)`:
  - `Config`, a `CheckBase` subclass whose `kind` is a Literal (the config's tag);
  - `METRICS`, the kind-specific series it may emit, declared up front;
  - `Probe`, built once per configured check from its Config, with `async run()`
    returning a `ProbeResult`. It may keep state between runs (CPU counters).

Probes never import prometheus_client: they return plain samples, the exporter renders
them. Blocking work (fsync, files on disks) goes through `run_blocking`, so a stuck call
can be abandoned at the deadline and the runner can tell the check is still stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Generic, Literal, NamedTuple, Protocol, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from vocabulary import Duration, format_duration

# A device tool's output: far above storcli's JSON for a full controller (about 1 MiB),
# far below what would hurt insmon.
MAX_COMMAND_OUTPUT = 16 << 20

# ---------------------------------------------------------------- config

CHECK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
MIN_INTERVAL = 0.1


class CheckBase(BaseModel):
    """Keys every check has. Kinds add their own; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=CHECK_NAME)
    interval: Duration = Field(default=15.0, ge=MIN_INTERVAL)
    # Unset: 80 % of the interval, at most 10 s. Always shorter than the interval, so a
    # run is over (or abandoned) before the next one is due.
    timeout: Duration | None = Field(default=None, validate_default=True)

    @field_validator("timeout")
    @classmethod
    def _timeout_below_interval(cls, timeout: float | None, info: ValidationInfo) -> float:
        interval = info.data.get("interval")
        if interval is None:  # the interval itself was invalid and is reported already
            return timeout or 0.0
        if timeout is None:
            return min(10.0, interval * 0.8)
        if timeout >= interval:
            raise ValueError(
                f"must be shorter than interval ({format_duration(interval)}), "
                f"got {format_duration(timeout)}"
            )
        return timeout


# ---------------------------------------------------------------- metrics and results

MetricType = Literal["gauge", "counter", "histogram"]


@dataclass(frozen=True)
class MetricSpec:
    """One series family, declared once: name, type, unit, help and label names.

    How a probe's sample is applied depends on the type: a gauge is set to the value,
    a counter is increased by it, a histogram observes it into `buckets`.
    Every family also gets the `check` label (and the health series `kind`).
    """

    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()
    unit: str = ""
    buckets: tuple[float, ...] = ()


class Sample(NamedTuple):  # a tuple: a probe makes many of them on every run
    metric: str
    value: float
    labels: Mapping[str, str] = MappingProxyType({})


# How a run ended: `ok` and `failed` come from the probe, `timeout` and `error` from the
# runner. Always these four: the alert rules and dashboards count them by name.
STATUSES = ("ok", "failed", "timeout", "error")


@dataclass(frozen=True)
class ProbeResult:
    """What a probe says: `ok`, or `failed` (the target is unhealthy or unreachable).

    `timeout` and `error` are never returned by a probe: the runner sets them.
    `detail` is one line for a human: key values when ok, the reason when failed.
    """

    status: Literal["ok", "failed"]
    samples: tuple[Sample, ...] = ()
    detail: str = ""


def one_hot(metric: str, label: str, values: Iterable[str], current: str | None,
            labels: Mapping[str, str] | None = None) -> list[Sample]:
    """One sample per value of `label`: 1 for `current`, 0 for the others. For a state
    (one series per state, never a magic number), or for which reason a failure counter
    counts this run (all reasons present from the first run, so increase() works)."""
    return [Sample(metric, float(value == current), {**(labels or {}), label: value})
            for value in values]


C = TypeVar("C", bound=CheckBase)


class Probe(Protocol[C]):
    def __init__(self, cfg: C) -> None: ...

    async def run(self) -> ProbeResult: ...


@dataclass(frozen=True)
class Kind(Generic[C]):
    """One probe kind, as registered in `probes.PROBES`: its config model, the series it
    declares, and the probe built from a config."""

    config: type[C]
    metrics: tuple[MetricSpec, ...]
    probe: Callable[[C], Probe[C]]

    @property
    def name(self) -> str:
        """The config's tag: `kind: cpu` in the file."""
        return get_args(self.config.model_fields["kind"].annotation)[0]


class ProbeFailure(Exception):
    """Raised anywhere in a probe: the target is unhealthy or cannot be read, and the
    message says why (a person reads it; no secrets). The run is `failed`, not `error`."""


# ---------------------------------------------------------------- blocking work

class Workers:
    """The threads one check's blocking calls run on.

    Not the loop's shared executor: a call stuck in the kernel (a dead disk) would hold a
    pool worker forever and, a few of them later, stall every other check. Each check has
    threads of its own: an idle one is reused (starting a thread costs about 0.1 ms of CPU,
    as much as parsing a whole diskstats), while one whose call is still stuck after its
    run was abandoned at the deadline keeps the check `stuck` until the call returns.
    Idle threads end after `idle_seconds`.
    """

    def __init__(self, idle_seconds: float = 60.0) -> None:
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._busy = 0

    @property
    def stuck(self) -> bool:
        """A call is still running (between runs: one abandoned at its deadline)."""
        return self._busy > 0

    def submit(self, fn: Callable[..., object], args: tuple,
               done: Callable[[bool, object], None]) -> None:
        """Run `fn(*args)`, then `done(True, result)` or `done(False, exception)`, both on
        a worker thread."""
        with self._lock:
            worker = self._idle.pop() if self._idle else None
            self._busy += 1
        new = worker is None
        worker = worker or _Worker(self)
        worker.jobs.put((fn, args, done))  # before a new one starts: it never waits idle
        if new:
            worker.start()

    def _finished(self, worker: _Worker) -> None:
        with self._lock:
            self._busy -= 1
            self._idle.append(worker)

    def _retire(self, worker: _Worker) -> bool:
        """True when the idle worker may end: nobody has handed it a call meanwhile."""
        with self._lock:
            if worker in self._idle:
                self._idle.remove(worker)
                return True
            return False


class _Worker(threading.Thread):
    def __init__(self, pool: Workers) -> None:
        super().__init__(name="probe-worker", daemon=True)
        self.pool = pool
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            try:
                fn, args, done = self.jobs.get(timeout=self.pool.idle_seconds)
            except queue.Empty:
                if self.pool._retire(self):
                    return
                continue
            try:
                outcome = (True, fn(*args))
            except BaseException as exc:  # handed to the awaiting coroutine
                outcome = (False, exc)
            self.pool._finished(self)
            done(*outcome)


# The runner points this at the running check's workers; without one (a probe run by
# hand), each call gets a thread that ends with it.
current_workers: contextvars.ContextVar[Workers | None] = contextvars.ContextVar(
    "current_workers", default=None)

T = TypeVar("T")


async def run_blocking(fn: Callable[..., T], *args: object) -> T:
    """Run `fn(*args)` on one of the check's worker threads and await its result. At the
    deadline the caller is cancelled and the call is abandoned: its thread stays busy,
    and the check stuck, until it returns."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: object) -> None:
        if not future.done():  # cancelled at the deadline: nobody is waiting
            if ok:
                future.set_result(value)  # type: ignore[arg-type]
            else:
                future.set_exception(value)  # type: ignore[arg-type]

    def done(ok: bool, value: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed while this was stuck
            loop.call_soon_threadsafe(settle, ok, value)

    (current_workers.get() or Workers(idle_seconds=0)).submit(fn, args, done)
    return await future


class Baseline(Generic[T]):
    """The previous reading of cumulative counters (CPU times, disk IO), so a run can
    report what happened since the previous run, with no gap between runs (like rate()).
    With no recent reading (the first run, `insmon once`) it measures over `window`."""

    def __init__(self) -> None:
        self._reading: T | None = None
        self._at = 0.0

    async def pair(self, read: Callable[[], Awaitable[T]], window: float
                   ) -> tuple[T, T, float]:
        """(previous reading, new reading, seconds between them)."""
        if self._reading is None or time.monotonic() - self._at < window:
            self._reading, self._at = await read(), time.monotonic()
            await asyncio.sleep(window)
        prev, prev_at = self._reading, self._at
        cur = await read()
        self._reading, self._at = cur, time.monotonic()
        return prev, cur, self._at - prev_at


async def run_command(argv: list[str], limit: int = MAX_COMMAND_OUTPUT) -> str:
    """Run a device tool (storcli, wg) and return its output. A missing tool, a non-zero
    exit or more than `limit` bytes of output is a ProbeFailure with why; a run
    abandoned at its deadline, or cut at the limit, kills the tool."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "LC_ALL": "C"})
    except OSError as exc:
        raise ProbeFailure(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    command = " ".join([os.path.basename(argv[0]), *argv[1:]])
    errors = asyncio.ensure_future(_read_capped(proc.stderr, limit))
    try:
        out = await _read_capped(proc.stdout, limit)
        if len(out) > limit:  # refused: the tool goes
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            # what it wrote before it died, up to its end (a pipe's worth: the writer is
            # gone): the transport closes, and wait() returns, only at the pipe's end
            while await proc.stdout.read(1 << 16):
                pass
            await errors
            await proc.wait()
            raise ProbeFailure(f"`{command}` wrote more than {limit >> 20} MiB: refused")
        err = await errors
        await proc.wait()
    except asyncio.CancelledError:  # abandoned at the deadline: the tool goes too
        errors.cancel()
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    if proc.returncode != 0:
        why = (err or out).decode(errors="replace").strip().splitlines()
        raise ProbeFailure(f"`{command}` exited with {proc.returncode}"
                           + (f": {why[-1][:120]}" if why else ""))
    return out.decode(errors="replace")


async def _read_capped(stream: asyncio.StreamReader | None, limit: int) -> bytes:
    """What `stream` gives until its end, or the first `limit` + 1 bytes of it."""
    chunks: list[bytes] = []
    size = 0
    while stream is not None and size <= limit:
        chunk = await stream.read(min(1 << 16, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
