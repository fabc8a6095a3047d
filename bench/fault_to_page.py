"""Fault to page, with the shipped production timings: a real cut of both private-network
lines in the namespace lab, detected by `insmon run` (the vpn check of
examples/hospital.yaml, every 2 s), scraped by Prometheus as alert_rules/prometheus.yml
says (insmon every 2 s), the settlement chain's rules evaluated every 2 s with `for: 10s`
(alert_rules/alerts.yml), routed by the shipped Alertmanager config to a webhook. Prints
the median and worst time from the cut to the page over CUTS cuts, and whether a short
blip (both lines down for BLIP seconds) ever paged.

Usage (root): make bench   or   .venv/bin/python bench/fault_to_page.py [CUTS]
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.alertstack import Alertmanager, Prometheus  # noqa: E402
from tests.conftest import INSMON, free_port, wait_for  # noqa: E402
from tests.netlab import FRONT_END, Lab  # noqa: E402
from tests.pager import Pager  # noqa: E402

BLIP = 1.0
SITE = "bench-hospital"


def vpn_check(lab: Lab, port: int) -> str:
    """The example site's vpn check, pointed at the lab."""
    example = yaml.safe_load((ROOT / "examples" / "hospital.yaml").read_text())
    check = next(c for c in example["checks"] if c["kind"] == "vpn")
    check["front_end"] = f"{FRONT_END}:8080"
    check["links"] = [
        {"name": "private-line", "role": "primary", "interface": lab.primary,
         "gateway": "198.18.1.2"},
        {"name": "4g-backup", "role": "backup", "interface": lab.backup,
         "gateway": "198.18.2.2"}]
    return yaml.safe_dump({"listen": f"127.0.0.1:{port}", "checks": [check]})


def main() -> None:
    cuts = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lab, pager = Lab(), Pager()
        procs = []
        try:
            lab.start_front_end(8080)
            port = free_port()
            (work / "insmon.yaml").write_text(vpn_check(lab, port))
            monitor = subprocess.Popen([INSMON, "run", "-c", str(work / "insmon.yaml")],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            manager = Alertmanager(work / "am", pager.url)
            prometheus = Prometheus(work / "prom", [f"127.0.0.1:{port}"], SITE, manager.url,
                                    interval=None)
            procs = [monitor, manager, prometheus]
            wait_for(lambda: prometheus.query("site:insmon_settlement_path:up == 1"), 60,
                     "the path to be up")

            # A blip: both lines down for a moment, then back. It must not page.
            lab.cut("primary")
            lab.cut("backup")
            time.sleep(BLIP)
            lab.restore("primary")
            lab.restore("backup")
            time.sleep(40)
            blip_paged = bool(pager.received("firing"))

            delays = []
            for _ in range(cuts):
                pages_before = len(pager.received("firing"))
                cut_at = time.time()
                lab.cut("primary")
                lab.cut("backup")
                wait_for(lambda n=pages_before: len(pager.received("firing")) > n, 120,
                         "a page")
                first = min(p.received for p in pager.received("firing")[pages_before:])
                delays.append(first - cut_at)
                lab.restore("primary")
                lab.restore("backup")
                resolved = len(pager.received("resolved"))
                wait_for(lambda n=resolved: len(pager.received("resolved")) > n, 120,
                         "the resolved notification")
                time.sleep(5)
        finally:
            for proc in reversed(procs):
                if isinstance(proc, subprocess.Popen):
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=15)
                else:
                    proc.stop()
            pager.close()
            lab.close()
    print(f"fault to page, shipped timings (vpn check, insmon scrape and the chain's rule "
          f"evaluation every 2 s, for: 10s), {cuts} cuts of both lines:")
    print(f"  median {statistics.median(delays):.1f} s, worst {max(delays):.1f} s, "
          f"all: {', '.join(f'{d:.1f}' for d in delays)}")
    print(f"  a {BLIP:g} s blip of both lines paged: {'YES' if blip_paged else 'no'}")


if __name__ == "__main__":
    main()
