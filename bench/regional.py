"""A province on one screen: N hospitals through one VictoriaMetrics, measured.

N simulated hospitals (ops/lab/region.py: each serves, with its own `site`, the series
insmon serves for examples/hospital.yaml, rendered by insmon's own exporter) are collected
as each hospital's Prometheus does it (insmon every 2 s, only what the site's remote_write
block of examples/regional/remote_write.yml sends) by one vmagent, into the center the
README sets up: one VictoriaMetrics single node on loopback, vmalert evaluating
alert_rules/ for all of them, the center's Alertmanager (examples/regional/
alertmanager.yml) paging a webhook. One vmagent stands in for N hospitals' senders: the
center receives the same remote_write stream. For each N, side by side:

- series at the center and samples per second ingested;
- the center's memory (VictoriaMetrics + vmalert RSS) and disk, per hospital;
- rule evaluation time per round (vmalert, each group);
- the region board's queries (grafana/dashboards/region.json, every site);
- faults at 5 hospitals (both lines cut x2, a degraded array x2, the platform
  refusing): seconds until each fault's alert fired at the center, and until the
  center's on-call was paged; fault alerts anywhere else (must be none);
- `insmon report --month` over all N sites (HTML, XLSX and charts per site and the
  summary; no PDFs), on a month of history backfilled at one sample a minute (the
  report's own resolution) into the same VictoriaMetrics.

Then, once, one hospital's line to the center cut for REGIONAL_CUT_SECONDS (600): every
sample after the heal, the sender's disk buffer, the catch-up, InsmonSiteMissing.

Usage (root): make bench-regional   or   .venv/bin/python bench/regional.py [N ...] [cut]
[report=N] (default: 50 200 500 cut); report=N times the report alone over N backfilled
sites, the center doing nothing else. The report is timed at the largest N only (at about 4 s a
site here it would double the run); BENCH_REGIONAL_SHOT=PNG takes a screenshot of its
summary over all sites in headless Chromium.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ops.lab.region import (  # noqa: E402
    FAULT_ALERTS,
    Center,
    Region,
    collector,
    cut_line,
    disk_usage,
    inject_faults,
)
from ops.recorder import Recorder  # noqa: E402
from ops.stack import stop_all, wait_for  # noqa: E402
from vocabulary import SHANGHAI  # noqa: E402

WARM = 150  # s: the rules' 2-minute windows full before anything is measured
WINDOW = 60  # s over which ingestion and CPU are measured
BOARD = ROOT / "grafana" / "dashboards" / "region.json"
INSMON = ROOT / ".venv" / "bin" / "insmon"


def metrics(url: str) -> dict[str, float]:
    """A server's own /metrics, summed by series name and labels as written."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                found[name] = found.get(name, 0.0) + float(value)
    return found


def total(found: dict[str, float], pattern: str) -> float:
    return sum(v for k, v in found.items() if re.fullmatch(pattern, k))


