"""probes/lib/net.py's own promises, where no one probe's tests can show them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.root  # a mount namespace for the resolver's config

# A resolver that asks a name server which never answers, for 30 s: the test's own UDP
# socket on loopback, named by /etc/resolv.conf in a mount namespace of the test's child.
RESOLV_CONF = "nameserver {address}\noptions timeout:30 attempts:1\n"
CHILD = textwrap.dedent("""
    import json, subprocess, sys, time
    subprocess.run(["mount", "--bind", sys.argv[1], "/etc/resolv.conf"], check=True)
    from probes.lib import net
    started = time.monotonic()
    done = net.exchange("http://settlement-gateway.province.test:8080/ping", "GET", {},
                        started + 2.0)
    reason, words = net.failure(done.error, "settlement-gateway.province.test", 8080,
                                done.cut, "no answer within 2s")
    print(json.dumps({"seconds": time.monotonic() - started, "reason": reason,
                      "words": words}))
""")


def test_a_name_server_that_never_answers_is_a_dns_failure_by_the_deadline(
        tmp_path: Path) -> None:
    """A province's gateway named by DNS whose name server has gone silent: the exchange
    ends at its 2 s deadline with reason "dns", not after the resolver's own 30 s (a
    check's thread held past its deadline is a stalled probe)."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.53", 53))
    try:
        resolv = tmp_path / "resolv.conf"
        resolv.write_text(RESOLV_CONF.format(address="127.0.0.53"))
        run = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable,
                              "-c", CHILD, str(resolv)], cwd=ROOT, capture_output=True,
                             text=True, timeout=90)
        assert run.returncode == 0, run.stderr
        found = json.loads(run.stdout)
        silent.settimeout(0)
        asked, _ = silent.recvfrom(4096)  # it did ask our silent server, and only it
    finally:
        silent.close()
    assert b"settlement-gateway" in asked
    assert found["reason"] == "dns", found
    assert found["seconds"] < 5, found
    assert found["words"] == ("cannot resolve settlement-gateway.province.test: no answer "
                              "from the name server within the deadline"), found
