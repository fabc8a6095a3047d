"""`insmon doctor`: is this host's insmon installed and wired as the offline bundle sets
it up? One line per thing: OK, FAIL with what to do, or ? when it cannot be told here.

What it looks at: the code and the configs in /etc/insmon, the systemd units, whether
Prometheus loaded the rules and scrapes insmon and the pager, whether Alertmanager is up
and reaches the pager at the addresses of its config, and whether the modem's gammu-smsd
answers. Only the endpoints given (loopback by default) are asked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

SERVICES = ("insmon", "insmon-pager", "insmon-prometheus", "insmon-alertmanager")
JOBS = ("insmon", "insmon-pager")  # what Prometheus must scrape for the alerts to mean much
TIMEOUT = 5.0


@dataclass
class Line:
    status: str  # OK, FAIL or ?
    what: str
    todo: str = ""

    def __str__(self) -> str:
        return f"{self.status:<5} {self.what}" + (f"\n      → {self.todo}" if self.todo else "")


def examine(etc: Path, prometheus: str, alertmanager: str,
            load_pager: Callable[[Path], Any]) -> list[Line]:
    """`load_pager` reads the pager's config (pager.config.load: the pager builds on
    monitor, not the other way)."""
    from monitor import __version__

    lines = [Line("OK", f"insmon {__version__} in {sys.prefix}")]
    said, pager = _configs(etc, load_pager)
    lines += said
    lines += _units()
    lines += _prometheus(prometheus.rstrip("/"))
    lines += _alertmanager(alertmanager.rstrip("/"))
    if pager is not None:  # an invalid one is said above
        lines += _modem(pager)
    return lines


def _configs(etc: Path, load_pager: Callable[[Path], Any]) -> tuple[list[Line], Any]:
    """A line per config file and the token; and the pager's config, when valid."""
    from monitor.config import ConfigError, load, load_web_config

    lines, pager = [], None
    for name, loader in (("hospital.yaml", load), ("web.yml", load_web_config),
                         ("pager.yaml", load_pager)):
        path = etc / name
        try:
            loaded = loader(path)
        except ConfigError as exc:
            first = str(exc).splitlines()[0] if str(exc) else "invalid"
            lines.append(Line("FAIL", first if first.startswith(str(path)) else
                              f"{path}: {first}",
                              f"insmon validate {path} (pager: insmon pager validate) "
                              "says every fault"))
        except (OSError, ValueError) as exc:
            lines.append(Line("FAIL", f"{path}: {exc}", "the bundle's install.sh writes it"))
        else:
            lines.append(Line("OK", f"{path} is valid"))
            pager = loaded if loader is load_pager else pager
            if loader is load:
                lines.append(_calendar(loaded.config.calendar_file))
    token = etc / "pager-token"
    try:
        ok = bool(token.read_text().strip())
    except OSError as exc:
        lines.append(Line("FAIL", f"{token}: {exc.strerror}",
                          "run doctor as root or as insmon; install.sh writes the token"))
    else:
        lines.append(Line("OK", f"{token} holds the token") if ok else
                     Line("FAIL", f"{token} is empty", "openssl rand -hex 24 > it"))
    return lines, pager


def _calendar(file: Path | None, today: date | None = None) -> Line:
    """How long the working calendar's data lasts (peak hours, grade IV's business hours
    and the recurring windows follow it), from `today` (Beijing's, by default)."""
    from datetime import datetime

    from probes.base import SHANGHAI, ProbeFailure
    from probes.calendar import WARN_DAYS, WorkingCalendar

    working = WorkingCalendar(file)
    try:
        dates = working.dates()
    except ProbeFailure as exc:
        return Line("FAIL", str(exc), f"insmon validate {file} says every fault")
    left = (dates.known_until - (today or datetime.now(SHANGHAI).date())).days + 1
    what = f"working calendar: dates known until {dates.known_until} ({dates.sources})"
    todo = (f"add the State Council's dates to {working.to_fill()} (holidays, workdays, "
            "known_until), or upgrade the chinesecalendar package")
    if left < 1:
        return Line("FAIL", f"{what}: today is past it, the days are provisional (statutory "
                    "holidays by the law's fixed rules, make-up working days unknown)", todo)
    if left < WARN_DAYS:
        return Line("FAIL", f"{what}: {left} days left", todo)
    return Line("OK", f"{what}: {left} days left")


