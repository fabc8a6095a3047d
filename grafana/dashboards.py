#!/usr/bin/env python3
"""The Grafana dashboards, as code (grafanalib). The JSON under grafana/dashboards/ is
generated from this file and committed; a test fails when it is stale.

    python grafana/dashboards.py      # writes grafana/dashboards/*.json

Dashboards: the machine room's wall screen, the private network, storage and RAID, the
incident review, and the regional center's board over every hospital. Every panel reads
the provisioned Prometheus datasource (uid "prometheus"; at a center, its
VictoriaMetrics); every expression takes the `site` variable, most the `check` variable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafanalib.core import (
    Annotations,
    Dashboard,
    GridPos,
    Heatmap,
    Stat,
    StateTimeline,
    Table,
    TableSortByField,
    Target,
    Template,
    Templating,
    Threshold,
    Time,
    TimeSeries,
)

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "prometheus"}
SITE = 'site=~"$site"'
SITE_CHECK = 'site=~"$site",check=~"$check"'

GREEN, AMBER, RED, BLUE, YELLOW = "green", "orange", "red", "blue", "yellow"

# The wall's status tiles: 0 healthy, 1 degraded, 2 down.
STATUS = [{"type": "value", "options": {
    "0": {"text": "OK 正常", "color": GREEN, "index": 0},
    "1": {"text": "WARN 降级", "color": AMBER, "index": 1},
    "2": {"text": "DOWN 中断", "color": RED, "index": 2}}}]
STATUS_STEPS = [Threshold(GREEN, 0, 0.0), Threshold(AMBER, 1, 1.0), Threshold(RED, 2, 2.0)]

# The highest firing grade as a number: 1 = I ... 4 = IV, 0 = no alert.
HIGHEST_GRADE = (
    "min by (site) ("
    + " or ".join(f'(ALERTS{{alertstate="firing",{SITE},grade="{g}"}} * 0 + {n})'
                  for n, g in enumerate(("I", "II", "III", "IV"), 1))
    + ") or on() vector(0)")
GRADES = [{"type": "value", "options": {
    "0": {"text": "none 无告警", "color": GREEN, "index": 0},
    "1": {"text": "I 一级", "color": RED, "index": 1},
    "2": {"text": "II 二级", "color": AMBER, "index": 2},
    "3": {"text": "III 三级", "color": YELLOW, "index": 3},
    "4": {"text": "IV 四级", "color": BLUE, "index": 4}}}]
UP_DOWN = [{"type": "value", "options": {
    "0": {"text": "down 中断", "color": RED, "index": 0},
    "1": {"text": "up 正常", "color": GREEN, "index": 1}}}]
# A RAID array's state as a severity: 0 healthy, 1 maintenance, 2 degraded, 3 failed.
RAID_SEVERITY = (
    "max by (site, instance, array) ("
    f'insmon_raid_array_state{{{SITE_CHECK},state=~"failed|inactive"}} * 3'
    f' or insmon_raid_array_state{{{SITE_CHECK},state=~"degraded|recovering|unknown"}} * 2'
    f' or insmon_raid_array_state{{{SITE_CHECK},state=~"resyncing|checking|reshaping"}}'
    f" or insmon_raid_array_state{{{SITE_CHECK}}} * 0)")
RAID_STATES = [{"type": "value", "options": {
    "0": {"text": "healthy 正常", "color": GREEN, "index": 0},
    "1": {"text": "maintenance 校验/同步", "color": BLUE, "index": 1},
    "2": {"text": "degraded 降级/重建", "color": AMBER, "index": 2},
    "3": {"text": "failed 故障", "color": RED, "index": 3}}}]


# What is firing, but the alerts that are no fault (alert_rules.NOT_FAULTS): the
# Watchdog (the alert path's heartbeat) and OutsideBusinessHours (the calendar's hours).
FAULTS = (f'ALERTS{{alertstate="firing",alertname!~"Watchdog|OutsideBusinessHours",'
          f'{SITE}}}')

def target(expr: str, legend: str = "", ref: str = "A", fmt: str = "time_series",
           instant: bool = False) -> Target:
    return Target(expr=expr, legendFormat=legend, refId=ref, format=fmt, datasource=DS,
                  instant=instant)


def at(x: int, y: int, w: int, h: int) -> GridPos:
    return GridPos(h=h, w=w, x=x, y=y)


def tile(title: str, expr: str, x: int, y: int, w: int = 4, h: int = 7, **kw) -> Stat:
    """A status tile of the wall: one big coloured word, readable across the room."""
    return Stat(title=title, dataSource=DS, targets=[target(expr, "{{site}}")],
                gridPos=at(x, y, w, h), colorMode="background", graphMode="none",
                textMode="value", reduceCalc="lastNotNull", format=kw.pop("unit", "none"),
                noValue="no data 无数据",
                mappings=kw.pop("mappings", STATUS), thresholds=kw.pop("steps", STATUS_STEPS),
                **kw)


def series(title: str, targets: list[Target], pos: GridPos, unit: str,
           steps: list[Threshold] | None = None, **kw) -> TimeSeries:
    """A time series panel; with `steps`, the thresholds are drawn as lines."""
    extra = {}
    if steps:
        extra = {"thresholdsStyleMode": "line"}
    return TimeSeries(title=title, dataSource=DS, targets=targets, gridPos=pos, unit=unit,
                      thresholds=steps or [Threshold(GREEN, 0, 0.0)], spanNulls=False,
                      legendDisplayMode="list", **extra, **kw)


def timeline(title: str, targets: list[Target], pos: GridPos, mappings: list,
             steps: list[Threshold]) -> StateTimeline:
    return StateTimeline(title=title, dataSource=DS, targets=targets, gridPos=pos,
                         mappings=mappings, thresholds=steps, mergeValues=True,
                         showValue="never", extraJson={"fieldConfig": {"defaults": {
                             "unit": "none"}}})


def heatmap(title: str, expr: str, pos: GridPos, unit: str) -> Heatmap:
    """A heatmap of a histogram's buckets (new-style heatmap panel options)."""
    return Heatmap(title=title, dataSource=DS, gridPos=pos, dataFormat="tsbuckets",
                   targets=[target(expr, "{{le}}", fmt="heatmap")],
                   extraJson={"type": "heatmap", "options": {
                       "calculate": False, "yAxis": {"unit": unit},
                       "color": {"scheme": "Oranges", "mode": "scheme"},
                       "cellGap": 1, "tooltip": {"show": True, "yHistogram": True}},
                       "fieldConfig": {"defaults": {"unit": unit}}})


