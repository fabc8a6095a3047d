"""The monthly report (`insmon report`) on two months of history backfilled into a real
Prometheus (promtool tsdb create-blocks-from openmetrics) and into VictoriaMetrics, with
known outages, time on the 4G backup, announced maintenance, a blind spell inside an
outage and others, incidents opened on the pager's own clock in a past month and a
drill: its figures to the minute, MTTA and MTTR against a hand computation, the XLSX
read back (numbers as numbers), the HTML rendered by headless Chromium with Chinese
glyphs, a PDF, and a maintenance window whose record does not verify left in. The
months are the two before last, by the test's clock."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from openpyxl import load_workbook

from monitor.audit import Trail
from ops.stack import Server, free_port
from pager import records
from pager.clock import Clock
from pager.config import load as load_pager
from pager.engine import Engine
from pager.store import Store
from tests.conftest import INSMON
from tests.test_pager import Rig, notification
from vocabulary import SHANGHAI

pytestmark = [pytest.mark.xdist_group("report"), pytest.mark.timeout(900)]


def month_start(back: int) -> datetime:
    """The first moment of the month `back` months before this one (Beijing time)."""
    first = datetime.now(SHANGHAI).replace(day=1, hour=0, minute=0, second=0,
                                           microsecond=0)
    for _ in range(back):
        first = (first - timedelta(days=1)).replace(day=1)
    return first


REPORTED = month_start(2)   # the month reported
BEFORE = month_start(3)     # the month before it, for the trend
AFTER = month_start(1)
MONTH = f"{REPORTED:%Y-%m}"
MINUTES = int((AFTER - REPORTED).total_seconds() // 60)          # in the month reported
MINUTES_BEFORE = int((REPORTED - BEFORE).total_seconds() // 60)


def at(day: int, hour: int, minute: int, month: datetime = REPORTED) -> datetime:
    return month.replace(day=day, hour=hour, minute=minute)


def span(start: datetime, minutes: int) -> set[datetime]:
    return {start + timedelta(minutes=i) for i in range(minutes)}


# h1: 47 min on the backup (primary line cut, PrimaryLineDown II); 12 min with no
# settlement path (SettlementPathDown I from its 2nd minute); 90 min down inside the
# announced 02:00-04:00 window; 5 min when the platform refused (SettlementImpossible I).
BACKUP = span(at(9, 10, 0), 47)
PATH_DOWN = span(at(15, 9, 30), 12)
MAINTENANCE_DOWN = span(at(18, 2, 10), 90)
REFUSED = span(at(22, 14, 0), 5)
# h1, the month before: 30 min lost, no alert. h2 (no settlement check): 3 min lost.
BEFORE_DOWN = span(at(20, 10, 0, BEFORE), 30)
H2_DOWN = span(at(5, 8, 0), 3)
# h3 (issue 33, 4): the line down 16:00-17:00 with insmon blind 16:20-16:40 (no sample at
# all); blind 03:00-03:30 with the line up on both sides; down 08:00-08:10 then blind
# until 08:25, up after.
H3_DOWN = span(at(12, 16, 0), 60) | span(at(24, 8, 0), 10)
H3_BLIND = span(at(12, 16, 20), 20) | span(at(20, 3, 0), 30) | span(at(24, 8, 10), 15)


def history() -> list[tuple[str, dict[str, str], float, float]]:
    """(metric, labels, value, unix time) of every sample: one a minute, in the minute."""
    samples = []
    minute = BEFORE
    while minute < AFTER:
        t = (minute + timedelta(seconds=30)).timestamp()
        down = minute in PATH_DOWN or minute in MAINTENANCE_DOWN or minute in BEFORE_DOWN
        role = "backup" if minute in BACKUP else "none" if down else "primary"
        h1 = {"site": "h1", "job": "insmon"}
        samples += [("insmon_settlement_path_up", h1, 0.0 if down else 1.0, t),
                    ("insmon_settlement_possible", h1, 0.0 if down or minute in REFUSED
                     else 1.0, t),
                    ("insmon_settlement_active_role", {**h1, "role": role}, 1.0, t)]
        for alert, grade, service, when in (
                ("PrimaryLineDown", "II", "private_network", BACKUP),
                ("SettlementPathDown", "I", "private_network", PATH_DOWN - {at(15, 9, 30)}),
                ("SettlementImpossible", "I", "settlement_platform", REFUSED)):
            if minute in when:
                samples.append(("ALERTS", {"alertname": alert, "alertstate": "firing",
                                           "grade": grade, "service": service,
                                           "site": "h1", "team": "network"}, 1.0, t))
        if minute >= REPORTED:
            h2 = {"site": "h2", "job": "insmon"}
            lost = minute in H2_DOWN
            samples.append(("insmon_settlement_path_up", h2, 0.0 if lost else 1.0, t))
            samples.append(("insmon_settlement_active_role",
                            {**h2, "role": "none" if lost else "primary"}, 1.0, t))
            if minute not in H3_BLIND:
                samples.append(("insmon_settlement_path_up", {"site": "h3", "job": "insmon"},
                                0.0 if minute in H3_DOWN else 1.0, t))
        minute += timedelta(minutes=1)
    return samples


def labelled(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("history")
    samples = history()
    # one OpenMetrics file a day: promtool reads its whole input for each 2-hour block
    days: dict[str, dict[str, list[str]]] = {}
    for name, labels, value, t in samples:
        day = datetime.fromtimestamp(t, SHANGHAI).strftime("%Y-%m-%d")
        days.setdefault(day, {}).setdefault(name, []).append(
            f"{labelled(name, labels)} {value} {t:.3f}\n")
    for day, families in days.items():
        openmetrics = tmp / f"{day}.om"
        with openmetrics.open("w") as out:
            for name, lines in families.items():
                out.write(f"# TYPE {name} gauge\n")
                out.writelines(lines)
            out.write("# EOF\n")
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                        str(openmetrics), str(tmp / "prometheus")], check=True, timeout=120,
                       capture_output=True)
        openmetrics.unlink()
    (tmp / "prometheus.yml").write_text("global: {scrape_interval: 1m}\n")
    port = free_port()
    prometheus = Server(tmp, "prometheus", [
        "prometheus", f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'prometheus'}", "--storage.tsdb.retention.time=100y",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        f"http://127.0.0.1:{port}", "/-/ready")
    port = free_port()
    victoria = Server(tmp, "victoria-metrics", [
        "victoria-metrics", f"-storageDataPath={tmp / 'vm'}", "-retentionPeriod=100y",
        f"-httpListenAddr=127.0.0.1:{port}", "-search.latencyOffset=1s"],
        f"http://127.0.0.1:{port}", "/health")
    try:
        text = "".join(f"{labelled(n, labels)} {v} {int(t * 1000)}\n"
                       for n, labels, v, t in samples).encode()
        urllib.request.urlopen(urllib.request.Request(
            f"{victoria.url}/api/v1/import/prometheus", data=text, method="POST"),
            timeout=300).read()
        urllib.request.urlopen(f"{victoria.url}/internal/force_flush", timeout=60).read()
        yield {"prometheus": prometheus.url, "victoria-metrics": victoria.url}
    finally:
        prometheus.stop()
        victoria.stop()


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("trail") / "audit"
    trail = Trail.open(folder, create_key=True)
    trail.append("maintenance-declared", "zhangsan", "ok",
                 {"site": "h1", "from": at(18, 2, 0).isoformat(),
                  "to": at(18, 4, 0).isoformat(), "comment": "省平台升级 公告2026-31",
                  "silence": "s-1"}, at=at(16, 9, 0))
    trail.append("maintenance-declared", "lisi", "refused",
                 {"site": "h1", "from": at(1, 0, 0).isoformat(),
                  "to": at(28, 0, 0).isoformat(), "comment": "typo"}, at=at(16, 9, 5))
    trail.append("drill", "wangwu", "passed", {"scenario": "reference",
                                               "title": "参考演练"}, at=at(25, 15, 0))
    return folder


# incidents of h1 in the month, opened, acknowledged and resolved on the pager's clock:
# (alert, grade, started, seconds after it: paged, acknowledged, resolved, by whom)
INCIDENTS = (("PrimaryLineDown", "II", at(9, 10, 1), 5, 10 * 60 + 5, 47 * 60 + 5, "li"),
             ("SettlementPathDown", "I", at(15, 9, 31), 10, 190, 730, "zhang"),
             ("SettlementImpossible", "I", at(22, 14, 1), 20, 260, 290, "li"))


@pytest.fixture(scope="module")
def pager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real pager whose store holds the month's incidents: made by its engine on a
    clock the test sets (the pager's own Clock, its wall and boot clocks), then served by
    the `insmon pager run` process."""
    tmp = tmp_path_factory.mktemp("pager")
    rig = Rig(tmp)
    try:
        path = tmp / "pager.yaml"
        path.write_text(json.dumps(rig.config(), ensure_ascii=False))
        now = [0.0]
        store = Store(load_pager(path).database)
        engine = Engine(load_pager(path), store,
                        Clock(None, wall=lambda: now[0], monotonic=lambda: now[0]))
        for alert, grade, started, paged, acked, resolved, acker in INCIDENTS:
            firing = notification(alertname=alert, grade=grade, fingerprint=alert, site="h1")
            firing["alerts"][0]["startsAt"] = started.isoformat()
            now[0] = started.timestamp() + paged
            engine.intake("network", json.dumps(firing).encode())
            [incident] = [i for i in records.incidents(store) if i.alertname == alert]
            now[0] = started.timestamp() + acked
            assert engine.ack(incident["id"], acker, "link")
            resolved_body = notification("resolved", alertname=alert, grade=grade,
                                         fingerprint=alert, site="h1")
            resolved_body["alerts"][0]["startsAt"] = started.isoformat()
            now[0] = started.timestamp() + resolved
            engine.intake("network", json.dumps(resolved_body).encode())
        store.close()
        process = rig.start(rig.config())
        yield process.url, rig.token_file
    finally:
        rig.close()


