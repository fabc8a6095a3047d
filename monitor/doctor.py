"""`insmon doctor`: is this host's insmon installed and wired as the offline bundle sets
it up, and what is left for the site to fill in? One line per thing: OK, FAIL with the
command that mends it, or ? when it cannot be told here.

What it looks at: the code and the configs in /etc/insmon (valid; a pager with people to
page; none of the shipped example's addresses, people or secrets left), the systemd units,
whether Prometheus loaded the rules and scrapes insmon and the pager, whether
Alertmanager is up and reaches the pager at the addresses of its config, the pager's open
incidents and waiting messages, the audit trails' keys (their writer's alone), the pair
(each pager answering with the pair's key, in its role), and the modem (gammu-smsd: its
port, the spool, the SMS waiting, its state and user, its answer). Only the endpoints
given (loopback by default) and the pair's addresses in pager.yaml are asked.
"""

from __future__ import annotations

import configparser
import datetime as dt
import grp
import ipaddress
import json
import pwd
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

SERVICES = ("insmon", "insmon-pager", "insmon-prometheus", "insmon-alertmanager")
JOBS = ("insmon", "insmon-pager")  # what Prometheus must scrape for the alerts to mean much
TIMEOUT = 5.0
SHARE = Path("/opt/insmon/share")  # the bundle's examples and shipped rules
# The keys whose values name a site's own addresses, people or secrets: still equal to
# the shipped example's, they are placeholders (a page to them reaches nobody, or a
# stranger). The example of prometheus.yml is the shipped one, in alert_rules/.
EXAMPLE_KEYS = {
    "hospital.yaml": ("examples/hospital.yaml", {
        "front_end", "gateway", "targets", "source", "address", "url", "fixmedins_code",
        "fixmedins_name"}),
    "pager.yaml": ("examples/pager.yaml", {
        "url", "public_url", "runbook_url", "secret", "host", "sender", "mobile", "email",
        "wecom", "dingtalk", "feishu"}),
    "prometheus.yml": ("alert_rules/prometheus.yml", {"site"}),
}
MENDS = {  # what makes an edited file count
    "hospital.yaml": "insmon validate {path} && systemctl reload insmon",
    "pager.yaml": "insmon pager validate {path} && systemctl restart insmon-pager",
    "prometheus.yml": "promtool check config {path} && systemctl reload insmon-prometheus",
}
SERVICE_USER = "insmon"  # insmon's, the pager's, and gammu-smsd's under the bundle's drop-in
INSMON_AUDIT = Path("/var/lib/insmon/audit")  # `insmon run`'s trail (its StateDirectory)
INSMON = "/opt/insmon/.venv/bin/insmon"  # as gammu-smsd's RunOnReceive names it (no PATH)
SMSDRC = Path("/etc/gammu-smsdrc")  # gammu-smsd.service's config
TOKEN_MIN = 16  # the pager refuses a shorter token (pager/cli.py)
STALE_SMS = 60.0  # seconds an SMS may wait in gammu-smsd's outbox before it is a fault


@dataclass
class Line:
    status: str  # OK, FAIL or ?
    what: str
    todo: str = ""

    def __str__(self) -> str:
        return f"{self.status:<5} {self.what}" + (f"\n      → {self.todo}" if self.todo else "")


