"""Simulated hospitals for a regional center (tests/test_regional.py, bench/regional.py).

A `Region` is N hospitals behind one loopback port, each at /sites/<site>/metrics serving
the series a real insmon serves for examples/hospital.yaml with its settlement check
enabled (as a site runs it once the agency agrees): the example's checks with their
intervals (the settlement check at its business hours' rate), each run on its own
schedule, its samples made by the probes' own sample functions where they have them
(icmp, cpu, disk_io, raid, calendar) and the way the probe makes them elsewhere, kept
and rendered by insmon's own results store and exporter.
Nothing is probed: a hospital is healthy until a fault is set on it, and a fault shows
at the next run of each check it touches, as a real fault would.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import json
import math
import random
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from alert_rules import DIR as RULES
from alert_rules import NOT_FAULTS
from exporters.prometheus import TEXT, exposition
from exporters.snapshot import RunRecord
from monitor.config import parse
from monitor.store import ResultStore
from ops.history import PrometheusAPI, Series
from ops.lab import Lab
from ops.recorder import Recorder
from ops.stack import Alertmanager, Prometheus, Victoria, hastened_rules, stop_all, wait_for
from probes import PROBES, calendar, cpu, disk_io, icmp, raid
from probes.base import CheckBase, MetricSpec, Sample, one_hot
from probes.http import REASONS as HTTP_REASONS
from probes.lib import pinger
from probes.lib.net import CONNECT_REASONS
from probes.lib.raid_model import Array
from probes.settlement import REASONS as SETTLEMENT_REASONS
from probes.storage_latency import REASONS as STORAGE_REASONS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE = EXAMPLES / "hospital.yaml"

# What can go wrong at a hospital, and what each one touches:
#   cut       both private-network lines down (the reference incident's fibre): vpn,
#             ping over the line, the front-end's health page, the platform
#   backup    the line cut, the 4G backup opened and carrying settlement
#   degraded  RAID md1 lost a member
#   refusing  the platform answers every transaction with an error
#   silent    insmon answers no scrape (503): the center hears nothing from it
FAULTS = ("cut", "backup", "degraded", "refusing", "silent")


def example_checks(path: Path = EXAMPLE) -> list[CheckBase]:
    """The example's checks, validated, with its commented settlement check enabled."""
    text = path.read_text()
    block = re.search(r"^  # - name: platform-query\n(?:  #.*\n)+", text, re.MULTILINE)
    assert block, f"{path}: no commented settlement check (platform-query) found"
    enabled = re.sub(r"^  # ", "  ", block[0], flags=re.MULTILINE)
    return list(parse(text.replace(block[0], enabled), str(path)).checks)


@dataclass(frozen=True)
class SimCheck:
    """What the results store needs of a check (monitor.store.Checked)."""

    cfg: CheckBase
    metrics: Mapping[str, MetricSpec]

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def kind(self) -> str:
        return self.cfg.kind  # type: ignore[attr-defined]

    @property
    def interval(self) -> float:
        return self.cfg.interval


Outcome = tuple[str, list[Sample], str]  # status, samples, detail


@dataclass
class Hospital:
    site: str
    checks: list[SimCheck]
    calendar: Outcome
    faults: set[str] = field(default_factory=set)
    store: ResultStore = field(default_factory=ResultStore)
    signed_in: bool = False  # the settlement check's day session (9001, once)
    started: float = field(default_factory=time.time)

    def run(self, check: SimCheck) -> None:
        status, samples, detail = SAMPLES[check.kind](self, check.cfg)
        self.store.record(check, RunRecord(status, time.time(), 0.012, detail), samples)

    def metrics(self) -> bytes | None:
        return None if "silent" in self.faults else exposition(self.store.snapshot())


