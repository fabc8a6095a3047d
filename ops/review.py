"""insmon review: the post-incident report, from the metric history in Prometheus.

For a window and a site it writes review.md and review.html (self-contained: the charts
are inside it) with the timeline (first anomaly and recovery per component, each alert's
fire and resolve with grade and teams, every change of the highest firing grade, the
backup channel taking over and handing back), time to detect and to recover per
component, the peak values, and charts of the key series with the alert periods shaded.
With `--pager`, who insmon pager told, on which channel, when it was delivered and
acknowledged, and escalations, from the pager's API. report.md is the draft of the
written incident report the plans require (事件报告: time, grade, impact, cause so far,
measures taken, who was told when), to be completed by people. Times are Asia/Shanghai.
"""

from __future__ import annotations

import base64
import html
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ops.history import (
    AlertPeriod,
    Component,
    HistoryError,
    PrometheusAPI,
    Series,
    alert_periods,
    components,
    pager_incidents,
    runs,
    selector,
    spacing,
)
from vocabulary import GRADE_REPORT_ZH, GRADES, SHANGHAI

GRADE_COLOURS = {"I": "#d62728", "II": "#ff7f0e", "III": "#e6c229", "IV": "#1f77b4"}
MAX_RUNS_LISTED = 20  # per component: a flapping link must not drown the timeline


@dataclass(order=True)
class Event:
    at: float
    what: str = field(compare=False)
    grade: str = field(default="", compare=False)


@dataclass
class ComponentSummary:
    name: str
    name_zh: str
    first_anomaly: float
    detected: float | None   # the first alert about it
    recovered: float | None  # None: not recovered in the window


@dataclass
class Told:
    """One person told of one incident by insmon pager."""
    alert: str
    grade: str
    drill: bool
    person: str
    team: str
    kind: str        # page, escalation
    channel: str
    decided: float
    delivered: float | None  # None: failed on every channel, or still pending
    acked_by: str | None
    acked: float | None


@dataclass
class Chart:
    title: str
    file: Path


@dataclass
class Review:
    site: str
    start: float
    end: float
    events: list[Event]
    summaries: list[ComponentSummary]
    peaks: list[tuple[str, str, float | None]]  # (what, value, when)
    periods: list[AlertPeriod]
    parts: list[Component]  # with the series read, for the charts
    charts: list[Chart] = field(default_factory=list)
    told: list[Told] = field(default_factory=list)  # from insmon pager

    @property
    def worst_grade(self) -> str:
        graded = [p.grade for p in self.periods if p.grade in GRADES]
        return min(graded, key=GRADES.index) if graded else "-"