def examine(etc: Path, prometheus: str, alertmanager: str,
            load_pager: Callable[[Path], Any], share: Path = SHARE,
            ask_pair: Callable[[Any, str], dict] | None = None) -> list[Line]:
    """`load_pager` reads the pager's config (pager.config.load: the pager builds on
    monitor, not the other way); `ask_pair(config, member)` asks a pager of the pair what
    it is, with the pair's key (pager.pair.hello)."""
    from monitor import __version__
    from monitor.audit import key_file_of

    lines = [Line("OK", f"insmon {__version__} in {sys.prefix}")]
    said, pager = _configs(etc, load_pager)
    lines += said
    lines += _examples(etc, share)
    lines += _audit_keys([key_file_of(INSMON_AUDIT)] + (
        [pager.audit.key_file or key_file_of(pager.audit.folder)] if pager else []))
    lines += _units()
    lines += _prometheus(prometheus.rstrip("/"))
    lines += _alertmanager(alertmanager.rstrip("/"), pager)
    if pager is not None:  # an invalid one is said above
        lines += _pair(pager, etc / "pager.yaml", ask_pair)
        lines += _modem(pager, etc / "pager.yaml")
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
            if loader is not load_pager:
                lines.append(Line("OK", f"{path} is valid"))
                if loader is load:
                    lines.append(_calendar(loaded.config.calendar_file, config=path))
                continue
            pager = loaded
            lines.append(_pages_whom(path, loaded))
    token = etc / "pager-token"
    try:
        size = len(token.read_text().strip())
    except OSError as exc:
        lines.append(Line("FAIL", f"{token}: {exc.strerror}",
                          "run doctor as root or as insmon; install.sh writes the token"))
    else:
        lines.append(Line("OK", f"{token} holds the token") if size >= TOKEN_MIN else
                     Line("FAIL", f"{token} holds {size} characters: the pager takes no "
                                  f"token under {TOKEN_MIN} and does not start",
                          f"openssl rand -hex 24 > {token}; systemctl restart insmon-pager "
                          "(Alertmanager reads it anew for each page)"))
    return lines, pager


def _calendar(file: Path | None, today: date | None = None,
              config: Path = Path("/etc/insmon/hospital.yaml")) -> Line:
    """How long the working calendar's data lasts (peak hours, grade IV's business hours
    and the recurring windows follow it), from `today` (Beijing's, by default). `file`:
    the site's dates that `config` names (None: it names none)."""
    from datetime import datetime

    from probes.base import ProbeFailure
    from probes.calendar import WARN_DAYS, WorkingCalendar
    from vocabulary import SHANGHAI

    working = WorkingCalendar(file)
    try:
        dates = working.dates()
    except ProbeFailure as exc:
        return Line("FAIL", str(exc), f"insmon validate {file} says every fault")
    left = (dates.known_until - (today or datetime.now(SHANGHAI).date())).days + 1
    what = f"working calendar: dates known until {dates.known_until} ({dates.sources})"
    todo = (f"add the State Council's dates to {working.to_fill()} (holidays, workdays, "
            "known_until), or upgrade the chinesecalendar package")
    if file is None:  # a file no check names is read by nothing
        todo = (f"add the State Council's dates to {working.to_fill()} (holidays, workdays, "
                f"known_until) and name it in the calendar check of {config} (file: "
                f"{working.to_fill()}), then {MENDS['hospital.yaml'].format(path=config)}; "
                "or upgrade the chinesecalendar package")
    if left < 1:
        return Line("FAIL", f"{what}: today is past it, the days are provisional (statutory "
                    "holidays by the law's fixed rules, make-up working days unknown)", todo)
    if left < WARN_DAYS:
        return Line("FAIL", f"{what}: {left} days left", todo)
    return Line("OK", f"{what}: {left} days left")


