"""insmon drill SCENARIO: rehearse a fault of the settlement chain through the real alert
path, and page nobody.

The drill builds the chain on this machine: the namespace lab (ops/lab: private line,
4G backup, settlement front-end), a tmpfs or FUSE volume (ops/lab/faultfs.py) as the
settlement cache, an md array (an mdstat file the drill writes) and the settlement
server's CPU: a calm simulated one (ops/lab/cpu.py), or this host's own in the CPU
saturation drill. It runs `insmon run` on it, Prometheus with the project's rules and
shipped timings, and Alertmanager with the project's routing. Prometheus labels every
alert drill="true" (an external label), so Alertmanager takes each alert down its
grade's route and delivers it to the drill receiver, never to a team; every receiver of
this Alertmanager points at the drill's own recorder, so a page that reached a team's
receiver would be seen and fail the drill.

Then it makes the fault for real, waits for the pages, heals everything and waits until
no alert fires. The report says, per alert: expected grade and teams against what
arrived (the teams are those Alertmanager's routing tree gives the alert without its
drill label, from `amtool config routes test`), time to fire and time to page.
Needs root (network namespaces, a tmpfs or FUSE mount) and prometheus, prometheus-alertmanager
and amtool on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path

import yaml

from ops.history import PrometheusAPI, alert_periods, pager_incidents
from ops.lab import FaultyVolume, Lab
from ops.lab.cpu import CALM, SimulatedCpu
from ops.recorder import Recorder
from ops.stack import Alertmanager, Chain, Prometheus, alert_chain, free_port, wait_for
from vocabulary import SHANGHAI

SITE = "drill-lab"
DRILL_RECEIVER = "drill"
SETTLE = 8.0  # seconds after the last expected page, to catch pages that should not come
CPU_BURN_LIMIT = 900  # a burner stops by itself after this many seconds, drill or not
# seconds from the heal for every alert to resolve: a minute's keep_firing_for, and the
# CPU's 2-minute average falling under CpuHigh's threshold (a drill hastened N times: /N)
RECOVERY = 240

# The chain as the drill's insmon sees it. Intervals as a site would set them for the
# settlement path (2 s, examples/hospital.yaml); storage, RAID and CPU every 5 s.
CONFIG = """\
listen: "127.0.0.1:{port}"
checks:
  - name: insurance-private-network
    kind: vpn
    interval: 2s
    timeout: 1800ms
    ping_count: 2
    packet_interval: 100ms
    packet_timeout: 600ms
    front_end: {front_end}:8080
    links:
      - {{name: private-line, role: primary, interface: {primary}, gateway: {primary_gw}}}
      - {{name: 4g-backup, role: backup, interface: {backup}, gateway: {backup_gw}}}
  - name: settlement-cache-io
    kind: storage_latency
    interval: 5s
    timeout: 4s
    path: {cache}
  - name: settlement-md-raid
    kind: raid
    interval: 5s
    source: {{type: md, root: {raid_root}}}
  - name: settlement-server-cpu
    kind: cpu
    interval: 5s
    root: {cpu_root}
