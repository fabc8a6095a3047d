"""`insmon report --month 2026-11`: 月度医保结算可用性报告, the monthly figures leadership
and the insurance bureau ask for, per site and over all sites.

From the metric history (Prometheus, or the regional VictoriaMetrics: the same query
API), sampled once a minute in Beijing time: whether a bill could settle (the settlement
path, with the platform's own answer where the site runs the settlement check: the
expression of the `site:insmon_settlement_path:up` recording rule, on the raw series so
that history recorded before the rule, or backfilled, reads the same) and over which
link (primary private line, 4G backup). A minute with no settlement path is lost; it is
put down to the highest-graded alert firing then (its grade and its service: the cause).
Minutes with no sample are not measured and left out, but for a blind spell with the path
down on both sides: it counts as down and joins the outage. Announced maintenance, read
from the audit trails (monitor/audit.py: who declared it and why), is left out of the
figure and listed, but only where its record verifies (the chain, the key and the witness,
this Prometheus): a window whose record does not is counted as any other minutes, and the
first page says so, with the trails' verification and the witness checked. From insmon
pager: each incident with when it started, was paged, acknowledged (by whom, how) and
resolved, MTTA and MTTR by grade and team, and the written reports due. Drills from the
audit trail. The availability objective and its error budget. Written as report.html
(charts by matplotlib, CJK fonts), report.xlsx (openpyxl: numbers and times as Excel's
own, with formats) and report.pdf (headless Chromium, where installed).
"""

from __future__ import annotations

import base64
import html
import re
import shutil
import statistics
import subprocess
import tempfile
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from monitor.audit import Trail, Verification
from ops.history import HistoryError, PrometheusAPI, audit_witness, pager_incidents
from vocabulary import GRADES, SHANGHAI

MINUTE = 60.0
OBJECTIVE = 0.999  # 99.9 %: 43 minutes a month
# Each minute is judged by the last sample in it (last_over_time over the minute): a
# minute with none is not measured, rather than carried on by the query's lookback.
LAST = "last_over_time({}[1m])"
PATH = ("max by (site) ({path}) * on (site) group_left () max by (site) ({possible}) "
        "or max by (site) ({path})")
ROLE = "max by (role) ({role}) == 1"
ALERTS = 'ALERTS{{alertstate="firing",site="{site}",drill!="true"}}'
CAUSES = {
    "private_network": ("医保专网", "private network"),
    "front_end": ("医保前置机", "front-end"),
    "settlement_platform": ("医保平台", "insurance platform"),
    "settlement_chain": ("结算链路", "settlement chain"),
    "storage": ("存储", "storage"),
    "raid": ("RAID 阵列", "RAID"),
    "settlement_server": ("结算服务器", "settlement server"),
    "edge_network": ("院内网络", "hospital network"),
    "terminals": ("自助终端", "terminals"),
    "monitor": ("监控自身", "the monitor itself"),
    "blind": ("无数据，前后均中断", "not measured, down before and after"),
    "": ("未告警", "no alert fired"),
}
AROUND = 86400.0  # how far past the month a blind spell's ends are looked for
STATES = ("primary", "backup", "up", "lost", "maintenance", "unmeasured")


class ReportError(Exception):
    pass


def month_bounds(month: str) -> tuple[datetime, datetime]:
    try:
        start = datetime.strptime(month, "%Y-%m").replace(tzinfo=SHANGHAI)
    except ValueError:
        raise ReportError(f"--month {month!r}: a month such as 2026-11") from None
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def previous(month: str) -> str:
    start, _ = month_bounds(month)
    return f"{start - timedelta(days=1):%Y-%m}"


# ------------------------------------------------------------------ the figures

@dataclass
class Window:
    """Announced maintenance, from the audit trail."""
    site: str
    start: float
    end: float
    who: str
    why: str
    silence: str
    record: str = ""       # where its record is (trail folder/file:line)
    trusted: bool = True   # the record verifies


@dataclass
class Outage:
    """Minutes in a row with no settlement path (kind "down"), or with no sample that
    are not bounded by down on both sides ("unmeasured")."""
    start: float
    minutes: int
    grade: str
    cause: str
    kind: str = "down"