def _pages_whom(path: Path, config: Any) -> Line:
    """Whether the pager's config pages anyone, and where phones open its ack links."""
    if not config.configured:
        return Line("FAIL", f"{path} is valid but pages nobody: no channels, people or teams "
                            "yet (install.sh's starting point)",
                    f"write them in (the example's are in it, commented out), then "
                    f"{MENDS['pager.yaml'].format(path=path)}")
    if config.unreachable:
        return Line("FAIL", f"{path}: no channel reaches {', '.join(config.unreachable)} "
                            "(an SMS or http channel needs their mobile, e-mail their email): "
                            "a page to them goes to nobody",
                    f"their mobile or email in {path} (or a channel that has it), then "
                    + MENDS["pager.yaml"].format(path=path))
    host = urllib.parse.urlsplit(config.public_url).hostname or ""
    if config.pair is None and (host == "localhost" or _loopback(host)):
        return Line("FAIL", f"{path}: public_url is {config.public_url}: phones cannot open "
                            "the acknowledgement links there",
                    f"public_url: http://<this host's address>:9095 in {path}, then "
                    + MENDS["pager.yaml"].format(path=path))
    return Line("OK", f"{path} is valid: pages {len(config.teams)} teams, "
                      f"{len(config.people)} people")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _examples(etc: Path, share: Path) -> list[Line]:
    """The site's files holding the shipped example's addresses, people or secrets."""
    import yaml

    lines, clean = [], []
    for name, (example, keys) in EXAMPLE_KEYS.items():
        path = etc / name
        try:
            shipped = {value for _, value in _leaves(yaml.safe_load(
                (share / example).read_text()), keys)}
        except (OSError, yaml.YAMLError) as exc:
            lines.append(Line("?", f"the shipped {share / example}: "
                                   f"{getattr(exc, 'strerror', None) or exc}: {path} not "
                                   "compared with it", "run doctor where the bundle installed"))
            continue
        try:
            site = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue  # said above (or the next check's)
        found = [where for where, value in _leaves(site, keys) if value in shipped]
        if not found:
            clean.append(name)
            continue
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        lines.append(Line("FAIL", f"{path} still holds the example's: {', '.join(found[:5])}"
                                  f"{more}",
                          "write this site's own in, then " + MENDS[name].format(path=path)))
    if clean:
        lines.insert(0, Line("OK", f"none of the example's addresses, people or secrets in "
                                   f"{', '.join(clean)}"))
    return lines


def _leaves(node: Any, keys: set[str], where: str = "") -> list[tuple[str, str]]:
    """(key path, value) of every scalar under one of `keys`, lists' items included."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if key in keys and not isinstance(value, dict | list):
                found.append((path, str(value)))
            elif key in keys and isinstance(value, list):
                found += [(f"{path}[{i}]", str(v)) for i, v in enumerate(value)
                          if not isinstance(v, dict | list)]
            found += _leaves(value, keys, path) if isinstance(value, dict | list) else []
    elif isinstance(node, list):  # an item by its name where it has one
        for i, value in enumerate(node):
            name = value.get("name", i) if isinstance(value, dict) else i
            found += _leaves(value, keys, f"{where}[{name}]")
    return found


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


def _systemctl(verb: str, service: str, *options: str) -> str:
    done = subprocess.run(["systemctl", verb, service, *options], capture_output=True,
                          text=True, timeout=TIMEOUT)
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


def _alertmanager(url: str, pager_config: Any) -> list[Line]:
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
        lines += _pager(pager, token_file, pager_config)
    return lines


def _pager(pager: str, token_file: str | None, config: Any) -> list[Line]:
    """Does the pager take what Alertmanager sends it: its address, and its token? And
    what it holds: whether it pages anyone, its open incidents, its waiting messages."""
    try:
        _get(f"{pager}/healthz", parse=False)
    except OSError as exc:
        return [Line("FAIL", f"Alertmanager's pager {pager}: {_reason(exc)}",
                     "systemctl status insmon-pager (on that host); a page for it waits in "
                     "Alertmanager until it answers")]
    state = _pager_state(pager, config)
    if token_file is None:
        return [Line("OK", f"Alertmanager's pager {pager} answers (Alertmanager sends it no "
                           "token: the pager must be open)"), *state]
    try:
        token = Path(token_file).read_text().strip()
    except OSError as exc:
        return [Line("?", f"Alertmanager's pager {pager} answers; its token {token_file}: "
                          f"{exc.strerror}", "run doctor as root to check the token too"),
                *state]
    try:
        _get(f"{pager}/api/incidents?since=0&until=0", token=token)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            return [Line("FAIL", f"Alertmanager's pager {pager} refuses Alertmanager's token "
                                 f"({token_file}): every page is lost",
                         "the pager's auth.token_file and Alertmanager's credentials_file "
                         "must hold the same token"), *state]
        return [Line("FAIL", f"Alertmanager's pager {pager}: HTTP {exc.code}",
                     "journalctl -u insmon-pager"), *state]
    except OSError as exc:
        return [Line("FAIL", f"Alertmanager's pager {pager}: {_reason(exc)}",
                     "journalctl -u insmon-pager"), *state]
    return [Line("OK", f"Alertmanager's pager {pager} answers and takes Alertmanager's "
                       "token"), *state]


def _pager_state(pager: str, config: Any) -> list[Line]:
    """From the pager's /metrics: whether it pages anyone (the config it runs with may be
    older than the file), its open incidents and the messages waiting to go out."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = _get(f"{pager}/metrics", parse=False).decode()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return [Line("?", f"the pager {pager}: its metrics: {exc}", "journalctl -u insmon-pager")]
    configured = samples.get(("insmon_pager_configured", ()))
    if configured == 0 and config is not None and config.configured:
        return [Line("FAIL", f"the pager {pager} still runs the config it started with, which "
                             "pages nobody (insmon_pager_configured 0)",
                     "systemctl restart insmon-pager (it reads its config at start)")]
    opened = [(dict(labels), value) for (name, labels), value in samples.items()
              if name == "insmon_pager_open_incidents" and value]
    unacked = sum(v for labels, v in opened if labels.get("acknowledged") == "false")
    waiting = samples.get(("insmon_pager_pending_deliveries", ()), 0)
    return [Line("OK", f"the pager {pager}: "
                       + (f"{sum(v for _, v in opened):.0f} open incidents ({unacked:.0f} not "
                          "acknowledged)" if opened else "no open incident")
                       + f", {waiting:.0f} messages waiting to be sent"
                       + ("" if configured else " (it pages nobody)"))]