"""


def mdstat(state: str, progress: float = 0.0) -> str:
    """/proc/mdstat of the settlement cache's RAID 5 (three disks) in `state`: clean,
    degraded (sdc failed), recovering (onto the spare sde, `progress` 0..1) or failed
    (sdb and sdc failed)."""
    blocks = 1953259520
    members = {"clean": "sdd1[3] sdc1[2] sdb1[1]",
               "degraded": "sdd1[3] sdc1[2](F) sdb1[1]",
               "recovering": "sde1[4] sdd1[3] sdb1[1]",
               "failed": "sdd1[3] sdc1[2](F) sdb1[1](F)"}[state]
    disks = {"clean": "[3/3] [UUU]", "degraded": "[3/2] [U_U]", "recovering": "[3/2] [U_U]",
             "failed": "[3/1] [__U]"}[state]
    text = ("Personalities : [raid6] [raid5] [raid4]\n"
            f"md127 : active raid5 {members}\n"
            f"      {blocks} blocks super 1.2 level 5, 512k chunk, algorithm 2 {disks}\n")
    if state == "recovering":
        per_disk = blocks // 2
        done = int(per_disk * progress)
        bar = int(progress * 20)
        text += (f"      [{'=' * bar}>{'.' * (19 - bar)}]  recovery = {progress * 100:.1f}% "
                 f"({done}/{per_disk}) finish={(1 - progress) * 60:.1f}min speed=149652K/sec\n")
    return text + "\nunused devices: <none>\n"


class DrillLab:
    """The chain the drill breaks, and heals."""

    def __init__(self, workdir: Path, platform: bool = False, volume: bool = False,
                 host_cpu: bool = False) -> None:
        self.workdir = workdir
        self.platform: Path | None = None  # the platform gateway's fault switch
        self.volume: FaultyVolume | None = None  # a FUSE volume slow on demand
        self.cache = workdir / "settlement-cache"
        self.raid_root = workdir / "raid"
        self.lab: Lab | None = None
        # the settlement server's CPU: this host's (host_cpu), else a calm simulated one
        self.cpu: SimulatedCpu | None = None
        self.burners: list[subprocess.Popen] = []
        self.cut_links: set[str] = set()
        self.storage_failed = False
        self.mounted = False
        try:
            self.lab = Lab(slot=None)  # addresses of its own: drills run side by side
            self.lab.start_front_end(8080)
            if platform:
                workdir.mkdir(parents=True, exist_ok=True)
                self.platform = workdir / "platform.json"
                self.platform_url = self.lab.start_platform(self.platform)
            if volume:  # the cache on a FUSE volume: real slow and failing IO
                self.volume = FaultyVolume(workdir / "fuse")
                self.cache = self.volume.path
            else:
                self.cache.mkdir(parents=True, exist_ok=True)
                _run("mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "insmon-drill",
                     str(self.cache))
                self.mounted = True
            (self.raid_root / "proc").mkdir(parents=True, exist_ok=True)
            self.set_raid("clean")
            if not host_cpu:
                self.cpu = SimulatedCpu(workdir / "cpu")
        except BaseException:
            self.close()
            raise

    def config(self, port: int) -> str:
        assert self.lab is not None
        config = CONFIG.format(port=port, front_end=self.lab.front_end,
                               primary_gw=self.lab.primary_gateway,
                               backup_gw=self.lab.backup_gateway, primary=self.lab.primary,
                               backup=self.lab.backup, cache=self.cache,
                               raid_root=self.raid_root,
                               cpu_root=self.cpu.root if self.cpu else Path("/"))
        if self.platform is not None:
            config += self.lab.settlement_check(self.platform_url)
        return config

    # the faults, each with its remedy
    def cut(self, link: str) -> None:
        assert self.lab is not None
        self.lab.cut(link)
        self.cut_links.add(link)

    def fail_storage(self) -> None:
        """The cache volume fails, as a collapsing array does: on the FUSE volume every
        write takes 2.5 s (the plans' "IO latency above 2000 ms") and every fsync fails
        with EIO; on the tmpfs it stops taking writes (EROFS)."""
        self.storage_failed = True
        if self.volume is not None:
            self.volume.faults(rules=[{"delay": 2.5, "ops": ["write"]},
                                      {"error": "EIO", "ops": ["fsync"]}])
        else:
            _remount(self.cache, "ro")

    def set_raid(self, state: str, progress: float = 0.0) -> None:
        target = self.raid_root / "proc" / "mdstat"
        staging = target.with_suffix(".new")
        staging.write_text(mdstat(state, progress))
        staging.replace(target)  # the probe never reads half a file

    def rebuild_raid(self, seconds: float = 15, steps: int = 5) -> None:
        """A spare takes the failed disk's place and the array rebuilds onto it."""
        for i in range(steps):
            self.set_raid("recovering", i / steps)
            time.sleep(seconds / steps)
        self.set_raid("clean")

    def reject_transactions(self) -> None:
        """The platform answers every transaction with an error (系统繁忙), while every
        tunnel and the front-end's port are fine."""
        assert self.platform is not None
        self.platform.write_text('{"fault": "platform_error"}')

    def slow_storage(self) -> None:
        """Every fsync on the settlement volume takes 2.5 s, as a failing array's do."""
        assert self.volume is not None
        self.volume.faults(delay=2.5, ops=["fsync"])

    def burn_cpu(self) -> None:
        """Every logical CPU of this host busy, at the lowest priority so real work still
        runs (the lab's CPU is this host's: DrillLab(host_cpu=True))."""
        assert self.cpu is None, "the CPU burned is this host's: DrillLab(host_cpu=True)"
        code = (f"# insmon drill's CPU burner for {self.workdir}\n"  # found by its folder
                "import os, time\nos.nice(19)\nend = time.monotonic() + "
                f"{CPU_BURN_LIMIT}\nwhile time.monotonic() < end:\n    pass\n")
        for _ in range(os.cpu_count() or 1):
            self.burners.append(subprocess.Popen([sys.executable, "-c", code],
                                                 stdin=subprocess.DEVNULL,
                                                 start_new_session=True))

    def heal(self) -> None:
        """Undo every fault; safe to call more than once."""
        for proc in self.burners:
            proc.kill()
            proc.wait()
        self.burners.clear()
        if self.cpu is not None:
            self.cpu.busy = CALM
        if self.lab is not None:
            for link in sorted(self.cut_links):
                self.lab.restore(link)
        self.cut_links.clear()
        if self.storage_failed and self.mounted:
            _remount(self.cache, "rw")
        self.storage_failed = False
        if self.raid_root.exists():
            self.set_raid("clean")
        if self.platform is not None:
            self.platform.write_text("{}")
        if self.volume is not None:
            self.volume.faults()

    def close(self) -> None:
        try:
            self.heal()
        finally:
            if self.mounted:
                _run("umount", "--lazy", str(self.cache), check=False)
                self.mounted = False
            if self.volume is not None:
                self.volume.close()
                self.volume = None
            if self.lab is not None:
                self.lab.close()
                self.lab = None
            if self.cpu is not None:
                self.cpu.close()
                self.cpu = None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=20)