def when(t: float | None, with_date: bool = False) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, SHANGHAI).strftime(
        "%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# ---------------------------------------------------------------------- reading

def find_site(api: PrometheusAPI, start: float, end: float, site: str | None) -> str:
    seconds = max(1, int(end - start))
    found = api.query(f"count by (site) (count_over_time(insmon_probe_success[{seconds}s]))",
                      end)
    sites = sorted(r["metric"].get("site", "") for r in found)
    window = f"between {when(start, True)} and {when(end, True)} (Asia/Shanghai)"
    if not sites:
        raise HistoryError(f"no insmon data in Prometheus at {api.url} {window}: is the "
                           "window right, and does this Prometheus scrape insmon?")
    if site is None:
        if len(sites) > 1:
            raise HistoryError(f"several sites have data {window}: {', '.join(sites)}; "
                               "choose one with --site")
        return sites[0]
    if site not in sites:
        raise HistoryError(f"no insmon data for site {site!r} {window}; sites with data: "
                           f"{', '.join(sites)}")
    return site


def pager_records(url: str, start: float, end: float) -> tuple[list[Told], list[Event]]:
    """Who the pager told, and the timeline's events: deliveries, acknowledgements,
    escalations, failures."""
    try:
        incidents = pager_incidents(url, f"since={start}&until={end}", 30)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise HistoryError(f"cannot read insmon pager at {url}: "
                           f"{getattr(exc, 'reason', None) or exc}") from None
    told, events = [], []
    for incident in incidents:
        label = f"{'【演练】' if incident['drill'] else ''}{incident['alertname']}"
        for d in incident["deliveries"]:
            if d["kind"] not in ("page", "escalation"):
                continue
            team = next((p["team_name"] for p in incident["pages"]
                         if p["person"] == d["person"]), "")
            told.append(Told(label, incident["grade"], bool(incident["drill"]), d["name"],
                             team, d["kind"], d["channel"], d["created"], d["sent"],
                             incident["acked_by_name"], incident["acked"]))
            if d["sent"]:
                events.append(Event(d["sent"], f"PAGE {d['name']} ({team}) told of {label} "
                                    f"by {d['channel']}"
                                    f"{' (escalation)' if d['kind'] == 'escalation' else ''}"))
            elif d["status"] == "failed":
                events.append(Event(d["created"], f"PAGE to {d['name']} ({team}) of {label} "
                                    f"FAILED on every channel: {d['error']}"))
        for e in incident["events"]:
            if e["what"] == "acknowledged":
                events.append(Event(e["at"], f"ACK {e['name']} acknowledged {label} "
                                    f"(via {e['channel']})"))
            elif e["what"] == "escalated":
                events.append(Event(e["at"], f"ESCALATION of {label}: {e['detail']}"))
    return told, events


def collect(api: PrometheusAPI, start: float, end: float, site: str | None,
            pager: str | None = None) -> Review:
    site = find_site(api, start, end, site)
    periods = alert_periods(api, start, end, site)
    events: list[Event] = []
    summaries = []
    parts = components()
    for part in parts:
        part.series = api.samples(selector(part.metric, site, **part.matchers), start, end)
        anomalies = part.anomalies()
        if not anomalies:
            continue
        for began, recovered in anomalies[:MAX_RUNS_LISTED]:
            events.append(Event(began, f"{part.name} ({part.name_zh}): fault begins"))
            if recovered is not None:
                events.append(Event(recovered, f"{part.name} ({part.name_zh}): recovered"))
        first = anomalies[0][0]
        detected = min((p.start for p in periods if p.labels.get("service") in part.services
                        and p.start >= first - 1), default=None)
        recovered = (None if any(r is None for _, r in anomalies)
                     else max(r for _, r in anomalies))
        summaries.append(ComponentSummary(part.name, part.name_zh, first, detected, recovered))
    # at the same second: the component, the link change, the alert, the grade
    events += role_changes(api.samples(selector("insmon_settlement_active_role", site),
                                       start, end))
    for p in periods:
        events.append(Event(p.start, f"ALERT {p.name} fires: grade {p.grade}, for "
                                     f"{alert_teams(p)}", p.grade))
        if p.end is not None:
            events.append(Event(p.end, f"ALERT {p.name} resolved (grade {p.grade})", p.grade))
    events += grade_changes(periods)
    told: list[Told] = []
    if pager:
        told, told_events = pager_records(pager, start, end)
        events += told_events
    return Review(site, start, end, sorted(events), summaries, peaks(parts), periods, parts,
                  told=told)


def grade_changes(periods: list[AlertPeriod]) -> list[Event]:
    """An event each time the highest firing grade changes."""
    moments = sorted({p.start for p in periods} | {p.end for p in periods if p.end})
    events, current = [], None
    for t in moments:
        firing = [p.grade for p in periods if p.grade in GRADES
                  and p.start <= t and (p.end is None or t < p.end)]
        highest = min(firing, key=GRADES.index) if firing else None
        if highest != current:
            text = (f"highest firing grade is now {highest}" if highest
                    else "no alert firing: incident over")
            events.append(Event(t, text, highest or ""))
            current = highest
    return events


def role_changes(series: list[Series]) -> list[Event]:
    """The backup channel taking over, and settlement going back to the primary line."""
    events = []
    for s in series:
        role = s.labels.get("role")
        if role not in ("primary", "backup"):
            continue
        step = spacing(s.points)
        for first, _ in runs(s.points, lambda v: v == 1, step):
            if first == s.points[0][0]:
                continue  # the window opens on it: no change seen
            events.append(Event(first, "the backup channel takes over settlement"
                                if role == "backup" else "settlement back on the primary line"))
    return events


def peaks(parts: list[Component]) -> list[tuple[str, str, float | None]]:
    def highest(name: str) -> tuple[float, float] | None:
        part = next(p for p in parts if p.name == name)
        points = [pt for s in part.series for pt in s.points]
        return max(points, key=lambda pt: pt[1]) if points else None

    found = []
    for name, what, show in (
            ("storage latency", "highest storage IO latency (active probe)",
             lambda v: f"{v * 1000:.3g} ms"),
            ("private network ping", "worst ping loss", lambda v: f"{v * 100:.0f} %"),
            ("settlement server CPU", "CPU peak", lambda v: f"{v * 100:.0f} %")):
        peak = highest(name)
        if peak:
            found.append((what, show(peak[1]), peak[0]))
    path = next(p for p in parts if p.name == "settlement path")
    down = sum((r or path.series[0].points[-1][0]) - b for b, r in path.anomalies()
               ) if path.series else 0
    if down:
        found.append(("settlement path down (all links), in all", duration(down), None))
    return found


# ---------------------------------------------------------------------- charts

CHARTS = (  # (file stem, title, component names, y label, scale, threshold)
    ("chain", "Settlement path and links (1 = up)",
     ("settlement path", "private line", "backup channel", "front-end"), "up", 1, None),
    ("storage", "Storage IO latency, active probe (seconds)", ("storage latency",),
     "seconds", 1, 2.0),
    ("raid", "RAID arrays not healthy (1 = in that state)", ("RAID",), "state", 1, None),
    ("cpu", "Settlement server CPU usage (%)", ("settlement server CPU",), "%", 100, 95),
    ("ping", "Private network ping loss (%)", ("private network ping",), "%", 100, 5),
)


def draw(review: Review, out: Path) -> list[Chart]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    def moment(t: float) -> datetime:
        return datetime.fromtimestamp(t, SHANGHAI)

    charts = []
    by_name = {p.name: p for p in review.parts}
    for stem, title, names, ylabel, scale, threshold in CHARTS:
        series = [(name, s) for name in names for s in by_name[name].series]
        if stem == "raid":  # only the states the array was actually in
            series = [(n, s) for n, s in series if any(v for _, v in s.points)]
        if not series:
            continue
        step = min(spacing(s.points) for _, s in series)  # the scrape interval
        fig, ax = plt.subplots(figsize=(10, 3.2), dpi=100)
        for i, (name, s) in enumerate(series):
            offset = i * 0.03 if ylabel == "up" else 0  # lines at 0/1 stay apart
            label = " ".join([name, *(s.labels[k] for k in ("link", "array", "state", "target")
                                      if k in s.labels)])
            times, values = with_gaps(s.points, step)
            ax.step([moment(t) for t in times], [v * scale + offset for v in values],
                    where="post", label=label, linewidth=1.6)
        if threshold is not None:
            ax.axhline(threshold, color="#d62728", linestyle="--", linewidth=1)
        grades = set()
        for p in review.periods:
            ax.axvspan(moment(p.start), moment(p.end or review.end),
                       color=GRADE_COLOURS.get(p.grade, "#888888"), alpha=0.13, linewidth=0)
            grades.add(p.grade)
        handles, _ = ax.get_legend_handles_labels()
        handles += [Patch(color=GRADE_COLOURS.get(g, "#888888"), alpha=0.3,
                          label=f"alert grade {g}") for g in sorted(grades, key=_grade_order)]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
        ax.set_title(title, fontsize=11)
        ax.set_ylabel(ylabel)
        ax.set_xlim(moment(review.start), moment(review.end))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=SHANGHAI))
        ax.grid(alpha=0.3)
        fig.tight_layout()
        file = out / f"chart-{stem}.png"
        fig.savefig(file)
        plt.close(fig)
        charts.append(Chart(title, file))
    return charts


