"""The monthly report (`insmon report`) on two months of history backfilled into a real
Prometheus (promtool tsdb create-blocks-from openmetrics) and into VictoriaMetrics, with
known outages, time on the 4G backup, announced maintenance, incidents in a real pager's
store and a drill: its figures to the minute, the XLSX read back, the HTML rendered by
headless Chromium with Chinese glyphs, and a PDF."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from openpyxl import load_workbook

from monitor.audit import Trail
from ops.stack import Server, free_port
from pager.clock import Clock
from pager.config import load as load_pager
from pager.engine import Engine
from pager.store import Store
from probes.base import SHANGHAI
from tests.conftest import INSMON
from tests.test_pager import Rig, notification

pytestmark = [pytest.mark.xdist_group("report"), pytest.mark.timeout(900)]
OCTOBER = datetime(2026, 10, 1, tzinfo=SHANGHAI)
SEPTEMBER = datetime(2026, 9, 1, tzinfo=SHANGHAI)
NOVEMBER = datetime(2026, 11, 1, tzinfo=SHANGHAI)


def at(day: int, hour: int, minute: int, month: datetime = OCTOBER) -> datetime:
    return month.replace(day=day, hour=hour, minute=minute)


def span(start: datetime, minutes: int) -> set[datetime]:
    return {start + timedelta(minutes=i) for i in range(minutes)}


# h1, October: 47 min on the backup (primary line cut, PrimaryLineDown II); 12 min with no
# settlement path (SettlementPathDown I from its 2nd minute); 90 min down inside the
# announced 02:00-04:00 window; 5 min when the platform refused (SettlementImpossible I).
BACKUP = span(at(9, 10, 0), 47)
PATH_DOWN = span(at(15, 9, 30), 12)
MAINTENANCE_DOWN = span(at(18, 2, 10), 90)
REFUSED = span(at(22, 14, 0), 5)
# h1, September: 30 min lost, no alert. h2 (no settlement check), October: 3 min lost.
SEPTEMBER_DOWN = span(at(20, 10, 0, SEPTEMBER), 30)
H2_DOWN = span(at(5, 8, 0), 3)


def history() -> list[tuple[str, dict[str, str], float, float]]:
    """(metric, labels, value, unix time) of every sample: one a minute, in the minute."""
    samples = []
    minute = SEPTEMBER
    while minute < NOVEMBER:
        t = (minute + timedelta(seconds=30)).timestamp()
        down = minute in PATH_DOWN or minute in MAINTENANCE_DOWN or minute in SEPTEMBER_DOWN
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
        if minute >= OCTOBER:
            h2 = {"site": "h2", "job": "insmon"}
            lost = minute in H2_DOWN
            samples.append(("insmon_settlement_path_up", h2, 0.0 if lost else 1.0, t))
            samples.append(("insmon_settlement_active_role",
                            {**h2, "role": "none" if lost else "primary"}, 1.0, t))
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
    folder = tmp_path_factory.mktemp("audit")
    trail = Trail(folder)
    trail.append("maintenance-declared", "zhangsan", "ok",
                 {"site": "h1", "from": at(18, 2, 0).isoformat(),
                  "to": at(18, 4, 0).isoformat(), "comment": "省平台升级 公告2026-31",
                  "silence": "s-1"}, at=at(16, 9, 0))
    trail.append("maintenance-declared", "lisi", "refused",
                 {"site": "h1", "from": at(1, 0, 0).isoformat(),
                  "to": at(30, 0, 0).isoformat(), "comment": "typo"}, at=at(16, 9, 5))
    trail.append("drill", "wangwu", "passed", {"scenario": "reference",
                                               "title": "参考演练"}, at=at(25, 15, 0))
    return folder


@pytest.fixture(scope="module")
def pager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real pager whose store holds October's incidents: made by its engine on a clock
    the test sets, then served by the `insmon pager run` process."""
    tmp = tmp_path_factory.mktemp("pager")
    rig = Rig(tmp)
    try:
        path = tmp / "pager.yaml"
        path.write_text(json.dumps(rig.config(), ensure_ascii=False))
        now = [0.0]
        store = Store(load_pager(path).database)
        engine = Engine(load_pager(path), store,
                        Clock(None, wall=lambda: now[0], monotonic=lambda: now[0]))
        for alert, grade, started, opened, acker, acked, resolved in (
                ("PrimaryLineDown", "II", at(9, 10, 1), 5, "li", 10 * 60 + 5, 47 * 60 + 5),
                ("SettlementPathDown", "I", at(15, 9, 31), 10, "zhang", 190, 730)):
            firing = notification(alertname=alert, grade=grade, fingerprint=alert, site="h1")
            firing["alerts"][0]["startsAt"] = started.isoformat()
            now[0] = started.timestamp() + opened
            engine.intake("network", json.dumps(firing).encode())
            [incident] = store.query("SELECT id FROM incidents WHERE alertname = ?", (alert,))
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
        [INSMON, "report", "--month", "2026-10", "--prometheus", backends[request.param],
         "--pager", url, "--audit", str(trail), "--out", str(out)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "INSMON_PAGER_TOKEN_FILE": str(token)})
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