@dataclass
class TrailCheck:
    """An audit trail's verification, for the first page."""
    folder: str
    lines: list[str]
    faults: int
    intact: bool


@dataclass
class Incident:
    grade: str
    alert: str
    teams: list[str]
    started: float
    paged: float | None
    acked: float | None
    acked_by: str | None
    acked_how: str | None
    resolved: float | None
    report_due: float | None
    drill: bool

    @property
    def mtta(self) -> float | None:
        return self.acked - self.paged if self.acked and self.paged else None

    @property
    def mttr(self) -> float | None:
        return self.resolved - self.started if self.resolved else None


@dataclass
class SiteMonth:
    site: str
    month: str
    minutes: Counter = field(default_factory=Counter)   # by state (STATES)
    lost_by_grade: Counter = field(default_factory=Counter)
    lost_by_cause: Counter = field(default_factory=Counter)
    outages: list[Outage] = field(default_factory=list)  # and unmeasured spans, in order
    blind: int = 0  # minutes lost with no sample, down before and after
    maintenance: list[Window] = field(default_factory=list)
    doubted: list[Window] = field(default_factory=list)  # whose record does not verify
    audit: list[TrailCheck] = field(default_factory=list)
    daily: dict[str, Counter] = field(default_factory=dict)  # YYYY-MM-DD -> states
    incidents: list[Incident] = field(default_factory=list)
    drills: list[dict] = field(default_factory=list)
    before: SiteMonth | None = None  # the month before, for the trend
    objective: float = OBJECTIVE

    @property
    def counted(self) -> int:
        """Minutes the figure is over: measured, maintenance left out."""
        return sum(self.minutes[s] for s in ("primary", "backup", "up", "lost"))

    @property
    def availability(self) -> float | None:
        return 1 - self.minutes["lost"] / self.counted if self.counted else None

    @property
    def budget(self) -> float:
        return (1 - self.objective) * self.counted

    @property
    def longest(self) -> Outage | None:
        return max((o for o in self.outages if o.kind == "down"),
                   key=lambda o: (o.minutes, -o.start), default=None)

    @property
    def unmeasured(self) -> list[Outage]:
        return [o for o in self.outages if o.kind == "unmeasured"]


