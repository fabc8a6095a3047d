"""The lab's settlement server CPU: a proc folder whose CPU the lab controls.

`SimulatedCpu(folder)` writes `folder/proc/stat` and `folder/proc/loadavg` as the kernel
lays them out (a "cpu" line and one "cpuN" line per logical CPU, in USER_HZ ticks) and
advances them from a background thread every 0.2 s, as busy as it is told (`busy`, a
share of 0..1; calm by default). A cpu check with `root: folder` reads it as it reads a
host's /proc, so a lab site's CPU is what the lab says, not how busy the machine running
the lab happens to be. Each file is replaced whole (a temporary file, then rename): a
reader never sees half of one. The thread ends on close() (or leaving a `with` block).
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

CALM = 0.05  # the busy share of a healthy settlement server at rest
PERIOD = 0.2  # seconds between two updates of the files
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
BOOTED = 86400.0  # seconds of CPU time the counters start from: a server up for a day
# How a busy and an idle second split across the kernel's modes
BUSY_MODES = {"user": 0.70, "system": 0.25, "softirq": 0.05}
IDLE_MODES = {"idle": 0.99, "iowait": 0.01}
LOAD_WINDOWS = (60.0, 300.0, 900.0)  # 1, 5 and 15 minutes
MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


class SimulatedCpu:
    def __init__(self, folder: Path, cpus: int = 2, busy: float = CALM,
                 period: float = PERIOD) -> None:
        if cpus < 1:
            raise ValueError(f"cpus must be at least 1, got {cpus}")
        self.root = folder  # the cpu check's `root`
        self.proc = folder / "proc"
        self.proc.mkdir(parents=True, exist_ok=True)
        self.cpus = cpus
        self.period = period
        self._lock = threading.Lock()
        self._busy = _share(busy)
        self._load = [self._busy * cpus] * len(LOAD_WINDOWS)
        # per logical CPU, seconds per mode since "boot" (a day at this share), and when
        # they were last moved on
        self._seconds = [_spend(dict.fromkeys(MODES, 0.0), BOOTED, self._busy)
                         for _ in range(cpus)]
        self._at = time.monotonic()
        self._booted = int(time.time() - BOOTED)
        self._stop = threading.Event()
        self._write()  # the files exist before anybody reads them
        self._thread = threading.Thread(target=self._advance, name="simulated-cpu",
                                        daemon=True)
        self._thread.start()

    @property
    def busy(self) -> float:
        return self._busy

    @busy.setter
    def busy(self, share: float) -> None:
        """From now on every logical CPU is busy this share of the time (0..1)."""
        with self._lock:
            self._tick()  # the time until now at the previous share
            self._busy = _share(share)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def __enter__(self) -> SimulatedCpu:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the files

    def _advance(self) -> None:
        while not self._stop.wait(self.period):
            with self._lock:
                self._tick()
            self._write()

    def _tick(self) -> None:
        """Move every counter on by the time since the last tick, at the current share
        (a thread that was held up catches up: the counters follow the clock)."""
        now = time.monotonic()
        elapsed, self._at = now - self._at, now
        for seconds in self._seconds:
            _spend(seconds, elapsed, self._busy)
        # the kernel's exponential averages of the runnable tasks (busy CPUs here)
        for i, window in enumerate(LOAD_WINDOWS):
            decay = math.exp(-elapsed / window)
            self._load[i] = self._load[i] * decay + self._busy * self.cpus * (1 - decay)

    def _write(self) -> None:
        with self._lock:
            cores = [{m: int(s[m] * TICKS_PER_SECOND) for m in MODES} for s in self._seconds]
            load, running = list(self._load), round(self._busy * self.cpus)
        total = {m: sum(core[m] for core in cores) for m in MODES}
        lines = [_cpu_line("cpu ", total)]
        lines += [_cpu_line(f"cpu{n}", core) for n, core in enumerate(cores)]
        lines += ["ctxt 5206378", f"btime {self._booted}", "processes 13512",
                  f"procs_running {running + 1}", "procs_blocked 0"]
        _replace(self.proc / "stat", "\n".join(lines) + "\n")
        _replace(self.proc / "loadavg",
                 " ".join(f"{v:.2f}" for v in load) + f" {running + 1}/452 {os.getpid()}\n")


def _share(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"a busy share is between 0 and 1, got {value}")
    return float(value)


def _spend(seconds: dict[str, float], elapsed: float, busy: float) -> dict[str, float]:
    """`elapsed` seconds of one CPU, `busy` of them spent working, added to its modes."""
    for mode, part in BUSY_MODES.items():
        seconds[mode] += elapsed * busy * part
    for mode, part in IDLE_MODES.items():
        seconds[mode] += elapsed * (1 - busy) * part
    return seconds


def _cpu_line(name: str, ticks: dict[str, int]) -> str:
    return f"{name} {' '.join(str(ticks[m]) for m in MODES)} 0 0"  # guest, guest_nice


def _replace(path: Path, text: str) -> None:
    staging = path.with_name(f".{path.name}.new")
    staging.write_text(text)
    os.replace(staging, path)
