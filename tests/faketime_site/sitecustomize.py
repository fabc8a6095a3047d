"""Loaded by every Python process on a moved clock (tests/moved_clock.py puts this folder
on PYTHONPATH). Debian 12's libfaketime 0.9.10 shifts the absolute deadline of
clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) by the fake offset even when the
monotonic clock is not faked, and Python 3.11's time.sleep uses just that: EINVAL
(libfaketime issue #426, fixed after 0.9.10). Faking the monotonic clock instead hangs
every lock with a timeout (glibc's sem_clockwait reaches the kernel unfaked). So the
monotonic clock stays real and time.sleep waits in select(), which libfaketime leaves
alone at normal speed."""

import select
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    select.select([], [], [], seconds)


time.sleep = _sleep