def _remount(path: Path, mode: str) -> None:
    # a remount to read-only fails (EBUSY) while the probe has its file open: retry
    for _ in range(50):
        if _run("mount", "-o", f"remount,{mode}", str(path), check=False).returncode == 0:
            return
        time.sleep(0.1)
    _run("mount", "-o", f"remount,{mode}", str(path))


# ---------------------------------------------------------------------- scenarios

@dataclass(frozen=True)
class Expected:
    alert: str
    grade: str              # or "peak": I in peak hours (and leadership, the center), else II
    teams: tuple[str, ...]  # every team its page must reach, and no other

    def at(self, peak: bool) -> Expected:
        if self.grade != "peak":
            return self
        if peak:
            return replace(self, grade="I", teams=(*self.teams, *LEVEL_ONE))
        return replace(self, grade="II")


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    title_zh: str
    faults: Callable[[DrillLab], None]
    expected: tuple[Expected, ...]
    # alerts that may page on the way: the separate causes of a compound incident can
    # fire seconds before the incident alert that then holds them back
    tolerated: tuple[str, ...] = ()
    after_page: Callable[[DrillLab], None] | None = None  # e.g. the array rebuilds
    deadline: float = 90  # seconds from the fault to the last expected page
    # history checks after the drill: (what, PromQL over the drill's $window)
    observe: tuple[tuple[str, str], ...] = ()
    platform: bool = False  # the lab's platform gateway and a settlement check
    volume: bool = False    # a FUSE volume (ops/lab/faultfs.py) and a storage check on it
    # The cpu check reads this host's /proc (and the fault burns this host's CPUs) rather
    # than the lab's calm simulated CPU (ops/lab/cpu.py). Only for the CPU saturation
    # drill: it rehearses the probe on a real kernel's counters and the whole alert path
    # on a saturated machine. The others must not depend on how busy the host is: a
    # host busy with other work would page CpuSaturated in them.
    host_cpu: bool = False