def _pair(config: Any, path: Path, ask: Callable[[Any, str], dict] | None) -> list[Line]:
    """Each pager of pager.yaml's pair: reachable, answering with the pair's key (not
    Alertmanager's token), started in the role the config gives its url. The one place
    that asks the peer API (`ask`: pager/pair.py's `hello`)."""
    if config.pair is None:
        return [Line("OK", "one pager, no standby (no pair in pager.yaml; the README's "
                           "install steps add one)")]
    if ask is None:
        return [Line("?", "the pair: not asked here")]
    lines = []
    for role in ("active", "standby"):
        url = getattr(config.pair, role).url.rstrip("/")
        what = f"the pair's {role} pager {url}"
        try:
            said = ask(config, role)
        except ValueError as exc:
            kind = getattr(exc, "kind", "")
            if kind == "secret":
                return [Line("?", f"the pair: {exc}", "install.sh writes it; run doctor as "
                                                      "root to check the pair too")]
            lines.append(Line("FAIL", f"{what} does not take the pair's key ({exc})",
                              f"the same {config.pair.key_file} on both pager hosts, then "
                              "systemctl reload insmon-pager on the one changed")
                         if kind in ("refused", "untrusted") else
                         Line("FAIL", f"{what}: {exc}", f"systemctl status insmon-pager on "
                              f"that host; pair.{role}.url in {path}")
                         if kind == "unreachable" else
                         Line("FAIL", f"{what} does not answer as a pager does ({exc})",
                              f"pair.{role}.url in {path}"))
            continue
        if said["declared"] != role:
            lines.append(Line("FAIL", f"{what} runs as {said['declared']} (it acts as the "
                              f"{said['role']}, the role of its url)",
                              f"on that host: systemctl edit insmon-pager, [Service] "
                              f"Environment=INSMON_PAGER_ROLE={role}, then systemctl restart "
                              "insmon-pager"))
        else:
            lines.append(Line("OK", f"{what} answers with the pair's key, as {role}"))
    return lines


