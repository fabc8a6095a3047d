"""A fresh Debian 12 host for the offline bundle's tests, and its services started as their
systemd units say.

The root is built once with debootstrap from the package mirror (minbase, plus systemd
for `systemctl enable` and `systemd-analyze`) and cached beside the bundle's downloads;
each test gets its own copy as an overlay on it. Everything in the host runs in a network
namespace of the test's with only loopback: no route anywhere, as on an air-gapped host.

systemd does not run in the root (it would need to be PID 1 of a container), so
`Machine.start` does what systemd would for the lines our units use: the user, group and
supplementary groups, the capabilities (ambient and bounding set), no new privileges,
Environment= with its ${VAR} in ExecStart, StateDirectory= made and owned, and a
read-only system (ProtectSystem=strict) with only ReadWritePaths= and the state
directories writable, a private /tmp. Lines it cannot enforce here (seccomp filters,
kernel protections) are the ones `systemd-analyze verify` checks; any other line fails
the test, so a unit never says more than was tried.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "insmon-bundle"
MIRROR = "http://deb.debian.org/debian"
# lines systemd enforces with seccomp or kernel settings: verified, not emulated
VERIFIED_ONLY = {
    "Type", "Restart", "RestartSec", "TimeoutStopSec", "ExecReload", "StateDirectoryMode",
    "ProtectHome", "PrivateDevices", "ProtectKernelTunables", "ProtectKernelModules",
    "ProtectControlGroups", "ProtectClock", "RestrictAddressFamilies", "RestrictNamespaces",
    "RestrictRealtime", "LockPersonality", "MemoryDenyWriteExecute",
    "SystemCallArchitectures", "LimitNOFILE"}
EMULATED = {"User", "Group", "SupplementaryGroups", "Environment", "ExecStart",
            "StateDirectory", "ReadWritePaths", "ProtectSystem", "PrivateTmp",
            "AmbientCapabilities", "CapabilityBoundingSet", "NoNewPrivileges"}


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


@dataclass
class Unit:
    name: str
    service: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, name: str, text: str) -> Unit:
        unit, section = cls(name), ""
        text = re.sub(r"\\\n\s*", " ", text)  # continued lines
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line.strip("[]")
            elif section == "Service":
                key, value = line.split("=", 1)
                unit.service.setdefault(key, []).append(value)
        return unit

    def one(self, key: str, default: str = "") -> str:
        return self.service.get(key, [default])[-1]

    def words(self, key: str) -> list[str]:
        return [w for value in self.service.get(key, []) for w in value.split()]


class Machine:
    """An overlay copy of the cached root, in a network namespace with only loopback."""

    def __init__(self, base: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="insmon-host-"))
        self.root = self.dir / "root"
        for name in ("upper", "work", "root"):
            (self.dir / name).mkdir()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={base},upperdir={self.dir / 'upper'},"
                        f"workdir={self.dir / 'work'}", str(self.root)], check=True,
                       timeout=30)
        self.netns = f"insmon-host-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.netns], check=True, timeout=30)
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True,
                       timeout=30)
        self.services: dict[str, subprocess.Popen] = {}

    def sh(self, script: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """A shell command in the host as root (its own /proc), with no network."""
        inside = f"mount -t proc proc {self.root}/proc && exec chroot {self.root} " \
                 f"/bin/sh -c {shlex.quote(script)}"
        return subprocess.run(["ip", "netns", "exec", self.netns, "unshare", "--mount",
                               "--propagation", "private", "sh", "-c", inside],
                              capture_output=True, text=True, timeout=timeout,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})

    def background(self, name: str, script: str) -> subprocess.Popen:
        """A daemon of the host's own (not one of our units), as root, with no network."""
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - the daemon's
        inside = f"mount -t proc proc {self.root}/proc && exec chroot {self.root} " \
                 f"/bin/sh -c {shlex.quote('exec ' + script)}"
        self.services[name] = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation",
             "private", "sh", "-c", inside], stdout=log, stderr=subprocess.STDOUT,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        log.close()
        return self.services[name]

    def outside(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """A host tool (curl) in the machine's network namespace."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv],
                              capture_output=True, text=True, timeout=timeout)

    def unit(self, name: str) -> Unit:
        path = self.root / "usr/local/lib/systemd/system" / f"{name}.service"
        return Unit.parse(name, path.read_text())

    def start(self, name: str) -> subprocess.Popen:
        """The unit's service, started as its unit says (the module's docstring)."""
        unit = self.unit(name)
        unknown = set(unit.service) - EMULATED - VERIFIED_ONLY
        assert not unknown, f"{name}.service: lines not tried by the test: {unknown}"
        user, group = unit.one("User", "root"), unit.one("Group", unit.one("User", "root"))
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "USER": user,
               "HOME": "/", "LOGNAME": user}
        for value in unit.service.get("Environment", []):
            for word in shlex.split(value):
                key, _, val = word.partition("=")
                env[key] = val
        prepare, mounts = [], []
        states = unit.words("StateDirectory")
        mode = unit.one("StateDirectoryMode", "0755")
        for state in states:
            prepare.append(f"install -d -o {user} -g {group} -m {mode} /var/lib/{state}")
        if states:
            env["STATE_DIRECTORY"] = ":".join(f"/var/lib/{s}" for s in states)
        if unit.one("ProtectSystem") == "strict":
            mounts.append(f"mount --bind {self.root} {self.root}")
            mounts.append(f"mount -o remount,bind,ro {self.root}")
            writable = [*(f"/var/lib/{s}" for s in states), *unit.words("ReadWritePaths")]
            for path in writable:
                optional = path.startswith("-")
                path = path.lstrip("-")
                target = f"{self.root}{path}"
                check = f"[ -e {target} ] || " + ("continue" if optional else
                                                  f"{{ echo 'missing {path}' >&2; exit 226; }}")
                mounts.append(f"for _ in 1; do {check}; mount --bind {target} {target} && "
                              f"mount -o remount,bind,rw {target}; done")
            mounts.append(f"mount -t tmpfs -o mode=0755 tmpfs {self.root}/run")
        elif unit.one("ProtectSystem"):
            raise AssertionError(f"{name}: ProtectSystem={unit.one('ProtectSystem')} untried")
        if unit.one("PrivateTmp") == "yes":
            mounts += [f"mount -t tmpfs -o mode=1777 tmpfs {self.root}/tmp",
                       f"mount -t tmpfs -o mode=1777 tmpfs {self.root}/var/tmp"]
        mounts.append(f"mount -t proc proc {self.root}/proc")

        groups = self.sh(f"id -G {user}").stdout.split()
        for extra in unit.words("SupplementaryGroups"):
            groups.append(self.sh(f"getent group {extra} | cut -d: -f3").stdout.strip())
        caps = [c.lower().removeprefix("cap_") for c in unit.words("AmbientCapabilities")]
        bounding = [c.lower().removeprefix("cap_")
                    for c in unit.words("CapabilityBoundingSet")]
        setpriv = ["setpriv", f"--reuid={user}", f"--regid={group}",
                   f"--groups={','.join(groups)}",
                   "--bounding-set=-all" + "".join(f",+{c}" for c in bounding)]
        if caps:
            setpriv += ["--inh-caps=" + ",".join(f"+{c}" for c in caps),
                        "--ambient-caps=" + ",".join(f"+{c}" for c in caps)]
        if unit.one("NoNewPrivileges") == "yes":
            setpriv.append("--no-new-privs")
        argv = shlex.split(re.sub(r"\$\{(\w+)\}|\$(\w+)",
                                  lambda m: env.get(m[1] or m[2], ""), unit.one("ExecStart")))
        environ = [f"{k}={v}" for k, v in env.items()]
        script = " && ".join([
            *(f"chroot {self.root} sh -c {shlex.quote(p)}" for p in prepare), *mounts,
            "exec " + shlex.join(["chroot", str(self.root), *setpriv, "env", "-i",
                                  *environ, *argv])])
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - the service's, kept open
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation",
             "private", "sh", "-c", script], stdout=log, stderr=subprocess.STDOUT,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        log.close()
        self.services[name] = process
        return process

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self, name: str) -> None:
        process = self.services.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)

    def close(self) -> None:
        for name in list(self.services):
            self.stop(name)
        subprocess.run(["ip", "netns", "delete", self.netns], timeout=30)
        subprocess.run(["umount", "-l", str(self.root)], timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)
