"""The human views of the latest results: the `insmon once` table and the status page."""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime

from exporters.snapshot import CheckView, Snapshot
from vocabulary import SHANGHAI, VERSION

COLUMNS = ("CHECK", "KIND", "STATUS", "DURATION", "DETAIL")


def _cells(view: CheckView) -> tuple[str, ...]:
    if view.last is None:
        return (view.name, view.kind, "pending", "-", "not run yet")
    last = view.last
    return (view.name, view.kind, last.status, f"{last.duration * 1000:.1f} ms", last.detail)


def table(snap: Snapshot) -> str:
    """A plain-text table, one row per check, for the console."""
    rows = [COLUMNS, *(_cells(view) for view in snap.checks)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]])
             for row in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def _headline(snap: Snapshot) -> str:
    total = len(snap.checks)
    pending = sum(1 for v in snap.checks if v.last is None)
    failing = sum(1 for v in snap.checks if v.last and v.last.status != "ok")
    if failing:
        return f"{failing} of {total} checks failing"
    if pending:
        return f"{total - pending} of {total} checks ok, {pending} not run yet"
    return f"all {total} checks ok"


def page(snap: Snapshot, now: float | None = None) -> str:
    """The status page served at `/`: refreshes itself, readable without Grafana."""
    now = time.time() if now is None else now
    esc = html.escape
    body = []
    for view in snap.checks:
        name, kind, status, duration, detail = _cells(view)
        age = f"{now - view.last.started:.0f} s ago" if view.last else "-"
        runs = ", ".join(f"{s} {n}" for s, n in view.runs.items() if n)
        if view.skipped:
            runs += f", skipped {view.skipped}"
        body.append(
            f'<tr class="{esc(status)}"><td>{esc(name)}</td><td>{esc(kind)}</td>'
            f"<td>{esc(status)}</td><td>{esc(duration)}</td><td>{esc(age)}</td>"
            f"<td>{esc(detail)}</td><td>{esc(runs or '-')}</td></tr>")
    headline = _headline(snap)
    reload_note = "" if snap.reload_ok else (
        '<p class="failed">The last config reload was rejected: the previous config is '
        "still in use (see the log).</p>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="10">
<title>insmon: {esc(headline)}</title>
<style>
body {{ font-family: sans-serif; background: #111; color: #eee; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ padding: .3em .8em; text-align: left; border-bottom: 1px solid #333; }}
tr.ok td:nth-child(3) {{ color: #5c5; }}
tr.pending td:nth-child(3) {{ color: #aaa; }}
tr.failed td:nth-child(3), tr.timeout td:nth-child(3), tr.error td:nth-child(3),
p.failed {{ color: #f55; font-weight: bold; }}
</style></head><body>
<h1>insmon: {esc(headline)}</h1>
<p>Settlement chain health (医保结算链路监控), as of {esc(_clock(now))} Asia/Shanghai.
Config: {esc(snap.config_source)}. <a href="/metrics">/metrics</a></p>
{reload_note}
<table>
<tr><th>Check</th><th>Kind</th><th>Status</th><th>Duration</th><th>Last run</th>
<th>Detail</th><th>Runs</th></tr>
{chr(10).join(body)}
</table>
<p>insmon {esc(VERSION)}</p>
</body></html>
"""
