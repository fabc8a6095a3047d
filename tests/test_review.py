"""insmon review against a real Prometheus holding a recorded incident: the reference
drill's own TSDB, reopened by a fresh Prometheus that scrapes nothing.

The timeline must be in the right order with times within one interval of what really
happened (the drill's fault and heal, the receivers' page times); the HTML must open in
headless Chromium and show the charts; a window without data and an unreachable
Prometheus give clear errors.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from matplotlib import image

from monitor.history import PrometheusAPI
from monitor.review import collect
from monitor.stack import Prometheus
from tests.conftest import INSMON

pytestmark = pytest.mark.timeout(600)

PROBE_INTERVAL = 2.0  # the drill's vpn check, and the shipped scrape interval
SCRAPE = 2.0


@pytest.fixture(scope="module")
def history(reference_drill) -> Iterator[tuple]:
    report, out, pager = reference_drill
    prometheus = Prometheus(out / "work" / "prometheus", {"global": {"scrape_interval": "1m"}})
    try:
        yield report, prometheus, pager
    finally:
        prometheus.stop()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def test_timeline_order_and_times(history) -> None:
    report, prometheus, pager = history
    fault, healed = report.fault_unix, report.healed_unix
    review = collect(PrometheusAPI(prometheus.url), fault - 30, healed + 30, None)
    assert review.site == "drill-lab"
    assert review.worst_grade == "I"

    parts = {s.name: s for s in review.summaries}
    # the cut is seen at the first scrape after the vpn check that found it
    for name in ("private line", "backup channel", "settlement path"):
        assert 0 <= parts[name].first_anomaly - fault <= PROBE_INTERVAL + SCRAPE + 1
        assert 0 <= parts[name].recovered - healed <= PROBE_INTERVAL + SCRAPE + 1
    for name in ("storage IO", "RAID"):  # 5 s checks in the drill
        assert 0 <= parts[name].first_anomaly - fault <= 5 + SCRAPE + 1
    assert set(parts) == {"private line", "backup channel", "settlement path",
                          "storage IO", "RAID"}

    # the incident's alert fired within one evaluation of its page (grade I: no group
    # wait); every page came while its alert fired (an alert held back by the incident
    # may page later, when the incident resolves before it does)
    fired = {p.name: p for p in review.periods}
    first_page = min(p.received for p in pager.received("firing")
                     if "SettlementChainCollapsed" in p.alertnames)
    assert 0 <= first_page - fired["SettlementChainCollapsed"].start <= SCRAPE + 1
    for page in pager.received("firing"):
        for name in page.alertnames:
            assert fired[name].start <= page.received <= fired[name].end + SCRAPE + 1
    for period in review.periods:
        assert period.end is not None and period.end >= healed

    # the timeline: faults, then the alerts, then recovery, then the end of the incident
    events = [e.what for e in review.events]
    times = [e.at for e in review.events]
    assert times == sorted(times)
    first_fault = events.index("settlement path (结算通道): fault begins")
    chain = events.index(next(e for e in events
                              if e.startswith("ALERT SettlementChainCollapsed fires")))
    graded = events.index("highest firing grade is now I")
    recovered = events.index("settlement path (结算通道): recovered")
    assert first_fault < graded <= chain < recovered
    assert events[-1] == "no alert firing: incident over"
    assert "for network, insurance_agency, server_ops, vendor, leadership, " \
           "settlement_center" in events[chain]


def test_report_files_and_html_in_chromium(history, tmp_path: Path) -> None:
    report, prometheus, _ = history
    out = tmp_path / "review"
    result = subprocess.run(
        [INSMON, "review", "--prometheus", prometheus.url, "--from",
         iso(report.fault_unix - 30), "--to", iso(report.healed_unix + 30), "--site",
         "drill-lab", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    md = (out / "review.md").read_text()
    assert "# Incident review: drill-lab" in md and "Highest grade: I" in md
    for chart in ("chain", "storage", "raid"):
        assert f"(chart-{chart}.png)" in md
        assert image.imread(out / f"chart-{chart}.png").shape[1] == 1000
    page = (out / "review.html").read_text()
    assert page.count('src="data:image/png;base64,') >= 3
    assert "http://" not in page and "https://" not in page  # self-contained

    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--disable-background-networking",
                    "--no-first-run", "--hide-scrollbars", "--window-size=1200,3200",
                    f"--screenshot={shot}", (out / "review.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = image.imread(shot)[:, :, :3]
    # matplotlib's first line colour (#1f77b4) and the grade I shading exist only in
    # the charts: the page shows them
    blue = ((abs(pixels[:, :, 0] - 0x1f / 255) < 0.06) & (abs(pixels[:, :, 1] - 0x77 / 255)
            < 0.06) & (abs(pixels[:, :, 2] - 0xb4 / 255) < 0.06)).sum()
    red_shade = ((pixels[:, :, 0] > 0.85) & (pixels[:, :, 1] < 0.8) & (pixels[:, :, 1] > 0.6)
                 & (pixels[:, :, 2] < 0.8) & (pixels[:, :, 2] > 0.6)).sum()
    assert blue > 300 and red_shade > 3000, (blue, red_shade)


def test_a_window_without_data_says_so(history, tmp_path: Path) -> None:
    report, prometheus, _ = history
    result = subprocess.run(
        [INSMON, "review", "--prometheus", prometheus.url, "--from",
         iso(report.fault_unix - 7200), "--to", iso(report.fault_unix - 3600), "--out",
         str(tmp_path / "empty")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "no insmon data in Prometheus at" in result.stderr
    assert "(Asia/Shanghai)" in result.stderr
    assert not (tmp_path / "empty" / "review.md").exists()

    result = subprocess.run(
        [INSMON, "review", "--prometheus", prometheus.url, "--from",
         iso(report.fault_unix), "--to", iso(report.healed_unix), "--site", "elsewhere",
         "--out", str(tmp_path / "empty")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "no insmon data for site 'elsewhere'" in result.stderr
    assert "sites with data: drill-lab" in result.stderr


def test_unreachable_prometheus_and_bad_times(tmp_path: Path) -> None:
    def review(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([INSMON, "review", *args, "--out", str(tmp_path)],
                              capture_output=True, text=True, timeout=60)

    result = review("--prometheus", "http://127.0.0.1:9", "--from", "2026-11-23T08:30",
                    "--to", "2026-11-23T10:00")
    assert result.returncode == 1
    assert "cannot reach Prometheus at http://127.0.0.1:9" in result.stderr
    result = review("--from", "23/11/2026 08:30", "--to", "2026-11-23T10:00")
    assert result.returncode == 1 and "cannot read the time '23/11/2026 08:30'" in result.stderr
    result = review("--from", "2026-11-23T10:00", "--to", "2026-11-23T08:30")
    assert result.returncode == 1 and "before it starts" in result.stderr
