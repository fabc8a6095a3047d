"""The `insmon` command: run, once, validate, maintenance, drill, review, pager, doctor,
settlement try.

Each subcommand is one builder (its arguments) and one handler (its work). A handler
imports its machinery when it runs, so `insmon --version` or `insmon review` never loads
the scheduler, the probes or the drill's lab.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from monitor import __version__

Handler = Callable[[argparse.Namespace], int]
LISTED = 30  # checks named by `insmon validate`; a site with thousands gets a count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="insmon",
        description="Health monitor for a hospital's medical-insurance settlement chain.")
    parser.add_argument("--version", action="version", version=f"insmon {__version__}")
    parser.add_argument("--log-level", default=None,
                        choices=["debug", "info", "warning", "error"],
                        help="default: info for run, error for once, warning otherwise")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for build in (_run, _once, _validate, _maintenance, _drill, _review, _pager, _settlement,
                  _audit, _doctor, _report):
        build(commands)

    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "pager":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "pager":  # `insmon pager -h`: the pager's own options
        args.args = extra + args.args
    default_level = {"run": "info", "once": "error"}.get(args.command, "warning")
    logging.basicConfig(level=(args.log_level or default_level).upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # it logs every run at INFO
    return args.handler(args)


def _command(commands: argparse._SubParsersAction, name: str, handler: Handler,
             help: str) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=help)
    sub.set_defaults(handler=handler)
    return sub


def _config_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("-c", "--config", type=Path,
                     help="config file (default: the embedded config for this host)")


def _load(path: Path | None):  # -> monitor.config.Loaded, or None after printing why
    from monitor.config import ConfigError, load

    try:
        return load(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


# ------------------------------------------------------------------ run

def _run(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "run", _do_run, "monitor until stopped, serving /metrics")
    _config_option(sub)
    sub.add_argument("--listen", help="host:port to serve on, overriding the config")
    sub.add_argument("--web-config", type=Path, metavar="FILE",
                     help="TLS and basic auth for the endpoint (exporter-toolkit format)")
    sub.add_argument("--audit", type=Path, metavar="DIR",
                     help="the audit trail's folder (default: audit/ in $STATE_DIRECTORY "
                          "under systemd, else none)")


def _do_run(args: argparse.Namespace) -> int:
    from monitor.config import ConfigError, load_web_config, split_listen
    from monitor.service import Service

    if args.listen:
        try:
            split_listen(args.listen)
        except ValueError as exc:
            print(f"insmon run: --listen: {exc}", file=sys.stderr)
            return 2
    loaded = _load(args.config)
    if loaded is None:
        return 1
    web = None
    if args.web_config:
        try:
            web = load_web_config(args.web_config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
    from monitor.audit import AuditError

    try:
        trail = _trail(args.audit)
    except (OSError, AuditError) as exc:
        print(f"insmon run: the audit trail's key: {exc}", file=sys.stderr)
        return 1
    jobs = []
    if (windows := loaded.config.maintenance) is not None:
        if trail is None:
            print("insmon run: the config's maintenance windows need an audit trail "
                  "(--audit DIR, or systemd's StateDirectory)", file=sys.stderr)
            return 1
        from ops.maintenance import realise_windows

        calendar = loaded.config.calendar_file  # the site's one file, whoever names it
        jobs.append(("recurring maintenance windows", windows.every, lambda now:
                     realise_windows(windows.file, windows.alertmanager, trail,
                                     windows.ahead, calendar, now)))
    return asyncio.run(Service(loaded, args.config, args.listen, web, trail, jobs).run())


def _trail(folder: Path | None):  # -> monitor.audit.Trail | None
    """The audit trail: --audit, else audit/ in systemd's StateDirectory when there is
    one (/var/lib/insmon), else none (a try-out on a desk). The service is its one
    writer: it holds the key beside it (made the first time)."""
    from monitor.audit import Trail

    if folder is None and os.environ.get("STATE_DIRECTORY"):
        folder = Path(os.environ["STATE_DIRECTORY"].split(":")[0]) / "audit"
    return Trail.open(folder, create_key=True) if folder is not None else None


# ------------------------------------------------------------------ once

def _once(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "once", _do_once,
                   "run every check once and print a table; exit 1 if any is not ok")
    _config_option(sub)


def _do_once(args: argparse.Namespace) -> int:
    from exporters import status
    from monitor.runner import build_checks, run_all
    from monitor.store import ResultStore

    loaded = _load(args.config)
    if loaded is None:
        return 1
    store = ResultStore()
    checks = build_checks(loaded.config.checks)
    store.configure(checks, loaded.source)
    asyncio.run(run_all(checks, store))
    snap = store.snapshot()
    sys.stdout.write(status.table(snap))
    return 0 if all(v.last and v.last.status == "ok" for v in snap.checks) else 1


# ------------------------------------------------------------------ validate

def _validate(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "validate", _do_validate,
                   "check config files, and the calendar file they name (or one given "
                   "itself); exit 1 on errors")
    sub.add_argument("files", nargs="+", type=Path, metavar="FILE")


def _do_validate(args: argparse.Namespace) -> int:
    from monitor.config import is_calendar_file
    from vocabulary import plural

    failed = False
    for path in args.files:
        if is_calendar_file(path):
            failed |= not _validate_calendar(path)
            continue
        loaded = _load(path)
        if loaded is None:
            failed = True
            continue
        checks = loaded.config.checks
        listed = ", ".join(f"{c.name} ({c.kind})" for c in checks[:LISTED])
        more = f" and {len(checks) - LISTED} more" if len(checks) > LISTED else ""
        print(f"{path}: ok, {plural(len(checks), 'check')}: {listed}{more}")
        for check in checks:  # what the agency's systems get: agree it with the agency
            if check.kind == "settlement":
                print(f"  {check.platform_load()}")
        if (calendar := loaded.config.calendar_file) is not None:
            failed |= not _validate_calendar(calendar)
    return 1 if failed else 0


def _validate_calendar(path: Path) -> bool:
    from monitor.config import ConfigError, load_site_dates

    try:
        site = load_site_dates(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return False
    print(f"{path}: ok, calendar dates known until {site.known_until}: "
          f"{len(site.holidays)} holidays, {len(site.workdays)} make-up working days")
    return True


# ------------------------------------------------------------------ maintenance

RECURRING = "/etc/insmon/maintenance.yaml"


def _maintenance(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "maintenance", _do_maintenance,
                   "announced outage windows (a platform cutover, the weekly maintenance): "
                   "their expected alerts do not page, everything else still does; "
                   "ACTION: declare (default), list, end ID, realise")
    sub.add_argument("action", nargs="?", default="declare",
                     choices=["declare", "list", "end", "realise"])
    sub.add_argument("silence", nargs="?", metavar="ID", help="for end: the silence's id")
    sub.add_argument("--alertmanager", default="http://127.0.0.1:9093",
                     help="Alertmanager URL (default: %(default)s)")
    sub.add_argument("--share", type=Path, default=Path("/opt/insmon/share"),
                     help="the bundle's examples and shipped rules, which the site's "
                          "configs are compared with (default: %(default)s)")
    sub.add_argument("--site", help="the site label of the hospital")
    sub.add_argument("--from", dest="start", metavar="TIME",
                     help="start, ISO 8601 (Asia/Shanghai if no offset); with --every HH:MM")
    sub.add_argument("--to", dest="end", metavar="TIME", help="end; with --every HH:MM")
    sub.add_argument("--comment", help="what is announced, e.g. the cutover notice number")
    sub.add_argument("--reason", default="",
                     help="why a window is longer than 14 days (refused without one)")
    sub.add_argument("--every", metavar="DAYS",
                     help="a recurring window, added to --file: every day, workday or "
                          "offday (Chinese working calendar) or weekday")
    sub.add_argument("--name", help="the recurring window's name (with --every)")
    sub.add_argument("--file", type=Path, default=Path(RECURRING),
                     help="the recurring windows (default: %(default)s)")
    sub.add_argument("--calendar", type=Path, metavar="FILE",
                     help="the site's own holiday dates (the calendar check's file)")
    sub.add_argument("--ahead", default="24h",
                     help="realise: silences made this far ahead (default: %(default)s)")
    sub.add_argument("--audit", type=Path, metavar="DIR", default=Path(AUDIT),
                     help="the audit trail windows are recorded in, through insmon's "
                          "service when it runs (default: %(default)s)")


def _do_maintenance(args: argparse.Namespace) -> int:
    from monitor.audit import AuditError
    from monitor.audit_socket import Recorder
    from monitor.config import ConfigError
    from ops import maintenance
    from probes.base import ProbeFailure

    trail = Recorder(args.audit)
    handler = {"declare": _declare, "list": _list_windows, "end": _end_window,
               "realise": _realise}[args.action]
    try:
        return handler(args, trail)
    except (maintenance.MaintenanceError, ConfigError, ProbeFailure, ValueError) as exc:
        print(f"insmon maintenance: {exc}", file=sys.stderr)
        return 1
    except (OSError, AuditError) as exc:
        print(f"insmon maintenance: the audit trail {args.audit} cannot be written "
              f"({exc}): the window is not on record", file=sys.stderr)
        return 1


def _declare(args: argparse.Namespace, trail) -> int:
    from datetime import datetime

    from ops import maintenance
    from vocabulary import SHANGHAI

    missing = [f"--{name}" for name, value in (("site", args.site), ("from", args.start),
                                              ("to", args.end), ("comment", args.comment))
               if not value]
    if args.every and not args.name:
        missing.append("--name")
    if missing:
        raise ValueError(f"{', '.join(missing)} wanted")
    if args.every:
        window = maintenance.declare_recurring(args.file, trail, {
            "name": args.name, "site": args.site, "every": args.every, "from": args.start,
            "to": args.end, "comment": args.comment})
        print(f"{args.file}: {window.name}, every {window.every} {window.start:%H:%M}-"
              f"{window.end:%H:%M}: made into silences ahead by `insmon run` (its "
              "maintenance section) or `insmon maintenance realise`")
        if window.every in ("workday", "offday"):
            warning = maintenance.provisional_warning(args.calendar, datetime.now(SHANGHAI))
            if warning:
                print(f"insmon maintenance: warning: {warning}", file=sys.stderr)
        return 0
    asked = {"site": args.site, "from": args.start, "to": args.end, "comment": args.comment,
             "reason": args.reason, "alertmanager": args.alertmanager}
    maintenance.declare_recorded(trail, asked, lambda silence, start, end: print(
        f"silence {silence}: site {args.site}, {start.isoformat()} to {end.isoformat()}; "
        f"held back: {maintenance.EXPECTED}", flush=True))
    return 0


def _list_windows(args: argparse.Namespace, trail) -> int:
    from ops import maintenance

    for line in maintenance.window_lines(args.file, args.alertmanager, trail):
        print(line)
    return 0


def _end_window(args: argparse.Namespace, trail) -> int:
    from ops import maintenance

    if not args.silence:
        raise ValueError("end: which silence? (insmon maintenance list shows them)")
    ended = maintenance.end_recorded(args.alertmanager, trail, args.silence)
    print(f"silence {args.silence} ended: {ended.get('comment')}")
    return 0


def _realise(args: argparse.Namespace, trail) -> int:
    from datetime import datetime

    from ops import maintenance
    from vocabulary import SHANGHAI, parse_duration

    made = maintenance.realise_windows(args.file, args.alertmanager, trail,
                                       parse_duration(args.ahead), args.calendar,
                                       datetime.now(SHANGHAI))
    print(f"{len(made)} silence(s) made")
    return 0


# ------------------------------------------------------------------ drill

def _drill(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "drill", _do_drill,
                   "rehearse a fault through the real alert path in a lab on this machine, "
                   "paging nobody; needs root")
    sub.add_argument("scenario", nargs="?", metavar="SCENARIO",
                     help="the scenario to drill (--list shows them)")
    sub.add_argument("--list", action="store_true", help="list the scenarios and exit")
    sub.add_argument("--out", type=Path, metavar="DIR",
                     help="where the report goes (default: ./drill-SCENARIO-TIME)")
    sub.add_argument("--pager", metavar="URL",
                     help="also send the drill's pages to this insmon pager, which pages its "
                          "drill rota (【演练】); the report says who acknowledged when")
    sub.add_argument("--audit", type=Path, metavar="DIR",
                     help=f"the audit trail the drill and its verdict are recorded in "
                          f"(default: {AUDIT} where it exists: the monthly report lists them)")


def _do_drill(args: argparse.Namespace) -> int:
    import subprocess
    from datetime import datetime

    from ops import drill
    from vocabulary import SHANGHAI

    if args.list:
        for scenario in drill.SCENARIOS.values():
            print(f"{scenario.name:16} {scenario.title} ({scenario.title_zh})")
        return 0
    scenario = drill.SCENARIOS.get(args.scenario or "")
    if scenario is None:
        print(f"insmon drill: name a scenario, one of: {', '.join(drill.SCENARIOS)}",
              file=sys.stderr)
        return 2
    started = datetime.now(SHANGHAI).strftime("%Y%m%d-%H%M%S")
    out = args.out or Path(f"drill-{scenario.name}-{started}")
    print(f"drill {scenario.name}: {scenario.title} ({scenario.title_zh})", flush=True)
    try:
        report = drill.run(scenario, out, log=lambda line: print(f"  {line}", flush=True),
                           pager=args.pager)
    except KeyboardInterrupt:
        print("drill interrupted: every fault was undone and the lab removed",
              file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError, OSError, subprocess.CalledProcessError) as exc:
        print(f"insmon drill: {exc}", file=sys.stderr)
        return 2
    print()
    print(report.markdown())
    print(f"report: {out / 'report.md'}, {out / 'report.json'}")
    trail = args.audit or (Path(AUDIT) if Path(AUDIT).is_dir() else None)
    if trail is not None:
        from monitor.audit import AuditError, who
        from monitor.audit_socket import Recorder

        try:
            Recorder(trail).append("drill", who(), "passed" if report.passed else "failed",
                                   {"scenario": scenario.name, "title": scenario.title_zh,
                                    "report": str(out.resolve())})
        except (OSError, AuditError) as exc:
            print(f"insmon drill: not recorded in the audit trail {trail}: {exc}",
                  file=sys.stderr)
    return 0 if report.passed else 1


# ------------------------------------------------------------------ audit

AUDIT = "/var/lib/insmon/audit"
PAGER_AUDIT = "/var/lib/insmon-pager/audit"


def _audit(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "audit", _do_audit,
                   "the audit trail: list, export (--csv) or check (--verify) its records")
    sub.add_argument("trails", nargs="*", type=Path, metavar="DIR",
                     help=f"trail folders (default: {AUDIT} and {PAGER_AUDIT})")
    sub.add_argument("--from", dest="start", metavar="TIME", help="from (Beijing time)")
    sub.add_argument("--to", dest="end", metavar="TIME", help="until (Beijing time)")
    sub.add_argument("--verify", action="store_true",
                     help="check every chain and compare it with the witness (Prometheus); "
                          "exit 1 on a fault, 2 when no witness could be compared")
    sub.add_argument("--prometheus", default="http://127.0.0.1:9090", metavar="URL",
                     help="the witness: Prometheus (or VictoriaMetrics) that keeps the "
                          "trails' heads (default: %(default)s)")
    sub.add_argument("--csv", type=Path, metavar="FILE", help="write the records as CSV")
    sub.add_argument("--key-file", type=Path, metavar="FILE",
                     help="the trail's key (default: the .key file beside each folder, or "
                          "the pager config's)")


def _do_audit(args: argparse.Namespace) -> int:
    from monitor.audit import AuditError, Trail
    from vocabulary import parse_time

    try:
        start = parse_time(args.start) if args.start else None
        end = parse_time(args.end) if args.end else None
    except ValueError as exc:
        print(f"insmon audit: {exc}", file=sys.stderr)
        return 2
    if args.trails:
        folders = [(folder, args.key_file) for folder in args.trails]
    else:  # insmon's, and the pager's with the key its config names
        folders = [(p, k) for p, k in ((Path(AUDIT), None),
                                       (Path(PAGER_AUDIT), _pager_audit_key_file()))
                   if p.is_dir()]
    if not folders:
        print(f"insmon audit: no trail here ({AUDIT}, {PAGER_AUDIT})", file=sys.stderr)
        return 2
    worst = 0
    first = folders[0][0]
    for folder, key_file in folders:
        if not folder.is_dir():
            print(f"{folder}: no such trail", file=sys.stderr)
            worst = 1
            continue
        try:
            trail = Trail.open(folder, key_file)
        except (OSError, AuditError) as exc:
            print(f"{folder}: its key cannot be read ({exc}): checked without it",
                  file=sys.stderr)
            trail = Trail(folder)
        if args.verify:
            worst = max(worst, _verify(trail, args.prometheus), key=lambda v: (v == 1, v))
        elif args.csv:
            with args.csv.open("a" if folder != first else "w", newline="",
                               encoding="utf-8-sig") as out:
                count = trail.export_csv(out, start, end)
            print(f"{folder}: {count} record(s) to {args.csv}")
        else:
            for r in trail.records(start, end):
                print(f"{r['at']}  {r['who']:<16} {r['event']:<24} {r['outcome']:<9} "
                      f"{r['detail'] if isinstance(r['detail'], str) else _short(r['detail'])}")
    return worst


def _verify(trail, prometheus: str) -> int:
    """One trail's chain and witness, printed; 0 intact, 1 a fault, 2 no witness."""
    from ops.history import audit_witness

    found = trail.verify(witness=lambda trail_id: audit_witness(prometheus, trail_id))
    for fault in found.faults:
        print(f"{trail.folder}/{fault}" if fault.where else f"{trail.folder}: {fault}")
    if found.more:
        print(f"{trail.folder}: and {found.more} more fault(s)")
    for line in found.summary():
        print(f"{trail.folder}: {line}")
    return 1 if found.faults else 0 if found.intact else 2


