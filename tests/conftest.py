"""Shared helpers: real subprocesses, real sockets, bounded waits."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporters.prometheus import exposition
from monitor.runner import build_checks, run_check
from monitor.store import ResultStore
from ops.stack import free_port, wait_for  # noqa: F401 (the tests' helpers)
from probes.base import CheckBase

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
INSMON = str(Path(sys.executable).parent / "insmon")  # the installed console script


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
    """The reference incident drilled once for the session, with the test's own receivers:
    (report, its output folder with the Prometheus data, the receivers)."""
    from ops import drill
    from ops.recorder import Recorder

    recorder = Recorder()
    out = tmp_path_factory.mktemp("drill-reference")
    try:
        report = drill.run(drill.SCENARIOS["reference"], out, log=lambda line: None,
                           recorder=recorder)
        yield report, out, recorder
    finally:
        recorder.close()
