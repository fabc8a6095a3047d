"""Reading the kernel's text files (/proc/diskstats, /proc/mdstat, /sys/block) cheaply,
safely and within bounds.

A file on an in-memory filesystem (procfs, sysfs, tmpfs) never waits for a device, so it
is read on the event loop; anything else (a copy on a disk, a network mount) is read on
the check's worker thread, under the run's deadline. Handing a read to a thread costs
about 0.1 ms of CPU, as much as reading and parsing the file itself, on every run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from probes.base import ProbeFailure, run_blocking

IN_MEMORY = frozenset({"proc", "sysfs", "tmpfs", "ramfs", "devtmpfs"})
MAX_BYTES = 1 << 20  # far above any real diskstats or mdstat; a crafted file is refused

T = TypeVar("T")


def read_capped(path: Path, limit: int = MAX_BYTES) -> str:
    """The file's text; bytes that are not UTF-8 become U+FFFD (the parser then says what
    it could not read). A file over `limit` bytes is a ProbeFailure, not read whole."""
    with open(path, "rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ProbeFailure(f"{path} is larger than {limit} bytes: not a kernel's file, "
                           "not read")
    return data.decode("utf-8", errors="replace")


def filesystem_type(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """The type of the filesystem `path` is on (proc, tmpfs, ext4...), from mountinfo."""
    dev = os.stat(path).st_dev
    device = f"{os.major(dev)}:{os.minor(dev)}"
    for line in mountinfo.read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == device and "-" in fields:
            return fields[fields.index("-") + 1]
    return None


def _in_memory(folders: Iterable[Path]) -> bool | None:
    try:
        return all(filesystem_type(folder) in IN_MEMORY for folder in folders
                   if folder.exists())
    except OSError:
        return None  # decided again next time


class KernelReads:
    """Runs a function that reads files under `folders`: on the event loop when every one
    of them (that exists) is on an in-memory filesystem, else on a worker thread. Decided
    at the first run, itself on a worker thread (a stat can hang on a dead mount)."""

    def __init__(self, *folders: Path) -> None:
        self.folders = folders
        self._in_memory: bool | None = None

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self._in_memory is None:
            self._in_memory = await run_blocking(_in_memory, self.folders)
        return fn(*args) if self._in_memory else await run_blocking(fn, *args)
