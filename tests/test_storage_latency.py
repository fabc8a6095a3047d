"""storage_latency against real file systems: ext4 (the work tree's), tmpfs, a full
volume, a read-only volume, and a volume whose IO really blocks (a FIFO)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.runner import build_checks, run_check
from monitor.scheduler import CheckScheduler
from monitor.store import ResultStore
from ops.lab import FaultyVolume
from probes import cpu, storage_latency
from tests.conftest import render

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (CI runs as root)")


def check(path: Path, interval: float = 5, timeout: float = 2,
          direct: bool = False) -> storage_latency.Config:
    return storage_latency.Config(name="cache", kind="storage_latency", path=path,
                                  interval=interval, timeout=timeout, direct=direct)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "volume"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.parametrize("direct", [False, True])
async def test_ext4_directory(tmp_path: Path, direct: bool) -> None:
    (tmp_path / "keep.txt").write_text("settlement cache")
    status, series = await render(check(tmp_path, direct=direct), "insmon_storage_")
    assert status.startswith("# ok: 4096 B on ")
    for phase in storage_latency.PHASES:
        assert f'insmon_storage_last_latency_seconds{{check="cache",phase="{phase}"}}' in series
        assert (f'insmon_storage_latency_seconds_count{{check="cache",phase="{phase}"}} 1.0'
                in series)
    assert 'insmon_storage_errors_total{check="cache",reason="EIO"} 0.0' in series
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]  # cleaned up
    st = os.statvfs(tmp_path)
    value = {m[1]: float(m[2]) for m in re.finditer(
        r'insmon_storage_(free|size)_bytes\{check="cache"\} (\S+)', series)}
    assert abs(value["free"] - st.f_bavail * st.f_frsize) < 64 << 20  # others write meanwhile
    assert value["size"] == st.f_blocks * st.f_frsize


async def test_tmpfs_directory() -> None:
    status, _ = await render(check(Path("/dev/shm")), "insmon_storage_")
    assert status.startswith("# ok: 4096 B on /dev/shm: write ")
    assert not (Path("/dev/shm") / ".insmon-cache.probe").exists()


async def test_missing_path(tmp_path: Path) -> None:
    status, series = await render(check(tmp_path / "unmounted"), "insmon_storage_")
    assert status == ("# failed: No such file or directory (ENOENT) on "
                      f"{tmp_path / 'unmounted'}\n")
    assert 'insmon_storage_errors_total{check="cache",reason="ENOENT"} 1.0' in series


@root_only
async def test_full_volume(tmpfs: Path) -> None:
    fd = os.open(tmpfs / "filler", os.O_WRONLY | os.O_CREAT)
    try:  # fill it up, as a runaway log would; bounded by the 64 KiB volume
        for _ in range(64):
            os.write(fd, b"x" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    status, series = await render(check(tmpfs), "insmon_storage_")
    assert status == f"# failed: No space left on device (ENOSPC) on {tmpfs}\n"
    assert 'insmon_storage_errors_total{check="cache",reason="ENOSPC"} 1.0' in series
    assert sorted(p.name for p in tmpfs.iterdir()) == ["filler"]
    # why it failed is on the wall too: nothing left of the 64 KiB volume
    assert 'insmon_storage_free_bytes{check="cache"} 0.0' in series
    assert 'insmon_storage_size_bytes{check="cache"} 65536.0' in series


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[FaultyVolume]:
    volume = FaultyVolume(tmp_path / "fuse")
    yield volume
    volume.close()


@root_only
async def test_a_volume_whose_fsync_takes_2_5_s_is_measured_as_such(
        faulty: FaultyVolume) -> None:
    """What the reference incident's array did before it failed: writes that take
    seconds. Real ones, through FUSE (ops/lab/faultfs.py)."""
    faulty.faults(delay=2.5, ops=["fsync"])
    status, series = await render(check(faulty.path, interval=10, timeout=5),
                                  "insmon_storage_")
    assert status.startswith(f"# ok: 4096 B on {faulty.path}")
    fsync = float(next(line.split()[-1] for line in series.splitlines() if line.startswith(
        'insmon_storage_last_latency_seconds{check="cache",phase="fsync"}')))
    assert 2.5 <= fsync < 4
    assert ('insmon_storage_latency_seconds_bucket{check="cache",le="5.0",phase="fsync"} 1.0'
            in series)
    assert ('insmon_storage_latency_seconds_bucket{check="cache",le="2.0",phase="fsync"} 0.0'
            in series)


@root_only
async def test_a_volume_failing_fsync_with_eio_fails_the_check(faulty: FaultyVolume) -> None:
    faulty.faults(error="EIO", ops=["fsync"])
    status, series = await render(check(faulty.path), "insmon_storage_")
    assert status == f"# failed: Input/output error (EIO) on {faulty.path}\n"
    assert 'insmon_storage_errors_total{check="cache",reason="EIO"} 1.0' in series
    faulty.faults()  # healed: the next run is ok again
    status, _ = await render(check(faulty.path), "insmon_storage_")
    assert status.startswith("# ok: ")


@root_only
async def test_a_collapsing_volume_is_slow_then_fails(faulty: FaultyVolume) -> None:
    """The reference drill's cache volume: writes take 2.5 s, and then fsync fails. The
    slow write is measured (IO latency above 2000 ms) although the run fails."""
    faulty.faults(rules=[{"delay": 2.5, "ops": ["write"]}, {"error": "EIO", "ops": ["fsync"]}])
    status, series = await render(check(faulty.path, interval=10, timeout=5),
                                  "insmon_storage_")
    assert status == f"# failed: Input/output error (EIO) on {faulty.path}\n"
    assert ('insmon_storage_latency_seconds_bucket{check="cache",le="2.0",phase="write"} 0.0'
            in series)
    assert ('insmon_storage_latency_seconds_bucket{check="cache",le="5.0",phase="write"} 1.0'
            in series)


@root_only
async def test_read_only_volume(tmpfs: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    status, series = await render(check(tmpfs), "insmon_storage_")
    assert status == f"# failed: Read-only file system (EROFS) on {tmpfs}\n"
    assert 'insmon_storage_errors_total{check="cache",reason="EROFS"} 1.0' in series


async def test_hung_volume_does_not_stall_the_monitor(tmp_path: Path) -> None:
    """The probe's file is a FIFO nobody reads: open() for writing blocks in the kernel,
    as IO on a dead disk does. The check times out, is skipped while stuck, the CPU check
    keeps its schedule, and once the IO returns the check runs again."""
    hung = check(tmp_path, interval=0.4, timeout=0.2)
    fifo = storage_latency.probe_file(hung)
    os.mkfifo(fifo)
    store = ResultStore()
    scheduler = CheckScheduler(store)
    checks = build_checks([hung, cpu.Config(name="host-cpu", kind="cpu", interval=0.25)])
    scheduler.start()
    scheduler.apply(checks, "test")
    try:
        await asyncio.sleep(2.0)
        views = {v.name: v for v in store.snapshot().checks}
        assert views["cache"].runs["timeout"] == 1  # one stuck run, not a pile of them
        assert views["cache"].skipped >= 3
        assert views["host-cpu"].runs["ok"] >= 6  # 2 s at 0.25 s, unaffected
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the "disk" comes back
        try:
            for _ in range(40):
                if not checks[0].stuck:
                    break
                await asyncio.sleep(0.05)
            assert not checks[0].stuck
        finally:
            os.close(reader)
        await asyncio.sleep(1.0)
    finally:
        scheduler.shutdown()
    view = {v.name: v for v in store.snapshot().checks}["cache"]
    assert view.runs["ok"] >= 1  # running again, on a normal file now
    assert not fifo.exists()


async def test_runner_reports_timeout_for_hung_io(tmp_path: Path) -> None:
    hung = check(tmp_path, interval=5, timeout=0.2)
    os.mkfifo(storage_latency.probe_file(hung))
    store = ResultStore()
    [c] = build_checks([hung])
    store.configure([c], "test")
    try:
        record = await run_check(c, store)
        assert record is not None and record.status == "timeout"
    finally:
        fd = os.open(storage_latency.probe_file(hung), os.O_RDONLY | os.O_NONBLOCK)
        os.close(fd)
