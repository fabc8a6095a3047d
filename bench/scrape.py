"""Scrape cost by size: median and p99 time and bytes of a /metrics scrape of insmon at
about 1k, 10k and 50k series, beside node_exporter's default scrape on this machine in the
same run, and insmon's RSS at each size.

The series come from an icmp check over N loopback targets (22 series each: an RTT
histogram, the gauges, the counters), as a site watching many terminals would have.
Usage (root, for ICMP): make bench   or   .venv/bin/python bench/scrape.py [SCRAPES]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ops.stack import Insmon  # noqa: E402
from tests.conftest import free_port, wait_for  # noqa: E402

SIZES = (1_000, 10_000, 50_000)
PER_TARGET = 22


def scrape(url: str, times: int) -> tuple[list[float], int, int]:
    """(seconds per scrape, bytes, series) over `times` scrapes on one connection."""
    walls = []
    with requests.Session() as session:
        for _ in range(times):
            t0 = time.perf_counter()
            body = session.get(url, timeout=60).content
            walls.append(time.perf_counter() - t0)
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return walls, len(body), series


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1]) / 1024


def main() -> None:
    times = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    port = free_port()
    node = subprocess.Popen(["prometheus-node-exporter",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        node_url = f"http://127.0.0.1:{port}/metrics"
        wait_for(lambda: requests.get(node_url, timeout=5).ok, 20, "node_exporter")
        scrape(node_url, 3)
        node_walls, node_bytes, node_series = scrape(node_url, times)
    finally:
        node.terminate()
        node.wait(timeout=10)
    node_median = statistics.median(node_walls)
    print(f"scrape of /metrics, {times} scrapes each; node_exporter (defaults, this machine): "
          f"{node_series} series, {node_bytes / 1024:.0f} KiB, median "
          f"{node_median * 1000:.1f} ms")
    print(f"  {'series':>7} {'median ms':>9} {'p99 ms':>7} {'KiB':>6} {'x node':>7} "
          f"{'ms/1k series':>12} {'RSS MiB':>8}")
    for size in SIZES:
        targets = [f"127.2.{i // 250}.{i % 250 + 1}" for i in range(size // PER_TARGET)]
        port = free_port()
        with tempfile.TemporaryDirectory() as tmp:
            config = (f'listen: "127.0.0.1:{port}"\nchecks:\n- name: terminals\n'
                      f"  kind: icmp\n  interval: 10s\n  count: 1\n  targets: {targets}\n")
            monitor = Insmon(Path(tmp), config)
            try:
                url = f"http://127.0.0.1:{port}/metrics"
                wait_for(lambda u=url: "insmon_ping_rtt_seconds_bucket" in
                         requests.get(u, timeout=30).text, 60, "the first ping run")
                scrape(url, 3)
                walls, size_bytes, series = scrape(url, times)
                rss = rss_mib(monitor.proc.pid)
            finally:
                monitor.stop()
        median = statistics.median(walls)
        p99 = statistics.quantiles(walls, n=100)[98] if len(walls) > 1 else walls[0]
        print(f"  {series:>7} {median * 1000:>9.1f} {p99 * 1000:>7.1f} "
              f"{size_bytes / 1024:>6.0f} {median / node_median:>7.1f} "
              f"{median * 1000 / series * 1000:>12.2f} {rss:>8.1f}")


if __name__ == "__main__":
    main()
