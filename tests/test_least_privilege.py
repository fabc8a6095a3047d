"""insmon as an unprivileged user with CAP_NET_RAW only: it pings a namespace host."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.lab import Lab
from tests.conftest import INSMON, PING_GROUP_RANGE, ROOT

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def lab() -> Iterator[Lab]:
    lab = Lab()
    yield lab
    lab.close()


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder the unprivileged user can read (pytest's own is root's alone)."""
    with tempfile.TemporaryDirectory(prefix="insmon-nobody-") as folder:
        Path(folder).chmod(0o755)
        yield Path(folder)


def readable_config(folder: Path, text: str) -> Path:
    config = folder / "site.yaml"
    config.write_text(text)
    config.chmod(0o644)
    return config


def test_nobody_with_cap_net_raw_pings_the_agency(lab: Lab, shared: Path) -> None:
    config = readable_config(shared, "checks:\n- {name: line, kind: icmp, "
                                       "targets: [198.18.1.2, 198.18.2.2], count: 2}\n")
    result = subprocess.run(
        [*NOBODY, "--inh-caps=+net_raw", "--ambient-caps=+net_raw",
         "--bounding-set=-all,+net_raw", INSMON, "once", "-c", str(config)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " ok " in result.stdout and "loss 0.0%" in result.stdout
    whoami = subprocess.run([*NOBODY, "--inh-caps=+net_raw", "--ambient-caps=+net_raw",
                             "--bounding-set=-all,+net_raw", sys.executable, "-c",
                             "import os; print(os.geteuid())"],
                            capture_output=True, text=True, timeout=30)
    assert whoami.stdout.strip() == "65534"


@PING_GROUP_RANGE  # it needs the host's ping_group_range to exclude nobody, as it is
def test_nobody_without_it_gets_a_failed_check_that_says_why(lab: Lab,
                                                             shared: Path) -> None:
    config = readable_config(shared, "checks:\n- {name: line, kind: icmp, "
                                       "targets: [198.18.1.2]}\n")
    result = subprocess.run([*NOBODY, "--inh-caps=-all", "--bounding-set=-all", INSMON,
                             "once", "-c", str(config)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 1
    assert "ICMP is not allowed for this process: it needs CAP_NET_RAW" in result.stdout
