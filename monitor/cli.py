"""The `insmon` command: run, once, validate, maintenance, drill, review."""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from exporters import status
from monitor import SHANGHAI, __version__
from monitor.config import ConfigError, Loaded, load, split_listen
from monitor.probe import plural
from monitor.runner import build_checks, run_all
from monitor.store import ResultStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="insmon",
        description="Health monitor for a hospital's medical-insurance settlement chain.")
    parser.add_argument("--version", action="version", version=f"insmon {__version__}")
    parser.add_argument("--log-level", default=None,
                        choices=["debug", "info", "warning", "error"],
                        help="default: info for run, error for once, warning otherwise")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="monitor until stopped, serving /metrics")
    run.add_argument("-c", "--config", type=Path,
                     help="config file (default: the embedded config for this host)")
    run.add_argument("--listen", help="host:port to serve on, overriding the config")
    run.add_argument("--web-config", type=Path, metavar="FILE",
                     help="TLS and basic auth for the endpoint (exporter-toolkit format)")

    once = commands.add_parser(
        "once", help="run every check once and print a table; exit 1 if any is not ok")
    once.add_argument("-c", "--config", type=Path,
                      help="config file (default: the embedded config for this host)")

    validate = commands.add_parser("validate", help="check config files; exit 1 on errors")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")

    maintenance = commands.add_parser(
        "maintenance", help="declare an announced outage window (a platform cutover): "
                            "its expected alerts do not page, everything else still does")
    maintenance.add_argument("--alertmanager", default="http://127.0.0.1:9093",
                             help="Alertmanager URL (default: %(default)s)")
    maintenance.add_argument("--site", required=True, help="the site label of the hospital")
    maintenance.add_argument("--from", dest="start", required=True, metavar="TIME",
                             help="start, ISO 8601 (Asia/Shanghai if no offset)")
    maintenance.add_argument("--to", dest="end", required=True, metavar="TIME", help="end")
    maintenance.add_argument("--comment", required=True,
                             help="what is announced, e.g. the cutover notice number")

    drill = commands.add_parser(
        "drill", help="rehearse a fault through the real alert path in a lab on this "
                      "machine, paging nobody; needs root")
    drill.add_argument("scenario", choices=_scenarios(), metavar="SCENARIO",
                       help="one of: " + ", ".join(_scenarios()))
    drill.add_argument("--out", type=Path, metavar="DIR",
                       help="where the report goes (default: ./drill-SCENARIO-TIME)")

    review = commands.add_parser(
        "review", help="write a post-incident report (timeline, charts) from Prometheus")
    review.add_argument("--prometheus", default="http://127.0.0.1:9090",
                        help="Prometheus URL (default: %(default)s)")
    review.add_argument("--from", dest="start", required=True, metavar="TIME",
                        help="start, ISO 8601 (Asia/Shanghai if no offset)")
    review.add_argument("--to", dest="end", required=True, metavar="TIME", help="end")
    review.add_argument("--site", help="the site label (needed when Prometheus has several)")
    review.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="where review.md, review.html and the charts go")

    args = parser.parse_args(argv)
    default_level = {"run": "info", "once": "error"}.get(args.command, "warning")
    logging.basicConfig(level=(args.log_level or default_level).upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # it logs every run at INFO

    if args.command == "validate":
        return _validate(args.files)
    if args.command == "maintenance":
        return _maintenance(args)
    if args.command == "drill":
        return _drill(args)
    if args.command == "review":
        return _review(args)
    try:
        loaded = load(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.command == "once":
        return asyncio.run(_once(loaded))
    from monitor.service import Service  # the scheduler is only needed here

    if args.listen:
        try:
            split_listen(args.listen)
        except ValueError as exc:
            parser.error(f"--listen: {exc}")
    web = None
    if args.web_config:
        from exporters import webconfig

        try:
            web = webconfig.load(args.web_config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 1
    return asyncio.run(Service(loaded, args.config, args.listen, web).run())


def _validate(files: list[Path]) -> int:
    failed = False
    for path in files:
        try:
            loaded = load(path)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            failed = True
            continue
        checks = loaded.config.checks
        print(f"{path}: ok, {plural(len(checks), 'check')}: "
              + ", ".join(f"{c.name} ({c.kind})" for c in checks))
    return 1 if failed else 0


def _maintenance(args: argparse.Namespace) -> int:
    from monitor import maintenance

    try:
        start, end = maintenance.parse_time(args.start), maintenance.parse_time(args.end)
        silence = maintenance.declare(args.alertmanager, args.site, start, end, args.comment)
    except (maintenance.MaintenanceError, ValueError) as exc:
        print(f"insmon maintenance: {exc}", file=sys.stderr)
        return 1
    print(f"silence {silence}: site {args.site}, {start.isoformat()} to {end.isoformat()}; "
          f"held back: {maintenance.EXPECTED}")
    return 0


def _scenarios() -> list[str]:
    from monitor.drill import SCENARIOS

    return list(SCENARIOS)


def _drill(args: argparse.Namespace) -> int:
    from monitor import drill

    scenario = drill.SCENARIOS[args.scenario]
    started = datetime.now(SHANGHAI).strftime("%Y%m%d-%H%M%S")
    out = args.out or Path(f"drill-{scenario.name}-{started}")
    print(f"drill {scenario.name}: {scenario.title} ({scenario.title_zh})", flush=True)
    try:
        report = drill.run(scenario, out, log=lambda line: print(f"  {line}", flush=True))
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
    return 0 if report.passed else 1


def _review(args: argparse.Namespace) -> int:
    from monitor import parse_time, review

    try:
        start, end = parse_time(args.start), parse_time(args.end)
        written = review.write(args.prometheus, start, end, args.site, args.out)
    except (ValueError, review.HistoryError) as exc:
        print(f"insmon review: {exc}", file=sys.stderr)
        return 1
    print("\n".join(str(path) for path in written))
    return 0


async def _once(loaded: Loaded) -> int:
    store = ResultStore()
    checks = build_checks(loaded.config.checks)
    store.configure(checks, loaded.source)
    await run_all(checks, store)
    snap = store.snapshot()
    sys.stdout.write(status.table(snap))
    return 0 if all(v.last and v.last.status == "ok" for v in snap.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
