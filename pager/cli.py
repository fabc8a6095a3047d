"""`insmon pager`: run, validate, who, ack, sms-received."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from pager.config import ConfigError, PagerConfig, load
from pager.rota import SHANGHAI, Rota, RotaError

log = logging.getLogger("insmon.pager")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="insmon pager",
        description="The on-call pager: Alertmanager's pages to the person on call, by "
                    "their channels, acknowledged or escalated.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="serve until stopped")
    run.add_argument("--listen", help="host:port, overriding the config")
    validate = commands.add_parser("validate", help="check a config and its rota files")
    validate.add_argument("file", type=Path)
    who = commands.add_parser("who", help="who is on call (值班人)")
    who.add_argument("--team", required=True)
    who.add_argument("--at", help="a Beijing time such as '2026-11-23 20:00' (default: now)")
    ack = commands.add_parser("ack", help="acknowledge an incident: stops its escalation")
    ack.add_argument("incident", type=int)
    ack.add_argument("--by", required=True, help="the person's id in the config")
    commands.add_parser("sms-received", help="gammu-smsd's RunOnReceive: reads the SMS_* "
                        "variables and acknowledges what the reply names")
    for sub in (run, who, ack, commands.choices["sms-received"]):
        sub.add_argument("-c", "--config", type=Path, required=True)
    args = parser.parse_args(argv)
    path = args.file if args.command == "validate" else args.config
    try:
        config = load(path)
        rota = Rota(config)
    except (ConfigError, RotaError) as exc:
        print(exc, file=sys.stderr)
        return 2
    return {"run": _run, "validate": _validate, "who": _who, "ack": _ack,
            "sms-received": _sms_received}[args.command](args, config, rota)


def _validate(args: argparse.Namespace, config: PagerConfig, rota: Rota) -> int:
    print(f"{args.file}: OK ({len(config.teams)} teams, {len(config.people)} people, "
          f"{len(config.channels)} channels)")
    now = dt.datetime.now(SHANGHAI)
    for team in config.teams:
        if rota.on_call(team, now) is None:
            print(f"warning: nobody is on call for {team} now: its lead would be paged",
                  file=sys.stderr)
    return 0


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
    return 0


def _engine(config: PagerConfig):  # -> Engine
    from pager.engine import Engine
    from pager.store import Store

    return Engine(config, Store(config.database))


def _ack(args: argparse.Namespace, config: PagerConfig, rota: Rota) -> int:
    if args.by not in config.people:
        print(f"--by: unknown person {args.by!r}", file=sys.stderr)
        return 2
    engine = _engine(config)
    incident = engine.incident(args.incident)
    if incident is None:
        print(f"no incident {args.incident}", file=sys.stderr)
        return 1
    if not engine.ack(args.incident, args.by, "cli"):
        print(f"incident {args.incident} was acknowledged already by {incident['acked_by']}",
              file=sys.stderr)
        return 1
    print(f"incident {args.incident} acknowledged by {config.people[args.by].name}")
    return 0


def _sms_received(args: argparse.Namespace, config: PagerConfig, rota: Rota) -> int:
    """gammu-smsd runs this for each received SMS with SMS_1_NUMBER, SMS_1_TEXT, ..."""
    engine = _engine(config)
    count = int(os.environ.get("SMS_MESSAGES", "1") or 1)
    number = os.environ.get("SMS_1_NUMBER", "")
    text = "".join(os.environ.get(f"SMS_{i}_TEXT", "") for i in range(1, count + 1))
    incident = engine.sms_reply(number, text)
    if incident is not None:
        print(f"incident {incident} acknowledged by SMS from {number}")
    return 0


def _run(args: argparse.Namespace, config: PagerConfig, rota: Rota) -> int:
    from prometheus_client import CollectorRegistry

    from monitor.config import split_listen
    from pager.delivery import Metrics, Worker
    from pager.server import PagerServer

    try:
        host, port = split_listen(args.listen or config.listen)
    except ValueError as exc:
        print(f"--listen: {exc}", file=sys.stderr)
        return 2
    engine = _engine(config)
    registry = CollectorRegistry()
    worker = Worker(engine, Metrics(registry))
    server = PagerServer(engine, host, port, worker.wake, registry, config.max_body)
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopping.set()
        threading.Thread(target=server.httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.start()
    log.info("insmon pager on %s:%d, store %s", host, server.port, config.database)
    server.httpd.serve_forever(poll_interval=0.5)
    worker.stop()
    engine.store.close()
    return 0