LEVEL_ONE = ("leadership", "settlement_center")  # every Level I reaches them too


def _reference(env: DrillLab) -> None:
    env.set_raid("failed")
    env.fail_storage()
    env.cut("primary")
    env.cut("backup")


def _line_cut(env: DrillLab) -> None:
    env.cut("primary")


SCENARIOS = {s.name: s for s in (
    Scenario(
        "reference", "The reference incident: RAID 5 collapses and the private line is cut",
        "参考事件：RAID5 阵列崩溃且医保专网光缆中断", _reference,
        (Expected("SettlementChainCollapsed", "I",
                  ("network", "insurance_agency", "server_ops", "vendor", *LEVEL_ONE)),),
        tolerated=("SettlementPathDown", "RaidArrayFailed", "StorageIOFailing"),
        deadline=60, volume=True,
        observe=(("IO latency above 2000 ms was measured (writes slower than 2 s)",
                  f'max_over_time(insmon_storage_latency_seconds_count{{site="{SITE}",'
                  f'phase="write"}}[$window]) - ignoring (le) max_over_time('
                  f'insmon_storage_latency_seconds_bucket{{site="{SITE}",phase="write",'
                  f'le="2.0"}}[$window]) > 0'),)),
    Scenario(
        "line-cut", "The private line is cut; the 4G backup takes over",
        "医保专网主线路中断，4G 备用通道接管", _line_cut,
        (Expected("PrimaryLineDown", "II", ("network", "insurance_agency")),),
        deadline=60,
        observe=(("the backup channel took over",
                  f'max_over_time(insmon_settlement_active_role{{site="{SITE}",'
                  f'role="backup"}}[$window]) == 1'),
                 ("settlement never stopped",
                  f'min_over_time(insmon_settlement_path_up{{site="{SITE}"}}[$window])'
                  " == 1"))),
    Scenario(
        "raid-rebuild", "A RAID 5 disk fails; the array runs degraded, then rebuilds",
        "RAID5 磁盘故障：阵列降级运行，随后重建", lambda env: env.set_raid("degraded"),
        (Expected("RaidArrayDegraded", "II", ("server_ops", "vendor")),),
        after_page=DrillLab.rebuild_raid, deadline=90,
        observe=(("the rebuild was seen",
                  f'max_over_time(insmon_raid_array_state{{site="{SITE}",'
                  f'state="recovering"}}[$window]) == 1'),)),
    Scenario(
        "platform-rejects", "The platform rejects every transaction; every line is up",
        "医保平台拒绝所有交易（各通道网络正常）", DrillLab.reject_transactions,
        (Expected("SettlementImpossible", "peak", ("insurance_agency", "network")),),
        deadline=120, platform=True,
        observe=(("the settlement path stayed up",
                  f'min_over_time(insmon_settlement_path_up{{site="{SITE}"}}[$window])'
                  " == 1"),)),
    Scenario(
        "storage-slow", "Writing the settlement volume takes 2.5 s (a failing array)",
        "结算存储写入缓慢（每次同步 2.5 秒）", DrillLab.slow_storage,
        (Expected("StorageWriteSlow", "II", ("server_ops", "vendor")),),
        deadline=120, volume=True),
    Scenario(
        "cpu-saturation", "The settlement server's CPU is saturated",
        "结算服务器 CPU 饱和", DrillLab.burn_cpu,
        (Expected("CpuSaturated", "II", ("server_ops",)),),
        deadline=300, host_cpu=True),
)}


# ---------------------------------------------------------------------- the report

@dataclass
class Row:
    alert: str
    expected_grade: str          # "" for an alert the scenario did not expect
    grade: str                   # as it arrived; "" when it did not
    expected_teams: list[str]
    teams: list[str]             # the teams its page reaches (routing tree, no drill label)
    fired_after: float | None    # seconds from the fault
    paged_after: float | None
    verdict: str                 # PASS, FAIL: why, or "tolerated"