def _pager_audit_key_file() -> Path | None:
    """The key of the pager's trail, as its config (/etc/insmon/pager.yaml) says."""
    from pager.config import ConfigError, load

    try:
        return load("/etc/insmon/pager.yaml").audit.key_file
    except (OSError, ValueError, ConfigError):  # no pager here, or its config broken
        return None


def _short(detail) -> str:
    import json

    return "" if detail is None else json.dumps(detail, ensure_ascii=False)[:160]


# ------------------------------------------------------------------ doctor

def _doctor(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "doctor", _do_doctor,
                   "after an install: is everything installed, running and wired? "
                   "exit 1 when something is not, 2 when something cannot be told")
    sub.add_argument("--etc", type=Path, default=Path("/etc/insmon"),
                     help="the site's configs (default: %(default)s)")
    sub.add_argument("--prometheus", default="http://127.0.0.1:9090",
                     help="Prometheus URL (default: %(default)s)")
    sub.add_argument("--alertmanager", default="http://127.0.0.1:9093",
                     help="Alertmanager URL (default: %(default)s)")
    sub.add_argument("--share", type=Path, default=Path("/opt/insmon/share"),
                     help="the bundle's examples and shipped rules, which the site's "
                          "configs are compared with (default: %(default)s)")


def _do_doctor(args: argparse.Namespace) -> int:
    from monitor.doctor import examine
    from pager.config import load
    from pager.pair import hello

    lines = examine(args.etc, args.prometheus, args.alertmanager, load, args.share, hello)
    for line in lines:
        print(line)
    failed = sum(line.status == "FAIL" for line in lines)
    unknown = sum(line.status == "?" for line in lines)
    if failed:
        print(f"{failed} to mend" + (f", {unknown} not known here" if unknown else ""))
        return 1
    print(f"nothing to mend, but {unknown} not known here (?)" if unknown else
          "all is well")
    return 2 if unknown else 0


