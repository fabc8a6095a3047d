"""The tests' moved clock: libfaketime (Debian's `faketime`) moves the process clock to a
Beijing time the test names, on a UTC host, for insmon and the test's own Python servers
alike. Every process given the same environment shares the clock: an offset from the
real one, running on (the monotonic clock stays real). Go programs (Prometheus,
Alertmanager) read the clock without libc and keep the real one.

`python -m tests.moved_clock` (`make test-dates`) runs the date-dependent tests (marked
`dates`) again with the whole clock moved to each of DATES: the working Monday after
New Year, the Spring Festival, a leap day, and ten seconds before a New Year's midnight.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
DATES = ("2027-01-04 09:00:00", "2027-02-06 09:00:00", "2028-02-29 09:00:00",
         "2030-12-31 23:59:50")
ROOT = Path(__file__).resolve().parent.parent
SITE = Path(__file__).resolve().parent / "faketime_site"  # its sitecustomize: time.sleep


def libfaketime() -> str:
    """The library the `faketime` package installs (the Makefile's TEST_TOOLS)."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        raise RuntimeError("libfaketime is missing: apt-get install faketime (make test "
                           "installs it)")
    return found[0]


def beijing(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BEIJING)


def moved(at: datetime, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process whose clock reads `at` now, on a UTC host (from a
    process on a moved clock too: the offset is always from the real clock)."""
    env = dict(os.environ if env is None else env)
    real = time.time() - float(env.get("FAKETIME", "+0") if env.get("LD_PRELOAD") else 0)
    return {**env, "LD_PRELOAD": libfaketime(), "FAKETIME": f"{at.timestamp() - real:+.3f}",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1", "NO_FAKE_STAT": "1", "TZ": "UTC",
            "PYTHONPATH": os.pathsep.join(filter(None, (str(SITE), env.get("PYTHONPATH"))))}


def dated_modules() -> list[str]:
    """The test modules that hold `dates` tests, from one collection on the real clock:
    each moved run then imports only those, not the whole suite."""
    listed = subprocess.run([sys.executable, "-m", "pytest", "-m", "dates", "--collect-only",
                             "-q", "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    modules = sorted({line.split("::", 1)[0] for line in listed.stdout.splitlines()
                      if "::" in line})
    if listed.returncode != 0 or not modules:
        raise RuntimeError(f"collecting the dates tests failed:\n{listed.stdout[-2000:]}"
                           f"{listed.stderr[-2000:]}")
    return modules


def main(argv: list[str]) -> int:
    """Each of DATES (or those given, 2029-10-01T08:00): the `dates` tests, one at a time,
    all the dates side by side (each run's clock is its own); their reports in order."""
    modules = dated_modules()
    runs = []
    for text in argv or DATES:
        log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (read and closed below)
        runs.append((text, log, subprocess.Popen(
            [sys.executable, "-m", "pytest", "-m", "dates", "-p", "no:xdist", "-p",
             "no:cacheprovider", "-q", "-rfE", *modules], cwd=ROOT, env=moved(beijing(text)),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)))
    failed = []
    for text, log, run in runs:
        run.wait()
        log.seek(0)
        print(f"== the date-dependent tests with the clock at {text} Beijing time "
              f"(TZ=UTC, libfaketime)\n{log.read()}", end="", flush=True)
        log.close()
        if run.returncode != 0:
            failed.append(text)
    if failed:
        print(f"FAILED with the clock at: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
