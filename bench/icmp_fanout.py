"""ICMP fan-out: one echo to each of N loopback targets (127.1.x.y), insmon's pinger
beside fping in the same run, each in a process of its own.

Figures per N: wall time, targets per second, CPU seconds (user + system) and peak RSS,
as the median of REPEAT runs. fping runs as `fping -q -c 1 -i 0 -t 1000 -f FILE`
(root: no pacing, 1 s timeout), the same settings as insmon here.

Usage: make bench   (or .venv/bin/python bench/icmp_fanout.py [REPEAT])
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = (100, 1000, 5000)

# insmon's pinger, timed inside its process: Python's start-up and imports are not part of
# pinging (a running monitor has paid them once); they are reported apart.
INSMON = """
import asyncio, sys, time
from probes.lib import pinger
targets = open(sys.argv[1]).read().split()
wall, cpu = time.perf_counter(), time.process_time()
result = asyncio.run(pinger.ping(targets, count=1, timeout=1.0))
print(time.perf_counter() - wall, time.process_time() - cpu)
sys.exit(1 if any(not e.received for e in result.values()) else 0)
"""


def targets(n: int) -> list[str]:
    return [f"127.1.{i // 250}.{i % 250 + 1}" for i in range(n)]


def measure(argv: list[str]) -> tuple[float, float, float, str]:
    """(wall seconds, CPU seconds, peak RSS MiB, stdout) of one run of a command."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {text[-300:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, text


def main() -> None:
    repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    if os.geteuid() != 0:
        raise SystemExit("run as root: fping -i 0 and raw ICMP need it")
    print(f"ICMP fan-out to N loopback targets, one echo each, median of {repeat} runs:")
    print(f"  {'N':>5}  {'tool':<7} {'wall ms':>8} {'targets/s':>10} {'CPU ms':>7} "
          f"{'RSS MiB':>8}")
    for n in SIZES:
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as file:
            file.write("\n".join(targets(n)) + "\n")
            file.flush()
            ours, theirs = [], []
            for _ in range(repeat):
                wall, cpu, rss, text = measure([sys.executable, "-c", INSMON, file.name])
                ping_wall, ping_cpu = (float(x) for x in text.split()[-2:])
                ours.append((ping_wall, ping_cpu, rss, wall))
                wall, cpu, rss, _ = measure(["fping", "-q", "-c", "1", "-i", "0", "-t",
                                             "1000", "-f", file.name])
                theirs.append((wall, cpu, rss, wall))
            rows = {name: tuple(statistics.median(r[k] for r in runs) for k in range(4))
                    for name, runs in (("insmon", ours), ("fping", theirs))}
            for name, (wall, cpu, rss, _) in rows.items():
                print(f"  {n:>5}  {name:<7} {wall * 1000:>8.1f} {n / wall:>10.0f} "
                      f"{cpu * 1000:>7.1f} {rss:>8.1f}")
            print(f"  {n:>5}  insmon / fping targets per second: "
                  f"{rows['fping'][0] / rows['insmon'][0]:.2f}; insmon process with "
                  f"start-up: {rows['insmon'][3] * 1000:.0f} ms")
    print("  (RSS: the peak of the whole process, Python's included)")


if __name__ == "__main__":
    main()