# ------------------------------------------------------------------ pager

def _pager(commands: argparse._SubParsersAction) -> None:
    sub = commands.add_parser("pager", add_help=False,  # its -h is the pager's own
                              help="the on-call pager: run, validate, who, ack (-h for more)")
    sub.set_defaults(handler=_do_pager)
    sub.add_argument("args", nargs=argparse.REMAINDER)


def _do_pager(args: argparse.Namespace) -> int:
    from pager.cli import main as pager_main

    return pager_main(args.args)


# ------------------------------------------------------------------ review

def _report(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "report", _do_report,
                   "the monthly settlement availability report (月度医保结算可用性报告): HTML, "
                   "XLSX and PDF, per site and over all sites")
    sub.add_argument("--month", required=True, help="the month, e.g. 2026-11 (Beijing time)")
    sub.add_argument("--prometheus", default="http://127.0.0.1:9090",
                     help="Prometheus or VictoriaMetrics URL (default: %(default)s)")
    sub.add_argument("--site", help="one site (default: every site in the history)")
    sub.add_argument("--pager", metavar="URL",
                     help="insmon pager's URL: its incidents, MTTA and MTTR (the token: "
                          "INSMON_PAGER_TOKEN_FILE)")
    sub.add_argument("--audit", type=Path, action="append", metavar="DIR",
                     help=f"audit trails with the maintenance windows and drills (default: "
                          f"{AUDIT} and {PAGER_AUDIT})")
    sub.add_argument("--objective", type=float, default=99.9,
                     help="the availability objective in percent (default: %(default)s)")
    sub.add_argument("--out", type=Path, required=True, metavar="DIR")


