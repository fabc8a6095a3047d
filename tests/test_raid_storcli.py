"""MegaRAID/PERC through storcli JSON: a real subprocess per call, real-format output."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from probes import raid
from tests.conftest import FIXTURES, assert_expected, render, wait_for

CASES = sorted(p for p in (FIXTURES / "raid" / "storcli").iterdir() if p.is_dir())


def storcli_check(command: str | Path, timeout: float = 5) -> raid.Config:
    return raid.Config(name="ctl", kind="raid", interval=10, timeout=timeout,
                       source={"type": "storcli", "command": str(command)})


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
async def test_storcli_case_matches_its_expected_exposition(case: Path) -> None:
    status, series = await render(storcli_check(case / "storcli64"), "insmon_raid_")
    assert_expected(case, status + series)


async def test_missing_tool_is_a_failed_probe() -> None:
    status, series = await render(storcli_check("/opt/MegaRAID/storcli/storcli64"),
                                  "insmon_raid_")
    assert status == ("# failed: cannot run /opt/MegaRAID/storcli/storcli64: "
                      "No such file or directory\n")
    assert series == ""


def fake_storcli(tmp_path: Path, command: str) -> tuple[Path, str]:
    """A storcli64 that runs `command` under a name of its own: (its path, that name, for
    pgrep to find the process afterwards)."""
    marker = f"insmon-test-storcli-{tmp_path.name}"
    tool = tmp_path / "storcli64"
    tool.write_text(f"#!/bin/bash\nexec -a {marker} {command}\n")
    tool.chmod(0o755)
    return tool, marker


def running(marker: str) -> str:
    return subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout


async def test_a_hung_tool_times_out_and_is_killed(tmp_path: Path) -> None:
    tool, marker = fake_storcli(tmp_path, "sleep 30")
    status, _ = await render(storcli_check(tool, timeout=0.5), "insmon_raid_")
    assert status == "# timeout: no result within the timeout of 500ms\n"
    # killed (SIGKILL sent as the run is abandoned: gone a moment later on a busy host,
    # and not after its 30 s)
    wait_for(lambda: running(marker) == "", 10, "the hung storcli to be gone")


async def test_a_tool_that_writes_without_end_is_cut_and_killed(tmp_path: Path) -> None:
    """A broken storcli that never stops writing: refused at the output bound, well
    before the run's deadline, and killed; insmon does not read it all into memory."""
    tool, marker = fake_storcli(tmp_path, "yes '{\"Controllers\": []}'")
    status, series = await render(storcli_check(tool, timeout=9), "insmon_raid_")
    assert status == "# failed: `storcli64 /call/vall show J` wrote more than 16 MiB: refused\n"
    assert series == ""
    assert running(marker) == "", "the endless storcli was left running"