def measure(api: PrometheusAPI, site: str, month: str, windows: list[Window]) -> SiteMonth:
    """The month minute by minute: each minute is judged at its end."""
    start, end = (t.timestamp() for t in month_bounds(month))
    overlapping = [w for w in windows if w.site == site and w.end > start and w.start < end]
    figures = SiteMonth(site, month, maintenance=[w for w in overlapping if w.trusted],
                        doubted=[w for w in overlapping if not w.trusted])
    where = f'{{site="{quoted(site)}"}}'
    # the path a day past either end of the month too: where a blind spell ends
    first, last = start + MINUTE - AROUND, end + AROUND
    path = _by_time(api.range(PATH.format(
        path=LAST.format("insmon_settlement_path_up" + where),
        possible=LAST.format("insmon_settlement_possible" + where)), first, last))
    roles: dict[float, str] = {}
    role = ROLE.format(role=LAST.format("insmon_settlement_active_role" + where))
    for series in api.range(role, start + MINUTE, end):
        for t, _ in series.points:
            roles[t] = series.labels.get("role", "")
    firing: dict[float, list[dict]] = {}
    for series in api.range(LAST.format(ALERTS.format(site=quoted(site))), start + MINUTE,
                            end):
        for t, _ in series.points:
            firing.setdefault(t, []).append(series.labels)
    times = [first + i * MINUTE for i in range(int((last - first) // MINUTE) + 1)]
    states = [_state(t, path, roles, figures.maintenance) for t in times]
    blind = _blind(states)
    run: Outage | None = None
    for t, state, dark in zip(times, states, blind, strict=True):
        if not start < t <= end:
            continue
        if dark:
            state = "lost"
            figures.blind += 1
        figures.minutes[state] += 1
        day = datetime.fromtimestamp(t - 1, SHANGHAI).strftime("%Y-%m-%d")
        figures.daily.setdefault(day, Counter())[state] += 1
        kind = {"lost": "down", "unmeasured": "unmeasured"}.get(state)
        if state == "lost":
            grade, cause = _blame(firing.get(t, []))
            if dark and not cause:
                cause = "blind"
            figures.lost_by_grade[grade] += 1
            figures.lost_by_cause[cause] += 1
        elif state == "unmeasured":
            grade, cause = "-", ""
        elif state == "maintenance" and run is not None and run.kind == "down":
            continue  # an outage announced on its way: it goes on after the window
        else:
            run = None
            continue
        if run is None or run.kind != kind:
            run = Outage(t - MINUTE, 0, grade, cause, kind)
            figures.outages.append(run)
        run.minutes += 1
        if _rank(grade) < _rank(run.grade):
            run.grade, run.cause = grade, cause
    return figures


def _blind(states: list[str]) -> list[bool]:
    """The minutes with no sample in spells bounded by a lost minute on both sides."""
    dark = [False] * len(states)
    i = 0
    while i < len(states):
        if states[i] != "unmeasured":
            i += 1
            continue
        j = i
        while j < len(states) and states[j] == "unmeasured":
            j += 1
        if i > 0 and j < len(states) and states[i - 1] == states[j] == "lost":
            dark[i:j] = [True] * (j - i)
        i = j
    return dark


def quoted(value: str) -> str:
    """A label value inside PromQL's double quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _by_time(series: list) -> dict[float, float]:
    values: dict[float, float] = {}
    for s in series:
        for t, v in s.points:
            values[t] = max(v, values.get(t, v))
    return values


def _state(t: float, path: dict[float, float], roles: dict[float, str],
           windows: list[Window]) -> str:
    if any(w.start < t <= w.end for w in windows):
        return "maintenance"
    if t not in path:
        return "unmeasured"
    if path[t] < 1:
        return "lost"
    return roles.get(t) if roles.get(t) in ("primary", "backup") else "up"


def _rank(grade: str) -> int:
    return GRADES.index(grade) if grade in GRADES else len(GRADES)


def _blame(alerts: list[dict]) -> tuple[str, str]:
    """The grade and cause (service) of the most severe fault alert firing."""
    faults = [a for a in alerts if a.get("service") != "monitor"] or alerts
    if not faults:
        return "-", ""
    worst = min(faults, key=lambda a: (_rank(a.get("grade", "")), a.get("alertname", "")))
    return worst.get("grade", "-") if worst.get("grade") in GRADES else "-", \
        worst.get("service", "")


Checked = tuple[Trail, Verification]


def verified(trails: list[Trail], prometheus: str | None) -> list[Checked]:
    """Each trail with its verification: the chain, the key, and the witness (the heads
    Prometheus kept of it) when `prometheus` is given."""
    return [(trail, trail.verify(witness=None if prometheus is None else
                                 lambda trail_id: audit_witness(prometheus, trail_id)))
            for trail in trails]


def windows_from(trails: list[Checked]) -> list[Window]:
    """Every announced window on record, declared by hand or made from a recurring one,
    cut short where it was ended; `trusted` where its record verifies."""
    found: dict[str, Window] = {}
    ended: dict[str, float] = {}
    for trail, check in trails:
        for where, record in trail.entries(("maintenance-declared", "maintenance-scheduled",
                                            "maintenance-ended")):
            detail = record.get("detail") if record else None
            if not isinstance(detail, dict) or record.get("outcome") != "ok":
                continue
            if record["event"] in ("maintenance-declared", "maintenance-scheduled"):
                try:
                    # announced no earlier than declared: Alertmanager starts a silence
                    # asked to start in the past when it is made
                    start = max(datetime.fromisoformat(detail["from"]).timestamp(),
                                datetime.fromisoformat(record["at"]).timestamp())
                    end = datetime.fromisoformat(detail["to"]).timestamp()
                except (KeyError, TypeError, ValueError):
                    continue
                silence = str(detail.get("silence", ""))
                key = silence or f"{start}-{detail.get('site')}"
                window = Window(str(detail.get("site", "")), start, end, record["who"],
                                str(detail.get("comment", "")), silence,
                                f"{trail.folder}/{where}", check.trusted(where, record))
                if key not in found or window.trusted or not found[key].trusted:
                    found[key] = window
            elif record["event"] == "maintenance-ended":
                # believed even unverified: it can only count more minutes, never fewer
                ended[str(detail.get("silence", ""))] = datetime.fromisoformat(
                    record["at"]).timestamp()
    for silence, at in ended.items():
        if silence in found:
            found[silence].end = min(found[silence].end, at)
    return sorted(found.values(), key=lambda w: w.start)


def drills_from(trails: list[Checked], start: float, end: float) -> list[dict]:
    held = []
    for trail, check in trails:
        for where, record in trail.entries(("drill",)):
            if record is None or record["event"] != "drill":
                continue
            at = datetime.fromisoformat(record["at"]).timestamp()
            if start <= at < end:
                held.append({"at": at, "who": record["who"], "verdict": record["outcome"],
                             **(record["detail"] if isinstance(record["detail"], dict)
                                else {}), "verified": check.trusted(where, record)})
    return held


def trail_checks(trails: list[Checked]) -> list[TrailCheck]:
    return [TrailCheck(str(trail.folder), check.summary(), len(check.faults) + check.more,
                       check.intact) for trail, check in trails]


def incidents_from(pager: str, site: str, start: float, end: float) -> list[Incident]:
    query = urllib.parse.urlencode({"since": f"{start:.0f}", "until": f"{end:.0f}"})
    try:
        answer = pager_incidents(pager, query, 30)
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read the pager's incidents at {pager}: "
                          f"{getattr(exc, 'reason', exc)}") from None
    found = []
    for item in answer:
        if item.get("site") != site or not start <= item["opened"] < end:
            continue
        paged = [p["paged"] for p in item.get("pages", [])]
        how = next((e.get("channel") for e in item.get("events", [])
                    if e.get("what") == "acknowledged"), None)
        due = next((e.get("at") for e in item.get("events", [])
                    if e.get("what") == "report-reminder"), None)
        found.append(Incident(item["grade"], item["alertname"], item.get("teams", []),
                              item["started"], min(paged) if paged else None, item["acked"],
                              item.get("acked_by_name") or item.get("acked_by"), how,
                              item["resolved"], due, bool(item.get("drill"))))
    return found


def sites(api: PrometheusAPI, month: str) -> list[str]:
    start, end = (t.timestamp() for t in month_bounds(month))
    names: set[str] = set()
    for series in api.range("group by (site) (insmon_settlement_path_up)", start + 3600,
                            end, 86400.0):
        if series.labels.get("site"):
            names.add(series.labels["site"])
    if not names:
        raise ReportError(f"no settlement path series with a site label in {month}")
    return sorted(names)


def collect(url: str, month: str, site: str | None, pager: str | None,
            trails: list[Trail], objective: float = OBJECTIVE) -> list[SiteMonth]:
    api = PrometheusAPI(url)
    try:
        names = [site] if site else sites(api, month)
        checked = verified(trails, url)
        windows = windows_from(checked)
        audit = trail_checks(checked)
        start, end = (t.timestamp() for t in month_bounds(month))
        drills = drills_from(checked, start, end)  # the hospital's, not one site's
        figures = []
        for name in names:
            this = measure(api, name, month, windows)
            if site and this.counted == 0 and not this.minutes["maintenance"]:
                raise ReportError(f"no settlement path series of site {site!r} in {month}: "
                                  "is the site's label right? (without --site, every site "
                                  "with history is reported)")
            this.before = measure(api, name, previous(month), windows)
            this.objective = objective
            this.drills = drills
            this.audit = audit
            if pager:
                this.incidents = incidents_from(pager, name, start, end)
            figures.append(this)
    except HistoryError as exc:
        raise ReportError(str(exc)) from None
    return figures


# ------------------------------------------------------------------ writing

def clock(t: float | None, with_date: bool = True) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, SHANGHAI).strftime("%m-%d %H:%M" if with_date
                                                        else "%H:%M")


def minutes(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 60


def moment(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, SHANGHAI)


def show(value: object) -> str:
    """A cell for people: times to the minute, minutes to a tenth."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%m-%d %H:%M")
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def percent(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def by(incidents: list[Incident], key) -> list[tuple[str, int, float | None, float | None]]:
    """(group, count, MTTA, MTTR) in seconds."""
    groups: dict[str, list[Incident]] = {}
    for incident in incidents:
        for name in key(incident):
            groups.setdefault(name, []).append(incident)
    return [(name, len(group), mean([i.mtta for i in group if i.mtta is not None]),
             mean([i.mttr for i in group if i.mttr is not None]))
            for name, group in sorted(groups.items())]


def summary_rows(f: SiteMonth) -> list[tuple[str, str]]:
    before = f.before.availability if f.before else None
    trend = ("-" if f.availability is None or before is None else
             f"{(f.availability - before) * 100:+.3f} 个百分点 points")
    longest = f.longest
    left = f.budget - f.minutes["lost"]
    return [
        ("结算可用率 Settlement availability", percent(f.availability)),
        ("上月 Month before", percent(before)),
        ("趋势 Trend", trend),
        ("计入分钟 Minutes counted", str(f.counted)),
        ("主线路 On the private line (min)", str(f.minutes["primary"])),
        ("4G 备用通道 On the 4G backup (min)", str(f.minutes["backup"])),
        ("中断 Lost (min)", str(f.minutes["lost"])),
        ("其中无数据、前后均中断 Of which not measured, down before and after (min)",
         str(f.blind)),
        ("公告维护 Announced maintenance (min, not counted)", str(f.minutes["maintenance"])),
        ("无数据 Not measured (min, not counted)", str(f.minutes["unmeasured"])),
        ("无数据时段 Spells not measured", _spells(f.unmeasured)),
        ("最长中断 Longest outage", "-" if longest is None else
         f"{clock(longest.start)} 起 {longest.minutes} 分钟 min, {longest.grade} 级, "
         f"{CAUSES.get(longest.cause, (longest.cause, ''))[0]}"),
        ("未通过校验的维护（已计入） Maintenance whose record does not verify (counted)",
         "; ".join(f"{clock(w.start)}–{clock(w.end)} {w.who}: {w.why} ({w.record})"
                   for w in f.doubted) or "无 none"),
        ("审计记录校验 Audit trails verified", " / ".join(
            f"{a.folder}: {'; '.join(a.lines)}" for a in f.audit) or "无审计记录 no trail: "
         "no maintenance left out"),
        ("可用性目标 Objective", percent(f.objective, 2)),
        ("误差预算 Error budget (min)", f"{f.budget:.1f}"),
        ("剩余预算 Budget left (min)",
         f"{left:.1f} ({percent(left / f.budget if f.budget else None, 0)})"),
    ]


def _spells(spells: list[Outage], listed: int = 5) -> str:
    if not spells:
        return "无 none"
    text = "; ".join(f"{clock(o.start)} {o.minutes} 分钟 min" for o in spells[:listed])
    more = f"; 另 {len(spells) - listed} 段 and {len(spells) - listed} more" \
        if len(spells) > listed else ""
    return f"{len(spells)} 段 spells: {text}{more}"


def cjk_fonts(font_manager) -> list[str]:
    """The families with Chinese glyphs fontconfig knows (matplotlib's own font cache may
    predate the font's install, so the file is added to it)."""
    found = []
    if shutil.which("fc-list"):
        listed = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True,
                                text=True, timeout=30).stdout
        for line in sorted(listed.splitlines()):
            path = line.split(":")[0].strip()
            try:
                font_manager.fontManager.addfont(path)
                found.append(font_manager.FontProperties(fname=path).get_name())
            except (OSError, RuntimeError, ValueError):
                continue
    return list(dict.fromkeys(found))


def charts(f: SiteMonth, out: Path) -> list[tuple[str, Path]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    plt.rcParams["font.sans-serif"] = [*cjk_fonts(font_manager), "DejaVu Sans"]
    plt.rcParams["axes.unicode_minus"] = False
    made = []
    days = sorted(f.daily)
    fig, ax = plt.subplots(figsize=(10, 3.4), dpi=110)
    bottom = [0] * len(days)
    for state, colour, label in (("primary", "#2ca02c", "主线路 private line"),
                                 ("backup", "#ff7f0e", "4G 备用 backup"),
                                 ("up", "#98df8a", "可结算 up"),
                                 ("lost", "#d62728", "中断 lost"),
                                 ("maintenance", "#9467bd", "维护 maintenance"),
                                 ("unmeasured", "#c7c7c7", "无数据 not measured")):
        values = [f.daily[d][state] / 60 for d in days]
        if any(values):
            ax.bar([d[8:] for d in days], values, bottom=bottom, color=colour, label=label)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("小时 hours")
    ax.set_title(f"{f.site} {f.month} 每日结算通道 settlement path by day")
    ax.legend(fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    path = out / "daily.png"
    fig.savefig(path)
    plt.close(fig)
    made.append(("每日 By day", path))
    if f.lost_by_cause:
        fig, ax = plt.subplots(figsize=(6, 2.8), dpi=110)
        causes = f.lost_by_cause.most_common()
        ax.barh([CAUSES.get(c, (c, c))[0] for c, _ in causes], [n for _, n in causes],
                color="#d62728")
        ax.set_xlabel("中断分钟 minutes lost")
        ax.set_title("中断原因 Minutes lost by cause")
        fig.tight_layout()
        path = out / "causes.png"
        fig.savefig(path)
        plt.close(fig)
        made.append(("原因 By cause", path))
    return made


def table(head: list[str], rows: list[list]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(show(c))}</td>" for c in row) +
                   "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


KINDS = {"down": "中断 down", "unmeasured": "无数据 not measured"}


def sections(f: SiteMonth) -> list[tuple[str, list[str], list[list]]]:
    """The tables after the first page, their cells typed: numbers as numbers, times as
    times (the workbook keeps them so; the page shows them to the minute)."""
    grades = [[g, f.lost_by_grade[g]] for g in (*GRADES, "-") if f.lost_by_grade[g]]
    causes = [[f"{CAUSES.get(c, (c, c))[0]} {CAUSES.get(c, (c, c))[1]}", n]
              for c, n in f.lost_by_cause.most_common()]
    outages = [[moment(o.start), o.minutes, KINDS[o.kind], o.grade if o.kind == "down" else
                "-", CAUSES.get(o.cause, (o.cause,))[0] if o.kind == "down" else "-"]
               for o in f.outages]
    maintenance = [[moment(w.start), moment(w.end), w.who, w.why, w.silence]
                   for w in f.maintenance]
    doubted = [[moment(w.start), moment(w.end), w.who, w.why, w.record] for w in f.doubted]
    real = [i for i in f.incidents if not i.drill]
    incidents = [[i.grade, i.alert, ",".join(i.teams), moment(i.started), moment(i.paged),
                  moment(i.acked), i.acked_by or "-", i.acked_how or "-", moment(i.resolved),
                  minutes(i.mtta), minutes(i.mttr)] for i in real]
    by_grade = [[g, n, minutes(a), minutes(r)] for g, n, a, r in by(real, lambda i: [i.grade])]
    by_team = [[t, n, minutes(a), minutes(r)] for t, n, a, r in by(real, lambda i: i.teams)]
    reports = [[i.grade, i.alert, moment(i.started), moment(i.report_due),
                "未知 unknown (the pager is not told)"] for i in real if i.grade in ("I", "II")]
    drills = [[moment(d["at"]), str(d.get("scenario", "-")), d["verdict"], d["who"],
               "是 yes" if d.get("verified") else "否 no (counts for nothing)"]
              for d in f.drills]
    return [
        ("按级别中断分钟 Minutes lost by grade", ["级别 Grade", "分钟 Minutes"], grades),
        ("按原因中断分钟 Minutes lost by cause", ["原因 Cause", "分钟 Minutes"], causes),
        ("中断 Outages", ["开始 Start", "分钟 Minutes", "类别 Kind", "级别 Grade",
                        "原因 Cause"], outages),
        ("公告维护（不计入） Announced maintenance (not counted)",
         ["开始 Start", "结束 End", "声明人 Declared by", "原因 Why", "静默 Silence"],
         maintenance),
        ("未校验维护（已计入） Maintenance whose record does not verify (counted)",
         ["开始 Start", "结束 End", "声明人 Declared by", "原因 Why", "记录 Record"], doubted),
        ("事件 Incidents", ["级别 Grade", "告警 Alert", "团队 Teams", "开始 Started",
                          "呼叫 Paged", "确认 Acknowledged", "确认人 By", "方式 How",
                          "恢复 Resolved", "MTTA 分钟", "MTTR 分钟"], incidents),
        ("按级别 MTTA/MTTR by grade", ["级别 Grade", "事件 Incidents", "MTTA 分钟",
                                     "MTTR 分钟"], by_grade),
        ("按团队 MTTA/MTTR by team", ["团队 Team", "事件 Incidents", "MTTA 分钟",
                                    "MTTR 分钟"], by_team),
        ("应交事件报告 Written reports due", ["级别 Grade", "告警 Alert", "开始 Started",
                                          "截止 Due", "按时 In time"], reports),
        ("演练 Drills", ["时间 When", "场景 Scenario", "结论 Verdict", "人员 Who",
                       "记录已校验 Record verifies"], drills),
    ]


STYLE = """body{font-family:"WenQuanYi Micro Hei","Noto Sans CJK SC",sans-serif;margin:2em;
color:#222}h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #bbb;padding:3px 8px;
font-size:.9em;text-align:left}th{background:#eee}img{max-width:100%}
.figure{font-size:2.2em;font-weight:bold}.warning{color:#a00;font-weight:bold}"""


def warnings(f: SiteMonth) -> list[str]:
    """What the figure rests on that did not hold, said before anything else."""
    said = []
    if f.doubted:
        said.append(f"注意：{len(f.doubted)} 个维护窗口的审计记录未通过校验，"
                    "其时间已按正常分钟计入。"
                    f" Note: {len(f.doubted)} maintenance window(s) whose audit record does "
                    "not verify are counted as ordinary minutes, not left out (below).")
    for trail in f.audit:
        if trail.faults:
            said.append(f"审计记录有误 The audit trail {trail.folder} has {trail.faults} "
                        "fault(s) (insmon audit --verify): only its records that verify "
                        "are used.")
        elif not trail.intact:
            said.append(f"审计记录未与见证比对 The audit trail {trail.folder}: "
                        f"{trail.lines[-1]}")
    if f.blind:
        said.append(f"{f.blind} 分钟无数据但前后均中断，计为中断。 {f.blind} minute(s) not "
                    "measured with the path down before and after count as down.")
    return said


def html_page(f: SiteMonth, chart_files: list[tuple[str, Path]]) -> str:
    parts = [f"<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>"
             f"<title>{html.escape(f.site)} {f.month} 月度医保结算可用性报告</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(f.site)} {f.month} 月度医保结算可用性报告<br>"
             f"<small>Monthly settlement availability report</small></h1>",
             f"<p class='figure'>{percent(f.availability)}</p>",
             *(f"<p class='warning'>{html.escape(line)}</p>" for line in warnings(f)),
             "<h2>概要 Summary</h2>",
             table(["项目 Item", "数值 Figure"], [list(r) for r in summary_rows(f)])]
    for title, file in chart_files:
        data = base64.b64encode(file.read_bytes()).decode()
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' "
                     f"src='data:image/png;base64,{data}'>")
    for title, head, rows in sections(f):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(table(head, rows) if rows else "<p>无 None</p>")
    parts.append(f"<p><small>insmon report; 北京时间 Beijing time; each minute judged at "
                 f"its end; made {datetime.now(SHANGHAI):%Y-%m-%d %H:%M}</small></p>"
                 "</body></html>")
    return "\n".join(parts)


FORMATS = {int: "0", float: "0.0", datetime: "yyyy-mm-dd hh:mm"}


def workbook(figures: list[SiteMonth], path: Path) -> None:
    """The same tables, a sheet each; numbers and times as Excel's own, with formats."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "汇总 Summary"
    sheet.append(["站点 Site", "月份 Month", "可用率 Availability", "计入分钟 Counted",
                  "主线路 Primary", "4G 备用 Backup", "中断 Lost", "维护 Maintenance",
                  "无数据 Not measured", "最长中断 Longest (min)", "事件 Incidents",
                  "剩余预算 Budget left (min)", "未校验维护 Maintenance not verified",
                  "审计记录 Audit trails"])
    for f in figures:
        sheet.append([f.site, f.month, f.availability, f.counted, f.minutes["primary"],
                      f.minutes["backup"], f.minutes["lost"], f.minutes["maintenance"],
                      f.minutes["unmeasured"], f.longest.minutes if f.longest else 0,
                      len([i for i in f.incidents if not i.drill]),
                      f.budget - f.minutes["lost"], len(f.doubted),
                      "; ".join(f"{a.folder}: {a.lines[0]}" for a in f.audit) or "-"])
    for row in sheet.iter_rows(min_row=2):
        _formats(row)
        row[2].number_format = "0.000%"
    for f in figures:
        for title, head, rows in sections(f):
            name = f"{f.site[:12]} {title.split()[0]}"[:31]
            extra = book.create_sheet(name)
            extra.append(head)
            for row in rows:
                extra.append([v.replace(tzinfo=None) if isinstance(v, datetime) else v
                              for v in row])
            for row in extra.iter_rows(min_row=2):
                _formats(row)
    for page in book.worksheets:  # a text that starts like a formula stays text
        for line in page.iter_rows():
            for cell in line:
                if cell.data_type == "f":
                    cell.data_type = "s"
    book.save(path)


def _formats(row) -> None:
    for cell in row:
        kind = type(cell.value)
        if kind in FORMATS:
            cell.number_format = FORMATS[kind]


def pdf(page: Path, out: Path) -> bool:
    """report.pdf by headless Chromium, when it is installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return False
    with tempfile.TemporaryDirectory(prefix="insmon-chromium-") as profile:
        done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                               f"--user-data-dir={profile}", "--no-pdf-header-footer",
                               f"--print-to-pdf={out}", page.as_uri()],
                              capture_output=True, timeout=120)
    return done.returncode == 0 and out.exists()


def worst_first(figures: list[SiteMonth]) -> list[SiteMonth]:
    """A region's summary is read from the top: a site nothing measured first, then the
    least available, the most minutes lost, by name."""
    return sorted(figures, key=lambda f: (f.availability is not None, f.availability or 0.0,
                                          -f.minutes["lost"], f.site))


def write(figures: list[SiteMonth], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    figures = worst_first(figures)
    written = []
    for f in figures:
        folder = out / re.sub(r"[^\w.-]", "_", f.site) if len(figures) > 1 else out
        folder.mkdir(parents=True, exist_ok=True)
        page = folder / "report.html"
        page.write_text(html_page(f, charts(f, folder)), encoding="utf-8")
        workbook([f], folder / "report.xlsx")
        written += [page, folder / "report.xlsx"]
        if pdf(page, folder / "report.pdf"):
            written.append(folder / "report.pdf")
    if len(figures) > 1:
        rows = [[f.site, percent(f.availability), f.counted, f.minutes["lost"],
                 f.minutes["backup"], f.minutes["maintenance"],
                 f.longest.minutes if f.longest else 0,
                 len([i for i in f.incidents if not i.drill]), len(f.doubted)]
                for f in figures]
        summary = out / "summary.html"
        summary.write_text(
            f"<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'><style>{STYLE}"
            f"</style></head><body><h1>{figures[0].month} 各院医保结算可用性汇总<br><small>"
            "Settlement availability over all sites</small></h1>"
            + table(["站点 Site", "可用率 Availability", "计入分钟 Counted", "中断 Lost",
                     "4G 备用 Backup", "维护 Maintenance", "最长中断 Longest", "事件 Incidents",
                     "未校验维护（已计入） Maintenance not verified (counted)"], rows)
            + "<p>" + html.escape(" / ".join(f"{a.folder}: {'; '.join(a.lines)}"
                                             for a in figures[0].audit) or
                                  "无审计记录 no audit trail") + "</p></body></html>",
            encoding="utf-8")
        workbook(figures, out / "summary.xlsx")
        written += [summary, out / "summary.xlsx"]
    return written