def _modem(config: Any, pager: Path) -> list[Line]:
    """Each gammu-smsd the pager's SMS channels hand their messages to, and the service's
    own when it is enabled or running: the bundle's drop-in runs it as insmon whatever
    the pager's channels (a site's modem set up before the install among them)."""
    mine = {str(path) for c in config.channels.values()  # as each channel says it
            for service, path in c.host_services().items() if service == "gammu-smsd"}
    paths = mine | ({str(SMSDRC)} if _smsd_in_use() else set())
    return [line for path in sorted(paths)
            for line in _smsd(Path(path), pager=pager if path in mine else None)]


def _smsd_in_use() -> bool:
    if not Path("/run/systemd/system").is_dir() or not shutil.which("systemctl"):
        return False
    return (_systemctl("is-enabled", "gammu-smsd") == "enabled"
            or _systemctl("is-active", "gammu-smsd") == "active")


def _smsd(path: Path, user: str = SERVICE_USER,
          pager: Path | None = Path("/etc/insmon/pager.yaml")) -> list[Line]:
    """gammu-smsd for one SMS channel: its config (the modem's port; the dummy phone's
    folder; the replies handed to the pager, whose config is `pager`: None when the
    pager sends no SMS), its spool (writable by `user`, the pager's and gammu-smsd's),
    SMS waiting in its outbox, the service (running, as `user`, reading `pager`), and
    its answer with a signal."""
    if not shutil.which("gammu-smsd-monitor"):
        return [Line("FAIL", "the modem: gammu-smsd is not installed",
                     "the bundle's install.sh installs it")]
    smsdrc = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"),
                                       strict=False)
    try:
        with path.open() as file:
            smsdrc.read_file(file)
        gammu, smsd = smsdrc["gammu"], smsdrc["smsd"]
    except (OSError, configparser.Error, KeyError) as exc:
        return [Line("FAIL", f"the modem: {path}: {getattr(exc, 'strerror', None) or exc}",
                     f"install -m 0644 /opt/insmon/share/examples/gammu-smsdrc {path}, "
                     "then its port")]
    port = gammu.get("port") or gammu.get("device") or ""
    restart = "systemctl restart gammu-smsd"
    if port in ("", "/dev/null"):
        return [Line("FAIL", f"the modem: {path} names no modem (port = {port or 'nothing'})",
                     f"port = the modem's device in {path} (ls -l /dev/serial/by-id/; "
                     f"/opt/insmon/share/examples/gammu-smsdrc), then {restart}")]
    lines = []
    if gammu.get("model", "") == "dummy":  # a dry run: the phone is a folder
        why = _unwritable(Path(port), user)
        if why:
            lines.append(Line("FAIL", f"the modem: the dummy phone's folder {port}: {why}",
                              f"install -d -o {user} -g gammu -m 0750 {port}; "
                              f"chown -R {user}:gammu {port}; {restart}"))
    elif not Path(port).exists():
        lines.append(Line("FAIL", f"the modem: no device {port} (port in {path})",
                          f"ls -l /dev/serial/by-id/ names it; port = that in {path}, then "
                          f"{restart}"))
    receive = smsd.get("runonreceive", "")
    if pager and "pager sms-received" not in receive:  # a reply (回复1确认) stays unread
        lines.append(Line("FAIL", f"the modem: {path} hands the SMS it receives to no pager "
                                  f"(RunOnReceive {'= ' + receive if receive else 'not set'})"
                                  ": a reply acknowledges nothing",
                          f"RunOnReceive = {INSMON} pager sms-received -c {pager} in [smsd] "
                          f"of {path} (as /opt/insmon/share/examples/gammu-smsdrc has it), "
                          f"then {restart}"))
    for key in ("outboxpath", "inboxpath", "sentsmspath", "errorsmspath"):
        folder = smsd.get(key)
        why = _unwritable(Path(folder), user) if folder else f"no {key} in {path}"
        if why:
            lines.append(Line("FAIL", f"the modem's spool ({key}) {folder or ''}: {why}",
                              f"usermod -a -G gammu {user}; install -d -o gammu -g gammu "
                              f"-m 0770 {folder}; systemctl restart insmon-pager gammu-smsd"
                              if folder else f"{key} = /var/spool/gammu/... in {path}"))
    lines += _outbox(Path(smsd.get("outboxpath", "/var/spool/gammu/outbox/")))
    state = _smsd_service(user, pager)
    lines += state
    if lines:  # gammu-smsd-monitor would only echo it ("Failed to map shared memory")
        return lines
    todo = (f"systemctl status gammu-smsd; the modem's port in {path}; "
            f"gammu-smsd-monitor -c {path}")
    try:
        done = subprocess.run(["gammu-smsd-monitor", "-c", str(path), "-n", "1", "-d", "0"],
                              capture_output=True, text=True, timeout=TIMEOUT * 2)
    except subprocess.TimeoutExpired:
        return [Line("FAIL", f"the modem ({path}): gammu-smsd does not answer", todo)]
    said = {k.strip(): v.strip() for k, v in
            (line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)}
    signal = said.get("NetworkSignal", "")
    if done.returncode != 0 or not said:
        why = (done.stderr or done.stdout).strip().splitlines()
        return [Line("FAIL", f"the modem ({path}): "
                             f"{why[-1] if why else f'exit {done.returncode}'}", todo)]
    if not signal.lstrip("-").isdigit() or int(signal) <= 0:
        return [Line("FAIL", f"the modem ({path}) has no network signal "
                             f"({signal or 'unknown'})",
                     "the SIM card, the antenna, the machine room's coverage")]
    return [Line("OK", f"the modem ({path}) answers: IMEI {said.get('IMEI', '?')}"
                       f", signal {signal}%, sent {said.get('Sent', '?')}, "
                       f"failed {said.get('Failed', '?')}")]