def _units() -> list[Line]:
    if not Path("/run/systemd/system").is_dir() or not shutil.which("systemctl"):
        return [Line("?", "services: systemd is not running here, their state is unknown")]
    lines = []
    for service in SERVICES:
        enabled = _systemctl("is-enabled", service)
        active = _systemctl("is-active", service)
        if active == "active" and enabled == "enabled":
            lines.append(Line("OK", f"{service}: running, starts at boot"))
        else:
            lines.append(Line("FAIL", f"{service}: {active}, {enabled}",
                              f"systemctl enable --now {service}; journalctl -u {service} "
                              "-n 50 says why it stops"))
    return lines


def _systemctl(verb: str, service: str) -> str:
    done = subprocess.run(["systemctl", verb, service], capture_output=True, text=True,
                          timeout=TIMEOUT)
    return done.stdout.strip() or done.stderr.strip() or f"exit {done.returncode}"


def _prometheus(url: str) -> list[Line]:
    todo = "systemctl status insmon-prometheus; promtool check config /etc/insmon/prometheus.yml"
    try:
        rules = _get(f"{url}/api/v1/rules")["data"]["groups"]
        count = sum(len(g["rules"]) for g in rules)
        # (job, health, address, last error) of each target
        targets = [(t["labels"].get("job"), t["health"], t["scrapeUrl"], t.get("lastError"))
                   for t in _get(f"{url}/api/v1/targets?state=active")["data"]
                   ["activeTargets"]]
    except OSError as exc:
        return [Line("FAIL", f"Prometheus at {url}: {_reason(exc)}", todo)]
    except (ValueError, KeyError, TypeError, AttributeError):
        return [Line("FAIL", f"{url} does not answer as Prometheus does", todo)]
    lines = [Line("OK", f"Prometheus at {url}: {count} rules in {len(rules)} groups")
             if count else Line("FAIL", f"Prometheus at {url} has loaded no rules", todo)]
    for job in JOBS:
        mine = [t for t in targets if t[0] == job]
        if not mine:
            lines.append(Line("FAIL", f"Prometheus does not scrape {job}",
                              f"add the job {job} to /etc/insmon/prometheus.yml"))
        elif all(health == "up" for _, health, _, _ in mine):
            lines.append(Line("OK", f"Prometheus scrapes {job}: "
                                    + ", ".join(address for _, _, address, _ in mine)))
        for _, health, address, error in mine:
            if health == "down":
                lines.append(Line("FAIL", f"Prometheus scrapes {job} at {address}: down"
                                  + (f" ({error})" if error else ""),
                                  f"systemctl status {job}"))
            elif health != "up":
                lines.append(Line("?", f"Prometheus scrapes {job} at {address}: {health}",
                                  "not scraped yet: ask again in a few seconds"))
    return lines


