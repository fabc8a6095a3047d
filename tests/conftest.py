"""Shared helpers: real subprocesses, real sockets, bounded waits."""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporters.prometheus import exposition
from monitor.runner import build_checks, run_check
from monitor.store import ResultStore
from ops.lab import LOCKS, Lab
from ops.stack import free_port, wait_for  # noqa: F401 (the tests' helpers)
from probes.base import CheckBase

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
INSMON = str(Path(sys.executable).parent / "insmon")  # the installed console script


# Every series name a probe emitted in this session's in-process runs (the store sees
# them all), for the check that every declared series comes out of some test. With
# pytest-xdist each worker hands its names to the controller, which checks the union.
EMITTED: set[str] = set()
FROM_WORKERS: set[str] = set()


@pytest.fixture(scope="session", autouse=True)
def _note_emitted() -> Iterator[None]:
    record = ResultStore.record

    def noting(self: ResultStore, check, run, samples=()) -> None:
        samples = tuple(samples)
        EMITTED.update(sample.metric for sample in samples)
        record(self, check, run, samples)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ResultStore, "record", noting)
        yield


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    FROM_WORKERS.update(getattr(node, "workeroutput", {}).get("emitted", ()))


@pytest.hookimpl(tryfirst=True)  # a worker's output is sent in xdist's own sessionfinish
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After the whole suite: every series a kind declares came out of a real run in
    some test (the health series come from the exporter and are checked on a live
    scrape). A series never emitted fails the run."""
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller checks
        session.config.workeroutput["emitted"] = sorted(EMITTED)
        return
    whole = _WHOLE_SUITE if _WHOLE_SUITE is not None else _every_file(
        {Path(str(item.path)).name for item in session.items})
    if not whole or exitstatus != 0:
        return
    from probes import PROBES

    never = {m.name for kind in PROBES.values() for m in kind.metrics} - EMITTED - FROM_WORKERS
    if never:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        reporter.write_line(f"FAILED: declared but never emitted by any test: {sorted(never)}",
                            red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_WHOLE_SUITE: bool | None = None  # with xdist: every test file collected by the workers


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: object, ids: list[str]) -> None:
    global _WHOLE_SUITE
    _WHOLE_SUITE = _every_file({i.split("::", 1)[0].rsplit("/", 1)[-1] for i in ids})


def _every_file(names: set[str]) -> bool:
    return names == {p.name for p in Path(__file__).parent.glob("test_*.py")}


# The tests that read or change net.ipv4.ping_group_range, a setting of the whole host,
# take turns (make test runs six tests at a time).
PING_GROUP_RANGE = pytest.mark.xdist_group("ping_group_range")

# The long tests first, so that with pytest-xdist (make test: six at a time) they start
# at once and the short ones fill in around them: the modules by their longest test (the
# booted install about four minutes, the pair's simulation and the regional cut about
# two), those that wait on timers beside those that keep a core busy.
LONG_FIRST = ("test_bundle.py", "test_regional.py", "test_pager_pair.py", "test_drill.py",
              "test_pager_simulation.py", "test_review.py", "test_report.py",
              "test_alert_rules.py", "test_pager_pair_processes.py", "test_end_to_end.py",
              "test_audit.py", "test_alertmanager.py", "test_pager.py")


def pytest_itemcollected(item: pytest.Item) -> None:
    """Tests that share a fixture wider than a test (the reference drill, a module's lab
    or wheel) run on one xdist worker, so it is made once (marked as collected: pytest-
    xdist reads the marks in its own pytest_collection_modifyitems)."""
    if group := _shared_fixture_group(item):
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long tests first. Tests marked `root` build namespaces, links and mounts: without
    root they are skipped with that reason (CI runs as root, so there they always run)."""
    def rank(item: pytest.Item) -> int:
        name = Path(str(item.path)).name
        return LONG_FIRST.index(name) if name in LONG_FIRST else len(LONG_FIRST)

    items.sort(key=rank)
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: builds namespaces, links or mounts")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


def _shared_fixture_group(item: pytest.Item) -> str | None:
    """The widest fixture of the suite's own (not a plugin's) the test shares with
    others: a session one by name, a module one by its module."""
    scopes = {}
    for name, defs in item._fixtureinfo.name2fixturedefs.items():
        if (defs and defs[-1].scope in ("session", "module") and defs[-1].baseid
                and not name.startswith("_")):
            scopes[name] = defs[-1].scope
    for name, scope in scopes.items():
        if scope == "session":
            return name
    return Path(str(item.path)).name if scopes else None