def _unwritable(folder: Path, user: str) -> str | None:
    """Why `user` cannot make files in `folder` (None: it can)."""
    try:
        entry = pwd.getpwnam(user)
        stat = folder.stat()
    except KeyError:
        return f"no user {user} on this host"
    except OSError as exc:
        return exc.strerror or str(exc)
    if not folder.is_dir():
        return "not a folder"
    groups = {entry.pw_gid, *(g.gr_gid for g in grp.getgrall() if user in g.gr_mem)}
    if stat.st_uid == entry.pw_uid:
        bits = stat.st_mode >> 6
    elif stat.st_gid in groups:
        bits = stat.st_mode >> 3
    else:
        bits = stat.st_mode
    if bits & 0o3 == 0o3:
        return None
    owner = _name(pwd.getpwuid, stat.st_uid) + ":" + _name(grp.getgrgid, stat.st_gid)
    return f"{user} cannot write it (owned by {owner}, mode {stat.st_mode & 0o7777:04o})"


def _audit_keys(keys: list[Path], user: str = SERVICE_USER) -> list[Line]:
    """The audit trails' keys: their writer's alone, since whoever reads one can write
    records that verify. A key not there yet is made by its writer when it starts."""
    lines = []
    for key in keys:
        try:
            stat = key.stat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            lines.append(Line("?", f"{key}: {exc.strerror}", "run doctor as root"))
            continue
        owner = _name(pwd.getpwuid, stat.st_uid)
        if stat.st_mode & 0o077:
            lines.append(Line("FAIL", f"{key} is readable by others (mode "
                                      f"{stat.st_mode & 0o7777:04o}): whoever reads it can "
                                      "write audit records that verify", f"chmod 0400 {key}"))
        elif owner != user:
            lines.append(Line("FAIL", f"{key} belongs to {owner}, not {user}: the trail's "
                                      "writer cannot read it", f"chown {user}: {key}"))
        else:
            lines.append(Line("OK", f"{key} is {user}'s alone"))
    return lines


