"""Shared helpers: real subprocesses, real sockets, bounded waits."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from prometheus_client import generate_latest

from exporters.prometheus import make_registry
from monitor.probe import CheckBase
from monitor.runner import build_checks, run_check
from monitor.store import ResultStore

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
INSMON = str(Path(sys.executable).parent / "insmon")  # the installed console script

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
    pytest.fail(f"timed out after {seconds}s waiting for {what} (last error: {last_error})")


async def render(config: CheckBase, prefix: str) -> tuple[str, str]:
    """Run one check once through the real runner; return "# status: detail" and the
    exposition lines of its series that start with `prefix`."""
    store = ResultStore()
    checks = build_checks([config])
    store.configure(checks, "test")
    record = await run_check(checks[0], store)
    assert record is not None
    text = generate_latest(make_registry(store)).decode()
    series = "".join(line + "\n" for line in text.splitlines() if line.startswith(prefix))
    return f"# {record.status}: {record.detail}\n", series


def assert_expected(case: Path, rendered: str) -> None:
    """Compare with the case's expected.prom. INSMON_WRITE_EXPECTED=1 writes it instead,
    to add a case: then read the file by hand before committing it."""
    expected = case / "expected.prom"
    if os.environ.get("INSMON_WRITE_EXPECTED"):
        expected.write_text(rendered)
    assert rendered == expected.read_text()
