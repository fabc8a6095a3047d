"""What the storage probes cost per run, beside node_exporter's diskstats + mdadm scrape.

Both read the same files: this machine's /proc/diskstats and an mdstat of six arrays (the
`levels` fixture), copied into one procfs folder on a tmpfs (/dev/shm), in memory like
the real /proc, so insmon reads them the way it reads /proc (on its event loop). insmon:
a disk_io run and a raid (md) run through the runner into the store, which renders the
check's series as the run lands, then a scrape's joining of those bytes; node_exporter:
one scrape of its diskstats and mdadm collectors over HTTP on loopback. CPU is the
process's own (user + system). Both pause the same 12 ms between runs (disk_io needs
it): a run after a pause costs several times one in a tight loop (cold caches), so both
are measured the same way.

Usage: make bench   (or .venv/bin/python bench/storage_overhead.py [RUNS])
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporters.prometheus import exposition  # noqa: E402
from monitor.runner import build_checks, run_check  # noqa: E402
from monitor.store import ResultStore  # noqa: E402
from probes import disk_io, raid  # noqa: E402

WINDOW = 0.01  # disk_io's short window is timeout / 2
MDSTAT = ROOT / "tests" / "fixtures" / "raid" / "md" / "levels" / "proc" / "mdstat"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Figures = tuple[list[float], float]  # wall seconds per run, CPU seconds in all


async def insmon_runs(config: object, runs: int) -> tuple[Figures, Figures]:
    """(the probe runs through the runner into the store, rendering included; a scrape)"""
    store = ResultStore()
    [check] = build_checks([config])
    store.configure([check], "bench")
    await run_check(check, store)  # first run: takes its baseline
    run_walls, run_cpu, render_walls, render_cpu = [], 0.0, [], 0.0
    for _ in range(runs):
        # disk_io re-takes a baseline younger than its short window: wait that out untimed
        await asyncio.sleep(WINDOW * 1.2)
        cpu0, t0 = time.process_time(), time.perf_counter()
        record = await run_check(check, store)
        cpu1, t1 = time.process_time(), time.perf_counter()
        exposition(store.snapshot())
        render_walls.append(time.perf_counter() - t1)
        render_cpu += time.process_time() - cpu1
        run_walls.append(t1 - t0)
        run_cpu += cpu1 - cpu0
        assert record is not None and record.status in ("ok", "failed"), record
    return (run_walls, run_cpu), (render_walls, render_cpu)


def node_exporter_scrapes(procfs: Path, runs: int) -> tuple[list[float], float]:
    port = 19187
    proc = subprocess.Popen(
        ["prometheus-node-exporter", f"--path.procfs={procfs}", "--collector.disable-defaults",
         "--collector.diskstats", "--collector.mdadm", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        for _ in range(100):  # up within 5 s
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        requests.get(url, timeout=5)  # warm
        walls = []
        cpu0 = cpu_seconds(proc.pid)
        with requests.Session() as session:
            for _ in range(runs):
                time.sleep(WINDOW * 1.2)  # the same pause as between insmon's runs
                t0 = time.perf_counter()
                body = session.get(url, timeout=5).text
                walls.append(time.perf_counter() - t0)
                assert "node_md_state" in body and "node_disk_io_time" in body
        return walls, cpu_seconds(proc.pid) - cpu0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        procfs = Path(tmp) / "proc"
        procfs.mkdir()
        shutil.copy("/proc/diskstats", procfs / "diskstats")
        shutil.copy(MDSTAT, procfs / "mdstat")
        root = Path(tmp)
        disk = disk_io.Config(name="disks", kind="disk_io", root=root, devices=".*",
                              exclude="$^", interval=1, timeout=WINDOW * 2)
        md = raid.Config(name="md", kind="raid", source={"type": "md", "root": root})
        disk_run, disk_render = asyncio.run(insmon_runs(disk, runs))
        md_run, md_render = asyncio.run(insmon_runs(md, runs))
        rows = [
            ("insmon disk_io run", *disk_run), ("  + a scrape of it", *disk_render),
            ("insmon raid (md) run", *md_run), ("  + a scrape of it", *md_render),
            ("node_exporter scrape", *node_exporter_scrapes(procfs, runs)),
        ]
    print(f"storage probe overhead, {runs} runs each, same diskstats "
          f"({len(disk_io.parse_diskstats(Path('/proc/diskstats').read_text()))} devices) "
          "and mdstat (6 arrays):")
    for name, walls, cpu in rows:
        print(f"  {name:<22} wall median {statistics.median(walls) * 1000:6.3f} ms, "
              f"p99 {statistics.quantiles(walls, n=100)[98] * 1000:6.3f} ms, "
              f"CPU {cpu / runs * 1000:6.3f} ms per run")
    theirs = rows[-1][2] / runs
    probes = (rows[0][2] + rows[2][2]) / runs
    everything = sum(cpu for _, _, cpu in rows[:4]) / runs
    if theirs:
        print(f"  CPU per run vs node_exporter's diskstats + mdadm scrape: the runs "
              f"(rendering included) {probes / theirs:.2f}x, runs + a scrape each "
              f"{everything / theirs:.2f}x")


if __name__ == "__main__":
    main()