def with_gaps(points: list[tuple[float, float]],
              step: float) -> tuple[list[float], list[float]]:
    """The points, with a break (NaN) where samples are missing: a series that was not
    reported (a link down, a check failing) is drawn as absent, not as its last value."""
    times, values = [], []
    for i, (t, v) in enumerate(points):
        if i and t - points[i - 1][0] > 2.5 * step:
            times.append(points[i - 1][0] + step)
            values.append(float("nan"))
        times.append(t)
        values.append(v)
    return times, values


def _grade_order(grade: str) -> int:
    return GRADES.index(grade) if grade in GRADES else len(GRADES)


# ---------------------------------------------------------------------- writing

def sections(review: Review) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's tables, (title, header, rows), for both the Markdown and the HTML."""
    detect = [[s.name, s.name_zh, when(s.first_anomaly),
               when(s.detected), duration(s.detected - s.first_anomaly if s.detected else None),
               when(s.recovered), duration(s.recovered - s.first_anomaly if s.recovered
                                           else None)] for s in review.summaries]
    alerts = [[p.name, p.grade, alert_teams(p), when(p.start),
               when(p.end) if p.end else "still firing",
               duration((p.end or review.end) - p.start)] for p in review.periods]
    told = [[t.alert, t.grade, t.person, t.team, t.kind, t.channel, when(t.decided),
             when(t.delivered) if t.delivered else "NOT DELIVERED",
             f"{t.acked_by} {when(t.acked)}" if t.acked else "-"] for t in review.told]
    return [
        ("Components: time to detect and to recover",
         ["component", "组件", "first anomaly", "first alert", "time to detect", "recovered",
          "time to recover"], detect),
        ("Peak values", ["what", "value", "at"],
         [[what, value, when(at)] for what, value, at in review.peaks]),
        ("Alerts", ["alert", "grade", "teams", "fired", "resolved", "lasted"], alerts),
        ("Timeline", ["time", "event"], [[when(e.at), e.what] for e in review.events]),
        *([("Who was told (insmon pager)", ["alert", "grade", "person", "team", "as",
                                            "channel", "decided", "delivered",
                                            "acknowledged"], told)] if review.told else []),
    ]


