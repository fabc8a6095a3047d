"""A volume that is slow or broken on demand: a FUSE filesystem passing every call
through to a backing directory, with the faults named in a control file applied on the
way. This machine has no device-mapper and no md module; FUSE makes real slow writes and
a real EIO on fsync, as a failing array gives them, for the storage probes and the drill.

    python faultfs.py BACKING MOUNTPOINT CONTROL

CONTROL is a JSON file, read again whenever it changes:
    {"delay": 2.5, "ops": ["fsync"]}    each fsync sleeps 2.5 s, then does its work
    {"error": "EIO", "ops": ["fsync", "write"]}   they fail with EIO
    {"rules": [{"delay": 2.5, "ops": ["write"]}, {"error": "EIO", "ops": ["fsync"]}]}
                                         several at once: slow writes, failing fsyncs
    {}                                   healthy
Runs in the foreground until unmounted (`fusermount -u MOUNTPOINT`) or SIGTERM.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from pathlib import Path

from fuse import FUSE, FuseOSError, Operations


class FaultFS(Operations):
    def __init__(self, backing: str, control: str) -> None:
        self.backing = backing
        self.control = Path(control)
        self._faults: dict = {}
        self._stamp = 0.0

    def _path(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def _fault(self, op: str) -> None:
        try:
            stamp = self.control.stat().st_mtime_ns
            if stamp != self._stamp:
                self._stamp, self._faults = stamp, json.loads(self.control.read_text() or "{}")
        except (OSError, ValueError):
            self._faults = {}
        for rule in self._faults.get("rules", [self._faults]):
            if op not in rule.get("ops", ("write", "fsync")):
                continue
            if rule.get("delay"):
                time.sleep(min(float(rule["delay"]), 60.0))
            if rule.get("error"):
                raise FuseOSError(getattr(errno, rule["error"], errno.EIO))

    # ------------------------------------------------------------------ passthrough

    def getattr(self, path: str, fh: int | None = None) -> dict:
        st = os.lstat(self._path(path))
        return {key: getattr(st, key) for key in (
            "st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink", "st_size",
            "st_uid")}

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._path(path))]

    def access(self, path: str, amode: int) -> None:
        if not os.access(self._path(path), amode):
            raise FuseOSError(errno.EACCES)

    def open(self, path: str, flags: int) -> int:
        self._fault("open")
        return os.open(self._path(path), flags)

    def create(self, path: str, mode: int, fi: object = None) -> int:
        self._fault("open")
        return os.open(self._path(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        self._fault("read")
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        self._fault("write")
        return os.pwrite(fh, data, offset)

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        self._fault("fsync")
        os.fsync(fh)

    def flush(self, path: str, fh: int) -> None:
        pass

    def release(self, path: str, fh: int) -> None:
        os.close(fh)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        os.truncate(self._path(path), length)

    def unlink(self, path: str) -> None:
        os.unlink(self._path(path))

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(self._path(path), mode)

    def rmdir(self, path: str) -> None:
        os.rmdir(self._path(path))

    def rename(self, old: str, new: str) -> None:
        os.rename(self._path(old), self._path(new))

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self._path(path), mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(self._path(path), uid, gid)

    def utimens(self, path: str, times: tuple | None = None) -> None:
        os.utime(self._path(path), times)

    def statfs(self, path: str) -> dict:
        st = os.statvfs(self._path(path))
        return {key: getattr(st, key) for key in (
            "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files",
            "f_flag", "f_frsize", "f_namemax")}


def main() -> None:
    backing, mountpoint, control = sys.argv[1:4]
    FUSE(FaultFS(backing, control), mountpoint, foreground=True, nothreads=False,
         allow_other=False, default_permissions=False)


if __name__ == "__main__":
    main()