class Region:
    """N hospitals named `prefix`1 ... `prefix`N, served on 127.0.0.1:`port` (0: any)."""

    def __init__(self, sites: int, prefix: str = "hospital-", port: int = 0,
                 seed: int = 1) -> None:
        configs = example_checks()
        checks = [SimCheck(c, {m.name: m for m in PROBES[c.kind].metrics})  # type: ignore[attr-defined]
                  for c in configs]
        text = EXAMPLE.read_text()
        cal = next(c for c in configs if c.kind == "calendar")  # type: ignore[attr-defined]
        today = asyncio.run(calendar.Probe(cal).run())  # the real calendar, once
        outcome = (today.status, list(today.samples), today.detail)
        self.hospitals = {f"{prefix}{i}": Hospital(f"{prefix}{i}", checks, outcome)
                          for i in range(1, sites + 1)}
        for hospital in self.hospitals.values():
            hospital.store.configure(checks, "/etc/insmon/hospital.yaml",
                                     hashlib.sha256(text.encode()).hexdigest())
        # every check of every hospital at its own phase, as hospitals started apart
        rng = random.Random(seed)
        now = time.monotonic()
        self._due = [(now + rng.uniform(0, c.interval), i, j)
                     for i, h in enumerate(self.hospitals.values())
                     for j, c in enumerate(h.checks)]
        heapq.heapify(self._due)
        self._order = list(self.hospitals.values())
        for hospital in self._order:  # every check has run once before the first scrape
            for check in hospital.checks:
                hospital.run(check)
        self._stop = threading.Event()
        self._runner = threading.Thread(target=self._loop, name="region", daemon=True)
        self._runner.start()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self.hospitals))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def fault(self, site: str, fault: str) -> None:
        assert fault in FAULTS, fault
        hospital = self.hospitals[site]  # a new set: the runs read it from another thread
        hospital.faults = hospital.faults | {fault}

    def heal(self, site: str) -> None:
        self.hospitals[site].faults = set()

    def scrape_config(self, interval: str = "2s", sites: list[str] | None = None) -> dict:
        """The `insmon` job of each site's Prometheus (alert_rules/prometheus.yml: every
        2 s), for these hospitals: each target its own `site`, `instance` as a site's
        (insmon:9829), the path telling the simulated hospitals apart."""
        return {"job_name": "insmon", "scrape_interval": interval,
                "static_configs": [{"targets": [self.address], "labels": {"site": site}}
                                   for site in sites or self.hospitals],
                "relabel_configs": [
                    {"source_labels": ["site"], "target_label": "__metrics_path__",
                     "replacement": "/sites/$1/metrics"},
                    {"target_label": "instance", "replacement": "insmon:9829"}]}

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._runner.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            due, i, j = self._due[0]
            late = time.monotonic() - due
            if late < 0:
                self._stop.wait(min(-late, 0.2))
                continue
            hospital = self._order[i]
            check = hospital.checks[j]
            hospital.run(check)
            # a late loop runs a check once, not in a burst (as insmon's scheduler)
            step = check.interval * (1 + int(late // check.interval))
            heapq.heapreplace(self._due, (due + step, i, j))


def _handler(hospitals: Mapping[str, Hospital]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # a scraper keeps its connection, as with insmon

        def do_GET(self) -> None:
            match = re.fullmatch(r"/sites/([^/]+)/metrics", self.path)
            hospital = hospitals.get(match[1]) if match else None
            body = hospital.metrics() if hospital else None
            if body is None:
                self.send_response(404 if hospital is None else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", TEXT)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: object) -> None:
            pass

    return Handler


# ---------------------------------------------------------------- each kind's run


def _vpn(h: Hospital, cfg) -> Outcome:
    line_down = bool(h.faults & {"cut", "backup"})
    samples: list[Sample] = []
    up_roles = []
    for link in cfg.links:
        ids = {"link": link.name, "role": link.role}
        if link.role == "primary":
            # the fibre is cut: the tunnel interface stays, its gateway does not answer
            up, interface, rtt = not line_down, True, 0.0042
        else:  # the 4G backup, a standby opened only when the line is cut
            up = interface = "backup" in h.faults
            rtt = 0.031
        samples += [Sample("insmon_vpn_link_up", float(up), ids),
                    Sample("insmon_vpn_interface_up", float(interface), ids)]
        if interface:
            samples.append(Sample("insmon_vpn_gateway_loss_ratio", 0.0 if up else 1.0, ids))
        if up:
            up_roles.append(link.role)
            samples += [Sample("insmon_vpn_gateway_rtt_seconds", rtt, ids),
                        Sample("insmon_vpn_front_end_up", 1.0, ids),
                        *one_hot("insmon_vpn_front_end_failures_total", "reason",
                                 CONNECT_REASONS, None, ids)]
        if link.role == "primary":  # the private line is WireGuard
            samples.append(Sample("insmon_vpn_handshake_age_seconds", 47.0, ids))
    active = next((role for role in ("primary", "backup") if role in up_roles), "none")
    samples.append(Sample("insmon_settlement_path_up", float(active != "none")))
    samples += one_hot("insmon_settlement_active_role", "role", ("primary", "backup", "none"),
                       active)
    if active == "none":
        return "failed", samples, "no settlement path: every link is down"
    return ("failed" if line_down else "ok"), samples, f"settlement path via {active}"


def _icmp(h: Hospital, cfg) -> Outcome:
    lost = bool(h.faults & {"cut", "backup"})  # pinged through the line's own address
    samples: list[Sample] = []
    for target in cfg.targets:
        rtts = [] if lost else [0.0041 + 0.0001 * k for k in range(cfg.count)]
        samples += icmp.samples(str(target), pinger.Echoes(cfg.count, rtts))
    return ("failed" if lost else "ok"), samples, "loss 100 %" if lost else "loss 0 %"


def _http(h: Hospital, cfg) -> Outcome:
    if "cut" in h.faults:
        return "failed", one_hot("insmon_http_failures_total", "reason",
                                 HTTP_REASONS, "timeout"), \
            "timeout"
    phases = {"connect": 0.0021, "tls": 0.0062, "processing": 0.0104, "transfer": 0.0004}
    samples = one_hot("insmon_http_failures_total", "reason",
                      HTTP_REASONS, None)
    samples += [Sample("insmon_http_phase_seconds", s, {"phase": p}) for p, s in phases.items()]
    samples += [Sample("insmon_http_status_code", 200.0),
                Sample("insmon_http_tls_cert_expiry_timestamp_seconds", h.started + 200 * 86400),
                Sample("insmon_http_response_seconds", sum(phases.values()))]
    return "ok", samples, "status 200"


def _tcp(h: Hospital, cfg) -> Outcome:
    samples: list[Sample] = []
    for target in cfg.targets:
        labels = {"target": target}
        samples += [Sample("insmon_tcp_up", 1.0, labels),
                    *one_hot("insmon_tcp_failures_total", "reason", CONNECT_REASONS, None,
                             labels),
                    Sample("insmon_tcp_connect_seconds", 0.0008, labels)]
    return "ok", samples, f"{len(cfg.targets)} targets up"


def _snmp(h: Hospital, cfg) -> Outcome:
    samples = [Sample("insmon_snmp_uptime_seconds", 86400 * 41 + time.time() - h.started)]
    for name in cfg.interfaces:
        ids = {"interface": str(name)}
        samples += [Sample("insmon_snmp_interface_up", 1.0, ids),
                    Sample("insmon_snmp_interface_admin_up", 1.0, ids)]
        for direction in ("in", "out"):
            where = {**ids, "direction": direction}
            samples += [Sample("insmon_snmp_interface_bytes_total", 3.1e6, where),
                        Sample("insmon_snmp_interface_errors_total", 0.0, where),
                        Sample("insmon_snmp_interface_discards_total", 0.0, where)]
    return "ok", samples, "up 41.0 days"


def _disk_io(h: Hospital, cfg) -> Outcome:
    rates = disk_io.Rates(0.0008, 0.0015, 40.0, 120.0, 1.6e6, 2.4e6, 0.08, 0.3, 1)
    figures = {device: rates for device in ("sda", "sdb", "sdc", "sdd", "md0", "md1")}
    return "ok", disk_io.samples(figures), "6 devices"


def _storage(h: Hospital, cfg) -> Outcome:
    phases = {"open": 0.00004, "write": 0.00002, "fsync": 0.0009, "read": 0.00001}
    phases["total"] = sum(phases.values())
    samples = one_hot("insmon_storage_errors_total", "reason", STORAGE_REASONS, None)
    samples += [Sample("insmon_storage_free_bytes", 3.1e11), Sample("insmon_storage_size_bytes",
                                                                   4.8e11)]
    samples += [Sample("insmon_storage_latency_seconds", s, {"phase": p})
                for p, s in phases.items()]
    samples += [Sample("insmon_storage_last_latency_seconds", s, {"phase": p})
                for p, s in phases.items()]
    return "ok", samples, "total 0.97 ms"


def _cpu(h: Hospital, cfg) -> Outcome:
    ratios = {"user": 0.14, "nice": 0.0, "system": 0.05, "idle": 0.8, "iowait": 0.01,
              "irq": 0.0, "softirq": 0.0, "steal": 0.0}
    cores = {str(core): 0.17 + 0.01 * core for core in range(8)}
    return "ok", cpu.samples(ratios, cores, (1.2, 1.1, 1.0), 8), "busy 20 %"


def _raid(h: Hospital, cfg) -> Outcome:
    source = cfg.source.type
    healthy = {"active": 3, "failed": 0, "spare": 0, "missing": 0}
    if source == "md":
        md1 = {"active": 2, "failed": 1, "spare": 0, "missing": 0} \
            if "degraded" in h.faults else healthy
        arrays = [Array("md0", "raid1", "clean", {**healthy, "active": 2}),
                  Array("md1", "raid5", "degraded" if "degraded" in h.faults else "clean",
                        md1)]
    elif source == "storcli":
        arrays = [Array("c0/v0", "raid5", "clean", {**healthy, "active": 4, "spare": 1})]
    else:  # SNMP: virtual disks, and the physical disks counted together as "all"
        arrays = [Array("vd0", "raid5", "clean"),
                  Array("all", "", None, {**healthy, "active": 4, "spare": 1})]
    result = raid.result(arrays, source, cfg.expected)
    return result.status, list(result.samples), result.detail


def _settlement(h: Hospital, cfg) -> Outcome:
    samples: list[Sample] = []
    reasons = []
    for link in cfg.links:
        labels = {"link": link.name}
        if link.role == "primary":
            reason = "timeout" if h.faults & {"cut", "backup"} else \
                "platform_error" if "refusing" in h.faults else None
        else:  # through the standby 4G interface, closed unless opened
            reason = ("platform_error" if "refusing" in h.faults else None) \
                if "backup" in h.faults else "unreachable"
        answered = reason in (None, "platform_error")
        reasons.append(reason)
        samples += [Sample("insmon_settlement_transaction_ok", float(reason is None), labels),
                    Sample("insmon_settlement_circuit_open", 0.0, labels),
                    Sample("insmon_settlement_sign_ins_total",
                           float(answered and not h.signed_in), labels)]
        if answered:
            samples += [Sample("insmon_settlement_http_status", 200.0, labels),
                        Sample("insmon_settlement_infcode", 0.0 if reason is None else -1.0,
                               labels),
                        Sample("insmon_settlement_transaction_seconds", 0.18, labels)]
        samples += [Sample(s.metric, s.value, {**labels, **s.labels}) for s in one_hot(
            "insmon_settlement_failures_total", "reason", SETTLEMENT_REASONS, reason)]
    h.signed_in = True
    possible = None in reasons
    samples += [Sample("insmon_settlement_possible", float(possible)),
                Sample("insmon_settlement_tls_legacy", 0.0),
                Sample("insmon_settlement_last_transaction_timestamp_seconds", time.time())]
    status = "ok" if all(r is None for r in reasons) else "failed"
    return status, samples, "1901 settles" if possible else "1901 CANNOT settle"


def _calendar(h: Hospital, cfg) -> Outcome:
    return h.calendar


SAMPLES: dict[str, Callable[[Hospital, CheckBase], Outcome]] = {
    "vpn": _vpn, "icmp": _icmp, "http": _http, "tcp": _tcp, "snmp": _snmp,
    "disk_io": _disk_io, "storage_latency": _storage, "cpu": _cpu, "raid": _raid,
    "settlement": _settlement, "calendar": _calendar}


# ---------------------------------------------------------------- the center

# Data younger than this is not yet searchable at the center: VictoriaMetrics' default
# (30 s) would hold every alert there back by 30 s; a sender flushes every second.
LATENCY_OFFSET = "5s"
# How far back vmalert lets a series' last sample stand in for now. Its default (5m)
# keeps a silent hospital's last values for 5 minutes, so InsmonSiteMissing would wait
# that long and ProbeNotReporting would page for a cut line instead.
LOOKBACK = "30s"


def center_rules(workdir: Path, hasten: float = 1) -> list[Path]:
    """alert_rules/ as Debian's vmalert (1.79) takes it: without keep_firing_for (the
    one-minute hold against flapping), which it predates. vmalert 1.90 or newer, or
    Prometheus, takes the shipped files as they are. `hasten`: a test's copy, every
    `for:` that many times shorter (ops.stack.hastened_rules)."""
    workdir.mkdir(parents=True, exist_ok=True)
    alerts = workdir / "alerts.yml"
    alerts.write_text(re.sub(r"^ *keep_firing_for: .*\n", "",
                             hastened_rules((RULES / "alerts.yml").read_text(), hasten),
                             flags=re.MULTILINE))
    return [alerts, RULES / "recording.yml"]


class Center:
    """The regional center as the README's "Past one site" sets it up: a VictoriaMetrics
    single node (on `address`), vmalert evaluating alert_rules/ over every hospital, and
    the center's Alertmanager (examples/regional/alertmanager.yml) paging `webhook`.
    `hasten`: a test's center, its rules' `for:` that many times shorter (center_rules)."""

    def __init__(self, workdir: Path, webhook: str, address: str = "127.0.0.1",
                 evaluation: str = "5s", hasten: float = 1) -> None:
        self.started: list = []
        try:
            self.vm = self._start(Victoria(
                workdir / "vm", "victoria-metrics", f"-storageDataPath={workdir / 'vm/data'}",
                "-retentionPeriod=190d", f"-search.latencyOffset={LATENCY_OFFSET}",
                address=address))
            self.data = workdir / "vm" / "data"
            self.alertmanager = self._start(Alertmanager(
                workdir / "alertmanager", webhook,
                config_file=EXAMPLES / "regional" / "alertmanager.yml"))
            self.vmalert = self._start(Victoria(
                workdir / "vmalert", "vmalert",
                *(f"-rule={rule}" for rule in center_rules(workdir / "vmalert", hasten)),
                f"-datasource.url={self.vm.url}", f"-remoteWrite.url={self.vm.url}",
                f"-notifier.url={self.alertmanager.url}", f"-evaluationInterval={evaluation}",
                f"-datasource.queryStep={LOOKBACK}"))
        except BaseException:
            self.stop()
            raise
        self.api = PrometheusAPI(self.vm.url, timeout=60)

    def _start(self, server):
        self.started.append(server)
        return server

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        return self.api.query(expr, time.time() if at is None else at)

    def alerts(self) -> list[dict]:
        """vmalert's alerts now, pending and firing, each with its labels and state."""
        with urllib.request.urlopen(f"{self.vmalert.url}/api/v1/alerts", timeout=30) as answer:
            return json.load(answer)["data"]["alerts"]

    def stop(self) -> None:
        stop_all(self.started)


# ---------------------------------------------------------------- a cut line to the center

@dataclass
class CutHistory:
    """What one hospital's history looked like at the center after its line was cut."""

    seconds: float  # how long the line was down
    at_site: int  # samples the hospital's own Prometheus holds over the cut and before it
    at_center: int  # those of them the center holds after the heal
    missing: list[str]  # a few of those the center lacks (series @ time)
    buffered: int  # bytes in vmagent's disk buffer at the end of the cut
    caught_up: float  # seconds from the heal until the center had them all
    missing_alert: float | None  # InsmonSiteMissing fired at the center this long into
    # the cut (None: not within it)


def site_prometheus(region: Region, site: str, write_url: str) -> dict:
    """A hospital's Prometheus as the README sets it up: insmon scraped every 2 s, the
    remote_write block of examples/regional/remote_write.yml sending to `write_url`."""
    remote = yaml.safe_load((EXAMPLES / "regional" / "remote_write.yml").read_text())
    remote["remote_write"][0]["url"] = write_url
    return {"global": {"scrape_interval": "2s", "external_labels": {"site": site}},
            "scrape_configs": [region.scrape_config("2s", [site])], **remote}


def sender(workdir: Path, center_write: str, address: str,
           prefix: tuple[str, ...] = ()) -> Victoria:
    """A hospital's vmagent, forwarding what its Prometheus sends to the center and
    keeping on disk what the center has not taken (README, "Past one site")."""
    return Victoria(workdir, "vmagent", f"-remoteWrite.url={center_write}",
                    f"-remoteWrite.tmpDataPath={workdir / 'buffer'}",
                    address=address, prefix=prefix)


def disk_usage(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@contextmanager
def cut_line_rig(workdir: Path, webhook: str, hasten: float = 1) -> Iterator[
        tuple[Lab, Region, Center, Victoria, Prometheus]]:
    """One hospital whose sender lives in a namespace of its own, reaching the center
    over a real link that can be cut. The hospital's Prometheus (this host) writes to its
    vmagent (the lab's namespace) over the lab's backup link; the vmagent writes to the
    center (this host's end of the lab's primary link) over the primary link."""
    started: list = []
    lab = Lab(slot=None)
    region = Region(1, prefix="cut-hospital-")
    try:
        center = Center(workdir / "center", webhook, address=f"{lab.primary_net}.1",
                        hasten=hasten)
        started.append(center)
        agent = sender(workdir / "vmagent", f"{center.vm.url}/api/v1/write",
                       lab.backup_gateway, tuple(lab.in_ns()))
        started.append(agent)
        prometheus = Prometheus(workdir / "prometheus", site_prometheus(
            region, "cut-hospital-1", f"{agent.url}/api/v1/write"))
        started.append(prometheus)
        yield lab, region, center, agent, prometheus
    finally:
        stop_all(started)
        region.close()
        lab.close()


def cut_line(workdir: Path, seconds: float, webhook: str, hasten: float = 1) -> CutHistory:
    """Cut the hospital's line to the center for `seconds`, heal it, and compare every
    sample its own Prometheus took over the cut (and the 20 s before) with the center's.
    `hasten`: the center's rules' `for:` that many times shorter (a test's center)."""
    site = "cut-hospital-1"
    selector = f'{{__name__=~"insmon_.+|up",site="{site}"}}'
    with cut_line_rig(workdir, webhook, hasten) as (lab, _region, center, _agent,
                                                     prometheus):
        wait_for(lambda: center.query(f'up{{site="{site}"}}'), 120,
                 "the hospital's series at the center")
        time.sleep(20)  # the 20 s before the cut, compared too
        begin = time.time() - 20
        lab.cut("primary")
        cut_at = time.monotonic()
        missing_alert = None
        while time.monotonic() - cut_at < seconds:
            if missing_alert is None and any(
                    a["labels"].get("site") == site and a["name"] == "InsmonSiteMissing"
                    and a["state"] == "firing" for a in center.alerts()):
                missing_alert = time.monotonic() - cut_at
            time.sleep(min(2.0, max(0.0, seconds - (time.monotonic() - cut_at))))
        buffered = disk_usage(workdir / "vmagent" / "buffer")
        lab.restore("primary")
        healed, end = time.monotonic(), time.time()
        at_site = _samples(PrometheusAPI(prometheus.url, 60).samples(selector, begin, end))
        deadline = healed + 300
        while True:  # until the center holds all of it (the sender backs off up to a minute)
            at_center = _samples(center.api.samples(selector, begin, end))
            missing = [key for key, value in at_site.items()
                       if key not in at_center or not _same(value, at_center[key])]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(1)
        caught_up = time.monotonic() - healed if not missing else math.inf
    return CutHistory(seconds, len(at_site), len(at_site) - len(missing),
                      [f"{series} @ {t}" for series, t in sorted(missing)[:5]],
                      buffered, caught_up, missing_alert)


def _samples(found: list[Series]) -> dict[tuple[str, float], float]:
    """Every sample by series and time."""
    return {(str(sorted(s.labels.items())), t): v for s in found for t, v in s.points}


def _same(a: float, b: float) -> bool:
    """VictoriaMetrics keeps a value to 12 significant digits or so (0.18000000000000002
    comes back as 0.18): the same sample."""
    return math.isclose(a, b, rel_tol=1e-11, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))


# ---------------------------------------------------------------- faults seen from the center

# The alert each fault pages first at the center.
FAULT_ALERTS = {"cut": "SettlementPathDown", "backup": "PrimaryLineDown",
                "degraded": "RaidArrayDegraded", "refusing": "SettlementImpossible",
                "silent": "InsmonDown"}


def collector(workdir: Path, region: Region, center: Center) -> Victoria:
    """One vmagent scraping every simulated hospital as each hospital's Prometheus does
    (insmon every 2 s, its own `site`), keeping only what each hospital's remote_write
    block sends (examples/regional/remote_write.yml), writing to the center: what the
    center receives from N hospitals, from one process on this host."""
    workdir.mkdir(parents=True, exist_ok=True)
    remote = yaml.safe_load((EXAMPLES / "regional" / "remote_write.yml").read_text())
    (workdir / "relabel.yml").write_text(yaml.safe_dump(
        remote["remote_write"][0]["write_relabel_configs"]))
    (workdir / "scrape.yml").write_text(yaml.safe_dump(
        {"scrape_configs": [region.scrape_config("2s")]}))
    return Victoria(workdir, "vmagent", f"-promscrape.config={workdir / 'scrape.yml'}",
                    f"-remoteWrite.relabelConfig={workdir / 'relabel.yml'}",
                    f"-remoteWrite.url={center.vm.url}/api/v1/write",
                    f"-remoteWrite.tmpDataPath={workdir / 'buffer'}",
                    "-promscrape.maxScrapeSize=64MB")


@dataclass
class FaultTimes:
    fired: dict[tuple[str, str], float]  # (site, alert) -> seconds from the fault to firing
    paged: dict[str, float]  # site -> seconds until the center's on-call had its page
    pages: dict[str, int]  # site -> notifications of firing alerts for it
    alerts: dict[str, set[str]]  # site -> the fault alerts firing there at the end
    elsewhere: dict[str, set[str]]  # other sites -> fault alerts firing there (none!)


def inject_faults(region: Region, center: Center, recorder: Recorder,
                  faults: Mapping[str, str], timeout: float = 300) -> FaultTimes:
    """Set each site's fault at once; wait (bounded) until each fault's own alert fires
    at the center and its on-call is paged; say what fired where."""
    since, began = time.time(), time.monotonic()
    for site, fault in faults.items():
        region.fault(site, fault)
    wanted = {(site, FAULT_ALERTS[fault]) for site, fault in faults.items()}
    fired: dict[tuple[str, str], float] = {}
    paged: dict[str, float] = {}
    firing: list[dict] = []
    while time.monotonic() - began < timeout:
        firing = [a for a in center.alerts() if a["state"] == "firing"
                  and a["name"] not in NOT_FAULTS and a["labels"].get("site")]
        now = time.monotonic() - began
        for alert in firing:
            fired.setdefault((alert["labels"]["site"], alert["name"]), now)
        for page in _pages(recorder, since):
            paged.setdefault(page.body["groupLabels"].get("site", ""), page.received - since)
        if wanted <= fired.keys() and set(faults) <= paged.keys():
            break
        time.sleep(0.5)
    pages: dict[str, int] = {}
    for page in _pages(recorder, since):
        site = page.body["groupLabels"].get("site", "")
        pages[site] = pages.get(site, 0) + 1
    alerts: dict[str, set[str]] = {}
    for alert in firing:
        alerts.setdefault(alert["labels"]["site"], set()).add(alert["name"])
    return FaultTimes(fired, paged, pages, {s: a for s, a in alerts.items() if s in faults},
                      {s: a for s, a in alerts.items() if s not in faults})


def _pages(recorder: Recorder, since: float) -> list:
    return [p for p in recorder.received("firing")
            if p.team == "center_oncall" and p.received >= since]