def _name(lookup: Callable[[int], Any], number: int) -> str:
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)  # a removed user's or group's number


def _outbox(outbox: Path) -> list[Line]:
    """SMS that wait in gammu-smsd's outbox: they go out whenever the modem works, however
    old, so the site sees them first."""
    try:
        waiting = [(f.stat().st_mtime, f.name) for f in outbox.iterdir() if f.is_file()]
    except OSError:
        return []  # the spool's line says why
    stale = [w for w in waiting if time.time() - w[0] > STALE_SMS]
    if not stale:
        return []
    oldest = dt.datetime.fromtimestamp(min(stale)[0]).strftime("%Y-%m-%d %H:%M")
    return [Line("FAIL", f"the modem: {len(stale)} SMS wait in {outbox} (the oldest since "
                         f"{oldest}): gammu-smsd is not sending them",
                 f"they go out once it does, however old: ls -l {outbox} and remove the "
                 "stale ones (rm), then mend gammu-smsd (the lines below)")]


def _smsd_service(user: str, pager: Path | None) -> list[Line]:
    """gammu-smsd's unit: enabled, running, as `user` (its RunOnReceive writes the
    pager's store as that user) and with a group that reads the pager's config."""
    if not Path("/run/systemd/system").is_dir() or not shutil.which("systemctl"):
        return [Line("?", "gammu-smsd: systemd is not running here, its state is unknown")]
    active, enabled = _systemctl("is-active", "gammu-smsd"), _systemctl("is-enabled",
                                                                         "gammu-smsd")
    if active != "active" or enabled != "enabled":
        return [Line("FAIL", f"gammu-smsd: {active}, {enabled}: no SMS goes out",
                     "systemctl enable --now gammu-smsd; journalctl -u gammu-smsd -n 50 "
                     "says why it stops")]
    pid = _systemctl("show", "gammu-smsd", "--property=MainPID", "--value")
    try:
        uid = Path(f"/proc/{pid}").stat().st_uid
    except OSError as exc:
        return [Line("?", f"gammu-smsd: its process {pid}: {exc.strerror}", "")]
    runs_as = _name(pwd.getpwuid, uid)
    if runs_as != user:
        return [Line("FAIL", f"gammu-smsd runs as {runs_as}: its RunOnReceive would write "
                             f"the pager's store as {runs_as}",
                     "the bundle's drop-in (gammu-smsd.service.d/insmon.conf) runs it as "
                     f"{user}: systemctl revert gammu-smsd (a drop-in of the site's in /etc "
                     "overrides it); systemctl restart gammu-smsd")]
    try:
        if pager is None:
            return []
        status = Path(f"/proc/{pid}/status").read_text()
        config = pager.stat()
    except OSError:
        return []  # the pager's config: said above
    gids = {int(g) for line in status.splitlines() if line.startswith(("Gid:", "Groups:"))
            for g in line.split()[1:]}
    shift = 6 if config.st_uid == uid else 3 if config.st_gid in gids else 0
    if not config.st_mode >> shift & 0o4:
        return [Line("FAIL", f"gammu-smsd cannot read {pager} (group "
                             f"{_name(grp.getgrgid, config.st_gid)}, not one of its groups): "
                             "its RunOnReceive fails, a reply acknowledges nothing",
                     "the bundle's drop-in (gammu-smsd.service.d/insmon.conf) runs it with the "
                     "group insmon: systemctl revert gammu-smsd (a drop-in of the site's in "
                     "/etc overrides it); systemctl daemon-reload; systemctl restart "
                     "gammu-smsd")]
    return []


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
