"""The shipped Alertmanager config in a real Alertmanager: who is paged, what inhibits
what, and an announced maintenance window."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from datetime import time as dt_time
from pathlib import Path

import pytest
import yaml

from ops.recorder import Recorder
from ops.stack import Alertmanager
from tests.conftest import INSMON, free_port, wait_for
from vocabulary import SHANGHAI

SETTLE = 7  # seconds: longer than any group_wait of grades I and II (0 s, 5 s)


def owed(manager: Alertmanager) -> set[tuple[str, str]]:
    """(team, alertname) of every page Alertmanager is bound to send for what it holds:
    each alert neither silenced nor inhibited pages each receiver its routes match that
    delivers anything (GET /api/v2/alerts says both, worked out as it answers)."""
    config = yaml.safe_load(manager.config_file.read_text())
    silent = {r["name"] for r in config["receivers"]
              if not any(key.endswith("_configs") for key in r)}
    return {(r["name"], a["labels"]["alertname"]) for a in manager.alerts()
            if a["status"]["state"] == "active" for r in a["receivers"]
            if r["name"] not in silent}


def paged(recorder: Recorder) -> set[tuple[str, str]]:
    return {(p.team, name) for p in recorder.received("firing") for name in p.alertnames}


def settled(stack: tuple[Alertmanager, Recorder], done: Callable[[], object],
            what: str) -> None:
    """Right after the alerts are posted: wait for the pages that must come, however long
    a busy host takes, and until every page Alertmanager owes has come (`owed`): a team
    it owes none gets none for these alerts, with no sleep to prove it. (The assertions
    that follow say what is missing.)"""
    manager, recorder = stack
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: done() and owed(manager) <= paged(recorder), 60, what)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Alertmanager, Recorder]]:
    recorder = Recorder()
    manager = Alertmanager(tmp_path / "am", recorder.url)
    yield manager, recorder
    manager.stop()
    recorder.close()


def test_level_one_pages_its_teams_leadership_and_the_settlement_center(stack) -> None:
    manager, recorder = stack
    manager.post(alert("SettlementPathDown", "I", "network", "h1", also="insurance_agency"))
    expected = {"network", "insurance_agency", "leadership", "settlement_center"}
    settled(stack, lambda: recorder.teams("SettlementPathDown") == expected, "the Level I pages")
    assert recorder.teams("SettlementPathDown") == expected  # and nobody else
    page = next(p for p in recorder.received() if p.team == "leadership")
    assert page.body["commonLabels"]["site"] == "h1"


def test_root_causes_hold_back_their_symptoms(stack) -> None:
    """Each cause known to Alertmanager, its symptoms are held back. (Alertmanager mutes
    with the causes its inhibitor has taken in: a Level I symptom in the very batch of its
    cause, at group_wait 0 s, can page before that on a busy host, as seen once here.)"""
    manager, recorder = stack
    causes = (alert("SettlementPathDown", "I", "network", "h2", also="insurance_agency"),
              alert("SettlementChainCollapsed", "I", "network", "h3",
                    also="insurance_agency,server_ops,vendor"),
              alert("CpuSaturated", "II", "server_ops", "h4", instance="db1"))
    manager.post(*causes)
    wait_for(lambda: len(manager.alerts()) == len(causes), 30, "the causes taken in")
    manager.post(
        alert("FrontEndHttpFailing", "II", "insurance_agency", "h2", also="network",
              check="fe-http"),
        alert("RaidArrayFailed", "I", "server_ops", "h3", also="vendor", instance="db1",
              array="md0"),
        alert("CpuHigh", "III", "server_ops", "h4", instance="db1"))
    settled(stack, lambda: recorder.teams("SettlementPathDown") and len(recorder.teams(
        "SettlementChainCollapsed")) == 6 and recorder.teams("CpuSaturated"),
        "the causes' pages")
    assert recorder.teams("SettlementPathDown")
    assert recorder.teams("FrontEndHttpFailing") == set()  # the path is the cause
    assert recorder.teams("SettlementChainCollapsed") == {
        "network", "insurance_agency", "server_ops", "vendor", "leadership",
        "settlement_center"}
    assert recorder.teams("RaidArrayFailed") == set()  # named by the compound incident
    assert recorder.teams("CpuSaturated") == {"server_ops"}
    assert recorder.teams("CpuHigh") == set()


def test_a_maintenance_window_holds_back_the_expected_not_the_rest(stack,
                                                                   tmp_path: Path) -> None:
    manager, recorder = stack
    result = subprocess.run(
        [INSMON, "maintenance", "--audit", str(tmp_path), "--alertmanager", manager.url,
         "--site", "h5",
         "--from", time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 60)),
         "--to", time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 3600)),
         "--comment", "智慧医保 platform cutover, notice 2026-118"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("silence ")
    manager.post(
        alert("FrontEndUnreachable", "I", "insurance_agency", "h5", also="network"),
        alert("RaidArrayFailed", "I", "server_ops", "h5", also="vendor", instance="db1",
              array="md0"),
        alert("FrontEndUnreachable", "I", "insurance_agency", "h6", also="network"))
    settled(stack, lambda: recorder.teams("FrontEndUnreachable") and "server_ops" in recorder.teams(
        "RaidArrayFailed"), "the pages outside the window")
    assert recorder.teams("FrontEndUnreachable") != set()  # h6 has no window: it pages
    assert all(p.body["commonLabels"]["site"] == "h6" for p in recorder.received()
               if "FrontEndUnreachable" in p.alertnames)
    assert "server_ops" in recorder.teams("RaidArrayFailed")  # unexpected: it pages


def test_a_cause_never_hides_an_independent_fault_on_the_same_host_or_site(stack) -> None:
    """Inhibition only for what the cause explains: a failed md0 does not hide a degraded
    md1 or the cache volume's IO on the same server; the collapsed chain does not hide a
    degraded spare array; the path down does not hide the CPU of the same site."""
    manager, recorder = stack
    manager.post(
        alert("RaidArrayFailed", "I", "server_ops", "h7", also="vendor", instance="db1",
              array="md0"),
        alert("RaidArrayDegraded", "II", "server_ops", "h7", also="vendor", instance="db1",
              array="md1"),
        alert("StorageLatencyCritical", "II", "server_ops", "h7", also="vendor",
              instance="db1", device="sdb"),
        alert("SettlementChainCollapsed", "I", "network", "h8",
              also="insurance_agency,server_ops,vendor"),
        alert("RaidArrayDegraded", "II", "server_ops", "h8", also="vendor", instance="db2",
              array="spare"),
        alert("SettlementPathDown", "I", "network", "h9", also="insurance_agency"),
        alert("CpuSaturated", "II", "server_ops", "h9", instance="db3"))
    def degraded() -> set[str]:
        return {a["labels"]["array"] for p in recorder.received("firing")
                if "RaidArrayDegraded" in p.alertnames for a in p.body["alerts"]}

    settled(stack, lambda: degraded() == {"md1", "spare"} and recorder.teams(
        "StorageLatencyCritical") and recorder.teams("CpuSaturated"),
        "every independent fault's page")
    assert degraded() == {"md1", "spare"}  # neither hidden by its host's or site's Level I
    assert "server_ops" in recorder.teams("StorageLatencyCritical")
    assert recorder.teams("CpuSaturated") == {"server_ops"}
    held = {a["labels"]["alertname"] for a in manager.alerts() if a["status"]["inhibitedBy"]}
    assert held == set()


def test_a_raised_grade_holds_back_its_base_grade_of_the_same_check_only(stack) -> None:
    """In peak hours an alert fires at its raised grade and at its base grade beneath:
    only the raised one pages; the same alert of another check pages at its own grade."""
    manager, recorder = stack
    manager.post(
        alert("FrontEndHttpFailing", "I", "insurance_agency", "h11", also="network",
              check="fe-http"),
        alert("FrontEndHttpFailing", "II", "insurance_agency", "h11", also="network",
              check="fe-http"),
        alert("FrontEndHttpFailing", "II", "insurance_agency", "h11", also="network",
              check="fe-2"),
        # a certificate's tiers: within 7 days it is III, and still IV beneath
        alert("FrontEndCertificateExpiring", "III", "insurance_agency", "h11", also="vendor",
              check="fe-http"),
        alert("FrontEndCertificateExpiring", "IV", "insurance_agency", "h11", also="vendor",
              check="fe-http"))
    def graded() -> set[tuple[str, str, str]]:
        return {(a["labels"]["alertname"], a["labels"]["check"], a["labels"]["grade"])
                for p in recorder.received("firing") for a in p.body["alerts"]}

    pages = {("FrontEndHttpFailing", "fe-http", "I"), ("FrontEndHttpFailing", "fe-2", "II"),
             ("FrontEndCertificateExpiring", "fe-http", "III")}  # III: after its 10 s wait
    settled(stack, lambda: graded() >= pages, "the raised grades' and the other check's pages")
    held = [a["labels"] for a in manager.alerts() if a["status"]["inhibitedBy"]]
    assert sorted((a["alertname"], a["check"], a["grade"]) for a in held) == [
        ("FrontEndCertificateExpiring", "fe-http", "IV"), ("FrontEndHttpFailing", "fe-http", "II")]
    assert graded() == pages


def test_outside_business_hours_holds_back_grade_four_only_until_it_resolves(stack) -> None:
    """The calendar's "outside business hours" pages nobody and holds back grade IV; grade
    III pages at once; when business hours begin, the grade IV alert is no longer held."""
    manager, recorder = stack
    hours = {"labels": {"alertname": "OutsideBusinessHours", "team": "server_ops",
                        "service": "monitor", "site": "h12"},
             "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    manager.post(hours,
                 alert("FrontEndCertificateExpiring", "IV", "insurance_agency", "h12",
                       check="fe-http"),
                 alert("TerminalDown", "III", "network", "h13", target="win-3"))
    settled(stack, lambda: any(a["status"]["inhibitedBy"] for a in manager.alerts()),
            "outside business hours to hold back an alert")
    held = {a["labels"]["alertname"] for a in manager.alerts() if a["status"]["inhibitedBy"]}
    assert held == {"FrontEndCertificateExpiring"}
    wait_for(lambda: recorder.teams("TerminalDown") == {"network"}, 40,  # group_wait 10 s
             "grade III's page, which goes out at all hours")
    assert recorder.teams("OutsideBusinessHours") == set()  # pages nobody
    manager.post({**hours, "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    wait_for(lambda: not any(a["status"]["inhibitedBy"] for a in manager.alerts()), 10,
             "business hours to release the grade IV alert")


def test_the_clustered_pair_pages_once_and_keeps_paging_when_one_dies(tmp_path: Path) -> None:
    """The HA pair as Prometheus uses it: every alert is sent to both. Each team gets each
    page once; after one of them is killed (-9), the other still pages, once."""
    recorder = Recorder()
    ports = free_port(), free_port()
    pair = [Alertmanager(tmp_path / "am-1", recorder.url, ports[0], (f"127.0.0.1:{ports[1]}",)),
            Alertmanager(tmp_path / "am-2", recorder.url, ports[1], (f"127.0.0.1:{ports[0]}",))]
    try:
        wait_for(lambda: all(len(m.status()["cluster"]["peers"]) == 2 and
                             m.status()["cluster"]["status"] == "ready" for m in pair),
                 60, "the pair to form its cluster")
        first = alert("SettlementPathDown", "I", "network", "h10", also="insurance_agency")
        for manager in pair:
            manager.post(first)
        teams = {"network", "insurance_agency", "leadership", "settlement_center"}
        wait_for(lambda: recorder.teams("SettlementPathDown") == teams, 20, "the pages")
        time.sleep(8)  # past the second's wait (peer position x peer timeout): no double
        pages = [p.team for p in recorder.received("firing")]
        assert sorted(pages) == sorted(teams)

        pair[0].proc.kill()
        pair[0].proc.wait(timeout=10)
        second = alert("RaidArrayFailed", "I", "server_ops", "h10", also="vendor",
                       instance="db1", array="md0")
        pair[1].post(second)  # Prometheus' send to the dead one fails; this one takes it
        teams = {"server_ops", "vendor", "leadership", "settlement_center"}
        wait_for(lambda: recorder.teams("RaidArrayFailed") == teams, 30, "the survivor's pages")
        time.sleep(SETTLE)
        raid = [p.team for p in recorder.received("firing") if "RaidArrayFailed" in p.alertnames]
        assert sorted(raid) == sorted(teams)
    finally:
        for manager in pair:
            manager.stop()
        recorder.close()


def window(hours: float = 10) -> list[str]:
    """`--from` tomorrow 20:00 Beijing time (by the test's own clock) `--to` `hours` later:
    a window still to come whatever day the test runs."""
    start = datetime.combine(datetime.now(SHANGHAI).date() + timedelta(days=1),
                             dt_time(20, 0))
    return ["--from", f"{start:%Y-%m-%dT%H:%M}",
            "--to", f"{start + timedelta(hours=hours):%Y-%m-%dT%H:%M}"]


@pytest.mark.dates
def test_maintenance_says_why_it_failed(tmp_path: Path) -> None:
    result = subprocess.run(
        [INSMON, "maintenance", "--audit", str(tmp_path), "--alertmanager",
         "http://127.0.0.1:9", "--site", "h1", *window(), "--comment", "cutover"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.startswith("insmon maintenance: cannot reach Alertmanager at "
                                    "http://127.0.0.1:9")


@pytest.mark.dates
@pytest.mark.parametrize(("args", "error"), [
    (["--site", "h1", *window(hours=3653 * 24)],
     "the window is 3653.0 days long, over 14 days: check the dates, or give --reason "
     "saying why it is"),
    (["--site", " ", *window()], "--site is empty"),
    (["--site", "h1", "--from", "0001-01-01T00:00", "--to", "0001-01-02T00:00"],
     "the window ended already"),
])
def test_maintenance_refuses_a_window_that_is_a_typo(args: list[str], error: str,
                                                     tmp_path: Path) -> None:
    result = subprocess.run([INSMON, "maintenance", "--audit", str(tmp_path),
                             "--alertmanager", "http://127.0.0.1:9",
                             *args, "--comment", "cutover"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"insmon maintenance: {error}"), result.stderr


@pytest.mark.dates
def test_maintenance_checks_what_alertmanager_answered(tmp_path: Path) -> None:
    from ops.recorder import Recorder

    lying = Recorder()  # answers 200 with an empty body: no silence id
    try:
        result = subprocess.run(
            [INSMON, "maintenance", "--audit", str(tmp_path), "--alertmanager", lying.url,
             "--site", "h1", *window(), "--comment", "cutover"],
            capture_output=True, text=True, timeout=30)
    finally:
        lying.close()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "answered with no JSON" in result.stderr


def alert(name: str, grade: str, team: str, site: str, also: str = "", **labels: str) -> dict:
    """An alert as Prometheus sends it, for posting straight to Alertmanager."""
    return {"labels": {"alertname": name, "grade": grade, "team": team, "site": site,
                       "service": "test", **({"also": also} if also else {}), **labels},
            "annotations": {"summary": f"{site}: {name}", "summary_zh": name,
                            "description": name, "runbook": f"runbooks/{name}.md"},
            "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