def rss(pid: int) -> float:
    """Resident memory in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status)[1]) / 1024


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def board_queries() -> list[tuple[str, str]]:
    board = json.loads(BOARD.read_text())
    return [(p["title"], t["expr"].replace("$site", ".*"))
            for p in board["panels"] for t in p["targets"]]


def time_board(center: Center, rounds: int = 5) -> tuple[float, float, str]:
    """Median seconds of a whole board refresh (every panel's query in turn), and the
    slowest panel's median."""
    refreshes, per_panel = [], {}
    for _ in range(rounds):
        began = time.perf_counter()
        for title, expr in board_queries():
            t0 = time.perf_counter()
            center.query(expr)
            per_panel.setdefault(title, []).append(time.perf_counter() - t0)
        refreshes.append(time.perf_counter() - began)
    slowest = max(per_panel, key=lambda t: statistics.median(per_panel[t]))
    return statistics.median(refreshes), statistics.median(per_panel[slowest]), slowest


def previous_month() -> tuple[str, float, float]:
    now = datetime.now(SHANGHAI)
    start = (now.replace(day=1) - timedelta(days=1)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return f"{start:%Y-%m}", start.timestamp(), end.timestamp()


def backfill(center: Center, sites: list[str], start: float, end: float) -> int:
    """A month of the series the report reads, one sample a minute (at its 58th second),
    every hospital on its private line but for a seeded 20-minute outage (no path,
    SettlementPathDown firing) and an hour on the 4G backup. Returns the samples sent."""
    minutes = int((end - start) // 60)
    stamps = ",".join(str(int((start + 60 * i + 58) * 1000)) for i in range(minutes))
    rng = random.Random(36)
    sent = 0
    lines: list[str] = []

    def line(labels: dict, values: list[str], stamp_text: str = stamps) -> str:
        return (f'{{"metric":{json.dumps(labels)},"values":[{",".join(values)}],'
                f'"timestamps":[{stamp_text}]}}\n')

    for k, site in enumerate(sites):
        down = rng.randrange(minutes - 100)
        backup = rng.randrange(minutes - 100)
        path, primary, none, role_backup = (["1"] * minutes, ["1"] * minutes,
                                            ["0"] * minutes, ["0"] * minutes)
        for i in range(backup, backup + 60):
            primary[i], role_backup[i] = "0", "1"
        for i in range(down, down + 20):
            path[i], primary[i], none[i], role_backup[i] = "0", "0", "1", "0"
        base = {"job": "insmon", "instance": "insmon:9829", "site": site}
        vpn = {**base, "check": "insurance-private-network"}
        lines += [line({"__name__": "insmon_settlement_path_up", **vpn}, path),
                  line({"__name__": "insmon_settlement_possible", **base,
                        "check": "platform-query"}, path),
                  line({"__name__": "insmon_settlement_active_role", **vpn,
                        "role": "primary"}, primary),
                  line({"__name__": "insmon_settlement_active_role", **vpn, "role": "none"},
                       none),
                  line({"__name__": "insmon_settlement_active_role", **vpn,
                        "role": "backup"}, role_backup),
                  line({"__name__": "ALERTS", "alertname": "SettlementPathDown",
                        "alertstate": "firing", "grade": "I", "team": "network",
                        "also": "insurance_agency", "service": "private_network",
                        "site": site}, ["1"] * 20,
                       ",".join(stamps.split(",")[down:down + 20]))]
        sent += 5 * minutes + 20
        if len(lines) >= 120 or k == len(sites) - 1:
            request = urllib.request.Request(f"{center.vm.url}/api/v1/import",
                                             data="".join(lines).encode(), method="POST")
            with urllib.request.urlopen(request, timeout=600):
                pass
            lines = []
    return sent


def fresh(center: Center) -> bool:
    """Forget the answers VictoriaMetrics cached for past times: a backfill changes
    them (its documented reset)."""
    with urllib.request.urlopen(f"{center.vm.url}/internal/resetRollupResultCache",
                                timeout=60):
        return True


def time_report(center: Center, sites: list[str], work: Path) -> dict[str, float]:
    month, start, end = previous_month()
    t0 = time.perf_counter()
    samples = backfill(center, sites, start, end)
    loaded = time.perf_counter() - t0
    wait_for(lambda: fresh(center) and len(center.query(
        "group by (site) (insmon_settlement_path_up)", end - 3600)) >= len(sites), 300,
        "the backfilled month at the center")
    fresh(center)
    t0 = time.perf_counter()
    # without Chromium on its PATH the report writes no PDFs: a PDF is a Chromium start
    # per site (about 5 s each here), which would swamp the rest at 500 sites
    done = subprocess.run([str(INSMON), "report", "--month", month, "--prometheus",
                           center.vm.url, "--out", str(work / "report")],
                          capture_output=True, text=True, timeout=7200,
                          env={**os.environ, "PATH": str(INSMON.parent)})
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"insmon report failed: {done.stderr[-2000:]}")
    pdfs = len(list((work / "report").rglob("report.pdf")))
    shot = os.environ.get("BENCH_REGIONAL_SHOT")
    if shot:  # the summary over every site as a browser shows it (headless Chromium)
        with tempfile.TemporaryDirectory(prefix="insmon-chromium-") as profile:
            subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                            f"--user-data-dir={profile}", "--window-size=1400,2000",
                            f"--screenshot={shot}", (work / "report" / "summary.html").as_uri()],
                           capture_output=True, timeout=300, check=True)
    return {"report_s": took, "backfill_samples": samples, "backfill_s": loaded,
            "report_pdfs": pdfs}