def variables(check_kinds: str | None, multi_site: bool = True) -> Templating:
    found = [Template(
        name="site", label="site 院区", dataSource=DS, type="query",
        query={"query": "label_values(insmon_probe_success, site)", "refId": "site"},
        multi=multi_site, includeAll=multi_site, allValue=".*", refresh=2, sort=1)]
    if check_kinds:
        found.append(Template(
            name="check", label="check 检查项", dataSource=DS, type="query",
            query={"query": f'label_values(insmon_probe_success{{{SITE},kind=~"{check_kinds}"}}'
                            ", check)", "refId": "check"},
            multi=True, includeAll=True, allValue=".*", refresh=2, sort=1))
    return Templating(list=found)


def dashboard(uid: str, title: str, panels: list, templating: Templating, **kw) -> Dashboard:
    return Dashboard(uid=uid, title=title, panels=panels, templating=templating,
                     tags=["insmon"], timezone="browser", editable=False,
                     schemaVersion=39, **kw).auto_panel_ids()


# ---------------------------------------------------------------------- the wall

def wall() -> Dashboard:
    primary, backup = (f'max by (site) (insmon_vpn_link_up{{{SITE},role="{role}"}})'
                       for role in ("primary", "backup"))
    latency = f"instance:insmon_storage_latency_seconds:max{{{SITE}}}"
    cpu = f"instance:insmon_cpu_usage:avg2m{{{SITE}}}"
    panels = [
        # the settlement chain, left to right, as a patient's bill crosses it
        tile("Private line 医保专网主线路", f"2 * (1 - {primary})", 0, 0),
        tile("4G backup 备用通道", f"(1 - {backup}) * (2 - {primary})", 4, 0),
        tile("Front-end 医保前置机",
             f"2 * (1 - max by (site) (insmon_vpn_front_end_up{{{SITE}}}))", 8, 0),
        tile("Storage 结算存储",
             "max by (site) (2 * (1 - insmon_probe_success"
             f'{{{SITE},kind="storage_latency"}}) or ({latency} > bool 0.5)'
             f" + ({latency} > bool 2))", 12, 0),
        tile("RAID 磁盘阵列",
             f'max by (site) (insmon_raid_array_state{{{SITE},state=~"failed|inactive"}} * 2'
             f' or insmon_raid_array_state{{{SITE},state=~"degraded|recovering|unknown"}})',
             16, 0),
        tile("Settlement server CPU 结算服务器",
             f"max by (site) (({cpu} > bool 0.85) + ({cpu} > bool 0.95))", 20, 0),
        # who is on it
        tile("Highest grade firing 当前最高告警级别", HIGHEST_GRADE, 0, 7, w=6, h=6,
             mappings=GRADES, steps=[Threshold(GREEN, 0, 0.0)]),
        Stat(title="Teams paged 当前负责团队", dataSource=DS, gridPos=at(6, 7, 8, 6),
             targets=[target(f'count by (team) ({FAULTS}) '
                             'or on() label_replace(vector(0), "team", "none 无", "", "")',
                             "{{team}}")],
             colorMode="none", graphMode="none", textMode="value_and_name",
             reduceCalc="lastNotNull", format="none", thresholds=[Threshold(GREEN, 0, 0.0)]),
        Stat(title="Settlement over 结算承载通道", dataSource=DS, gridPos=at(14, 7, 5, 6),
             targets=[target(f"max by (role) (insmon_settlement_active_role{{{SITE}}}) == 1",
                             "{{role}}")],
             colorMode="none", graphMode="none", textMode="name", reduceCalc="lastNotNull",
             format="none", thresholds=[Threshold(GREEN, 0, 0.0)]),
        tile("Since the last incident 距上次故障",
             "time() - max(max_over_time("
             f"site:insmon_last_incident:timestamp_seconds{{{SITE}}}[30d])) "
             "or on() vector(-1)", 19, 7, w=5, h=6, unit="dtdurations",
             mappings=[{"type": "value", "options": {
                 "-1": {"text": "none in 30 days 30天内无", "color": GREEN, "index": 0}}}],
             steps=[Threshold(AMBER, 0, 0.0), Threshold(GREEN, 1, 86400.0)]),
        series("Settlement path 结算通道 (1 = up)", [
            target(f"site:insmon_settlement_path:up{{{SITE}}}", "{{site}} path"),
            target(f"max by (site, link) (insmon_vpn_link_up{{{SITE}}})",
                   "{{site}} {{link}}", "B")], at(0, 13, 24, 8), "none",
            valueMin=0, valueMax=1),
    ]
    return dashboard("insmon-wall", "insmon · machine room wall 机房大屏", panels,
                     variables(None, multi_site=False), style="dark", refresh="5s",
                     time=Time("now-1h", "now"), hideControls=True)