@dataclass
class Report:
    scenario: str
    title: str
    site: str
    fault_at: str                # Asia/Shanghai
    healed_at: str
    fault_unix: float
    healed_unix: float
    rows: list[Row]
    team_paged_after: dict[str, float]   # per team: seconds from the fault to its page
    checks: list[tuple[str, bool]]
    # with --pager: who of the drill rota was paged, when, and when they acknowledged
    pager: list[PagerRow] = field(default_factory=list)
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.passed = (all(r.verdict in ("PASS", "tolerated") for r in self.rows)
                       and all(ok for _, ok in self.checks))

    def markdown(self) -> str:
        lines = [f"# Drill: {self.scenario}: {self.title}", "",
                 f"Site `{self.site}`; fault made at {self.fault_at}, healed at "
                 f"{self.healed_at} (Asia/Shanghai). Verdict: **{verdict(self.passed)}**.",
                 "", table(self.rows), "", "Time from the fault to each team's page:", ""]
        by_time = sorted(self.team_paged_after.items(), key=lambda kv: (kv[1], kv[0]))
        lines += [f"- {team}: {seconds:.1f} s" for team, seconds in by_time] or [
            "- nobody was paged"]
        if self.pager:
            lines += ["", "Through insmon pager (【演练】, the drill rota):", "",
                      "| alert | person | delivered after | channel | acknowledged after |",
                      "|---|---|---|---|---|"]
            lines += [f"| {r.alert} | {r.person} | {_after(r.delivered_after)} | {r.channel} "
                      f"| {_after(r.acked_after, 'not acknowledged')} |" for r in self.pager]
        lines += ["", "Checks:", ""]
        lines += [f"- [{'x' if ok else ' '}] {what}" for what, ok in self.checks]
        return "\n".join(lines) + "\n"


@dataclass
class PagerRow:
    alert: str
    person: str
    delivered_after: float | None   # seconds from the fault
    channel: str
    acked_after: float | None       # seconds from the fault; None: nobody acknowledged


def _after(seconds: float | None, none: str = "-") -> str:
    return none if seconds is None else f"{seconds:.1f} s"


def pager_rows(pager: str, fault_at: float) -> list[PagerRow]:
    """The drill's incidents in the pager: each person paged, delivery and acknowledgement
    times from the fault."""
    incidents = pager_incidents(pager, f"since={fault_at - 1}", 10)
    rows = []
    for incident in incidents:
        if not incident["drill"]:
            continue
        for page in incident["pages"]:
            sent = [d for d in incident["deliveries"] if d["person"] == page["person"]
                    and d["kind"] == "page"]
            rows.append(PagerRow(
                incident["alertname"], page["name"],
                sent[0]["sent"] - fault_at if sent and sent[0]["sent"] else None,
                sent[0]["channel"] if sent else "-",
                incident["acked"] - fault_at if incident["acked"] else None))
    return rows


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(rows: list[Row]) -> str:
    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    out = ["| alert | grade expected | grade arrived | teams expected | teams paged "
           "| time to fire | time to page | verdict |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.alert} | {r.expected_grade or '-'} | {r.grade or '-'} "
                   f"| {', '.join(r.expected_teams) or '-'} | {', '.join(r.teams) or '-'} "
                   f"| {seconds(r.fired_after)} | {seconds(r.paged_after)} | {r.verdict} |")
    return "\n".join(out)


def routed_teams(config_file: Path, labels: dict[str, str]) -> list[str]:
    """The receivers Alertmanager's routing tree gives these labels, as for a real alert."""
    argv = ["amtool", "config", "routes", "test", f"--config.file={config_file}",
            *(f"{k}={v}" for k, v in sorted(labels.items()) if k != "drill")]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30)
    return [r for r in out.stdout.strip().split(",") if r]


