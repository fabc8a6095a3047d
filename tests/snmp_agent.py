"""A real snmpd (Debian's net-snmp) on a loopback port, serving a table of OIDs that the
test sets and changes through an snmpd `pass` program (tests/snmp/pass_table.py)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

from ops.stack import wait_for

PASS_PROGRAM = Path(__file__).parent / "snmp" / "pass_table.py"
COMMUNITY = "insmon-ro"
V3_USER, V3_AUTH, V3_PRIV = "insmon-v3", "auth-pass-0123", "priv-pass-4567"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SnmpAgent:
    """snmpd serving its own MIBs (IF-MIB of this host's interfaces, sysUpTime, ...) and,
    with `subtree`, a table of the test's under that subtree."""

    def __init__(self, workdir: Path, subtree: str | None = None,
                 table: dict[str, tuple[str, object]] | None = None):
        self.dir = workdir
        self.table_file = workdir / "table.json"
        self.set(table or {})
        self.port = free_udp_port()
        self.address = f"127.0.0.1:{self.port}"
        conf = workdir / "snmpd.conf"
        conf.write_text(
            f"agentAddress udp:127.0.0.1:{self.port}\n"
            f"rocommunity {COMMUNITY} 127.0.0.1\n"
            f"createUser {V3_USER} SHA {V3_AUTH} AES {V3_PRIV}\n"
            f"rouser {V3_USER} priv\n"
            + (f"pass .{subtree.lstrip('.')} {sys.executable} {PASS_PROGRAM} "
               f"{self.table_file}\n" if subtree else ""))
        self.log = workdir / "snmpd.log"
        self.proc = subprocess.Popen(
            ["snmpd", "-f", "-Lf", str(self.log), "-C", "-c", str(conf),
             f"--persistentDir={workdir / 'persist'}", "-p", str(workdir / "snmpd.pid")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._ready, 15, "snmpd to start")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"snmpd exited: {self.log.read_text()[-500:]}")
        return self.log.exists() and "NET-SNMP version" in self.log.read_text()

    def set(self, table: dict[str, tuple[str, object]]) -> None:
        """What the agent serves from now on: OID -> (type, value)."""
        tmp = self.table_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(table))
        tmp.replace(self.table_file)  # atomic: a get never sees half a table

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
