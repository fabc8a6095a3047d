"""Shared helpers: real subprocesses, real sockets, bounded waits."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporters.prometheus import exposition
from monitor.runner import build_checks, run_check
from monitor.store import ResultStore
from ops.lab import Lab
from ops.stack import free_port, wait_for  # noqa: F401 (the tests' helpers)
from probes.base import CheckBase

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
INSMON = str(Path(sys.executable).parent / "insmon")  # the installed console script


# Every series name a probe emitted in this session's in-process runs (the store sees
# them all), for the check that every declared series comes out of some test.
EMITTED: set[str] = set()


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `after_all` run last. Tests marked `root` build namespaces, links and
    mounts: without root they are skipped with that reason (CI runs as root, so there
    they always run)."""
    items.sort(key=lambda item: "after_all" in item.keywords)
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: builds namespaces, links or mounts")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


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


@pytest.fixture(scope="session")
def reference_drill(tmp_path_factory: pytest.TempPathFactory):
    """The reference incident drilled once for the session, with the test's own receivers
    and an insmon pager for the drill rota: (report, its output folder with the Prometheus
    data, the receivers, the pager)."""
    from ops import drill
    from ops.recorder import Recorder
    from tests.pager_rig import drill_pager

    recorder = Recorder()
    out = tmp_path_factory.mktemp("drill-reference")
    try:
        with drill_pager(tmp_path_factory.mktemp("drill-pager")) as (pager, _):
            report = drill.run(drill.SCENARIOS["reference"], out, log=lambda line: None,
                               recorder=recorder, pager=pager.url)
            yield report, out, recorder, pager
    finally:
        recorder.close()