def build_report(scenario: Scenario, recorder: Recorder, api: PrometheusAPI, config_file: Path,
                 fault_at: float, healed_at: float, end: float,
                 checks: list[tuple[str, bool]]) -> Report:
    first_page: dict[str, tuple[float, dict]] = {}   # alertname -> (time, labels)
    for page in recorder.received("firing"):
        for a in page.body["alerts"]:
            if a["status"] == "firing" and page.team == DRILL_RECEIVER:
                name = a["labels"]["alertname"]
                if name not in first_page or page.received < first_page[name][0]:
                    first_page[name] = (page.received, a["labels"])
    fired: dict[str, float] = {}
    for period in alert_periods(api, fault_at - 1, end, SITE):
        fired.setdefault(period.name, period.start)

    rows, team_paged = [], {}
    for name in [e.alert for e in scenario.expected] + sorted(
            n for n in first_page if n not in {e.alert for e in scenario.expected}):
        expected = next((e for e in scenario.expected if e.alert == name), None)
        paged_at, labels = first_page.get(name, (None, {}))
        teams = routed_teams(config_file, labels) if labels else []
        row = Row(name, expected.grade if expected else "", labels.get("grade", ""),
                  sorted(expected.teams) if expected else [], sorted(teams),
                  fired[name] - fault_at if name in fired else None,
                  paged_at - fault_at if paged_at else None, "PASS")
        if expected is None:
            row.verdict = "tolerated" if name in scenario.tolerated else "FAIL: not expected"
        elif paged_at is None:
            row.verdict = "FAIL: no page"
        elif row.grade != expected.grade:
            row.verdict = f"FAIL: grade {row.grade}"
        elif set(teams) != set(expected.teams):
            row.verdict = "FAIL: wrong teams"
        elif row.paged_after is not None and row.paged_after > scenario.deadline:
            row.verdict = f"FAIL: later than {scenario.deadline:g} s"
        rows.append(row)
        for team in teams if paged_at else []:
            team_paged[team] = min(team_paged.get(team, row.paged_after), row.paged_after)
    real = sorted({p.team for p in recorder.received() if p.team != DRILL_RECEIVER})
    got = f" (got: {', '.join(real)})" if real else ""
    checks = [(f"no page reached a team's receiver{got}", not real), *checks]
    return Report(scenario.name, scenario.title, SITE, shanghai(fault_at),
                  shanghai(healed_at), fault_at, healed_at, rows,
                  {t: round(s, 1) for t, s in team_paged.items()}, checks)


def shanghai(t: float) -> str:
    return datetime.fromtimestamp(t, SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------------- the run

def run(scenario: Scenario, out: Path, log: Callable[[str], None] = print,
        recorder: Recorder | None = None, pager: str | None = None,
        hasten: float = 1) -> Report:
    """The whole drill; everything it made is gone when it returns or raises (Ctrl-C
    included). Writes out/report.json and out/report.md; keeps out/work/ (the drill's
    Prometheus data, logs) for a review. `recorder`: the receivers every Alertmanager
    receiver points at (default: the drill's own). `pager`: an insmon pager's URL that
    also gets the drill's pages, for its drill rota (marked 【演练】). `hasten` above 1: a
    test's drill, on a copy of the rules whose `for:`, `keep_firing_for:` and CPU average
    are that many times shorter (ops.stack.alert_chain); `insmon drill` runs them as
    shipped."""
    missing = [tool for tool in ("prometheus", "prometheus-alertmanager", "amtool")
               if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"the drill needs {', '.join(missing)} on PATH (Debian "
                           "packages prometheus, prometheus-alertmanager)")
    if os.geteuid() != 0:
        raise RuntimeError("the drill needs root: it makes network namespaces and a tmpfs "
                           "mount for the lab")
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    own_recorder = recorder is None
    recorder = recorder or Recorder()
    env: DrillLab | None = None
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        env = DrillLab(work / "lab", platform=scenario.platform, volume=scenario.volume,
                       host_cpu=scenario.host_cpu)
        port = free_port()
        config = env.config(port)
        with alert_chain(work, config, port, SITE, recorder.url, interval=None,
                         external_labels={"drill": "true"}, pager=pager,
                         hasten=hasten) as chain:
            report = _drill(scenario, env, chain, len(yaml.safe_load(config)["checks"]),
                            recorder, log, RECOVERY / hasten)
        if pager:
            report.pager = pager_rows(pager, report.fault_unix)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the cleanup
        try:
            if env is not None:
                env.close()
            if own_recorder:
                recorder.close()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)
    (out / "report.json").write_text(json.dumps(asdict(report), indent=2, ensure_ascii=False)
                                     + "\n")
    (out / "report.md").write_text(report.markdown())
    return report


