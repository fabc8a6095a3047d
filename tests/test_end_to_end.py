"""End to end, all real: a namespace lab, `insmon run` probing it, Prometheus scraping
insmon and evaluating the project's rules, Alertmanager routing to a webhook per team.

Both lines of the private network are cut: the Level I page must reach the network team,
the insurance agency, leadership and the settlement center (every Level I reaches those
two), name the site, and reach no other team; after the lines are restored, a resolved
notification arrives. The time from the cut to each page is printed (pytest -s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.lab import Lab
from ops.recorder import Recorder
from ops.stack import alert_chain
from tests.conftest import free_port, wait_for

SITE = "lab-hospital"


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[tuple[Lab, Recorder]]:
    lab, recorder = Lab(), Recorder()
    try:
        lab.start_front_end(8080)
        port = free_port()
        with alert_chain(tmp_path, lab.insmon_config(port), port, SITE, recorder.url):
            yield lab, recorder
    finally:
        recorder.close()
        lab.close()


def test_cut_both_lines_pages_level_one_to_the_right_teams(chain) -> None:
    lab, recorder = chain
    time.sleep(3)  # a settled baseline: nothing pages while all is well
    assert recorder.received() == []

    cut_at = time.time()
    lab.cut("primary")
    lab.cut("backup")
    expected = {"network", "insurance_agency", "leadership", "settlement_center"}
    wait_for(lambda: recorder.teams("SettlementPathDown") >= expected, 60, "the Level I pages")
    time.sleep(3)
    firing = recorder.received("firing")
    assert {p.team for p in firing} == expected  # and no other team, no other alert
    for page in firing:
        assert page.body["commonLabels"]["site"] == SITE
        assert page.body["commonLabels"]["grade"] == "I"
        assert page.alertnames == {"SettlementPathDown"}
    delays = {p.team: p.received - cut_at for p in firing}
    print("\ncut to page, seconds:", {t: round(d, 1) for t, d in sorted(delays.items())})
    assert max(delays.values()) < 30  # 1 s probes and scrapes, for: 10s

    restored_at = time.time()
    lab.restore("primary")
    lab.restore("backup")
    wait_for(lambda: recorder.teams("SettlementPathDown", "resolved") >= expected, 90,
             "the resolved notifications")
    resolved = {p.team: round(p.received - restored_at, 1) for p in recorder.received("resolved")}
    print("restore to resolved notification, seconds:", resolved)
