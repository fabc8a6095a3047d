"""A hospital's private network, made for real in a network namespace.

    this host (the monitor)                         namespace "agency" (insurance side)
    ip<N>p 198.18.1.1/30  ===== primary line ====== 198.18.1.2  gateway
    ip<N>b 198.18.2.1/30  ===== 4G backup ========= 198.18.2.2  gateway
                                                    198.18.100.1 settlement front-end
                                                                 (TCP/HTTP, on lo)
                                                    198.18.50.0/24 impaired targets
                                                                 (TUN, ops/lab/impair.py)

Addresses are from 198.18.0.0/15 (RFC 2544, benchmarking; never routed). Those above are
slot 0's, which the tests that name addresses use, one lab at a time (a lock file waits
for the slot). `Lab(slot=None)` takes a free slot of its own, with addresses of its own
in 198.19.0.0/16 (its `front_end`, `primary_gateway`, ... attributes), so that several
labs (drills, the end-to-end tests) run side by side. While a lab exists an
`unreachable 198.18.0.0/15` route on this host keeps any packet for a torn-down lab
address from leaving the machine. Everything is removed on close; a lab whose owner was
killed before it could close (kill -9, a lost session) is removed by the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from ops.stack import wait_for

HERE = Path(__file__).resolve().parent
GUARD = "198.18.0.0/15"
FRONT_END = "198.18.100.1"  # slot 0's
IMPAIRED = "198.18.50.0/24"
PREFIX = "insmon-agency-"
LOCKS = Path("/run/insmon-lab")  # <namespace>.lock and slot-<k>.lock, held while it lives
SLOTS = 64  # slot k > 0: 198.19.4k.0/30 primary, 198.19.4k+1.0/30 backup, 198.19.4k+2.1


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check,
                          timeout=10)


class Lab:
    def __init__(self, slot: int | None = 0) -> None:
        n = os.getpid()
        self.ns = f"{PREFIX}{n}"
        self.primary, self.backup = f"ip{n}p", f"ip{n}b"  # this host's ends
        self.primary_far, self.backup_far = f"ip{n}pa", f"ip{n}ba"  # the agency's ends
        self.servers: dict[str, subprocess.Popen] = {}
        self.sessions: Path | None = None  # the settlement check's sign-ins (start_platform)
        self._slot_lock: IO[str] | None = None
        sweep_stale_labs()
        LOCKS.mkdir(parents=True, exist_ok=True)
        self._lock = open(LOCKS / f"{self.ns}.lock", "w")  # noqa: SIM115 (held till close)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            self.slot = self._take_slot(slot)
            if self.slot == 0:
                self.primary_net, self.backup_net = "198.18.1", "198.18.2"
                self.front_end = FRONT_END
            else:
                self.primary_net = f"198.19.{4 * self.slot}"
                self.backup_net = f"198.19.{4 * self.slot + 1}"
                self.front_end = f"198.19.{4 * self.slot + 2}.1"
            # this host's ends are .1 of each /30, the agency's gateways .2
            self.primary_gateway = f"{self.primary_net}.2"
            self.backup_gateway = f"{self.backup_net}.2"
            self._build()
        except BaseException:
            self.close()
            raise

    def _take_slot(self, slot: int | None) -> int:
        """Slot 0 waits (up to 5 minutes) until no other lab holds it; None takes any
        free one of the others."""
        wanted = [slot] if slot is not None else list(range(1, SLOTS))
        deadline = time.monotonic() + 300
        while True:
            for k in wanted:
                lock = open(LOCKS / f"slot-{k}.lock", "w")  # noqa: SIM115 (held till close)
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    lock.close()
                    continue
                self._slot_lock = lock
                return k
            if time.monotonic() > deadline:
                raise RuntimeError(f"no free lab slot of {wanted[:3]}... in 5 minutes")
            time.sleep(0.2)

    def _build(self) -> None:
        if GUARD not in ip("route", "show", "type", "unreachable").stdout:
            ip("route", "add", "unreachable", GUARD, check=False)  # another lab may race
        ip("netns", "add", self.ns)
        self.ns_ip("link", "set", "lo", "up")
        self.ns_ip("addr", "add", f"{self.front_end}/32", "dev", "lo")
        for here, far, subnet in ((self.primary, self.primary_far, self.primary_net),
                                  (self.backup, self.backup_far, self.backup_net)):
            ip("link", "add", here, "type", "veth", "peer", "name", far)
            ip("link", "set", far, "netns", self.ns)
            ip("addr", "add", f"{subnet}.1/30", "dev", here)
            # when the line goes dark, its routes are not used: traffic fails over
            Path(f"/proc/sys/net/ipv4/conf/{here}/ignore_routes_with_linkdown").write_text("1")
            ip("link", "set", here, "up")
            self.ns_ip("addr", "add", f"{subnet}.2/30", "dev", far)
            self.ns_ip("link", "set", far, "up")
        # the front-end is reachable over either line; primary preferred
        ip("route", "add", f"{self.front_end}/32", "via", self.primary_gateway, "dev",
           self.primary, "metric", "10")
        ip("route", "add", f"{self.front_end}/32", "via", self.backup_gateway, "dev",
           self.backup, "metric", "20")
        for here in (self.primary, self.backup):
            self._wait_carrier(here, True)

    def _wait_carrier(self, interface: str, on: bool) -> None:
        carrier = Path("/sys/class/net") / interface / "carrier"
        wait_for(lambda: carrier.read_text().strip() == ("1" if on else "0"), 10,
                 f"carrier {'on' if on else 'off'} on {interface}")

    def ns_ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return ip("-n", self.ns, *args, check=check)

    def in_ns(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def insmon_config(self, port: int) -> str:
        """An insmon config listening on `port` with a 1 s vpn check of this lab's two
        lines and front-end (port 8080); further checks may be appended to it."""
        return f"""\