# ---------------------------------------------------------------------- network

def network() -> Dashboard:
    panels = [
        timeline("Links up/down 链路状态", [target(
            f"insmon_vpn_link_up{{{SITE_CHECK}}}", "{{site}} {{link}} ({{role}})")],
            at(0, 0, 24, 6), UP_DOWN, [Threshold(RED, 0, 0.0), Threshold(GREEN, 1, 1.0)]),
        heatmap("Ping RTT 往返时延 (heatmap)",
                f"sum by (le) (increase(insmon_ping_rtt_seconds_bucket{{{SITE_CHECK}}}"
                "[$__rate_interval]))", at(0, 6, 12, 9), "s"),
        series("Ping loss 丢包率", [target(f"insmon_ping_loss_ratio{{{SITE_CHECK}}}",
                                          "{{site}} {{target}}")], at(12, 6, 12, 9),
               "percentunit", [Threshold(GREEN, 0, 0.0), Threshold(RED, 1, 0.05)],
               valueMin=0),
        series("Mean RTT 平均时延", [target(f"insmon_ping_rtt_avg_seconds{{{SITE_CHECK}}}",
                                         "{{site}} {{target}}")], at(0, 15, 8, 8), "s",
               [Threshold(GREEN, 0, 0.0), Threshold(RED, 1, 0.2)]),
        series("Jitter 抖动", [target(f"insmon_ping_jitter_seconds{{{SITE_CHECK}}}",
                                    "{{site}} {{target}}")], at(8, 15, 8, 8), "s"),
        series("Gateway RTT per link 网关时延", [target(
            f"insmon_vpn_gateway_rtt_seconds{{{SITE_CHECK}}}", "{{site}} {{link}}")],
            at(16, 15, 8, 8), "s"),
        series("SNMP interface traffic 接口流量", [target(
            f"rate(insmon_snmp_interface_bytes_total{{{SITE_CHECK}}}[$__rate_interval])",
            "{{site}} {{check}} {{interface}} {{direction}}")], at(0, 23, 12, 8), "Bps"),
        series("SNMP interface errors and discards 接口错包", [
            target(f"rate(insmon_snmp_interface_errors_total{{{SITE_CHECK}}}"
                   "[$__rate_interval])", "{{site}} {{interface}} {{direction}} errors"),
            target(f"rate(insmon_snmp_interface_discards_total{{{SITE_CHECK}}}"
                   "[$__rate_interval])", "{{site}} {{interface}} {{direction}} discards",
                   "B")], at(12, 23, 12, 8), "pps"),
        # the platform's own answer: can a bill settle, through which line
        timeline("Transactions settle, per link 结算交易（每条通道）", [target(
            f"insmon_settlement_transaction_ok{{{SITE_CHECK}}}", "{{site}} {{link}}")],
            at(0, 31, 16, 6), UP_DOWN, [Threshold(RED, 0, 0.0), Threshold(GREEN, 1, 1.0)]),
        series("Transaction time 交易耗时 (p95)", [target(
            "histogram_quantile(0.95, sum by (site, link, le) (rate("
            f"insmon_settlement_transaction_seconds_bucket{{{SITE_CHECK}}}[$__rate_interval])))",
            "{{site}} {{link}}")], at(16, 31, 8, 6), "s"),
    ]
    return dashboard("insmon-network", "insmon · private network 医保专网", panels,
                     variables("vpn|icmp|snmp|settlement"), refresh="30s",
                     time=Time("now-6h", "now"))