def test_the_figures_are_right_to_the_minute(report: tuple[Path, str]) -> None:
    out, said = report
    assert "h1 2026-10: 99.962% available, 17 min lost, 47 min on the backup, 120 min " \
           "announced maintenance" in said, said
    assert "h2 2026-10: 99.993% available, 3 min lost, 0 min on the backup, 0 min" in said
    book = load_workbook(out / "summary.xlsx")
    rows = {row[0]: row for row in book["汇总 Summary"].iter_rows(min_row=2, values_only=True)}
    # site, month, availability, counted, primary, backup, lost, maintenance, unmeasured,
    # longest, incidents, budget left
    assert rows["h1"][1:] == ("2026-10", round(1 - 17 / 44520, 6), 44520, 44456, 47, 17, 120,
                              0, 12, 2, round(0.001 * 44520 - 17, 1))
    assert rows["h2"][1:] == ("2026-10", round(1 - 3 / 44640, 6), 44640, 44637, 0, 3, 0, 0,
                              3, 0, round(0.001 * 44640 - 3, 1))
    h1 = load_workbook(out / "h1" / "report.xlsx")
    grades = {r[0]: r[1] for r in h1["h1 按级别中断分钟"].iter_rows(min_row=2, values_only=True)}
    assert grades == {"I": "16", "-": "1"}
    causes = dict(h1["h1 按原因中断分钟"].iter_rows(min_row=2, values_only=True))
    assert causes == {"医保专网 private network": "11", "医保平台 insurance platform": "5",
                      "未告警 no alert fired": "1"}
    outages = list(h1["h1 中断"].iter_rows(min_row=2, values_only=True))
    assert outages == [("10-15 09:30", "12", "I", "医保专网"),
                       ("10-22 14:00", "5", "I", "医保平台")]
    [window] = h1["h1 公告维护（不计入）"].iter_rows(min_row=2, values_only=True)
    assert window == ("10-18 02:00", "10-18 04:00", "zhangsan", "省平台升级 公告2026-31", "s-1")


def test_incidents_mtta_mttr_drills_and_the_trend(report: tuple[Path, str]) -> None:
    out, _ = report
    h1 = load_workbook(out / "h1" / "report.xlsx")
    incidents = list(h1["h1 事件"].iter_rows(min_row=2, values_only=True))
    assert [(i[0], i[1], i[3], i[4], i[5], i[6], i[7], i[8], i[9], i[10]) for i in incidents] \
        == [("II", "PrimaryLineDown", "10-09 10:01", "10-09 10:01", "10-09 10:11", "李四",
             "link", "10-09 10:48", "10.0", "47.1"),
            ("I", "SettlementPathDown", "10-15 09:31", "10-15 09:31", "10-15 09:34", "张三",
             "link", "10-15 09:43", "3.0", "12.2")]
    by_grade = list(h1["h1 按级别"].iter_rows(min_row=2, values_only=True))
    assert by_grade == [("I", "1", "3.0", "12.2"), ("II", "1", "10.0", "47.1")]
    drills = list(h1["h1 演练"].iter_rows(min_row=2, values_only=True))
    assert drills == [("10-25 15:00", "reference", "passed", "wangwu")]
    page = (out / "h1" / "report.html").read_text()
    # September lost 30 minutes of 43,200: October is better by 0.031 points
    assert f"{(1 - 17 / 44520 - (1 - 30 / 43200)) * 100:+.3f} 个百分点" in page


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
    done = subprocess.run([INSMON, "report", "--month", "2026-10", "--prometheus",
                           backends["prometheus"], "--site", 'no"such', "--audit",
                           str(tmp_path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "no settlement path series of site 'no\"such' in 2026-10" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_text_that_looks_like_a_formula_stays_text_in_the_workbook(tmp_path: Path) -> None:
    from ops import report

    month = report.SiteMonth("h1", "2026-10")
    month.maintenance.append(report.Window("h1", OCTOBER.timestamp(), OCTOBER.timestamp()
                                           + 3600, '=HYPERLINK("http://evil/","x")',
                                           "=cmd|' /C calc'!A0", "s-9"))
    report.workbook([month], tmp_path / "r.xlsx")
    sheet = load_workbook(tmp_path / "r.xlsx")["h1 公告维护（不计入）"]
    [row] = sheet.iter_rows(min_row=2)
    assert [c.data_type for c in row] == ["s"] * 5
    assert row[2].value == '=HYPERLINK("http://evil/","x")'
