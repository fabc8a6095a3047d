"""`insmon pager`: run, validate, who, ack, sms-received."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import signal
import sqlite3
import ssl
import sys
import threading
import time
from pathlib import Path

from monitor.audit import AuditError
from pager.config import DRILL, UNROUTED, WATCHDOG, ConfigError, PagerConfig, load
from pager.rota import Rota, ahead, beijing, check
from vocabulary import SHANGHAI

log = logging.getLogger("insmon.pager")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="insmon pager",
        description="The on-call pager: Alertmanager's pages to the person on call, by "
                    "their channels, acknowledged or escalated.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="serve until stopped")
    run.add_argument("--listen", help="host:port, overriding the config")
    run.add_argument("--role", choices=["active", "standby"],
                     help="this pager's role in the config's pair (needed with `pair`)")
    validate = commands.add_parser("validate", help="check a config and its rota files")
    validate.add_argument("file", type=Path)
    who = commands.add_parser("who", help="who is on call (值班人)")
    who.add_argument("--team", required=True)
    who.add_argument("--at", help="a Beijing time such as '2026-11-23 20:00' (default: now)")
    ack = commands.add_parser("ack", help="acknowledge an incident: stops its escalation")
    ack.add_argument("incident", type=int)
    ack.add_argument("--by", required=True, help="the person's id in the config")
    sms = commands.add_parser("sms-received", help="gammu-smsd's RunOnReceive: reads the "
                              "SMS_* variables (or the inbox files gammu-smsd appends) and "
                              "acknowledges what the reply names")
    sms.add_argument("files", nargs="*", help="the inbox files gammu-smsd appends")
    pair = commands.add_parser("check-pair", help="ask both pagers of the pair, signed "
                               "with the pair's key, which role each acts in")
    for sub in (run, who, ack, sms, pair):
        sub.add_argument("-c", "--config", type=Path, required=True)
    args = parser.parse_args(argv)
    path = args.file if args.command == "validate" else args.config
    try:
        config = load(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    # only these read the shifts files: a broken one never stops an ack or a run; they
    # print its error themselves (the log is for the running pager)
    rota = Rota(config, quiet=True) if args.command in ("validate", "who") else None
    return {"run": _run, "validate": _validate, "who": _who, "ack": _ack,
            "sms-received": _sms_received, "check-pair": _check_pair}[args.command](
        args, config, rota)


UNCONFIGURED = ("no teams: notifications are kept and nobody is paged (insmon_pager_configured "
                "0) until its channels, people and teams are filled in")


def _validate(args: argparse.Namespace, config: PagerConfig, rota: Rota) -> int:
    now = dt.datetime.now(SHANGHAI)
    errors = [*rota.errors.values(), *_unreachable(config, rota, now)]
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        return 2
    print(f"{args.file}: OK ({len(config.teams)} teams, {len(config.people)} people, "
          f"{len(config.channels)} channels)")
    if not config.configured:
        print(f"warning: {UNCONFIGURED}", file=sys.stderr)
        return 0
    name = lambda pid: f"{config.people[pid].name} ({pid})" if pid else "无人 nobody"  # noqa: E731
    print("值班 on call, the next 7 days (北京时间 Beijing time):")
    for tid, team in config.teams.items():
        changes = [f"{at:%m-%d %H:%M} {name(pid)}" for at, pid in ahead(config, rota, tid, now)]
        print(f"  {tid} {team.name}: " + "; ".join(
            changes[:12] + ([f"... and {len(changes) - 12} more"] if len(changes) > 12 else [])))
    # the people on no rota (a rota's are errors above)
    unreachable = [f"people.{p}: no channel of theirs has their address (mobile for sms and "
                   "http, email for email): a page to them goes to nobody"
                   for p in config.unreachable]
    for warning in unreachable + check(config, rota, now) + _unrouted(config):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _unreachable(config: PagerConfig, rota: Rota, now: dt.datetime) -> list[str]:
    """Each person of a team's rota (on call now or later, backup, lead) that none of
    their channels can reach: their pages would reach nobody."""
    nobody = set(config.unreachable)
    found = []
    for tid, team in config.teams.items():
        roles: dict[str, list[str]] = {}
        on_call = [*(team.rotation.order if team.rotation else []),
                   *(o.person for o in team.overrides if beijing(o.end) >= now),
                   *(s.person for s in rota.shifts(tid).all if s.end > now)]
        for role, people in (("on call", on_call), ("backup", [team.backup]),
                             ("lead", [team.lead])):
            for pid in people:
                if pid is not None and role not in roles.setdefault(pid, []):
                    roles[pid].append(role)
        for pid, what in roles.items():
            person = config.people[pid]
            if pid in nobody:
                found.append(f"teams.{tid}: {person.name} ({pid}), {' and '.join(what)}, has "
                             f"no channel that can reach them (people.{pid}.channels: "
                             f"{', '.join(person.channels)}; SMS and gateways need a mobile, "
                             "e-mail an address): their pages would reach nobody")
    return found


def _unrouted(config: PagerConfig) -> list[str]:
    """The teams the shipped Alertmanager routing pages that this config lacks."""
    from importlib.resources import files  # the routing as package data, wheel or checkout

    import yaml

    try:
        routing = yaml.safe_load(files("alert_rules").joinpath("alertmanager.yml").read_text())
    except (OSError, ImportError):
        return []
    teams = {hook["url"].rstrip("/").rsplit("/", 1)[-1] for receiver in routing["receivers"]
             for hook in receiver.get("webhook_configs", [])}
    return [f"alertmanager.yml routes to team {team!r}, which this config lacks: its pages "
            f"go to fallback_team ({config.fallback_team})"
            for team in sorted(teams - set(config.teams) - {WATCHDOG, DRILL, UNROUTED})]


def _who(args: argparse.Namespace, config: PagerConfig, rota: Rota) -> int:
    if args.team not in config.teams:
        print(f"unknown team {args.team!r}; teams: {', '.join(config.teams)}", file=sys.stderr)
        return 2
    at = dt.datetime.now(SHANGHAI)
    if args.at:
        try:
            at = dt.datetime.fromisoformat(args.at).replace(tzinfo=SHANGHAI)
        except ValueError:
            print(f"--at: {args.at!r} is not a time such as 2026-11-23 20:00", file=sys.stderr)
            return 2
    team = config.teams[args.team]
    person = rota.on_call(args.team, at)
    name = lambda pid: f"{config.people[pid].name} ({pid})" if pid else "-"  # noqa: E731
    print(f"{team.name} {at:%Y-%m-%d %H:%M} 北京时间")
    print(f"  值班 on call: {name(person) if person else '无人值班 (nobody): the lead is paged'}")
    print(f"  备班 backup:  {name(team.backup)}")
    print(f"  组长 lead:    {name(team.lead)}")
    if error := rota.error(args.team):
        print(f"  值班表有误 shifts file broken, its last good shifts are used: {error}")
    return 0


def _engine(config: PagerConfig, role: str | None = None, keys=None):  # -> Engine
    from pager.engine import Engine
    from pager.store import Store

    return Engine(config, Store(config.database), role=role, keys=keys)


def _auditor(config: PagerConfig, engine, path: Path):  # -> pager.audit.Auditor
    """The trail, written to once here (the config's digest) so that a folder the pager
    cannot write stops it at start rather than later."""
    from monitor.audit import Trail
    from pager.audit import Auditor

    auditor = Auditor(engine.store, Trail.open(config.audit.folder, config.audit.key_file,
                                               create_key=True))
    try:
        auditor.config(path)
    except AuditError as exc:  # a trail someone changed: paging goes on, and says so
        log.error("the audit trail %s is damaged, nothing more is recorded in it until "
                  "it is set aside (insmon audit --verify): %s", config.audit.folder, exc)
    return auditor


def _check_pair(args: argparse.Namespace, config: PagerConfig, rota: None) -> int:
    """Each member of the pair asked with the pair's key: OK when it answers signed with
    that key, started in the role of its place."""
    from pager.pair import Unanswered, hello

    if config.pair is None:
        print(f"{args.config}: no pair in it", file=sys.stderr)
        return 2
    failed = False
    for member in ("active", "standby"):
        url = getattr(config.pair, member).url
        try:
            said = hello(config, member)
        except Unanswered as exc:
            print(f"FAIL  {member} {url}: {exc}")
            failed = True
            continue
        ok = said["declared"] == said["role"] == member
        failed |= not ok
        print(f"{'OK  ' if ok else 'FAIL'}  {member} {url}: answers with the pair's key, "
              f"acts as the {said['role']}" + ("" if said["declared"] == said["role"]
                                               else f" (started --role {said['declared']})"))
    return 1 if failed else 0


def _reload(path: Path, running: PagerConfig, held) -> None:
    """SIGHUP: the secret files read again (rotation: pager/keys.py), and the config file
    checked; the rest of an edited config takes effect at the next restart."""
    from pager.keys import Secrets

    try:
        fresh = Secrets.load(running)
    except ValueError as exc:
        log.error("SIGHUP: secrets not read again, the ones in use stay: %s", exc)
    else:
        held.update(fresh, time.monotonic())
        log.info("SIGHUP: auth.token_file%s read again", " and pair.key_file"
                 if running.pair else "")
    try:
        edited = load(path)
    except (ConfigError, OSError) as exc:
        log.error("SIGHUP: %s does not validate; the pager runs on as it started:\n%s",
                  path, exc)
        return
    if edited != running:
        log.warning("SIGHUP: %s was edited; the change takes effect at the next restart "
                    "(systemctl restart insmon-pager: nothing accepted is lost)", path)


def _ack(args: argparse.Namespace, config: PagerConfig, rota: Rota) -> int:
    if args.by not in config.people:
        print(f"--by: unknown person {args.by!r}", file=sys.stderr)
        return 2
    engine = _engine(config)
    incident = engine.incident(args.incident)
    if incident is None:
        print(f"no incident {args.incident}", file=sys.stderr)
        return 1
    if not engine.may_ack(args.incident, args.by):
        print(f"{args.by} was not paged for incident {args.incident} and is in none of its "
              "teams", file=sys.stderr)
        return 1
    if not engine.ack(args.incident, args.by, "cli"):
        print(f"incident {args.incident} was acknowledged already by {incident['acked_by']}",
              file=sys.stderr)
        return 1
    print(f"incident {args.incident} acknowledged by {config.people[args.by].name}")
    return 0


def _sms_received(args: argparse.Namespace, config: PagerConfig, rota: None) -> int:
    """gammu-smsd's RunOnReceive, once per received message (its parts together): the
    message in SMS_MESSAGES, SMS_1_NUMBER, SMS_1_TEXT, ..., and the names of its inbox
    files appended to the command line (read when the variables are absent)."""
    if "SMS_MESSAGES" in os.environ:
        count = int(os.environ["SMS_MESSAGES"] or 1)
        number = os.environ.get("SMS_1_NUMBER", "")
        text = os.environ.get("DECODED_1_TEXT") or "".join(
            os.environ.get(f"SMS_{i}_TEXT", "") for i in range(1, count + 1))
    else:
        try:
            number, text = _inbox(config, args.files)
        except (OSError, ValueError) as exc:
            log.error("sms-received: %s", exc)
            return 2
    incident = _engine(config).sms_reply(number, text)
    if incident is None:  # the engine logged why; gammu-smsd's log shows the failure
        log.error("SMS from %s acknowledged nothing: %r", number, text)
        return 1
    print(f"incident {incident} acknowledged by SMS from {number}")
    return 0


INBOX_NAME = re.compile(r"IN\d{8}_\d{6}_\d{2}_(.+)_\d{2}\.txt")  # gammu-smsd-files(7)


def _inbox(config: PagerConfig, names: list[str]) -> tuple[str, str]:
    """(sender, text) of one message's inbox files, named as gammu-smsd's files backend
    names them, in the inboxpath of the SMS channel's gammu config (or as given)."""
    if not names:
        raise ValueError("no SMS_* variables and no inbox file: is this gammu-smsd's "
                         "RunOnReceive?")
    inboxes = []
    for channel in config.channels.values():
        inboxes += channel.inboxes()
    number, text = "", ""
    for name in sorted(names):  # the parts in order: _00, _01, ...
        match = INBOX_NAME.fullmatch(Path(name).name)
        if match is None:
            raise ValueError(f"{name}: not a text inbox file such as "
                             f"IN20261127_101500_00_+8613800000001_00.txt")
        path = next((p for p in (Path(name), *(i / name for i in inboxes)) if p.is_file()),
                    None)
        if path is None:
            raise ValueError(f"{name}: no such file here nor in {', '.join(map(str, inboxes))}")
        data = path.read_bytes()  # InboxFormat unicode is UTF-16 with a BOM, else UTF-8
        text += data.decode("utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8")
        number = match.group(1)
    return number, text


def _run(args: argparse.Namespace, config: PagerConfig, rota: Rota) -> int:
    from prometheus_client import CollectorRegistry

    from monitor.config import split_listen
    from pager.audit import HeadCollector
    from pager.delivery import Metrics, Worker
    from pager.keys import Secrets
    from pager.pair import PairCollector, Peer, http_transport
    from pager.server import PagerServer
    from pager.store import StoreError

    try:
        host, port = split_listen(args.listen or config.listen)
    except ValueError as exc:
        print(f"--listen: {exc}", file=sys.stderr)
        return 2
    from exporters.webconfig import tls_context

    if config.pair is None and args.role == "active":
        args.role = None  # a single pager is its own active (the unit's default role)
    if (config.pair is None) != (args.role is None):
        print(f"{args.config}: " + ("--role active or --role standby: the config has a "
              "pair" if args.role is None else "--role standby needs a `pair` in the "
              "config"), file=sys.stderr)
        return 2
    try:
        held = Secrets.load(config)
        tls = tls_context(config.tls) if config.tls else None
        engine = _engine(config, args.role, held)
        problem = engine.store.check()
    except (ValueError, StoreError, sqlite3.Error, OSError, ssl.SSLError) as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 2
    if problem:
        print(f"{args.config}: database: {problem}", file=sys.stderr)
        return 2
    if held.intake is None:
        log.warning("auth.open: anyone who reaches %s:%d can page and resolve", host, port)
    registry = CollectorRegistry()
    peer = None
    if config.pair is not None:
        assert args.role is not None  # checked above
        peer = Peer(engine, held, {
            member: http_transport(getattr(config.pair, member).url, config.pair.timeout)
            for member in ("active", "standby")})
        registry.register(PairCollector(peer))
    try:
        auditor = _auditor(config, engine, args.config)
    except (OSError, AuditError) as exc:  # a folder it cannot write: to mend, now
        print(f"{args.config}: audit trail: {exc}", file=sys.stderr)
        return 2
    registry.register(HeadCollector(auditor.trail))
    worker = Worker(engine, Metrics(registry), peer=peer)
    server = PagerServer(engine, host, port, worker.wake, registry, config.max_body, held,
                         lambda: worker.errors, peer)
    if tls is not None:  # the handshake on the request's own thread, as the exporter's
        server.httpd.socket = tls.wrap_socket(server.httpd.socket, server_side=True,
                                              do_handshake_on_connect=False)
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopping.set()
        threading.Thread(target=server.httpd.shutdown, daemon=True).start()

    def reload(signum: int, frame: object) -> None:  # an operator's reflex: never an end
        threading.Thread(target=_reload, args=(args.config, config, held), daemon=True,
                         name="pager-reload").start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    worker.start()
    auditor.start()
    if peer is not None:
        peer.start()
    log.info("insmon pager on %s:%d, store %s%s", host, server.port, config.database,
             f", {args.role} of a pair" if args.role else "")
    if not config.configured:
        log.warning("%s: %s", args.config, UNCONFIGURED)
    server.httpd.serve_forever(poll_interval=0.5)
    if peer is not None:
        peer.stop()
    worker.stop()
    auditor.stop()
    engine.store.close()
    return 0