listen: "127.0.0.1:{port}"
checks:
  - name: private-network
    kind: vpn
    interval: 1s
    timeout: 900ms
    front_end: {self.front_end}:8080
    ping_count: 2
    packet_interval: 50ms
    packet_timeout: 300ms
    links:
      - {{name: private-line, role: primary, interface: {self.primary},
          gateway: {self.primary_gateway}}}
      - {{name: 4g-backup, role: backup, interface: {self.backup},
          gateway: {self.backup_gateway}}}
"""

    # ------------------------------------------------------------------ services

    def start_front_end(self, port: int = 8080, tls: tuple[Path, Path] | None = None,
                        name: str = "front-end") -> None:
        argv = [sys.executable, str(HERE / "frontend.py"), self.front_end, str(port)]
        if tls:
            argv += [str(tls[0]), str(tls[1])]
        self.servers[name] = subprocess.Popen(self.in_ns(*argv), stdin=subprocess.DEVNULL,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              text=True, start_new_session=True)
        wait_for(lambda: self._listening(port), 15, f"{name} to listen on {port}")

    def start_platform(self, control: Path, port: int = 8090) -> str:
        """The insurance platform's gateway (ops/lab/gateway.py) on the front-end's
        address, its faults switched through the JSON file `control`: its URL."""
        control.write_text("{}")
        self.servers["platform"] = subprocess.Popen(
            self.in_ns(sys.executable, str(HERE / "gateway.py"), self.front_end, str(port),
                       str(control)),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True)
        wait_for(lambda: self._listening(port), 15, "the platform gateway to listen")
        self.sessions = control.with_name(control.name + ".sessions.json")
        return f"http://{self.front_end}:{port}/fsi/api/rsfComIfsService/callService"

    def settlement_check(self, url: str, interval: str = "10s") -> str:
        """A settlement check (YAML, one list item) through this lab's two lines, its
        sign-ins kept beside the platform's control file; at the same rate round the
        clock (the lab's platform is nobody's to spare)."""
        return f"""\
  - {{name: settle, kind: settlement, interval: {interval}, quiet_interval: {interval},
      timeout: 3s, url: "{url}",
      fixmedins_code: H32010200001, fixmedins_name: 实验医院, mdtrtarea_admvs: "320102",
      opter: "001", opter_name: 收费员, state_file: "{self.sessions}",
      links: [{{name: private-line, role: primary, interface: {self.primary}}},
              {{name: 4g-backup, role: backup, interface: {self.backup}}}]}}
