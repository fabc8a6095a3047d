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

import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ops.lab import FRONT_END, Lab  # noqa: E402
from ops.recorder import Recorder  # noqa: E402
from ops.stack import alert_chain  # noqa: E402
from tests.conftest import free_port, wait_for  # noqa: E402

BLIP = 3.0  # the longest blip that must never page
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
        lab, recorder = Lab(), Recorder()
        try:
            lab.start_front_end(8080)
            port = free_port()
            with alert_chain(work, vpn_check(lab, port), port, SITE, recorder.url,
                             interval=None):
                # A blip: both lines down for a moment, then back. It must not page.
                lab.cut("primary")
                lab.cut("backup")
                time.sleep(BLIP)
                lab.restore("primary")
                lab.restore("backup")
                time.sleep(40)
                # the Watchdog's minutely heartbeat to its switch is no page
                blip_paged = any(p.team != "watchdog" for p in recorder.received("firing"))

                # Repeated cuts make TunnelFlapping (grade III) fire too, as they should:
                # the figures are for the Level I page, SettlementPathDown.
                def pages(status: str) -> list:
                    return [p for p in recorder.received(status)
                            if "SettlementPathDown" in p.alertnames]

                delays = []
                for _ in range(cuts):
                    firing, resolved = len(pages("firing")), len(pages("resolved"))
                    cut_at = time.time()
                    lab.cut("primary")
                    lab.cut("backup")
                    wait_for(lambda n=firing: len(pages("firing")) > n, 120, "a page")
                    delays.append(min(p.received for p in pages("firing")[firing:]) - cut_at)
                    lab.restore("primary")
                    lab.restore("backup")
                    wait_for(lambda n=resolved: len(pages("resolved")) > n, 120,
                             "the resolved notification")
                    time.sleep(5)
        finally:
            recorder.close()
            lab.close()
    print(f"fault to page, shipped timings (vpn check, insmon scrape and the chain's rule "
          f"evaluation every 2 s, for: 10s), {cuts} cuts of both lines:")
    print(f"  median {statistics.median(delays):.1f} s, worst {max(delays):.1f} s, "
          f"all: {', '.join(f'{d:.1f}' for d in delays)}")
    print(f"  a {BLIP:g} s blip of both lines paged: {'YES' if blip_paged else 'no'}")


if __name__ == "__main__":
    main()
