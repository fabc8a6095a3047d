"""The alert rules and the routing, with the real promtool and amtool."""

from __future__ import annotations

import itertools
import re
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from vocabulary import GRADES, SHANGHAI

RULES = ROOT / "alert_rules"
TEAMS = ("network", "server_ops", "database", "insurance_agency", "vendor",
         "settlement_center", "leadership")


NOT_FAULTS = ("Watchdog", "OutsideBusinessHours")  # ungraded: they page nobody


def alerts() -> list[dict]:
    groups = yaml.safe_load((RULES / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    # a bound against a hang, not a speed test: the slowest promtool file takes about 18 s
    # of CPU alone (it was 100 s), several times that in wall time on a busy two-core host
    return subprocess.run(argv, capture_output=True, text=True, timeout=880, cwd=RULES)


def test_promtool_checks_the_rules() -> None:
    result = run("promtool", "check", "rules", "recording.yml", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(900)  # promtool evaluates every rule at every step from t=0 (run's bound)
@pytest.mark.parametrize("tests", sorted((RULES / "tests").glob("*.yml")), ids=lambda p: p.name)
def test_promtool_unit_tests_pass(tests: Path) -> None:
    result = run("promtool", "test", "rules", str(tests.relative_to(RULES)))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("rule", alerts(),
                         ids=lambda r: f"{r['alert']}-{r['labels'].get('grade', 'none')}")
def test_every_alert_is_graded_owned_explained_and_tested(rule: dict) -> None:
    labels, notes = rule["labels"], rule["annotations"]
    if rule["alert"] in NOT_FAULTS:  # the alert path's heartbeat, the calendar's hours
        labels = {**labels, "grade": "none"}
    else:
        assert labels["grade"] in GRADES
    assert labels["team"] in TEAMS and labels["team"] != "leadership"
    for team in filter(None, labels.get("also", "").split(",")):
        assert team in TEAMS
    assert labels["service"]
    assert set(notes) == {"summary", "summary_zh", "description", "runbook"}
    assert (RULES / notes["runbook"]).is_file()
    # the unit tests fire this alert with this grade at least once
    fired = set()
    for path in (RULES / "tests").glob("*.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                for alert in case["exp_alerts"]:
                    fired.add((case["alertname"], alert["exp_labels"].get("grade", "none")))
    assert (rule["alert"], labels["grade"]) in fired


def test_every_grade_raised_in_peak_hours_says_when_they_are_provisional() -> None:
    """Peak hours past the calendar's data rest on the law's holidays alone: an alert
    graded by them says so (calendar_test.yml shows one doing it), in each variant."""
    peak = {rule["alert"] for rule in alerts() if "insmon:peak_hours" in rule["expr"]}
    assert len(peak) >= 6
    for rule in alerts():
        if rule["alert"] in peak:
            assert 'query "max(insmon_calendar_provisional) == 1"' in \
                rule["annotations"]["description"], rule["alert"]


def test_every_runbook_belongs_to_an_alert() -> None:
    # and PagerPeerDown, which the pager that is left pages itself (pager/engine.py)
    names = {rule["alert"] for rule in alerts()} | {"PagerPeerDown"}
    assert {p.stem for p in (RULES / "runbooks").glob("*.md")} == names


def test_amtool_checks_the_config() -> None:
    result = run("amtool", "check-config", "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def routes(**labels: str) -> set[str]:
    result = run("amtool", "config", "routes", "test", "--config.file=alertmanager.yml",
                 *(f"{k}={v}" for k, v in labels.items()))
    assert result.returncode == 0, result.stderr
    return set(result.stdout.strip().split(","))


OWNERS = ("network", "server_ops", "database", "insurance_agency", "vendor",
          "settlement_center")


@pytest.mark.parametrize(("grade", "team"), list(itertools.product(GRADES, OWNERS)))
def test_each_grade_pages_its_team_and_level_one_reaches_leadership(grade: str,
                                                                     team: str) -> None:
    expected = {team} | ({"leadership", "settlement_center"} if grade == "I" else set())
    assert routes(grade=grade, team=team, site="h1") == expected


@pytest.mark.parametrize(("alert", "expected"), [
    ("SettlementPathDown", {"network", "insurance_agency", "leadership", "settlement_center"}),
    ("PrimaryLineDown", {"network", "insurance_agency"}),
    ("RaidArrayFailed", {"server_ops", "vendor", "leadership", "settlement_center"}),
    ("TerminalDown", {"network", "settlement_center"}),
    ("SettlementChainCollapsed", {"network", "insurance_agency", "server_ops", "vendor",
                                  "leadership", "settlement_center"}),
])
def test_a_fault_pages_every_team_it_concerns(alert: str, expected: set[str]) -> None:
    rule = next(r for r in alerts() if r["alert"] == alert)
    labels = {k: v for k, v in rule["labels"].items() if v}
    assert routes(alertname=alert, site="h1", **labels) == expected


def test_the_watchdog_reaches_only_its_dead_mans_switch() -> None:
    watchdog = next(r for r in alerts() if r["alert"] == "Watchdog")
    assert watchdog["expr"] == "vector(1)" and "for" not in watchdog
    assert routes(alertname="Watchdog", site="h1", **watchdog["labels"]) == {"watchdog"}
    assert routes(alertname="Watchdog", drill="true", **watchdog["labels"]) == {"nobody"}
    config = yaml.safe_load((RULES / "alertmanager.yml").read_text())
    [route] = [r for r in config["route"]["routes"] if r.get("receiver") == "watchdog"]
    assert route["repeat_interval"] == "1m"  # the switch hears it every minute


def test_drills_and_unknown_alerts() -> None:
    for grade in ("I", "II", "III", "IV", "V"):
        assert routes(grade=grade, team="network", also="leadership", drill="true") == {"drill"}
    assert routes(alertname="SomethingNew", drill="true") == {"drill"}
    assert routes(alertname="SomethingNew") == {"unrouted"}


def test_grade_four_waits_for_business_hours_and_pages_nobody_about_them() -> None:
    hours = next(r for r in alerts() if r["alert"] == "OutsideBusinessHours")
    assert routes(alertname="OutsideBusinessHours", **hours["labels"]) == {"nobody"}
    config = yaml.safe_load((RULES / "alertmanager.yml").read_text())
    [rule] = [r for r in config["inhibit_rules"]
              if r["source_matchers"] == ['alertname="OutsideBusinessHours"']]
    assert rule["target_matchers"] == ['grade="IV"']  # grades I to III page at all hours
    assert "time_intervals" not in config  # the calendar's, not Monday to Friday


def render_template(text: str) -> str:
    result = run("amtool", "template", "render", "--template.glob=templates/insmon.tmpl",
                 f"--template.text={text}")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_notifications_grade_unknown_as_unknown_and_tell_shanghai_time() -> None:
    grades = render_template(
        '{{ template "insmon.grade_zh" "I" }}|{{ template "insmon.grade_zh" "IV" }}|'
        '{{ template "insmon.grade_zh" "" }}')
    assert grades.strip() == "一级（特别重大）|四级（一般）|未分级（grade unknown）"
    # amtool's example alerts started minutes ago: their time on the hospital's clock
    text = render_template('{{ template "insmon.text" . }}')
    times = re.findall(r"开始 since: (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) 北京时间", text)
    assert times
    for since in times:
        shown = datetime.strptime(since, "%Y-%m-%d %H:%M:%S").replace(tzinfo=SHANGHAI)
        assert abs((datetime.now(SHANGHAI) - shown).total_seconds()) < 3600