@contextmanager
def host_cpu(exclusive: bool) -> Iterator[None]:
    """This host's CPU, for the tests that depend on it: the CPU-saturation drill, which
    burns every CPU and watches this host's /proc, holds it alone (exclusive); the
    end-to-end tests, whose cut-to-page figures must never be taken beside its burners,
    share it. Every other test's cpu check reads a simulated CPU (ops/lab/cpu.py), so a
    busy host changes nothing for it."""
    LOCKS.mkdir(parents=True, exist_ok=True)
    with open(LOCKS / "host-cpu.lock", "w") as lock:
        wait_for(lambda: _locked(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH), 420,
                 "the host's CPU (the CPU-saturation drill, or the drills beside it)")
        yield


def _locked(lock: object, how: int) -> bool:
    try:
        fcntl.flock(lock, how | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@pytest.fixture
def lab() -> Iterator[Lab]:
    """The namespace lab with its front-end listening on 8080 (root only)."""
    lab = Lab()
    try:
        lab.start_front_end(8080)
        yield lab
    finally:
        lab.close()


def value(series: str, name_and_labels: str) -> float:
    """The value of `name{labels}` in exposition lines (labels in Prometheus' order)."""
    for line in series.splitlines():
        if line.startswith(name_and_labels + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name_and_labels} not in:\n{series}")


async def render(config: CheckBase, prefix: str) -> tuple[str, str]:
    """Run one check once through the real runner; return "# status: detail" and the
    exposition lines of its series that start with `prefix`."""
    store = ResultStore()
    checks = build_checks([config])
    store.configure(checks, "test")
    record = await run_check(checks[0], store)
    assert record is not None
    text = exposition(store.snapshot()).decode()
    series = "".join(line + "\n" for line in text.splitlines() if line.startswith(prefix))
    return f"# {record.status}: {record.detail}\n", series


def calendar_file(path: Path, known_until: date, holidays: Iterable[date] = (),
                  workdays: Iterable[date] = ()) -> Path:
    """A site's calendar file known until `known_until`, as a site fills it: with the
    law's days off past the package's data (insmon refuses a file without them), and
    the test's own holidays and make-up working days."""
    from probes.calendar import package_dates, statutory_holidays

    _, _, end = package_dates()
    law = {day for year in range(end.year, known_until.year + 1)
           for day in statutory_holidays(year) if end < day <= known_until}
    path.write_text(f"holidays: [{', '.join(map(str, sorted({*law, *holidays})))}]\n"
                    f"workdays: [{', '.join(map(str, workdays))}]\n"
                    f"known_until: {known_until}\n")
    return path


def sample_value(store: ResultStore, name: str, labels: dict[str, str]) -> float | None:
    """The value of one series in the store's exposition, parsed as Prometheus would."""
    text = exposition(store.snapshot()).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def assert_expected(case: Path, rendered: str) -> None:
    """Compare with the case's expected.prom. INSMON_WRITE_EXPECTED=1 writes it instead,
    to add a case: then read the file by hand before committing it."""
    expected = case / "expected.prom"
    if os.environ.get("INSMON_WRITE_EXPECTED"):
        expected.write_text(rendered)
    assert rendered == expected.read_text()


# The drills and the end-to-end chain run on a test copy of the rules, made from
# alert_rules/ at test time (ops.stack.hastened_rules, hastened_average): every `for:`,
# `keep_firing_for:` and the CPU's 2-minute average this many times shorter. They prove
# the real fault reaches the right grade, teams and person and resolves; the shipped
# durations are promtool's to prove (tests/test_alert_rules.py), and `insmon drill`
# runs them as shipped. Three, not more: the shortest holds still span more than one run
# of the check they read (the chain's `for: 10s` 3.3 s over 2 s vpn runs, ProbeBlind's
# and StorageIOFailing's 20 s 6.7 s over 5 s storage runs), so one slow run on a busy
# host pages nothing, as with the shipped rules.
HASTEN = 3


@pytest.fixture(scope="session")
def reference_drill(tmp_path_factory: pytest.TempPathFactory):
    """The reference incident drilled once for the session on hastened rules (HASTEN),
    with the test's own receivers and an insmon pager for the drill rota: (report, its
    output folder with the Prometheus data, the receivers, the pager)."""
    from ops import drill
    from ops.recorder import Recorder
    from tests.pager_rig import drill_pager

    recorder = Recorder()
    out = tmp_path_factory.mktemp("drill-reference")
    try:
        with drill_pager(tmp_path_factory.mktemp("drill-pager")) as (pager, _):
            report = drill.run(drill.SCENARIOS["reference"], out, log=lambda line: None,
                               recorder=recorder, pager=pager.url, hasten=HASTEN)
            yield report, out, recorder, pager
    finally:
        recorder.close()