# ---------------------------------------------------------------------- storage

def storage() -> Dashboard:
    two_seconds = [Threshold(GREEN, 0, 0.0), Threshold(RED, 1, 2.0)]
    panels = [
        series("Disk read/write latency 磁盘读写延迟 (2 s line)", [
            target(f"insmon_disk_read_await_seconds{{{SITE_CHECK}}}",
                   "{{site}} {{device}} read"),
            target(f"insmon_disk_write_await_seconds{{{SITE_CHECK}}}",
                   "{{site}} {{device}} write", "B")], at(0, 0, 12, 9), "s", two_seconds),
        heatmap("Active probe latency 存储探测延迟 (heatmap)",
                f"sum by (le) (increase(insmon_storage_latency_seconds_bucket"
                f'{{{SITE_CHECK},phase="total"}}[$__rate_interval]))', at(12, 0, 12, 9), "s"),
        series("Active probe latency by phase 各阶段延迟", [target(
            f"insmon_storage_last_latency_seconds{{{SITE_CHECK}}}",
            "{{site}} {{check}} {{phase}}")], at(0, 9, 12, 8), "s", two_seconds),
        series("Disk busy 磁盘繁忙度", [target(f"insmon_disk_busy_ratio{{{SITE_CHECK}}}",
                                           "{{site}} {{device}}")], at(12, 9, 12, 8),
               "percentunit", valueMin=0, valueMax=1),
        timeline("RAID state 阵列状态", [target(RAID_SEVERITY, "{{site}} {{array}}")],
                 at(0, 17, 24, 6), RAID_STATES,
                 [Threshold(GREEN, 0, 0.0), Threshold(BLUE, 1, 1.0), Threshold(AMBER, 2, 2.0),
                  Threshold(RED, 3, 3.0)]),
        series("RAID rebuild/resync progress 重建进度 (100 % when none runs)", [target(
            f"insmon_raid_sync_progress_ratio{{{SITE_CHECK}}} or max by (site, instance, "
            f"check, array) (insmon_raid_array_info{{{SITE_CHECK}}}) * 0 + 1",
            "{{site}} {{array}}")], at(0, 23, 12, 7), "percentunit", valueMin=0,
            valueMax=1),
        series("Cache volume free 缓存卷剩余空间", [target(
            f"insmon_storage_free_bytes{{{SITE_CHECK}}} / insmon_storage_size_bytes",
            "{{site}} {{check}}")], at(12, 23, 12, 7), "percentunit", valueMin=0, valueMax=1),
    ]
    return dashboard("insmon-storage", "insmon · storage and RAID 存储与阵列", panels,
                     variables("disk_io|storage_latency|raid"), refresh="30s",
                     time=Time("now-6h", "now"))