STOPPED = ("SettlementChainCollapsed", "SettlementPathDown", "FrontEndUnreachable")


def incident_report(review: Review) -> str:
    """事件报告 draft: what the records say, with the blanks people must fill marked."""
    first = min((s.first_anomaly for s in review.summaries), default=None)
    recovered = [s.recovered for s in review.summaries]
    back = None if not recovered or None in recovered else max(recovered)
    alerted = min((p.start for p in review.periods), default=None)
    grade = review.worst_grade
    hours = 1 if grade in ("I", "II") else 2
    lines = [f"# 事件报告（草稿）：{review.site}", "",
             "由 insmon review 根据监控记录生成；标注【待补充】处须由负责人填写后按时上报。", "",
             f"- 事件时间：{when(first, True)} 至 "
             f"{when(back, True) if back else '尚未恢复'}（北京时间）",
             f"- 事件级别：{GRADE_REPORT_ZH.get(grade, '未分级')}",
             f"- 报告时限：{hours} 小时内，即 "
             f"{when(alerted + hours * 3600, True) if alerted else '-'} 前（自首次告警起）",
             "", "## 影响范围", ""]
    stopped = [p for p in review.periods if p.name in STOPPED]
    if stopped:
        start = min(p.start for p in stopped)
        end = None if any(p.end is None for p in stopped) else max(p.end for p in stopped)
        lines.append(f"- 医保实时结算中断：{when(start)} 至 {when(end) if end else '报告时仍中断'}"
                     f"（{duration((end or review.end) - start)}），窗口提示“医保数据连接超时”")
    else:
        lines.append("- 医保实时结算未中断")
    lines += [f"- {s.name_zh}（{s.name}）：{when(s.first_anomaly)} 异常，"
              f"{when(s.recovered) + ' 恢复' if s.recovered else '未恢复'}"
              for s in review.summaries]
    lines += ["- 【待补充】受影响的窗口、患者人数、分流情况", "", "## 原因（初步）", ""]
    lines += [f"- {when(s.first_anomaly)} {s.name_zh} 首先出现异常" for s in
              sorted(review.summaries, key=lambda s: s.first_anomaly)[:3]]
    lines += ["- 【待补充】根本原因（运维服务商分析）", "", "## 已采取措施", ""]
    lines += [f"- {when(e.at)} {e.what}" for e in review.events
              if e.what.startswith(("ACK ", "ESCALATION ", "the backup", "settlement back"))]
    lines += ["- 【待补充】处置过程、恢复手段", "", "## 通知情况", ""]
    if review.told:
        lines += ["| 时间 | 人员 | 小组 | 通道 | 告警 | 确认 |", "|---|---|---|---|---|---|"]
        lines += [f"| {when(t.delivered) if t.delivered else '未送达'} | {t.person} | {t.team} "
                  f"| {t.channel} | {t.alert} | "
                  f"{(t.acked_by or '') + ' ' + when(t.acked) if t.acked else '-'} |"
                  for t in sorted(review.told, key=lambda t: t.decided)]
    else:
        lines += [f"- {when(p.start)} {p.name}（{p.grade} 级）通知：{alert_teams(p)}"
                  for p in review.periods]
        lines.append("- （未读取 insmon pager 记录：加 --pager 可列出具体人员与送达时间）")
    return "\n".join(lines) + "\n"