def measure(n: int, work: Path, report: bool) -> dict[str, object]:
    recorder, region = Recorder(), Region(n)
    started: list = []
    out: dict[str, object] = {"N": n}
    try:
        center = Center(work / "center", recorder.url)
        started.append(center)
        started.append(collector(work / "vmagent", region, center))
        wait_for(lambda: len(center.query('count by (site) (up{job="insmon"} == 1)')) == n,
                 300, f"all {n} hospitals at the center")
        time.sleep(WARM)
        vm, vmalert = center.vm.proc.pid, center.vmalert.proc.pid
        before, cpu0 = metrics(center.vm.url), (cpu_seconds(vm), cpu_seconds(vmalert))
        t0 = time.monotonic()
        time.sleep(WINDOW)
        after, cpu1 = metrics(center.vm.url), (cpu_seconds(vm), cpu_seconds(vmalert))
        seconds = time.monotonic() - t0
        rows = 'vm_rows_inserted_total{type="promremotewrite"}'
        out["samples_per_s"] = (after[rows] - before[rows]) / seconds
        with urllib.request.urlopen(f"{center.vm.url}/api/v1/series/count", timeout=60) as a:
            out["series"] = json.load(a)["data"][0]
        out["vm_cpu"] = (cpu1[0] - cpu0[0]) / seconds
        out["vmalert_cpu"] = (cpu1[1] - cpu0[1]) / seconds
        out["vm_rss"], out["vmalert_rss"] = rss(vm), rss(vmalert)
        out["disk"] = disk_usage(center.data)
        stored = total(after, r'vm_rows\{type="(storage|indexdb)/.*"\}')
        size = total(after, r'vm_data_size_bytes\{type="(storage|indexdb)/.*"\}')
        out["bytes_per_sample"] = size / max(1.0, total(after, r'vm_rows\{type="storage/.*"\}')) \
            if stored else float("nan")
        rules = metrics(center.vmalert.url)
        rounds = {}
        for key, value in rules.items():
            m = re.fullmatch(r'vmalert_iteration_duration_seconds_(sum|count)\{group="([^"]+)"'
                             r'.*\}', key)
            if m:
                rounds.setdefault(m[2], {})[m[1]] = value
        out["rounds"] = {g: v["sum"] / v["count"] for g, v in rounds.items() if v.get("count")}
        out["rounds_missed"] = total(rules, r"vmalert_iteration_missed_total.*")
        out["board"] = time_board(center)
        picks = [f"hospital-{k}" for k in (3, n // 4, n // 2, 3 * n // 4, n)]
        faults = dict(zip(picks, ("cut", "degraded", "cut", "degraded", "refusing"),
                          strict=True))
        times = inject_faults(region, center, recorder, faults)
        out["faults"] = {site: (fault, times.fired.get((site, FAULT_ALERTS[fault])),
                                times.paged.get(site)) for site, fault in faults.items()}
        out["elsewhere"] = times.elsewhere
        out["alerts_firing"] = sum(len(a) for a in times.alerts.values())
        out["pages"] = sum(times.pages.values())
        out["paged_sites"] = sorted(times.pages)
        for site in faults:
            region.heal(site)
        if report:
            out.update(time_report(center, list(region.hospitals), work))
    finally:
        stop_all(started)
        region.close()
        recorder.close()
    return out


def mib(value: float) -> str:
    return f"{value / 2 ** 20:.1f} MiB"


def table(results: list[dict]) -> None:
    rows: list[tuple[str, list[str]]] = []

    def row(name: str, f) -> None:
        rows.append((name, [f(r) for r in results]))

    row("hospitals", lambda r: str(r["N"]))
    row("series at the center", lambda r: f"{r['series']:,}")
    row("samples/s ingested", lambda r: f"{r['samples_per_s']:,.0f}")
    row("VictoriaMetrics RSS", lambda r: f"{r['vm_rss']:.0f} MiB")
    row("vmalert RSS", lambda r: f"{r['vmalert_rss']:.0f} MiB")
    row("memory per hospital", lambda r: f"{(r['vm_rss'] + r['vmalert_rss']) / r['N']:.2f} MiB")
    row("CPU VM / vmalert (cores)", lambda r: f"{r['vm_cpu']:.2f} / {r['vmalert_cpu']:.2f}")
    row("disk after the run", lambda r: mib(r["disk"]))
    row("bytes per sample stored", lambda r: f"{r['bytes_per_sample']:.2f}")
    row("-> per hospital per day", lambda r: mib(
        r["bytes_per_sample"] * r["samples_per_s"] / r["N"] * 86400))
    groups = sorted({g for r in results for g in r["rounds"]})
    for group in groups:
        row(f"rule round {group}", lambda r, g=group: f"{r['rounds'].get(g, 0) * 1000:.0f} ms")
    row("rule rounds missed", lambda r: f"{r['rounds_missed']:.0f}")
    row("board refresh (all panels)", lambda r: f"{r['board'][0] * 1000:.0f} ms")
    row("slowest panel", lambda r: f"{r['board'][1] * 1000:.0f} ms ({r['board'][2][:18]})")
    for kind in ("cut", "degraded", "refusing"):
        def fired(r, kind=kind):
            got = [v for f, v, _ in r["faults"].values() if f == kind]
            return "/".join("never" if v is None else f"{v:.0f}" for v in got) + " s"

        def paged(r, kind=kind):
            got = [p for f, _, p in r["faults"].values() if f == kind]
            return "/".join("never" if p is None else f"{p:.0f}" for p in got) + " s"
        row(f"{kind}: {FAULT_ALERTS[kind]} fired", fired)
        row(f"{kind}: center on-call paged", paged)
    row("fault alerts elsewhere", lambda r: str(sum(len(a) for a in r["elsewhere"].values())))
    row("alerts firing / pages", lambda r: f"{r['alerts_firing']} / {r['pages']}")
    row("report backfill", lambda r: f"{r['backfill_samples'] / 1e6:.1f} M in "
        f"{r['backfill_s']:.0f} s" if "report_s" in r else "-")
    row("insmon report --month (no PDF)",
        lambda r: f"{r['report_s']:.0f} s" if "report_s" in r else "-")
    width = max(len(name) for name, _ in rows)
    cell = max(len(v) for _, values in rows for v in values) + 2
    for name, values in rows:
        print(f"{name:<{width}}  " + "".join(f"{v:>{cell}}" for v in values), flush=True)


def report_alone(n: int) -> None:
    recorder = Recorder()
    with tempfile.TemporaryDirectory(prefix=f"insmon-report-{n}-") as tmp:
        center = Center(Path(tmp) / "center", recorder.url)
        try:
            found = time_report(center, [f"hospital-{k}" for k in range(1, n + 1)], Path(tmp))
        finally:
            center.stop()
            recorder.close()
    print(f"insmon report --month over {n} sites (no PDF), the center idle otherwise: "
          f"{found['report_s']:.0f} s; backfill {found['backfill_samples'] / 1e6:.1f} M "
          f"samples in {found['backfill_s']:.0f} s", flush=True)


def main() -> None:
    args = sys.argv[1:] or ["50", "200", "500", "cut"]
    for arg in args:
        if arg.startswith("report="):
            report_alone(int(arg.removeprefix("report=")))
    sizes = [int(a) for a in args if a.isdigit()]
    results = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix=f"insmon-region-{n}-") as tmp:
            began = time.monotonic()
            results.append(measure(n, Path(tmp), report=n == max(sizes)))
            print(f"N={n}: {json.dumps(results[-1], default=str)} "
                  f"({time.monotonic() - began:.0f} s)", flush=True)
    if results:
        print()
        table(results)
    cut = float(os.environ.get("BENCH_REGIONAL_CUT", "600"))
    if "cut" in args:
        recorder = Recorder()
        with tempfile.TemporaryDirectory(prefix="insmon-cut-") as tmp:
            history = cut_line(Path(tmp), cut, recorder.url)
        recorder.close()
        hours = history.seconds / 3600
        print(f"\none hospital's line to the center cut for {history.seconds:.0f} s: "
              f"{history.at_center:,} of {history.at_site:,} samples at the center after "
              f"the heal (missing: {history.missing or 'none'}); vmagent's disk buffer "
              f"{mib(history.buffered)} at the end of the cut ({mib(history.buffered / hours)}"
              f" an hour); caught up {history.caught_up:.0f} s after the heal; "
              f"InsmonSiteMissing fired "
              + (f"{history.missing_alert:.0f} s into the cut" if history.missing_alert
                 else "not within the cut"), flush=True)


if __name__ == "__main__":
    main()