def _do_report(args: argparse.Namespace) -> int:
    from monitor.audit import AuditError, Trail
    from ops import report

    if not 0 < args.objective < 100:
        print("insmon report: --objective is a percentage below 100", file=sys.stderr)
        return 2
    folders = args.audit or [p for p in (Path(AUDIT), Path(PAGER_AUDIT)) if p.is_dir()]
    trails = []
    for folder in folders:  # with their keys: a record that does not verify is not used
        try:
            trails.append(Trail.open(folder, _pager_audit_key_file()
                                     if folder == Path(PAGER_AUDIT) else None))
        except (OSError, AuditError) as exc:
            print(f"insmon report: {folder}: its key cannot be read ({exc}): none of its "
                  "records verifies, no maintenance of it is left out (run as root)",
                  file=sys.stderr)
            trails.append(Trail(folder))
    try:
        figures = report.collect(args.prometheus, args.month, args.site, args.pager,
                                 trails, args.objective / 100)
        written = report.write(figures, args.out)
    except report.ReportError as exc:
        print(f"insmon report: {exc}", file=sys.stderr)
        return 1
    for f in figures:
        print(f"{f.site} {f.month}: {report.percent(f.availability)} available, "
              f"{f.minutes['lost']} min lost, {f.minutes['backup']} min on the backup, "
              f"{f.minutes['maintenance']} min announced maintenance")
    for path in written:
        print(path)
    return 0


