"""The pager's two times.

`wall()` is the date a person reads (when an incident opened, in Beijing time). `now()` is
what timers run on: seconds on the kernel's boot clock (CLOCK_BOOTTIME: it never steps,
it counts suspend, and it runs on across a restart of the pager), carried across a reboot
by the wall clock's difference. An NTP step or a wrong date set by hand moves no
escalation, early or late, while the host stays up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

SAVE_EVERY = 5.0  # seconds: after a reboot, timers lose at most this much


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class Clock:
    def __init__(self, saved: str | None, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = _boottime, boot: str | None = None) -> None:
        """`saved`: what `saved()` returned before the last stop, or None the first time."""
        self.wall, self._monotonic = wall, monotonic
        self._boot = boot or boot_id()
        start, since = wall(), monotonic()
        self.stopped: float | None = None  # the pager's time when it last stopped
        if saved:
            then, then_wall, then_mono, then_boot = saved.split()
            self.stopped = float(then)
            if then_boot == self._boot:  # the same boot: the boot clock knows how long
                start = float(then) + max(0.0, since - float(then_mono))
            else:  # rebooted: down for as long as the wall clock says, never less than 0
                start = float(then) + max(0.0, start - float(then_wall))
        self._base, self._since = start, since
        self._saved_at = float("-inf")

    def now(self) -> float:
        return self._base + (self._monotonic() - self._since)

    def saved(self) -> str:
        return f"{self.now()!r} {self.wall()!r} {self._monotonic()!r} {self._boot}"

    def due_for_save(self) -> bool:
        if self.now() - self._saved_at < SAVE_EVERY:
            return False
        self._saved_at = self.now()
        return True
