"""What hostile input costs a running insmon: the figures the reliability review asked for.

1. Crafted huge kernel files: a 10 MB /proc/mdstat (116,335 arrays) and a 10 MB diskstats
   under a raid and a disk_io check every second, beside a 1 s calendar check. Figures:
   insmon's RSS, and the longest gap between two runs of the side check, seen on
   /metrics polled every 100 ms (a stalled loop shows as a gap and slow scrapes).
2. A brute force on basic auth: 20 clients sending wrong passwords for a user that
   exists, as fast as they can, for 30 s. Figures: insmon's CPU (bcrypt is the cost),
   how many 401 and 429 answers, and whether Prometheus's own scrape still gets through.

Usage: make bench   or   .venv/bin/python bench/hostile_input.py [SECONDS]
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import bcrypt
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ops.stack import Insmon  # noqa: E402
from tests.conftest import free_port, wait_for  # noqa: E402

SIDE = 'insmon_probe_last_run_timestamp_seconds{check="side",kind="calendar"}'


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1]) / 1024


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def huge_files(root: Path) -> None:
    """A 10 MB mdstat of tiny arrays and a 10 MB diskstats of made-up devices."""
    proc = root / "proc"
    proc.mkdir(parents=True)
    arrays = "".join(f"md{i} : active raid1 sdb{i}[1] sda{i}[0]\n      1024 blocks [2/2] [UU]\n\n"
                     for i in range(116_335))
    (proc / "mdstat").write_text("Personalities : [raid1]\n" + arrays[:10_000_000]
                                 + "unused devices: <none>\n")
    rng = random.Random(1)
    lines = (f"   8 {i % 256} dev{i} " + " ".join(str(rng.randrange(10**6)) for _ in range(17))
             for i in range(200_000))
    (proc / "diskstats").write_text("\n".join(lines)[:10_000_000] + "\n")


def side_gap(url: str, seconds: float, pid: int) -> tuple[float, float, float]:
    """(longest gap between side-check runs, slowest scrape, highest RSS) over `seconds`."""
    runs: list[float] = []
    slowest = peak = 0.0
    end = time.monotonic() + seconds
    with requests.Session() as session:
        while time.monotonic() < end:
            t0 = time.perf_counter()
            body = session.get(url, timeout=60).text
            slowest = max(slowest, time.perf_counter() - t0)
            peak = max(peak, rss_mib(pid))
            for line in body.splitlines():
                if line.startswith(SIDE + " "):
                    stamp = float(line.rsplit(" ", 1)[1])
                    if not runs or stamp != runs[-1]:
                        runs.append(stamp)
            time.sleep(0.1)
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    return (max(gaps) if gaps else float("inf")), slowest, peak


def huge_inputs(work: Path, seconds: float) -> None:
    huge_files(work / "host")
    port = free_port()
    config = f"""\
listen: "127.0.0.1:{port}"
checks:
  - {{name: side, kind: calendar, interval: 1s}}
  - {{name: arrays, kind: raid, interval: 1s, source: {{type: md, root: {work / "host"}}}}}
  - {{name: disks, kind: disk_io, interval: 1s, root: {work / "host"}}}
"""
    insmon = Insmon(work / "huge", config)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_for(lambda: SIDE in requests.get(url, timeout=5).text, 20, "insmon")
        gap, slowest, peak = side_gap(url, seconds, insmon.proc.pid)
        body = requests.get(url, timeout=10).text
        arrays = [x for x in body.splitlines()
                  if x.startswith('insmon_probe_success{check="arrays"')]
    finally:
        insmon.stop()
    print(f"huge inputs (10 MB mdstat and diskstats, checks every 1 s, {seconds:.0f} s): "
          f"side check's longest gap {gap:.2f} s, slowest scrape {slowest * 1000:.0f} ms, "
          f"peak RSS {peak:.1f} MiB; raid check: {arrays[0] if arrays else '?'}")


def brute_force(work: Path, seconds: float) -> None:
    password = "scrape-4d1f"
    web = work / "web.yml"
    web.write_text("basic_auth_users:\n  prometheus: "
                   + bcrypt.hashpw(password.encode(), bcrypt.gensalt(12)).decode() + "\n")
    port = free_port()
    insmon = Insmon(work / "auth", f'listen: "127.0.0.1:{port}"\n'
                    "checks:\n  - {name: side, kind: calendar, interval: 1s}\n",
                    ["--web-config", str(web)])
    url = f"http://127.0.0.1:{port}/metrics"
    answers: Counter[int] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def attacker(n: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                code = session.get(url, auth=("prometheus", f"guess-{n}-{time.time()}"),
                                   timeout=30).status_code
                with lock:
                    answers[code] += 1

    try:
        wait_for(lambda: requests.get(url, auth=("prometheus", password), timeout=5).ok, 20,
                 "insmon with basic auth")
        cpu0 = cpu_seconds(insmon.proc.pid)
        threads = [threading.Thread(target=attacker, args=(n,)) for n in range(20)]
        for thread in threads:
            thread.start()
        scrapes = Counter()
        end = time.monotonic() + seconds
        while time.monotonic() < end:  # Prometheus scraping as usual, every 2 s
            scrapes[requests.get(url, auth=("prometheus", password), timeout=30).status_code] += 1
            time.sleep(2)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        cpu = cpu_seconds(insmon.proc.pid) - cpu0
    finally:
        insmon.stop()
    print(f"brute force (20 clients, wrong passwords for an existing user, {seconds:.0f} s): "
          f"insmon CPU {cpu:.2f} s ({cpu / seconds * 100:.1f} % of a core), answers "
          f"{dict(sorted(answers.items()))}; Prometheus's own scrapes {dict(scrapes)}")


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30
    with tempfile.TemporaryDirectory() as tmp:
        huge_inputs(Path(tmp), seconds)
        brute_force(Path(tmp), seconds)


if __name__ == "__main__":
    main()