def alert_teams(period: AlertPeriod) -> str:
    """The teams it is for; a Level I also reaches leadership and the settlement center.
    Prometheus does not know what Alertmanager held back (inhibition, silences): an alert
    listed here may not have paged, as the report says."""
    teams = list(period.teams)
    if period.grade == "I":
        teams += [t for t in ("leadership", "settlement_center") if t not in teams]
    return ", ".join(teams)


def heading(review: Review) -> tuple[str, str]:
    title = f"Incident review: {review.site}"
    line = (f"Window {when(review.start, True)} to {when(review.end, True)} "
            f"(Asia/Shanghai). Highest grade: {review.worst_grade}; "
            f"{len(review.periods)} alert period(s). Alerts are as Prometheus evaluated "
            "them: one that Alertmanager held back (inhibited by a larger incident, "
            "silenced for maintenance) is listed but did not page.")
    return title, line


def markdown(review: Review) -> str:
    title, line = heading(review)
    out = [f"# {title}", "", line, ""]
    for name, header, rows in sections(review):
        out += [f"## {name}", ""]
        if not rows:
            out += ["None in the window.", ""]
            continue
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                for row in rows] + [""]
    out += ["## Charts", "", "Shaded: alert periods, coloured by grade.", ""]
    out += [f"![{c.title}]({c.file.name})" for c in review.charts] or ["No series to chart."]
    return "\n".join(out) + "\n"


def html_page(review: Review) -> str:
    title, line = heading(review)
    e = html.escape
    body = [f"<h1>{e(title)}</h1>", f"<p>{e(line)}</p>"]
    for name, header, rows in sections(review):
        body.append(f"<h2>{e(name)}</h2>")
        if not rows:
            body.append("<p>None in the window.</p>")
            continue
        body.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        body += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
        body.append("</table>")
    body.append("<h2>Charts</h2><p>Shaded: alert periods, coloured by grade.</p>")
    for chart in review.charts:
        data = base64.b64encode(chart.file.read_bytes()).decode()
        body.append(f'<figure><img alt="{e(chart.title)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{e(chart.title)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}"
             "table{border-collapse:collapse;margin-bottom:1em}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:14px}"
             "th{background:#f0f0f0}img{max-width:100%}figure{margin:1em 0}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><style>{style}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write(url: str, start: datetime, end: datetime, site: str | None, out: Path,
          pager: str | None = None) -> list[Path]:
    if end <= start:
        raise HistoryError(f"the window ends ({end.isoformat()}) before it starts "
                           f"({start.isoformat()})")
    review = collect(PrometheusAPI(url), start.timestamp(), end.timestamp(), site, pager)
    out.mkdir(parents=True, exist_ok=True)
    review.charts = draw(review, out)
    md, page, report = out / "review.md", out / "review.html", out / "report.md"
    md.write_text(markdown(review))
    page.write_text(html_page(review))
    report.write_text(incident_report(review))
    return [md, page, report, *(c.file for c in review.charts)]
