"""A fresh Debian 12 host for the offline bundle's tests, booted under real systemd.

The root is built once with debootstrap from the package mirror (minbase, plus systemd)
and cached beside the bundle's downloads; each test gets its own copy as an overlay on
it. `Booted` boots that copy with `systemd-nspawn --boot` as a container with only
loopback (`--private-network`: no route anywhere, as on an air-gapped host), so systemd
is its PID 1 and the bundle's units run with their real hardening (seccomp, capabilities,
a read-only system); a power-off and a boot again is a reboot. `Machine` is the same copy
with no systemd running (a chroot), for what install.sh must refuse there.
`site_configs` writes what install.sh puts in /etc/insmon.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "insmon-bundle"
MIRROR = "http://deb.debian.org/debian"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# room for what a test writes in its copy: the packages, two venvs and two bundles
OVERLAY_SIZE = "3G"


def debian12_root() -> Path:
    """The cached minimal Debian 12 of this host's architecture, built on first use (by
    one pytest worker; the others wait for it)."""
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    root = CACHE / f"debian12-{arch}-root"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "root.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "etc" / "debian_version").exists():
            partial = root.with_name(root.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            subprocess.run(["debootstrap", "--variant=minbase", "--include=systemd",
                            f"--arch={arch}", "bookworm", str(partial), MIRROR],
                           check=True, capture_output=True, timeout=1200)
            partial.rename(root)
    return root


def site_configs(dest: Path) -> Path:
    """The configs the bundle's install.sh writes into /etc/insmon (bundle/build.py's)."""
    spec = importlib.util.spec_from_file_location("bundle_build", ROOT / "bundle/build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.site_configs(ROOT, dest)
    return dest


class _Overlay:
    """A copy of the cached root of the test's own: an overlay on it, removed at close.
    What the test writes in it is held in memory (a tmpfs, at most OVERLAY_SIZE): no disk
    writes to sync while it installs, and nothing to delete file by file at the end (tens
    of seconds on a busy disk)."""

    def __init__(self, base: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="insmon-host-"))
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={OVERLAY_SIZE},mode=0700",
                        "tmpfs", str(self.dir)], check=True, timeout=30)
        self.root = self.dir / "root"
        for name in ("upper", "work", "root"):
            (self.dir / name).mkdir()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={base},upperdir={self.dir / 'upper'},"
                        f"workdir={self.dir / 'work'}", str(self.root)], check=True,
                       timeout=30)

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.root)], timeout=30)
        subprocess.run(["umount", "-l", str(self.dir)], timeout=30)
        self.dir.rmdir()


class Machine(_Overlay):
    """The copy with no systemd running: a chroot in a network namespace with only
    loopback."""

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.netns = f"insmon-host-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.netns], check=True, timeout=30)
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True,
                       timeout=30)

    def sh(self, script: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """A shell command in the host as root (its own /proc), with no network."""
        inside = f"mount -t proc proc {self.root}/proc && exec chroot {self.root} " \
                 f"/bin/sh -c {shlex.quote(script)}"
        return subprocess.run(["ip", "netns", "exec", self.netns, "unshare", "--mount",
                               "--propagation", "private", "sh", "-c", inside],
                              capture_output=True, text=True, timeout=timeout,
                              env={"PATH": PATH, "LANG": "C.UTF-8"})

    def close(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.netns], timeout=30)
        super().close()


class Booted(_Overlay):
    """The copy booted under systemd (systemd-nspawn), with only loopback. Commands run
    in it through nsenter into its namespaces; host tools (curl) in its network's."""

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.name = f"insmon-{uuid.uuid4().hex[:8]}"
        self.nspawn: subprocess.Popen | None = None
        self.leader = 0
        self.boot()

    def boot(self, timeout: float = 120) -> float:
        """Boots it; the seconds until systemd says the system is up."""
        started = time.monotonic()
        with open(self.dir / "console.log", "ab") as console:
            self.nspawn = subprocess.Popen(
                ["systemd-nspawn", "--boot", "--register=no", "--keep-unit",
                 "--private-network", f"--machine={self.name}", "--quiet",
                 f"--directory={self.root}"],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
        deadline = started + timeout
        state = "not started"
        while time.monotonic() < deadline and self.nspawn.poll() is None:
            # its PID 1: nspawn's child, once that runs systemd
            inits = [c.pid for c in psutil.Process(self.nspawn.pid).children()
                     if _name(c) == "systemd"]
            if inits:
                self.leader = inits[0]
                done = self.sh("systemctl is-system-running --wait", 30)
                state = (done.stdout or done.stderr).strip()
                if state in ("running", "degraded"):
                    return time.monotonic() - started
            time.sleep(0.2)
        raise AssertionError(f"{self.name} did not boot within {timeout:.0f} s ({state}): "
                             f"{self.console()}")

    def sh(self, script: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """A shell command in the host as root."""
        return subprocess.run(["nsenter", "-t", str(self.leader), "--all", "env", "-i",
                               f"PATH={PATH}", "LANG=C.UTF-8", "HOME=/root", "/bin/sh", "-c",
                               script], capture_output=True, text=True, timeout=timeout)

    def outside(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """A host tool (curl) in the host's network namespace."""
        return subprocess.run(["nsenter", "-t", str(self.leader), "--net", *argv],
                              capture_output=True, text=True, timeout=timeout)

    def poweroff(self, timeout: float = 120) -> None:
        self.sh("systemctl poweroff", 30)
        assert self.nspawn is not None
        self.nspawn.wait(timeout)

    def console(self) -> str:
        return (self.dir / "console.log").read_text(errors="replace")[-4000:]

    def close(self) -> None:
        if self.nspawn is not None and self.nspawn.poll() is None:
            try:
                self.poweroff(60)
            except (subprocess.TimeoutExpired, subprocess.SubprocessError, OSError):
                os.kill(self.leader, 9)  # its PID 1: everything in it ends
                self.nspawn.wait(60)
        super().close()


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except psutil.Error:
        return ""
