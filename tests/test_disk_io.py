"""disk_io: /proc/diskstats snapshots with known deltas, and the live host."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from monitor.runner import undeclared
from probes import disk_io
from tests.conftest import FIXTURES, render

CASES = FIXTURES / "disk_io"


def snapshot(case: str, when: str) -> dict[str, disk_io.Counters]:
    return disk_io.parse_diskstats((CASES / case / when / "proc" / "diskstats").read_text())


def test_incident_rates_over_five_seconds() -> None:
    before, after = snapshot("incident", "before"), snapshot("incident", "after")
    sda = disk_io.rates(before["sda"], after["sda"], 5.0)
    assert sda == disk_io.Rates(read_await=2.0, write_await=2.5, read_ops=20.0,
                                write_ops=10.0, read_bytes=4000 * 512 / 5,
                                write_bytes=4000 * 512 / 5, busy=1.0, queue=65.0,
                                in_progress=31)
    idle = disk_io.rates(before["md0"], after["md0"], 5.0)
    assert idle is not None and idle.read_await == idle.write_await == 0.0  # no IO: 0


def test_wrapped_counter_and_reset_device() -> None:
    before, after = snapshot("wrap-and-reset", "before"), snapshot("wrap-and-reset", "after")
    sdb = disk_io.rates(before["sdb"], after["sdb"], 10.0)
    assert sdb is not None
    assert sdb.read_ops == pytest.approx(496 / 10)  # 4294967000 -> 200 across 2^32
    assert sdb.read_await == pytest.approx((2704 + 2**32 - 4294966000) / 496 / 1000)
    assert disk_io.rates(before["sdc"], after["sdc"], 10.0) is None  # reset: no figure
    assert disk_io.counter_delta(10, 5) is None
    assert disk_io.counter_delta(2**32 - 1, 0) == 1


def test_parse_skips_lines_it_cannot_read() -> None:
    text = "   8 0 sda 1 2 3 4 5 6 7 8 9 10 11\n garbage line\n   8 1 sdb 1 2 x\n"
    assert list(disk_io.parse_diskstats(text)) == ["sda"]


async def test_probe_between_two_snapshots(tmp_path: Path) -> None:
    """The probe end to end: the default filter keeps whole disks and md, drops
    partitions and loop devices; latency comes out of the real counters."""
    proc = tmp_path / "proc"
    proc.mkdir()
    shutil.copy(CASES / "incident" / "before" / "proc" / "diskstats", proc / "diskstats")
    probe = disk_io.Probe(disk_io.Config(name="disks", kind="disk_io", root=tmp_path,
                                         interval=5))
    first = await probe.run()
    assert first.status == "ok"
    await asyncio.sleep(disk_io.SHORT_WINDOW_SECONDS)  # a reading this recent is re-taken
    shutil.copy(CASES / "incident" / "after" / "proc" / "diskstats", proc / "diskstats")
    result = await probe.run()
    assert result.status == "ok"
    values = {(s.metric, s.labels["device"]): s.value for s in result.samples}
    assert {device for _, device in values} == {"sda", "md0", "nvme0n1"}
    assert values[("insmon_disk_read_await_seconds", "sda")] == 2.0
    assert values[("insmon_disk_write_await_seconds", "sda")] == 2.5
    assert values[("insmon_disk_ios_in_progress", "sda")] == 31
    assert result.detail.startswith("3 devices; slowest sda: read 2000.0 ms, write 2500.0 ms")
    assert undeclared(result, {m.name: m for m in disk_io.METRICS}) is None


async def test_no_matching_device_fails_with_the_filter(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    shutil.copy(CASES / "incident" / "before" / "proc" / "diskstats",
                tmp_path / "proc" / "diskstats")
    probe = disk_io.Probe(disk_io.Config(name="d", kind="disk_io", root=tmp_path,
                                         devices="dm-.*"))
    result = await probe.run()
    assert result.status == "failed"
    assert result.detail.startswith("no device matches devices 'dm-.*' (exclude '(z?ram")


async def test_live_host_through_the_runner() -> None:
    """This host's disks, one run through the runner and the store: every series is on
    the exposition, none negative."""
    status, series = await render(disk_io.Config(name="host", kind="disk_io", interval=5),
                                  "insmon_disk_")
    assert status.startswith("# ok: "), status
    for spec in disk_io.METRICS:
        assert f'{spec.name}{{check="host",device="' in series, spec.name
    assert all(float(line.rsplit(" ", 1)[1]) >= 0 for line in series.splitlines())