# ---------------------------------------------------------------------- review

def incident() -> Dashboard:
    alerts = {"name": "Alerts 告警", "datasource": DS, "enable": True,
              "iconColor": "red", "expr": FAULTS,
              "step": "15s", "titleFormat": "{{alertname}} (grade {{grade}})",
              "textFormat": "{{site}}: team {{team}}, also {{also}}",
              "tagKeys": "grade,team,site", "useValueForTime": False}
    panels = [
        series("Highest grade firing 最高告警级别 (1 = I ... 4 = IV, 0 = none)",
               [target(HIGHEST_GRADE, "{{site}}")], at(0, 0, 24, 6), "none",
               valueMin=0, valueMax=4),
        series("Settlement path 结算通道 (1 = up)", [
            target(f"site:insmon_settlement_path:up{{{SITE}}}", "{{site}}")],
            at(0, 6, 12, 7), "none", valueMin=0, valueMax=1),
        series("Worst storage latency 最大存储延迟", [
            target(f"instance:insmon_storage_latency_seconds:max{{{SITE}}}",
                   "{{site}} {{instance}}")], at(12, 6, 12, 7), "s",
            [Threshold(GREEN, 0, 0.0), Threshold(RED, 1, 2.0)]),
        series("CPU 处理器使用率", [target(f"insmon_cpu_usage_ratio{{{SITE}}}",
                                       "{{site}} {{instance}}")], at(0, 13, 12, 7),
               "percentunit", [Threshold(GREEN, 0, 0.0), Threshold(RED, 1, 0.95)],
               valueMin=0, valueMax=1),
        series("Ping loss 丢包率", [target(f"insmon_ping_loss_ratio{{{SITE}}}",
                                          "{{site}} {{target}}")], at(12, 13, 12, 7),
               "percentunit", [Threshold(GREEN, 0, 0.0), Threshold(RED, 1, 0.05)],
               valueMin=0),
        timeline("RAID state 阵列状态", [target(RAID_SEVERITY.replace(
            SITE_CHECK, SITE), "{{site}} {{array}}")], at(0, 20, 24, 5), RAID_STATES,
            [Threshold(GREEN, 0, 0.0), Threshold(BLUE, 1, 1.0), Threshold(AMBER, 2, 2.0),
             Threshold(RED, 3, 3.0)]),
    ]
    return dashboard("insmon-incident", "insmon · incident review 事件复盘", panels,
                     variables(None), refresh="", time=Time("now-6h", "now"),
                     annotations=Annotations(list=[alerts]))


# ---------------------------------------------------------------------- region

# Each hospital's state at a regional center, from its raw series over the last minute
# (as the monthly report judges a minute), worst first: 3 insmon silent (reported in the
# last 6 hours, as InsmonSiteMissing, but no successful scrape in the last minute), 2
# cannot settle (no settlement path, or the platform refusing), 1 on the 4G backup,
# 0 can settle over the private line.
_LAST = "max by (site) (last_over_time({}{{{}}}[1m]))"
_PATH = (f"({_LAST.format('insmon_settlement_path_up', SITE)} * on (site) group_left () "
         f"{_LAST.format('insmon_settlement_possible', SITE)} "
         f"or {_LAST.format('insmon_settlement_path_up', SITE)})")
SILENT = (f'group by (site) (max_over_time(up{{job="insmon",{SITE}}}[6h])) unless on (site) '
          f'(max by (site) (max_over_time(up{{job="insmon",{SITE}}}[1m])) == 1)')
_BACKUP = _LAST.format("insmon_settlement_active_role", f'{SITE},role="backup"')
SITE_STATE = (f"({SILENT}) * 0 + 3 or (({_PATH} == 0) + 2) or (({_BACKUP} == 1) * 0 + 1)"
              f" or ({_PATH} * 0)")
SITE_STATES = [{"type": "value", "options": {
    "0": {"text": "can settle 可结算", "color": GREEN, "index": 0},
    "1": {"text": "on the backup line 备用通道", "color": AMBER, "index": 1},
    "2": {"text": "cannot settle 无法结算", "color": RED, "index": 2},
    "3": {"text": "insmon silent 监控失联", "color": "purple", "index": 3}}}]
