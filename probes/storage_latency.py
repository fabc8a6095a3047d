"""Storage latency, actively: a small timed write + fsync + read-back on a volume.

Passive counters say how the device is doing for the IO that happens; this says whether
the settlement cache volume can be written and read *now*, and how long it takes. In the
reference incident the array collapsed and the cache could not be read or written.

The IO runs on a thread of its own (run_blocking): a hung volume leaves that thread stuck
in the kernel, the run times out, later runs are skipped while it stays stuck, and every
other check keeps its schedule. The probe writes one small file of fixed size, named after
the check, and removes it in the same run: it never grows the disk. It also reads the
volume's size and free space (statvfs), even when the write fails: a full cache volume
is the likeliest reason it does, and a filling one should page before it is full.
"""

from __future__ import annotations

import errno
import mmap
import os
import time
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import Field, model_validator

from probes.base import CheckBase, Kind, MetricSpec, ProbeResult, Sample, one_hot, run_blocking

# 0.1 ms .. 10 s, with 2 s: the figure the emergency plans name.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
           0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
PHASES = ("open", "write", "fsync", "read", "total")
# Bounded reasons for the error counter; anything else counts as "other".
REASONS = ("ENOSPC", "EROFS", "EIO", "EACCES", "ENOENT", "EINVAL", "verify", "other")
DIRECT_ALIGN = 4096


class Config(CheckBase):
    kind: Literal["storage_latency"]
    path: Path  # a directory on the volume to watch, e.g. the settlement cache
    size: int = Field(default=4096, ge=512, le=1 << 20)  # bytes written and read back
    direct: bool = False  # O_DIRECT: bypass the page cache (not on tmpfs)

    @model_validator(mode="after")
    def _aligned_for_direct(self) -> Config:
        if self.direct and self.size % DIRECT_ALIGN:
            raise ValueError(f"with direct: true, size must be a multiple of {DIRECT_ALIGN}")
        return self


LABELS = ("phase",)
METRICS = (
    MetricSpec("insmon_storage_latency_seconds", "histogram",
               "Time each phase of the active probe took (open, write, fsync, read, and "
               "their total), over all runs.", LABELS, "seconds", BUCKETS),
    MetricSpec("insmon_storage_last_latency_seconds", "gauge",
               "Time each phase of the last successful active probe took.", LABELS,
               "seconds"),
    MetricSpec("insmon_storage_free_bytes", "gauge",
               "Space left on the volume for unprivileged writers (statvfs f_bavail), at the "
               "last run.", unit="bytes"),
    MetricSpec("insmon_storage_size_bytes", "gauge",
               "Size of the volume's file system (statvfs f_blocks), at the last run.",
               unit="bytes"),
    MetricSpec("insmon_storage_errors_total", "counter",
               "Active probes that failed, by reason: the errno name (ENOSPC, EROFS, EIO, "
               "EACCES, ENOENT, EINVAL), verify (read back differs) or other.",
               ("reason",)),
)


class Outcome(NamedTuple):
    phases: dict[str, float]  # seconds per phase, for the phases that completed
    error: str | None  # a reason from REASONS
    detail: str
    space: tuple[int, int] | None = None  # (free, size) bytes, when statvfs answered


def space(path: Path) -> tuple[int, int] | None:
    """(bytes free for unprivileged writers, file system size) of the volume at `path`."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None  # a missing or broken volume: the write's error says why
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def probe_volume(path: Path, size: int, direct: bool) -> Outcome:
    """The timed write and read-back, then the volume's free space (a full volume fails
    the write and still reports it)."""
    outcome = measure(path, size, direct)
    return outcome._replace(space=space(path.parent))


def probe_file(cfg: Config) -> Path:
    return cfg.path / f".insmon-{cfg.name}.probe"


def measure(path: Path, size: int, direct: bool) -> Outcome:
    """Write `size` random bytes, fsync, drop them from the cache, read them back."""
    payload = os.urandom(size)  # new each run, so a stale read cannot pass
    extra = os.O_DIRECT if direct else 0
    phases: dict[str, float] = {}
    start = time.perf_counter()
    try:
        try:
            t = time.perf_counter()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | extra,
                         0o600)
            phases["open"] = time.perf_counter() - t
            try:
                buf = _buffer(payload, direct)
                t = time.perf_counter()
                written = os.pwrite(fd, buf, 0)
                phases["write"] = time.perf_counter() - t
                if written != size:
                    return Outcome(phases, "other", f"short write: {written} of {size} bytes")
                t = time.perf_counter()
                os.fsync(fd)
                phases["fsync"] = time.perf_counter() - t
            finally:
                os.close(fd)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | extra)
            try:
                if not direct:  # make the read go to the device, not the page cache
                    os.posix_fadvise(fd, 0, size, os.POSIX_FADV_DONTNEED)
                back = mmap.mmap(-1, size)
                t = time.perf_counter()
                got = os.preadv(fd, [back], 0)
                phases["read"] = time.perf_counter() - t
            finally:
                os.close(fd)
        finally:
            path.unlink(missing_ok=True)
    except OSError as exc:
        reason = errno.errorcode.get(exc.errno or 0, "other")
        if direct and exc.errno == errno.EINVAL:
            return Outcome(phases, "EINVAL", "O_DIRECT is not supported on this file system")
        return Outcome(phases, reason if reason in REASONS else "other",
                       f"{exc.strerror or exc} ({reason})")
    if got != size or back[:size] != payload:
        return Outcome(phases, "verify", "data read back differs from what was written")
    phases["total"] = time.perf_counter() - start
    return Outcome(phases, None, "")


def _buffer(payload: bytes, direct: bool) -> bytes | mmap.mmap:
    if not direct:
        return payload
    buf = mmap.mmap(-1, len(payload))  # page-aligned, as O_DIRECT requires
    buf.write(payload)
    return buf


class Probe:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    async def run(self) -> ProbeResult:
        cfg = self.cfg
        outcome = await run_blocking(probe_volume, probe_file(cfg), cfg.size, cfg.direct)
        samples = one_hot("insmon_storage_errors_total", "reason", REASONS, outcome.error)
        if outcome.space is not None:
            samples += [Sample("insmon_storage_free_bytes", outcome.space[0]),
                        Sample("insmon_storage_size_bytes", outcome.space[1])]
        for phase, seconds in outcome.phases.items():
            samples.append(Sample("insmon_storage_latency_seconds", seconds, {"phase": phase}))
        if outcome.error is not None:
            return ProbeResult("failed", tuple(samples),
                               f"{outcome.detail} on {cfg.path}")
        samples += [Sample("insmon_storage_last_latency_seconds", s, {"phase": p})
                    for p, s in outcome.phases.items()]
        ms = {p: f"{s * 1000:.2f} ms" for p, s in outcome.phases.items()}
        return ProbeResult("ok", tuple(samples), (
            f"{cfg.size} B on {cfg.path}: write {ms['write']}, fsync {ms['fsync']}, "
            f"read {ms['read']}, total {ms['total']}"))


KIND = Kind(Config, METRICS, Probe)
