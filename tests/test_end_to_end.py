"""End to end, all real: a namespace lab, `insmon run` probing it, Prometheus scraping
insmon and evaluating the project's rules, Alertmanager routing to a webhook per team.

Both lines of the private network are cut: the Level I page must reach the network team,
the insurance agency, leadership and the settlement center (every Level I reaches those
two), name the site, and reach no other team; after the lines are restored, a resolved
notification arrives. The time from the cut to each page is printed (pytest -s). And
when insmon itself dies during that Level I, nobody is told "resolved".

The chain runs on a test copy of the rules made from alert_rules/ at test time, every
`for:` and `keep_firing_for:` HASTEN times shorter (tests/conftest.py): who is paged for
what, and what resolves, are these tests' to prove; the shipped durations are promtool's
(tests/test_alert_rules.py) and bench/fault_to_page.py measures the cut to the page with
them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from alert_rules import NOT_FAULTS
from ops.drill import NOT_THE_CHAIN
from ops.lab import Lab
from ops.recorder import Recorder
from ops.stack import Chain, alert_chain
from tests.conftest import HASTEN, free_port, host_cpu, wait_for
from vocabulary import parse_duration

SITE = "lab-hospital"
CHAIN_RULES = "insmon-settlement-chain"  # the rule group of the settlement path's alerts
# a test may first wait for the CPU-saturation drill to end (up to 7 minutes)
pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[tuple[Lab, Recorder, Chain]]:
    lab, recorder = Lab(slot=None), Recorder()  # addresses of its own: runs beside others
    try:
        lab.start_front_end(8080)
        port = free_port()
        # its figures are the cut-to-page times: never beside the CPU-saturation drill
        with host_cpu(exclusive=False), alert_chain(
                tmp_path, lab.insmon_config(port), port, SITE, recorder.url,
                hasten=HASTEN) as stack:
            yield lab, recorder, stack
    finally:
        recorder.close()
        lab.close()


def pages(recorder: Recorder, status: str | None = None) -> list:
    """What reached a team: the Watchdog's minutely heartbeat to its switch is no page."""
    return [p for p in recorder.received(status) if p.team != "watchdog"]


LEVEL_ONE = {"network", "insurance_agency", "leadership", "settlement_center"}


def faults(stack: Chain, state: str = "firing|pending") -> list[str]:
    """The alerts Prometheus has in `state` for the site, but the heartbeat, the
    calendar's hours and its data running out (this host's, not the chain's)."""
    return sorted(r["metric"]["alertname"] for r in stack.prometheus.query(
        f'ALERTS{{site="{SITE}",alertstate=~"{state}",alertname!~"{NOT_THE_CHAIN}"}}')
        if r["metric"]["alertname"] not in NOT_FAULTS)


def evaluated_after(stack: Chain, moment: float) -> bool:
    """The settlement chain's rules were evaluated after `moment`."""
    return stack.prometheus.evaluated(CHAIN_RULES) > moment


def test_cut_both_lines_pages_level_one_to_the_right_teams(chain) -> None:
    lab, recorder, stack = chain
    # a settled baseline: the chain's rules evaluated on the lab as it is, and nothing
    # pends, fires or paged while all is well
    since = time.time()
    wait_for(lambda: evaluated_after(stack, since), 30, "an evaluation of the chain's rules")
    assert faults(stack) == []
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
    # no other team, no other alert: Alertmanager routes the Level I to those teams only,
    # and holds back every other alert it has (the symptoms of a path down)
    held = stack.alertmanager.alerts()
    assert {r["name"] for a in held if a["labels"]["alertname"] == "SettlementPathDown"
            for r in a["receivers"]} == expected
    assert [a["labels"]["alertname"] for a in held if a["labels"]["alertname"] not in
            {"SettlementPathDown", *NOT_FAULTS} and not a["status"]["inhibitedBy"]] == []
    firing = pages(recorder, "firing")
    assert {p.team for p in firing} == expected
    for page in firing:
        assert page.body["commonLabels"]["site"] == SITE
        assert page.body["commonLabels"]["grade"] == "I"
        assert page.alertnames == {"SettlementPathDown"}
    delays = {p.team: p.received - cut_at for p in firing}
    print("\ncut to page, seconds:", {t: round(d, 1) for t, d in sorted(delays.items())})
    assert max(delays.values()) < 30  # 1 s probes and scrapes, for: 10s hastened

    restored_at = time.time()
    lab.restore("primary")
    lab.restore("backup")
    wait_for(lambda: recorder.teams("SettlementPathDown", "resolved") >= expected, 90,
             "the resolved notifications")
    resolved = {p.team: round(p.received - restored_at, 1) for p in recorder.received("resolved")}
    print("restore to resolved notification, seconds:", resolved)


def hold(workdir: Path, alertname: str) -> float:
    """The `keep_firing_for:` of `alertname` in the chain's (hastened) rules, seconds."""
    groups = yaml.safe_load((workdir / "prometheus" / "alerts.yml").read_text())["groups"]
    [held] = {r["keep_firing_for"] for g in groups for r in g["rules"]
              if r.get("alert") == alertname}
    return parse_duration(held)


def test_insmon_killed_during_a_level_one_tells_nobody_resolved(chain, tmp_path: Path) -> None:
    """The monitor dies (kill -9) while both lines are cut: the Level I stays open, and
    server operations hear that the monitor is down. Open means past the rule's
    keep_firing_for: which holds any alert whose condition went with insmon's series."""
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
    # Prometheus evaluated the chain's rules past the hold after the kill (a scrape finds
    # insmon gone, and two evaluations), and the Level I still fired then
    past = killed_at + hold(tmp_path, "SettlementPathDown") + 5
    wait_for(lambda: evaluated_after(stack, past), 90, "an evaluation past the hold")
    assert faults(stack, "firing").count("SettlementPathDown") == 1
    assert recorder.teams("SettlementPathDown", "resolved") == set()
    # the alert path itself lives: its heartbeat reaches the dead man's switch (Prometheus
    # drops the first one, sent before it has found Alertmanager, and resends it a
    # minute on; on the hastened chain a minute / HASTEN)
    wait_for(lambda: recorder.teams("Watchdog") == {"watchdog"}, 60, "the Watchdog's page")
    assert [a["labels"]["alertname"] for a in stack.alertmanager.alerts()
            if a["status"]["state"] == "active"].count("SettlementPathDown") == 1