LEVEL_I = f'ALERTS{{alertstate="firing",grade="I",{SITE}}}'
# a hospital's own wall, in the center's Grafana (the same dashboards over its history)
WALL_LINK = [{"title": "wall 机房大屏", "url": "/d/insmon-wall?var-site=${__data.fields.site}"}]


def count_tile(title: str, state: int, x: int, color: str) -> Stat:
    return Stat(title=title, dataSource=DS, gridPos=at(x, 0, 4, 5),
                targets=[target(f"count(({SITE_STATE}) == {state}) or vector(0)",
                                instant=True)],
                colorMode="background", graphMode="none", textMode="value",
                reduceCalc="lastNotNull", format="none",
                thresholds=[Threshold(GREEN, 0, 0.0), Threshold(color, 1, 1.0)])


def _cell(name: str, mappings: list) -> dict:
    """A table column shown as coloured words."""
    return {"matcher": {"id": "byName", "options": name}, "properties": [
        {"id": "mappings", "value": mappings},
        {"id": "custom.displayMode", "value": "color-background"},
        {"id": "custom.width", "value": 260}]}


def region() -> Dashboard:
    hospitals = Table(
        title="Hospitals, worst first 各院状态（最差在前）", dataSource=DS,
        gridPos=at(0, 5, 14, 22), unit="none",
        targets=[target(SITE_STATE, ref="A", fmt="table", instant=True),
                 target(HIGHEST_GRADE.replace(
                     "or on() vector(0)",
                     f'or on (site) group by (site) (up{{job="insmon",{SITE}}}) * 0'),
                     ref="B", fmt="table", instant=True)],
        transformations=[
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {
                "excludeByName": {"Time": True},
                "indexByName": {"site": 0, "Value #A": 1, "Value #B": 2},
                "renameByName": {"site": "site", "Value #A": "state 状态",
                                 "Value #B": "highest grade 最高告警"}}}],
        sortBy=[TableSortByField(displayName="state 状态", desc=True)],
        extraJson={"fieldConfig": {
            "defaults": {"links": WALL_LINK, "custom": {"filterable": True}},
            "overrides": [_cell("state 状态", SITE_STATES),
                          _cell("highest grade 最高告警", GRADES)]},
            "options": {"footer": {"show": True, "reducer": ["count"],
                                   "countRows": True, "enablePagination": False}}})
    open_level_i = Table(
        title="Open Level I 一级事件", dataSource=DS, gridPos=at(14, 5, 10, 22), unit="none",
        targets=[target(f"max by (site, alertname) ({LEVEL_I})", fmt="table", instant=True)],
        transformations=[{"id": "organize", "options": {
            "excludeByName": {"Time": True, "Value": True},
            "renameByName": {"alertname": "alert 告警"}}}],
        sortBy=[TableSortByField(displayName="site", desc=False)],
        extraJson={"fieldConfig": {"defaults": {"links": WALL_LINK}}})
    panels = [
        count_tile("Can settle 可结算", 0, 0, GREEN),
        count_tile("On the backup line 备用通道", 1, 4, AMBER),
        count_tile("Cannot settle 无法结算", 2, 8, RED),
        count_tile("insmon silent 监控失联", 3, 12, "purple"),
        Stat(title="Hospitals with an open Level I 一级事件医院数", dataSource=DS,
             gridPos=at(16, 0, 8, 5),
             targets=[target(f"count(group by (site) ({LEVEL_I})) or vector(0)", instant=True)],
             colorMode="background", graphMode="none", textMode="value",
             reduceCalc="lastNotNull", format="none",
             thresholds=[Threshold(GREEN, 0, 0.0), Threshold(RED, 1, 1.0)]),
        hospitals,
        open_level_i,
    ]
    return dashboard("insmon-region", "insmon · region 医保中心全区总览", panels,
                     variables(None), style="dark", refresh="30s",
                     time=Time("now-1h", "now"))


DASHBOARDS = {"wall": wall, "network": network, "storage": storage, "incident": incident,
              "region": region}


def render() -> dict[str, str]:
    """File name -> JSON text, as committed."""
    return {f"{name}.json": json.dumps(build().to_json_data(), indent=2, sort_keys=True,
                                       ensure_ascii=False, default=_plain) + "\n"
            for name, build in DASHBOARDS.items()}


def _plain(value: object) -> object:
    return value.to_json_data()  # grafanalib objects nested in plain dicts


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(OUT / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