def _drill(scenario: Scenario, env: DrillLab, chain: Chain, checks: int,
           recorder: Recorder, log: Callable[[str], None], recovery: float) -> Report:
    """Healthy chain, fault, pages, heal, recovery (within `recovery` seconds): the
    report."""
    prometheus, manager = chain.prometheus, chain.alertmanager
    api = PrometheusAPI(prometheus.url)
    log(f"waiting for the lab chain to be healthy ({SITE})")
    wait_for(lambda: healthy(prometheus, checks), 120, "the lab chain to be healthy")

    # a grade that follows peak hours is expected as the rules see the hour now
    peak = bool(prometheus.query("insmon:peak_hours == 1"))
    scenario = replace(scenario, expected=tuple(e.at(peak) for e in scenario.expected))
    fault_at = time.time()
    scenario.faults(env)
    log(f"fault made at {shanghai(fault_at)}: {scenario.title}")
    expected = {e.alert for e in scenario.expected}
    try:
        wait_for(lambda: expected <= paged(recorder), scenario.deadline + 30,
                 "the expected pages")
        log(f"paged: {', '.join(sorted(paged(recorder)))}")
    except TimeoutError:
        log(f"not every expected page came: got {sorted(paged(recorder)) or 'none'}")
    if scenario.after_page:
        scenario.after_page(env)
    time.sleep(SETTLE)

    healed_at = time.time()
    env.heal()
    log(f"healed at {shanghai(healed_at)}; waiting for every alert to resolve")
    try:
        wait_for(lambda: healthy(prometheus, checks) and not manager.faults(), recovery,
                 "every alert to resolve")
        left = ""
    except TimeoutError:
        left = unhealthy(prometheus, manager)
        log(f"not healthy {recovery:g} s after the heal: {left}")
    end = time.time()
    window = f"{int(end - fault_at) + 1}s"
    seen = [(what, bool(prometheus.query(expr.replace("$window", window))))
            for what, expr in scenario.observe]
    seen += [("the chain is healthy again and no alert fires"
              + (f" (still: {left})" if left else ""), not left)]
    return build_report(scenario, recorder, api, manager.config_file, fault_at, healed_at,
                        end, seen)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# Alerts about this host's data, not the chain: a drill neither makes nor heals them (the
# working calendar's data running out is the installed chinesecalendar package's).
NOT_THE_CHAIN = "CalendarDataEnding"


def healthy(prometheus: Prometheus, checks: int) -> bool:
    """Every check succeeds, the settlement path is up, no alert pending or firing."""
    site = f'site="{SITE}"'
    return bool(prometheus.query(f"count(insmon_probe_success{{{site}}} == 1) == {checks}")
                and prometheus.query(f"insmon_settlement_path_up{{{site}}} == 1")
                and not prometheus.query(f'ALERTS{{{site},alertname!~"{NOT_THE_CHAIN}"}}'))


def unhealthy(prometheus: Prometheus, manager: Alertmanager) -> str:
    """What `healthy` found wrong, in words: the failing checks, the path, the alerts."""
    site = f'site="{SITE}"'
    failing = sorted(r["metric"].get("check", "?") for r in
                     prometheus.query(f"insmon_probe_success{{{site}}} == 0"))
    alerts = sorted({f"{r['metric'].get('alertname')} ({r['metric'].get('alertstate')})"
                     for r in prometheus.query(
                         f'ALERTS{{{site},alertname!~"{NOT_THE_CHAIN}"}}')})
    path = "up" if prometheus.query(f"insmon_settlement_path_up{{{site}}} == 1") else "down"
    faults = sorted({a["labels"].get("alertname", "?") for a in manager.faults()})
    return (f"failing checks {failing or 'none'}, settlement path {path}, alerts "
            f"{alerts or 'none'}, Alertmanager's {faults or 'none'}")


def paged(recorder: Recorder) -> set[str]:
    return {name for p in recorder.received("firing") for name in p.alertnames}