def _alertmanager(url: str) -> list[Line]:
    try:
        status = _get(f"{url}/api/v2/status")
    except ValueError:
        return [Line("FAIL", f"{url} does not answer as Alertmanager does",
                     "is --alertmanager the right address?")]
    except OSError as exc:
        return [Line("FAIL", f"Alertmanager at {url}: {_reason(exc)}",
                     "systemctl status insmon-alertmanager; amtool check-config "
                     "/etc/insmon/alertmanager.yml")]
    import yaml

    todo = "amtool check-config /etc/insmon/alertmanager.yml"
    try:
        config = yaml.safe_load(status["config"]["original"])
        pagers: dict[str, str | None] = {}  # the pager's address: the token file sent
        for receiver in config.get("receivers") or []:
            for hook in receiver.get("webhook_configs") or []:
                authorization = (hook.get("http_config") or {}).get("authorization") or {}
                if "url" in hook:
                    pagers[hook["url"].rsplit("/", 1)[0]] = authorization.get(
                        "credentials_file")
    except (ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return [Line("FAIL", f"{url} does not answer as Alertmanager does", todo)]
    lines = [Line("OK", f"Alertmanager at {url}: up, {len(pagers)} pager address(es)")]
    for pager, token_file in sorted(pagers.items()):
        lines.append(_pager(pager, token_file))
    return lines


def _pager(pager: str, token_file: str | None) -> Line:
    """Does the pager take what Alertmanager sends it: its address, and its token?"""
    try:
        _get(f"{pager}/healthz", parse=False)
    except OSError as exc:
        return Line("FAIL", f"Alertmanager's pager {pager}: {_reason(exc)}",
                    "systemctl status insmon-pager (on that host); a page for it waits in "
                    "Alertmanager until it answers")
    if token_file is None:
        return Line("OK", f"Alertmanager's pager {pager} answers (Alertmanager sends it no "
                          "token: the pager must be open)")
    try:
        token = Path(token_file).read_text().strip()
    except OSError as exc:
        return Line("?", f"Alertmanager's pager {pager} answers; its token {token_file}: "
                         f"{exc.strerror}", "run doctor as root to check the token too")
    try:
        _get(f"{pager}/api/incidents?since=0&until=0", token=token)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            return Line("FAIL", f"Alertmanager's pager {pager} refuses Alertmanager's token "
                                f"({token_file}): every page is lost",
                        "the pager's auth.token_file and Alertmanager's credentials_file "
                        "must hold the same token")
        return Line("FAIL", f"Alertmanager's pager {pager}: HTTP {exc.code}",
                    "journalctl -u insmon-pager")
    except OSError as exc:
        return Line("FAIL", f"Alertmanager's pager {pager}: {_reason(exc)}",
                    "journalctl -u insmon-pager")
    return Line("OK", f"Alertmanager's pager {pager} answers and takes Alertmanager's token")


def _modem(config: Any) -> list[Line]:
    """Each gammu-smsd the pager's SMS channels hand their messages to."""
    gammu = sorted({str(c.gammu_config) for c in config.channels.values()
                    if getattr(c, "type", "") == "sms"})
    lines = []
    for path in gammu:
        todo = (f"systemctl status gammu-smsd; the modem's port (device=) in {path}; "
                "gammu-smsd-monitor -c " + path)
        if not shutil.which("gammu-smsd-monitor"):
            lines.append(Line("FAIL", "the modem: gammu-smsd is not installed",
                              "the bundle's install.sh installs it"))
            continue
        try:
            done = subprocess.run(["gammu-smsd-monitor", "-c", path, "-n", "1", "-d", "0"],
                                  capture_output=True, text=True, timeout=TIMEOUT * 2)
        except subprocess.TimeoutExpired:
            lines.append(Line("FAIL", f"the modem ({path}): gammu-smsd does not answer", todo))
            continue
        said = {k.strip(): v.strip() for k, v in
                (line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)}
        signal = said.get("NetworkSignal", "")
        if done.returncode != 0 or not said:
            why = (done.stderr or done.stdout).strip().splitlines()
            lines.append(Line("FAIL", f"the modem ({path}): "
                                      f"{why[-1] if why else f'exit {done.returncode}'}",
                              todo))
        elif not signal.lstrip("-").isdigit() or int(signal) <= 0:
            lines.append(Line("FAIL", f"the modem ({path}) has no network signal "
                                      f"({signal or 'unknown'})",
                              "the SIM card, the antenna, the machine room's coverage"))
        else:
            lines.append(Line("OK", f"the modem ({path}) answers: IMEI {said.get('IMEI', '?')}"
                                    f", signal {signal}%, sent {said.get('Sent', '?')}, "
                                    f"failed {said.get('Failed', '?')}"))
    return lines


def _get(url: str, parse: bool = True, token: str | None = None):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with opener.open(request, timeout=TIMEOUT) as answer:
        body = answer.read()
    return json.loads(body) if parse else body


def _reason(exc: OSError) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc)