"""

    def _listening(self, port: int) -> bool:
        out = subprocess.run(self.in_ns("ss", "-ltnH"), capture_output=True, text=True,
                             timeout=10).stdout
        return f"{self.front_end}:{port} " in out

    def stop(self, name: str) -> None:
        proc = self.servers.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def start_impairment(self, delay: float, loss: float, seed: int = 1) -> None:
        """ICMP echo for 198.18.50.0/24 answered by ops/lab/impair.py after `delay` seconds,
        dropping a `loss` share, through a TUN device in the agency namespace."""
        tun = "imp0"
        self.ns_ip("tuntap", "add", "dev", tun, "mode", "tun")
        self.ns_ip("link", "set", tun, "up")
        self.ns_ip("route", "add", IMPAIRED, "dev", tun)
        subprocess.run(self.in_ns("sysctl", "-qw", "net.ipv4.ip_forward=1"), check=True,
                       timeout=10)
        assert self.slot == 0, "the impaired targets are slot 0's"
        ip("route", "add", IMPAIRED, "via", self.primary_gateway, "dev", self.primary)
        self.servers["impair"] = subprocess.Popen(
            self.in_ns(sys.executable, str(HERE / "impair.py"), tun, str(delay), str(loss),
                       str(seed)),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True)
        time.sleep(0.3)  # it attaches to the TUN device at once; give it a moment
        if self.servers["impair"].poll() is not None:
            raise RuntimeError(f"impair.py exited: {self.servers['impair'].stderr.read()}")

    # ------------------------------------------------------------------ faults

    def cut(self, link: str) -> None:
        """The fibre is cut: the far end of the line goes dark (no carrier here)."""
        here, far = self._ends(link)
        self.ns_ip("link", "set", far, "down")
        self._wait_carrier(here, False)

    def restore(self, link: str) -> None:
        here, far = self._ends(link)
        self.ns_ip("link", "set", far, "up")
        self._wait_carrier(here, True)

    def _ends(self, link: str) -> tuple[str, str]:
        return {"primary": (self.primary, self.primary_far),
                "backup": (self.backup, self.backup_far)}[link]

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        for name in list(self.servers):
            self.stop(name)
        ip("netns", "del", self.ns, check=False)
        for here in (self.primary, self.backup):
            ip("link", "del", here, check=False)
        (LOCKS / f"{self.ns}.lock").unlink(missing_ok=True)
        self._lock.close()
        if self._slot_lock is not None:
            self._slot_lock.close()
        if not sweep_stale_labs():  # the last lab out removes the guard
            ip("route", "del", "unreachable", GUARD, check=False)


def sweep_stale_labs() -> int:
    """Remove every lab whose owner is gone: its routes to the front-end would clash with a
    new lab's. The owner holds a lock on the lab's file while it lives, so a reused pid
    cannot pass for it. Returns how many labs are still alive."""
    alive = 0
    for line in ip("netns", "list").stdout.splitlines():
        ns = line.split(" ", 1)[0]
        if not ns.startswith(PREFIX):
            continue
        if _owner_alive(ns):
            alive += 1
            continue
        for pid in ip("netns", "pids", ns, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        ip("netns", "del", ns, check=False)
        n = ns[len(PREFIX):]
        for here in (f"ip{n}p", f"ip{n}b"):
            ip("link", "del", here, check=False)
        (LOCKS / f"{ns}.lock").unlink(missing_ok=True)
    return alive


def _owner_alive(ns: str) -> bool:
    try:
        with open(LOCKS / f"{ns}.lock") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    return False


VOLUME_SIZE = "256m"  # the lab's volume: room for the storage probe's files


class FaultyVolume:
    """A FUSE volume (ops/lab/faultfs.py) over a folder in `workdir`, slow or failing on
    demand: `faults(delay=2.5, ops=["fsync"])`, `faults(error="EIO")`, `faults()` heals.
    Needs root (or fusermount) and the fuse package."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.backing, self.path = workdir / "backing", workdir / "volume"
        self.control = workdir / "faults.json"
        self.backing.mkdir(exist_ok=True)
        self.path.mkdir(exist_ok=True)
        self.control.write_text("{}")
        # A volume of its own (as root): its free space is what the lab writes, not the
        # host disk's, which other work fills and empties (StorageSpaceFillingUp)
        self.own = os.geteuid() == 0 and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={VOLUME_SIZE},mode=0755", "insmon-lab",
             str(self.backing)], capture_output=True, timeout=15).returncode == 0
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "faultfs.py"), str(self.backing), str(self.path),
             str(self.control)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: self.proc.poll() is None and os.path.ismount(self.path), 15,
                     "the FUSE volume to mount")
        except TimeoutError:
            self.close()
            raise RuntimeError(f"faultfs did not mount: {self.proc.stderr.read()[-500:]}"
                               ) from None

    def faults(self, **faults: object) -> None:
        import json

        self.control.write_text(json.dumps(faults))

    def close(self) -> None:
        self.faults()  # nothing stays stuck in a delay while unmounting
        subprocess.run(["fusermount", "-u", "-z", str(self.path)], capture_output=True,
                       timeout=15)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.own:
            subprocess.run(["umount", "-l", str(self.backing)], capture_output=True,
                           timeout=15)
