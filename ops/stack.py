"""Real Prometheus, Alertmanager (Debian's binaries) and `insmon run` as subprocesses on
loopback ports, configured from the project's own files: for drills, the end-to-end tests
and the benchmarks."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import NamedTuple, TypeVar

import yaml

from alert_rules import DIR as RULES
from alert_rules import NOT_FAULTS
from ops.history import PrometheusAPI
from vocabulary import parse_duration

INSMON = [sys.executable, "-m", "monitor"]

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(probe: Callable[[], T | None], seconds: float, what: str) -> T:
    """Poll `probe` until it returns something truthy; bounded in time."""
    deadline = time.monotonic() + seconds
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except Exception as exc:  # not up yet
            last_error = exc
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {seconds:g}s waiting for {what}"
                       + (f" (last error: {last_error})" if last_error else ""))


class Server:
    """A server binary as a subprocess, its output in workdir/NAME.log; with `ready` (a
    path under `url`), started once that answers 200. In a session of its own: a Ctrl-C
    reaches the drill, which stops it."""

    def __init__(self, workdir: Path, name: str, argv: list[str], url: str = "",
                 ready: str | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.log_file = workdir / f"{name}.log"
        self.log = open(self.log_file, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        if ready:
            wait_for(lambda: _ready(url + ready), 30, f"{name} to be ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            _stop(self.proc)
        self.log.close()


class Insmon(Server):
    """`insmon run` on a config (its listen address in it)."""

    def __init__(self, workdir: Path, config: str, extra: list[str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "insmon.yaml").write_text(config)
        super().__init__(workdir, "insmon",
                         [*INSMON, "run", "-c", str(workdir / "insmon.yaml"), *(extra or [])])


class Alertmanager(Server):
    """alert_rules/alertmanager.yml (or `config_file`: a regional center's) with every
    webhook pointed at `webhook_url`/<receiver>
    (a tuple: the pair's pagers, each receiver's webhooks in order).
    With `cluster_port`, one of an HA pair gossiping with `peers` (host:port): the pair
    shares silences and its notification log, so each page goes out once."""

    def __init__(self, workdir: Path, webhook_url: str | tuple[str, ...],
                 cluster_port: int | None = None, peers: tuple[str, ...] = (),
                 pager: str | None = None, token_file: Path | None = None,
                 config_file: Path = RULES / "alertmanager.yml") -> None:
        config = yaml.safe_load(config_file.read_text())
        workdir.mkdir(parents=True, exist_ok=True)
        # the pager's token, as the shipped config sends it: the given pager's, or one
        # of its own
        self.token_file = token_file or workdir / "pager-token"
        if token_file is None:
            self.token_file.write_text(secrets.token_hex(24))
        # each receiver posts to both pagers of the pair: to the URLs given, in order (one
        # URL: the active's only)
        urls = (webhook_url,) if isinstance(webhook_url, str) else webhook_url
        for receiver in config["receivers"]:
            hooks = receiver.get("webhook_configs", [])[:len(urls)]
            for hook, url in zip(hooks, urls, strict=False):
                hook["url"] = f"{url}/{receiver['name']}"
                if "http_config" in hook:
                    hook["http_config"] = {"authorization": {
                        "credentials_file": str(self.token_file)}}
            if hooks:
                receiver["webhook_configs"] = hooks
            if pager and receiver["name"] == "drill":  # a drill paging the drill rota
                receiver["webhook_configs"].append({"url": f"{pager}/drill",
                                                    "send_resolved": True})
        shutil.copytree(RULES / "templates", workdir / "templates", dirs_exist_ok=True)
        self.config_file = workdir / "alertmanager.yml"
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = free_port()
        cluster = [f"--cluster.listen-address=127.0.0.1:{cluster_port}",
                   "--cluster.peer-timeout=3s", *(f"--cluster.peer={p}" for p in peers)
                   ] if cluster_port else ["--cluster.listen-address="]
        super().__init__(workdir, "alertmanager", [
            "prometheus-alertmanager", f"--config.file={self.config_file}",
            f"--storage.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
            *cluster, "--log.level=warn"],
            f"http://127.0.0.1:{self.port}", "/-/ready")

    def post(self, *alerts: dict) -> None:
        request = urllib.request.Request(f"{self.url}/api/v2/alerts",
                                         data=json.dumps(list(alerts)).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10):
            pass

    def status(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/api/v2/status", timeout=10) as response:
            return json.load(response)

    def alerts(self) -> list[dict]:
        """The alerts it holds that have not resolved (inhibited and silenced ones too)."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=10) as response:
            return json.load(response)

    def faults(self) -> list[dict]:
        """Its alerts but the heartbeat and the calendar's hours: what is actually wrong."""
        return [a for a in self.alerts() if a["labels"].get("alertname") not in NOT_FAULTS]


# An alert's `for:` (how long its condition must hold) and `keep_firing_for:` (how long it
# stays after): the lines a test copy of the rules scales.
_HOLDS = re.compile(r"^(\s*(?:for|keep_firing_for):\s*)(\S+)(\s*(?:#.*)?)$", re.MULTILINE)


def hastened_rules(text: str, factor: float) -> str:
    """A test copy of alert_rules/alerts.yml (its `text`, read at test time: never a copy
    kept by hand) with every `for:` and `keep_firing_for:` divided by `factor`, one second
    at the least; expressions, windows, labels and routing as shipped. For a chain test
    that proves who is paged for what, not how long a rule waits: the shipped durations
    are proven by promtool (tests/test_alert_rules.py)."""
    assert factor >= 1, factor

    def scaled(match: re.Match) -> str:
        held = parse_duration(match[2])
        assert isinstance(held, float), match[0]
        ms = max(1000, round(held * 1000 / factor))  # Prometheus takes whole units
        return f"{match[1]}{f'{ms // 1000}s' if ms % 1000 == 0 else f'{ms}ms'}{match[3]}"

    return _HOLDS.sub(scaled, text)


def alerting_config(workdir: Path, targets: list[str], site: str, alertmanager: str,
                    interval: str | None = "1s", external_labels: dict | None = None,
                    hasten: float = 1) -> dict:
    """A Prometheus config that scrapes insmon at `targets` (with `site`), evaluates the
    project's rules (copied into `workdir`) and alerts `alertmanager`. interval None: the
    shipped production timings (alert_rules/prometheus.yml). `external_labels` go on every
    alert it sends (a drill's drill="true"). `hasten` above 1: a test's copy of the rules,
    every `for:` and `keep_firing_for:` (hastened_rules) and the CPU's average
    (hastened_average) that many times shorter, and the evaluation interval of the rule
    groups without their own (the settlement chain's 2 s stays)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name, hastened in (("recording.yml", hastened_average), ("alerts.yml", hastened_rules)):
        text = (RULES / name).read_text()
        (workdir / name).write_text(hastened(text, hasten) if hasten != 1 else text)
    shipped = yaml.safe_load((RULES / "prometheus.yml").read_text())
    job = next(j for j in shipped["scrape_configs"] if j["job_name"] == "insmon")
    evaluation = interval or shipped["global"]["evaluation_interval"]
    if hasten != 1:
        seconds = parse_duration(evaluation)
        assert isinstance(seconds, float)
        evaluation = f"{round(seconds * 1000 / hasten)}ms"
    return {
        "global": {"scrape_interval": interval or shipped["global"]["scrape_interval"],
                   "evaluation_interval": evaluation,
                   **({"external_labels": external_labels} if external_labels else {})},
        "rule_files": ["recording.yml", "alerts.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [
            {"targets": [alertmanager.removeprefix("http://")]}]}]},
        "scrape_configs": [{"job_name": "insmon", "static_configs": [
            {"targets": targets, "labels": {"site": site}}],
            **({} if interval else {"scrape_interval": job["scrape_interval"]})}],
    }


# A range window in a recording rule: in alert_rules/recording.yml only the CPU's average.
_WINDOW = re.compile(r"\[(\d+[smh])\]")


def hastened_average(text: str, factor: float) -> str:
    """A test copy of alert_rules/recording.yml (its `text`, read at test time) with its
    range windows divided by `factor`: the one there is the 2-minute CPU average that
    CpuSaturated and CpuHigh read, which a CPU drill must otherwise burn two minutes to
    fill. What the average and its thresholds mean is promtool's to prove
    (tests/test_alert_rules.py); a drill proves the real counters and the alert path."""
    assert factor >= 1, factor

    def scaled(match: re.Match) -> str:
        window = parse_duration(match[1])
        assert isinstance(window, float), match[0]
        return f"[{max(1000, round(window * 1000 / factor))}ms]"

    return _WINDOW.sub(scaled, text)


class Victoria(Server):
    """A binary of Debian's victoria-metrics (the single node, vmagent, vmalert) on
    `address` (loopback unless given), in front of `prefix` (a namespace's `ip netns
    exec`), started once /health answers."""

    def __init__(self, workdir: Path, binary: str, *flags: str, address: str = "127.0.0.1",
                 prefix: tuple[str, ...] = ()) -> None:
        port = free_port()
        super().__init__(workdir, binary, [*prefix, binary, *flags, "-loggerLevel=WARN",
                                           f"-httpListenAddr={address}:{port}"],
                         f"http://{address}:{port}", "/health")


class Prometheus(Server):
    """A real Prometheus on a loopback port with `config` (written into `workdir`) and
    further command-line `flags`."""

    def __init__(self, workdir: Path, config: dict, flags: tuple[str, ...] = ()) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        super().__init__(workdir, "prometheus", [
            "prometheus", f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn", *flags],
            f"http://127.0.0.1:{self.port}", "/-/ready")

    def query(self, expr: str) -> list[dict]:
        """An instant query, now."""
        return PrometheusAPI(self.url, timeout=10).query(expr, time.time())

    def evaluated(self, group: str) -> float:
        """When it last evaluated the rule group named `group` (Unix time; 0: not yet)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/rules", timeout=10) as answer:
            groups = json.load(answer)["data"]["groups"]
        [last] = [g["lastEvaluation"] for g in groups if g["name"] == group]
        if last.startswith("0001-"):
            return 0.0
        # RFC 3339 with nanoseconds: Python's datetime takes microseconds
        day, _, fraction = last.removesuffix("Z").partition(".")
        return datetime.fromisoformat(f"{day}.{(fraction + '000000')[:6]}+00:00").timestamp()

    def alertmanagers(self) -> list[str]:
        """The Alertmanagers Prometheus has found: until then, an alert it fires is dropped
        and sent again only a minute later."""
        with urllib.request.urlopen(f"{self.url}/api/v1/alertmanagers", timeout=10) as answer:
            found = json.load(answer)["data"]["activeAlertmanagers"]
        return [a["url"] for a in found]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Chain(NamedTuple):
    insmon: Insmon
    alertmanager: Alertmanager
    prometheus: Prometheus

    def explain(self) -> str:
        """What each link of the chain holds now, for a test that waited in vain: the
        scrape, the settlement path as Prometheus has it, the alerts firing, the
        Alertmanager's alerts, and the tails of the three logs."""
        lines = []
        for expr in ("up", "insmon_settlement_path_up", "ALERTS{alertstate=\"firing\"}",
                     "prometheus_notifications_errors_total"):
            try:
                found = [(r["metric"], r["value"][1]) for r in self.prometheus.query(expr)]
            except Exception as exc:
                found = [f"query failed: {exc}"]
            lines.append(f"{expr}: {found}")
        try:
            lines.append(f"alertmanager: {[a['labels'] for a in self.alertmanager.alerts()]}")
        except Exception as exc:
            lines.append(f"alertmanager: {exc}")
        for server in self:
            tail = server.log_file.read_text(errors="replace").splitlines()[-5:]
            lines.append(f"{server.log_file.name}: " + " | ".join(tail))
        return "\n".join(lines)


@contextmanager
def alert_chain(workdir: Path, insmon_config: str, port: int, site: str,
                webhook_url: str | tuple[str, ...],
                interval: str | None = "1s", external_labels: dict | None = None,
                pager: str | None = None, token_file: Path | None = None,
                hasten: float = 1) -> Iterator[Chain]:
    """insmon (listening on `port`), Alertmanager paging `webhook_url` with the token of
    `token_file` (and a drill's pages also to the insmon pager at `pager`), and
    Prometheus scraping the one and
    alerting the other (see `alerting_config`), until the settlement path shows up; all
    stopped on the way out. `hasten` above 1: a test's chain, its rules' holds that many
    times shorter (alerting_config), and so Prometheus's resending of firing alerts (a
    minute as shipped; the first Watchdog, sent before it has found Alertmanager, is
    lost and comes again only then)."""
    started: list = []
    try:
        started.append(Insmon(workdir / "insmon", insmon_config))
        manager = Alertmanager(workdir / "alertmanager", webhook_url, pager=pager,
                               token_file=token_file)
        started.append(manager)
        prometheus = Prometheus(workdir / "prometheus", alerting_config(
            workdir / "prometheus", [f"127.0.0.1:{port}"], site, manager.url, interval,
            external_labels, hasten), flags=() if hasten == 1 else (
                f"--rules.alert.resend-delay={round(60_000 / hasten)}ms",))
        started.append(prometheus)
        wait_for(lambda: prometheus.query("site:insmon_settlement_path:up == 1"), 60,
                 "Prometheus to see the settlement path up")
        wait_for(prometheus.alertmanagers, 60, "Prometheus to find the Alertmanager")
        yield Chain(*started)
    finally:
        stop_all(started)


def stop_all(things: list) -> None:
    """Stop what was started, last first."""
    for thing in reversed(things):
        thing.stop()


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
