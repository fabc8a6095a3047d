"""Issue 31's storm, measured: 1,000 distinct grade II alerts (50 alert names x 20 sites,
team network) posted to a real Alertmanager on the shipped alert_rules/alertmanager.yml
over a minute, one site's 50 at a time; Alertmanager posts each group to `insmon pager
run` on the shipped examples/pager.yaml (one pager, not the pair; its channels pointed at
a local WeCom robot and the other robots, a real SMTP server and gammu-smsd on gammu's
dummy phone: tests/test_pager_storm.py's rig). Prints, side by side, what Alertmanager
posted to the pager and what reached people: messages per person and channel, and the
time from the first alert to the first and to the last message. The bound it must keep
(at most 10 messages per person per channel) is tests/test_pager_storm.py's.

On main before issue 31 the on-call got 40 WeCom posts, 49 SMS and 765 e-mails, the
last 199 s after the first alert.

Usage (root): make bench   or   .venv/bin/python bench/pager_storm.py [SPREAD_SECONDS]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ops.stack import wait_for  # noqa: E402
from pager import records  # noqa: E402
from tests.test_pager_storm import NAMES, SITES, StormRig  # noqa: E402


def main() -> None:
    spread = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    with tempfile.TemporaryDirectory() as tmp:
        rig = StormRig(Path(tmp))
        try:
            began = rig.fire(spread)
            wait_for(lambda: rig.done(rig.on_call), spread + 600,
                     f"every page of the storm to {rig.on_call}")
            time.sleep(5)  # what the last round sent, on its way
            posted = len([r for r in rig.pager.read(records.received)
                          if r.receiver == "network"])
            incidents = len(rig.pager.read(records.incidents))
            people = list(dict.fromkeys(p.person for p in rig.pager.read(records.pages)))
            figures = {person: rig.messages(person) for person in people}
        finally:
            rig.close()
    print(f"pager storm: {NAMES * SITES} grade II alerts ({NAMES} names x {SITES} sites, team "
          f"network) posted to Alertmanager over {spread:.0f} s, shipped routing and "
          "examples/pager.yaml (one pager)")
    print(f"  Alertmanager -> pager: {posted} notifications, {incidents} incidents")
    for person, got in figures.items():
        when = sorted(at for messages in got.values() for at, _ in messages)
        counts = ", ".join(f"{channel} {len(messages)}" for channel, messages in
                           sorted(got.items())) or "nothing"
        role = " (on call)" if person == rig.on_call else ""
        print(f"  pager -> {person}{role}: {counts}; first {when[0] - began:.1f} s, last "
              f"{when[-1] - began:.1f} s after the first alert" if when else
              f"  pager -> {person}{role}: nothing")


if __name__ == "__main__":
    main()
