"""The tcp probe: connects and refusals on loopback (no root), and what a cut or a
black-holed line looks like through the namespace lab (root)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator

import pytest

from ops.lab import FRONT_END, Lab
from probes import tcp
from tests.conftest import free_port, render, value


@pytest.fixture
def listener() -> Iterator[str]:
    """A loopback port that accepts connections (the kernel completes the handshake)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


async def test_tcp_connect_and_refusal(listener: str) -> None:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    config = tcp.Config(name="kiosks", kind="tcp", interval=5, timeout=2,
                        targets=[listener, closed])
    status, series = await render(config, "insmon_tcp_")
    assert status == f"# failed: {closed} refused the connection\n"
    assert value(series, f'insmon_tcp_up{{check="kiosks",target="{listener}"}}') == 1
    assert value(series, f'insmon_tcp_up{{check="kiosks",target="{closed}"}}') == 0
    assert 0 < value(series, f'insmon_tcp_connect_seconds{{check="kiosks",'
                             f'target="{listener}"}}') < 1
    assert value(series, f'insmon_tcp_failures_total{{check="kiosks",reason="refused",'
                         f'target="{closed}"}}') == 1
    for reason in ("dns", "timeout", "unreachable", "other"):  # every reason from the start
        assert value(series, f'insmon_tcp_failures_total{{check="kiosks",reason="{reason}",'
                             f'target="{closed}"}}') == 0


async def test_tcp_all_connected_is_ok(listener: str) -> None:
    status, _ = await render(tcp.Config(name="kiosks", kind="tcp", targets=[listener]),
                             "insmon_tcp_")
    assert status.startswith("# ok: 1 connected, slowest ")


@pytest.mark.root
async def test_tcp_unreachable_when_every_line_is_cut(lab: Lab) -> None:
    lab.cut("primary")
    lab.cut("backup")
    config = tcp.Config(name="front-end", kind="tcp", interval=5, timeout=1,
                        targets=[f"{FRONT_END}:8080"])
    status, series = await render(config, "insmon_tcp_")
    assert status == ("# failed: cannot connect to 198.18.100.1:8080: No route to host\n")
    assert value(series, f'insmon_tcp_failures_total{{check="front-end",reason="unreachable",'
                         f'target="{FRONT_END}:8080"}}') == 1


@pytest.mark.root
async def test_tcp_timeout_when_the_far_side_drops_everything(lab: Lab) -> None:
    lab.ns_ip("route", "add", "blackhole", "198.18.60.0/24")
    subprocess.run(["ip", "route", "add", "198.18.60.0/24", "via", "198.18.1.2", "dev",
                    lab.primary], check=True)
    config = tcp.Config(name="front-end", kind="tcp", interval=5, timeout=1,
                        targets=["198.18.60.1:8080"])
    status, series = await render(config, "insmon_tcp_")
    assert status == "# failed: no answer from 198.18.60.1:8080 within 0.9s\n"
    assert value(series, 'insmon_tcp_failures_total{check="front-end",reason="timeout",'
                         'target="198.18.60.1:8080"}') == 1