@pytest.fixture(scope="module", params=["prometheus", "victoria-metrics"])
def report(request, backends: dict[str, str], trail: Path, pager: tuple[str, Path],
           tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp(f"report-{request.param}")
    url, token = pager
    done = subprocess.run(
        [INSMON, "report", "--month", MONTH, "--prometheus", backends[request.param],
         "--pager", url, "--audit", str(trail), "--out", str(out)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "INSMON_PAGER_TOKEN_FILE": str(token)})
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


def percent(value: float) -> str:
    return f"{value * 100:.3f}%"


def test_the_figures_are_right_to_the_minute(report: tuple[Path, str]) -> None:
    out, said = report
    counted = MINUTES - 120
    assert f"h1 {MONTH}: {percent(1 - 17 / counted)} available, 17 min lost, 47 min on the " \
           "backup, 120 min announced maintenance" in said, said
    assert f"h2 {MONTH}: {percent(1 - 3 / MINUTES)} available, 3 min lost, 0 min on the " \
           "backup, 0 min" in said
    book = load_workbook(out / "summary.xlsx")
    sheet = book["汇总 Summary"]
    rows = {row[0]: row for row in sheet.iter_rows(min_row=2, values_only=True)}
    # site, month, availability, counted, primary, backup, lost, maintenance, unmeasured,
    # longest, incidents, budget left, windows not verified, the trail's verification
    assert rows["h1"][1:13] == pytest.approx(
        (MONTH, 1 - 17 / counted, counted, counted - 64, 47, 17, 120, 0, 12, 3,
         0.001 * counted - 17, 0))
    assert rows["h2"][1:13] == pytest.approx(
        (MONTH, 1 - 3 / MINUTES, MINUTES, MINUTES - 3, 0, 3, 0, 0, 3, 0,
         0.001 * MINUTES - 3, 0))
    assert ": every record is as written" in rows["h1"][13]
    # the region's summary is read from the top: the least available site first
    assert list(rows) == ["h3", "h1", "h2"]
    summary = (out / "summary.html").read_text()
    assert summary.index(">h3<") < summary.index(">h1<") < summary.index(">h2<")
    h1 = load_workbook(out / "h1" / "report.xlsx")
    grades = {r[0]: r[1] for r in h1["h1 按级别中断分钟"].iter_rows(min_row=2, values_only=True)}
    assert grades == {"I": 16, "-": 1}
    causes = dict(h1["h1 按原因中断分钟"].iter_rows(min_row=2, values_only=True))
    assert causes == {"医保专网 private network": 11, "医保平台 insurance platform": 5,
                      "未告警 no alert fired": 1}
    outages = list(h1["h1 中断"].iter_rows(min_row=2, values_only=True))
    assert outages == [(naive(at(15, 9, 30)), 12, "中断 down", "I", "医保专网"),
                       (naive(at(22, 14, 0)), 5, "中断 down", "I", "医保平台")]
    [window] = h1["h1 公告维护（不计入）"].iter_rows(min_row=2, values_only=True)
    assert window == (naive(at(18, 2, 0)), naive(at(18, 4, 0)), "zhangsan",
                      "省平台升级 公告2026-31", "s-1")


def flat(rows) -> list:
    return [cell for row in rows for cell in row]


def naive(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None)


def test_the_workbook_holds_numbers_and_times_with_their_formats(
        report: tuple[Path, str]) -> None:
    """Issue 33 (5): the detail sheets stored numbers as text ('47')."""
    out, _ = report
    h1 = load_workbook(out / "h1" / "report.xlsx")
    [first, _] = list(h1["h1 中断"].iter_rows(min_row=2))
    assert (first[0].data_type, first[0].number_format) == ("d", "yyyy-mm-dd hh:mm")
    assert (first[1].data_type, first[1].number_format) == ("n", "0")
    incident = next(h1["h1 事件"].iter_rows(min_row=2))
    assert (incident[9].data_type, incident[9].number_format) == ("n", "0.0")
    summary = list(load_workbook(out / "summary.xlsx")["汇总 Summary"].iter_rows(min_row=2))
    assert summary[0][2].number_format == "0.000%" and summary[0][3].data_type == "n"


def test_blind_minutes_inside_an_outage_count_as_down(report: tuple[Path, str]) -> None:
    """Issue 33 (4): a line down 16:00-17:00 with insmon blind 16:20-16:40 showed as two
    20-minute outages, the blind minutes left out of the figure, the real longest outage
    not shown. Now they count as down and join the outage; other blind spells are shown,
    with their length, as not measured."""
    out, said = report
    unmeasured = 30 + 15
    counted = MINUTES - unmeasured
    lost = 60 + 10
    assert f"h3 {MONTH}: {percent(1 - lost / counted)} available, {lost} min lost" in said
    rows = {row[0]: row for row in load_workbook(out / "summary.xlsx")["汇总 Summary"]
            .iter_rows(min_row=2, values_only=True)}
    # availability, counted, lost, not measured, longest
    assert (rows["h3"][2], rows["h3"][3], rows["h3"][6], rows["h3"][8], rows["h3"][9]) == \
        pytest.approx((1 - lost / counted, counted, lost, unmeasured, 60))
    h3 = load_workbook(out / "h3" / "report.xlsx")
    assert list(h3["h3 中断"].iter_rows(min_row=2, values_only=True)) == [
        (naive(at(12, 16, 0)), 60, "中断 down", "-", "未告警"),
        (naive(at(20, 3, 0)), 30, "无数据 not measured", "-", "-"),
        (naive(at(24, 8, 0)), 10, "中断 down", "-", "未告警"),
        (naive(at(24, 8, 10)), 15, "无数据 not measured", "-", "-")]
    causes = dict(h3["h3 按原因中断分钟"].iter_rows(min_row=2, values_only=True))
    assert causes == {"未告警 no alert fired": 50,
                      "无数据，前后均中断 not measured, down before and after": 20}
    first_page = (out / "h3" / "report.html").read_text().split("<img")[0]
    assert "20 minute(s) not measured with the path down before and after count as down" \
        in first_page
    assert f"2 段 spells: {at(20, 3, 0):%m-%d %H:%M} 30 分钟 min; " \
           f"{at(24, 8, 10):%m-%d %H:%M} 15 分钟 min" in first_page
    assert f"{at(12, 16, 0):%m-%d %H:%M} 起 60 分钟 min" in first_page  # the longest


def test_incidents_mtta_mttr_drills_and_the_trend(report: tuple[Path, str]) -> None:
    """Issue 33 (7): MTTA and MTTR of a past month, the incidents opened on the pager's
    own clock then, against a hand computation."""
    out, _ = report
    h1 = load_workbook(out / "h1" / "report.xlsx")
    incidents = list(h1["h1 事件"].iter_rows(min_row=2, values_only=True))
    assert [(i[0], i[1], i[3], i[4], i[5], i[6], i[7], i[8]) for i in incidents] == [
        (grade, alert, naive(started), naive(started + timedelta(seconds=paged)),
         naive(started + timedelta(seconds=acked)), {"li": "李四", "zhang": "张三"}[by],
         "link", naive(started + timedelta(seconds=resolved)))
        for alert, grade, started, paged, acked, resolved, by in INCIDENTS]
    # by hand: MTTA from the page to the acknowledgement, MTTR from the start to the end
    mtta = {a: (acked - paged) / 60 for a, _, _, paged, acked, _, _ in INCIDENTS}
    mttr = {a: resolved / 60 for a, _, _, _, _, resolved, _ in INCIDENTS}
    assert flat((i[9], i[10]) for i in incidents) == pytest.approx(
        [10.0, 47 + 5 / 60, 3.0, 730 / 60, 4.0, 290 / 60])
    assert flat((i[9], i[10]) for i in incidents) == pytest.approx(
        flat((mtta[i[1]], mttr[i[1]]) for i in incidents))
    by_grade = h1["h1 按级别"].iter_rows(min_row=2, values_only=True)
    assert flat(by_grade) == pytest.approx(["I", 2, (3.0 + 4.0) / 2, (730 + 290) / 2 / 60,
                                            "II", 1, 10.0, (47 * 60 + 5) / 60])
    by_team = h1["h1 按团队"].iter_rows(min_row=2, values_only=True)
    assert flat(by_team) == pytest.approx(
        ["network", 3, (10.0 + 3.0 + 4.0) / 3, (47 * 60 + 5 + 730 + 290) / 3 / 60])
    drills = list(h1["h1 演练"].iter_rows(min_row=2, values_only=True))
    assert drills == [(naive(at(25, 15, 0)), "reference", "passed", "wangwu", "是 yes")]
    page = (out / "h1" / "report.html").read_text()
    # the month before lost 30 minutes: the trend is the difference
    assert f"{(1 - 17 / (MINUTES - 120) - (1 - 30 / MINUTES_BEFORE)) * 100:+.3f} 个百分点" \
        in page


def test_a_window_whose_record_does_not_verify_is_not_left_out(
        backends: dict[str, str], trail: Path, tmp_path: Path) -> None:
    """Issue 33 (1): a maintenance window appended with a bogus hash over an outage was
    left out all the same, the outage vanished and availability rose. Now it is counted,
    and the first page says why."""
    forged = tmp_path / "audit"
    shutil.copytree(trail, forged)
    shutil.copy(trail.with_name("audit.key"), tmp_path / "audit.key")
    good = Trail.open(forged)
    last = list(good.records())[-1]
    body = json.dumps({"seq": last["seq"] + 1, "prev": last["hash"],
                       "at": at(15, 9, 0).isoformat(timespec="milliseconds"),
                       "event": "maintenance-declared", "who": "mallory", "outcome": "ok",
                       "detail": {"site": "h1", "from": at(15, 9, 25).isoformat(),
                                  "to": at(15, 9, 50).isoformat(), "comment": "补录",
                                  "silence": "s-forged"}},
                      ensure_ascii=False, separators=(",", ":"))[:-1]
    with good.files()[-1].open("a", encoding="utf-8") as out:
        out.write(body + ',"hash":"' + "0" * 64 + '"}\n')
    out = tmp_path / "out"
    done = subprocess.run([INSMON, "report", "--month", MONTH, "--prometheus",
                           backends["prometheus"], "--site", "h1", "--audit", str(forged),
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    counted = MINUTES - 120
    assert f"h1 {MONTH}: {percent(1 - 17 / counted)} available, 17 min lost" in done.stdout
    first_page = (out / "report.html").read_text().split("<img")[0]
    assert "1 maintenance window(s) whose audit record does not verify are counted" \
        in first_page
    assert f"mallory: 补录 ({forged}/audit-" in first_page
    assert f"The audit trail {forged} has 2 fault(s)" in first_page
    [row] = load_workbook(out / "report.xlsx")["汇总 Summary"].iter_rows(min_row=2,
                                                                        values_only=True)
    assert row[12] == 1 and "fault(s)" in row[13]
    # the honest trail: the same figure, and no word of it
    done = subprocess.run([INSMON, "report", "--month", MONTH, "--prometheus",
                           backends["prometheus"], "--site", "h1", "--audit", str(trail),
                           "--out", str(tmp_path / "honest")], capture_output=True,
                          text=True, timeout=600)
    assert f"h1 {MONTH}: {percent(1 - 17 / counted)} available" in done.stdout
    honest = (tmp_path / "honest" / "report.html").read_text().split("<img")[0]
    assert "does not verify are counted" not in honest
    # this Prometheus kept no head of that trail: the page does not call it intact
    assert f"The audit trail {trail}: not compared with a witness: the witness " \
           f"Prometheus at {backends['prometheus']} has no view of this trail" in honest


def test_a_window_declared_after_it_began_counts_from_its_declaration(
        backends: dict[str, str], trail: Path, tmp_path: Path) -> None:
    """`insmon maintenance --from` takes a time already past (only the end must be ahead)
    and Alertmanager starts the silence when it is made; yet the report left the window
    out from the start it stated: declared at 09:40 "from 09:25", it hid the outage under
    way since 09:30. Announced maintenance begins, at the earliest, when it is declared."""
    late = tmp_path / "audit"
    shutil.copytree(trail, late)
    shutil.copy(trail.with_name("audit.key"), tmp_path / "audit.key")
    Trail.open(late).append("maintenance-declared", "mallory", "ok",
                            {"site": "h1", "from": at(15, 9, 25).isoformat(),
                             "to": at(15, 9, 50).isoformat(), "comment": "补录",
                             "silence": "s-late"}, at=at(15, 9, 40))
    done = subprocess.run([INSMON, "report", "--month", MONTH, "--prometheus",
                           backends["prometheus"], "--site", "h1", "--audit", str(late),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    # 09:40 to 09:50 left out, two minutes of the outage among them
    counted = MINUTES - 120 - 10
    assert f"h1 {MONTH}: {percent(1 - 15 / counted)} available, 15 min lost, 47 min on the " \
           "backup, 130 min announced maintenance" in done.stdout, done.stdout
    windows = load_workbook(tmp_path / "out" / "report.xlsx")["h1 公告维护（不计入）"]
    assert [row[:3] for row in windows.iter_rows(min_row=2, values_only=True)] == [
        (naive(at(15, 9, 40)), naive(at(15, 9, 50)), "mallory"),
        (naive(at(18, 2, 0)), naive(at(18, 4, 0)), "zhangsan")]


def test_a_record_written_after_the_trail_was_verified_is_not_trusted(
        tmp_path: Path) -> None:
    """The report verifies each trail, then reads its windows: a line written in between
    (here with a made-up hash) was never verified, and was trusted."""
    from ops import report

    trail = Trail.open(tmp_path / "audit", create_key=True)
    window = {"site": "h1", "from": at(3, 2, 0).isoformat(), "to": at(3, 4, 0).isoformat(),
              "comment": "省平台升级", "silence": "s-1"}
    trail.append("maintenance-declared", "zhangsan", "ok", window, at=at(1, 9, 0))
    checked = report.verified([trail], None)
    last = list(trail.records())[-1]
    body = json.dumps({"seq": last["seq"] + 1, "prev": last["hash"],
                       "at": at(4, 9, 0).isoformat(timespec="milliseconds"),
                       "event": "maintenance-declared", "who": "mallory", "outcome": "ok",
                       "detail": {**window, "from": at(5, 9, 0).isoformat(),
                                  "to": at(5, 11, 0).isoformat(), "silence": "s-2"}},
                      ensure_ascii=False, separators=(",", ":"))[:-1]
    with trail.files()[-1].open("a", encoding="utf-8") as out:
        out.write(body + ',"hash":"' + "0" * 64 + '"}\n')
    assert [(w.who, w.trusted) for w in report.windows_from(checked)] == [
        ("zhangsan", True), ("mallory", False)]


def test_the_page_renders_in_chromium_with_chinese_glyphs_and_prints_to_pdf(
        report: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = report
    page = out / "h1" / "report.html"
    assert (out / "h1" / "report.pdf").read_bytes().startswith(b"%PDF")
    # two different characters drawn in the page's own font: tofu boxes would be equal
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", """<script>
function pixels(text) {
  const c = document.createElement('canvas'); c.width = 40; c.height = 40;
  const x = c.getContext('2d');
  x.font = '32px ' + getComputedStyle(document.body).fontFamily;
  x.fillText(text, 2, 34); return c.toDataURL();
}
document.title = (pixels('医') !== pixels('保') && pixels('医') !== pixels('\\uE000'))
  ? 'glyphs' : 'tofu';
</script></body>"""))
    done = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                           probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert "<title>glyphs</title>" in done.stdout, done.stdout[:500] + done.stderr[-800:]
    assert "月度医保结算可用性报告" in done.stdout


def test_a_site_with_no_history_is_an_error_not_a_blank_report(
        backends: dict[str, str], tmp_path: Path) -> None:
    done = subprocess.run([INSMON, "report", "--month", MONTH, "--prometheus",
                           backends["prometheus"], "--site", 'no"such', "--audit",
                           str(tmp_path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"no settlement path series of site 'no\"such' in {MONTH}" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_text_that_looks_like_a_formula_stays_text_in_the_workbook(tmp_path: Path) -> None:
    from ops import report

    month = report.SiteMonth("h1", MONTH)
    month.maintenance.append(report.Window("h1", REPORTED.timestamp(), REPORTED.timestamp()
                                           + 3600, '=HYPERLINK("http://evil/","x")',
                                           "=cmd|' /C calc'!A0", "s-9"))
    report.workbook([month], tmp_path / "r.xlsx")
    sheet = load_workbook(tmp_path / "r.xlsx")["h1 公告维护（不计入）"]
    [row] = sheet.iter_rows(min_row=2)
    assert [c.data_type for c in row] == ["d", "d", "s", "s", "s"]
    assert row[2].value == '=HYPERLINK("http://evil/","x")'
