"""End to end, all real: a namespace lab, `insmon run` probing it, Prometheus scraping
insmon and evaluating the project's rules, Alertmanager routing to a webhook per team.

Both lines of the private network are cut: the Level I page must reach the network team,
the insurance agency, leadership and the settlement center (every Level I reaches those
two), name the site, and reach no other team; after the lines are restored, a resolved
notification arrives. The time from the cut to each page is printed (pytest -s). And
when insmon itself dies during that Level I, nobody is told "resolved".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.lab import Lab
from ops.recorder import Recorder
from ops.stack import Chain, alert_chain
from tests.conftest import free_port, host_cpu, wait_for

SITE = "lab-hospital"
# a test may first wait for the CPU-saturation drill to end (up to 7 minutes), and one
# watches 100 s past a kill after its Level I's page
pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[tuple[Lab, Recorder, Chain]]:
    lab, recorder = Lab(slot=None), Recorder()  # addresses of its own: runs beside others
    try:
        lab.start_front_end(8080)
        port = free_port()
        # its figures are the cut-to-page times: never beside the CPU-saturation drill
        with host_cpu(exclusive=False), alert_chain(
                tmp_path, lab.insmon_config(port), port, SITE, recorder.url) as stack:
            yield lab, recorder, stack
    finally:
        recorder.close()
        lab.close()


def pages(recorder: Recorder, status: str | None = None) -> list:
    """What reached a team: the Watchdog's minutely heartbeat to its switch is no page."""
    return [p for p in recorder.received(status) if p.team != "watchdog"]


LEVEL_ONE = {"network", "insurance_agency", "leadership", "settlement_center"}


def test_cut_both_lines_pages_level_one_to_the_right_teams(chain) -> None:
    lab, recorder, stack = chain
    time.sleep(3)  # a settled baseline: nothing pages while all is well
    assert pages(recorder) == []

    cut_at = time.time()
    lab.cut("primary")
    lab.cut("backup")
    expected = LEVEL_ONE
    try:
        wait_for(lambda: recorder.teams("SettlementPathDown") >= expected, 60,
                 "the Level I pages")
    except TimeoutError as exc:  # what each link of the chain had, for the next reader
        raise AssertionError(f"{exc}; pages: {[(p.team, p.alertnames) for p in pages(recorder)]}"
                             f"\n{stack.explain()}") from None
    time.sleep(3)
    firing = pages(recorder, "firing")
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


def test_insmon_killed_during_a_level_one_tells_nobody_resolved(chain) -> None:
    """The monitor dies (kill -9) while both lines are cut: the Level I stays open, and
    server operations hear that the monitor is down."""
    lab, recorder, stack = chain
    lab.cut("primary")
    lab.cut("backup")
    try:
        wait_for(lambda: recorder.teams("SettlementPathDown") >= LEVEL_ONE, 60,
                 "the Level I pages")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; pages: {[(p.team, p.alertnames) for p in pages(recorder)]}"
                             f"\n{stack.explain()}") from None
    stack.insmon.proc.kill()
    stack.insmon.proc.wait(timeout=10)
    killed_at = time.time()
    wait_for(lambda: recorder.teams("InsmonDown") == {"server_ops"}, 90, "InsmonDown's page")
    time.sleep(max(0.0, killed_at + 100 - time.time()))  # well past the minute's hold
    assert recorder.teams("SettlementPathDown", "resolved") == set()
    # the alert path itself lives: its heartbeat reached the dead man's switch (Prometheus
    # drops the first one, sent before it has found Alertmanager, and resends a minute on)
    assert recorder.teams("Watchdog") == {"watchdog"}
    assert [a["labels"]["alertname"] for a in stack.alertmanager.alerts()
            if a["status"]["state"] == "active"].count("SettlementPathDown") == 1