def _review(commands: argparse._SubParsersAction) -> None:
    sub = _command(commands, "review", _do_review,
                   "write a post-incident report (timeline, charts) from Prometheus")
    sub.add_argument("--prometheus", default="http://127.0.0.1:9090",
                     help="Prometheus URL (default: %(default)s)")
    sub.add_argument("--from", dest="start", required=True, metavar="TIME",
                     help="start, ISO 8601 (Asia/Shanghai if no offset)")
    sub.add_argument("--to", dest="end", required=True, metavar="TIME", help="end")
    sub.add_argument("--site", help="the site label (needed when Prometheus has several)")
    sub.add_argument("--out", type=Path, required=True, metavar="DIR",
                     help="where review.md, review.html, the charts and report.md (the "
                          "事件报告 draft) go")
    sub.add_argument("--pager", metavar="URL",
                     help="insmon pager's URL: add who was told, when, and who acknowledged")


def _do_review(args: argparse.Namespace) -> int:
    from ops import review
    from vocabulary import parse_time

    try:
        start, end = parse_time(args.start), parse_time(args.end)
        written = review.write(args.prometheus, start, end, args.site, args.out, args.pager)
    except (ValueError, review.HistoryError) as exc:
        print(f"insmon review: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # --out not writable
        print(f"insmon review: cannot write the report to {args.out}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    print("\n".join(str(path) for path in written))
    return 0


# ------------------------------------------------------------------ settlement try

def _settlement(commands: argparse._SubParsersAction) -> None:
    sub = commands.add_parser("settlement", help="the settlement check's own commands")
    actions = sub.add_subparsers(dest="action", required=True, metavar="ACTION")
    try_ = actions.add_parser(
        "try", help="one run of a settlement check through each link, printing every "
        "request and answer with the secrets starred (with the agency's engineer, before "
        "the check is enabled); exit 1 if a link fails")
    try_.set_defaults(handler=_do_settlement_try)
    _config_option(try_)
    try_.add_argument("--check", help="the settlement check's name (default: the only one)")


def _do_settlement_try(args: argparse.Namespace) -> int:
    from probes import settlement
    from probes.lib.secret import SecretError

    loaded = _load(args.config)
    if loaded is None:
        return 1
    found = [c for c in loaded.config.checks if c.kind == "settlement"
             and args.check in (None, c.name)]
    if len(found) != 1:
        names = [c.name for c in loaded.config.checks if c.kind == "settlement"]
        print(f"{loaded.source}: " + (f"no settlement check {args.check!r}" if args.check
              else "no settlement check" if not names else "several settlement checks")
              + (f"; give --check, one of: {', '.join(names)}" if names else ""),
              file=sys.stderr)
        return 1
    try:
        return 1 if settlement.try_links(found[0], print) else 0
    except SecretError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
