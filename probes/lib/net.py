"""Network helpers the network probes share: addresses, TCP connect with a failure
reason, and the state of a local interface."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import socket
import ssl
import threading
import time
from pathlib import Path

from probes.base import ProbeFailure

IFF_UP = 0x1
UNREACHABLE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN)

# Why a network exchange failed: one taxonomy for tcp, http and the vpn links' front-end
# connects, because the alert rules and dashboards match these label values.
NET_REASONS = ("dns", "refused", "timeout", "unreachable", "tls", "other")
CONNECT_REASONS = tuple(r for r in NET_REASONS if r != "tls")  # a plain TCP connect


def reason(exc: BaseException) -> str:
    """The NET_REASONS value for an exception of a connect, a handshake or a request."""
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, OSError) and exc.errno in UNREACHABLE:
        return "unreachable"
    return "other"


def failure(exc: OSError, host: str, port: int, cut: bool, timeout: str) -> tuple[str, str]:
    """A failed exchange's reason (NET_REASONS) and its words; `cut`: the deadline ended
    it (a trickled answer), `timeout` the words for that."""
    why = "timeout" if cut else reason(exc)
    return why, {
        "dns": f"cannot resolve {host}: {exc.strerror}",
        "refused": f"{host}:{port} refused the connection",
        "timeout": timeout,
        "tls": f"TLS with {host}:{port} failed: {getattr(exc, 'reason', None) or exc}",
    }.get(why, f"cannot reach {host}:{port}: {exc.strerror or exc}")


def host_port(address: str, default_port: int | None = None) -> tuple[str, int]:
    """host:port, [v6]:port, or host alone when there is a default port."""
    match = re.fullmatch(r"\[([0-9a-fA-F:.%\w]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", address)
    if not match:
        raise ValueError(f"expected host:port or [v6]:port, got {address!r}")
    host = match.group(1) or match.group(3)
    port_text = match.group(2) or match.group(4)
    if port_text is None and default_port is None:
        raise ValueError(f"{address!r} has no port: write host:port")
    port = int(port_text) if port_text else default_port
    assert port is not None
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {address!r}")
    return host, port


def bind(sock: socket.socket, source: str | None, interface: str | None) -> None:
    """Send from this address and/or out of this interface (SO_BINDTODEVICE): how a check
    forces its traffic through a given tunnel."""
    if interface:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode() + b"\0")
    if source:
        sock.bind((source, 0))


def left(deadline: float) -> float:
    """Seconds until `deadline` (time.monotonic()); TimeoutError once it has passed."""
    seconds = deadline - time.monotonic()
    if seconds <= 0:
        raise TimeoutError
    return seconds


def connect_within(host: str, port: int, source: str | None, interface: str | None,
                   deadline: float) -> socket.socket:
    """A blocking TCP connection from `source` and/or out of `interface`, by `deadline`
    (for the checks that speak HTTP on a thread of their own)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port,
                                                         type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.settimeout(left(deadline))
        bind(sock, source, interface)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


class ConnectFailure(ProbeFailure):
    """A failed connect; `reason` is one of CONNECT_REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def connect(host: str, port: int, timeout: float, source: str | None = None,
                  interface: str | None = None) -> tuple[socket.socket, float]:
    """A connected non-blocking TCP socket (the caller closes it) and the seconds the
    DNS lookup and connect took; ConnectFailure with a reason if it cannot be had."""
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    sock = None
    try:
        async with asyncio.timeout(timeout):
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise ConnectFailure("dns", f"cannot resolve {host}: {exc.strerror}") from None
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            bind(sock, source, interface)
            await loop.sock_connect(sock, address)
    except BaseException as exc:
        if sock is not None:
            sock.close()
        if isinstance(exc, TimeoutError):
            raise ConnectFailure("timeout", f"no answer from {host}:{port} within "
                                            f"{timeout:g}s") from None
        if isinstance(exc, ConnectionRefusedError):
            raise ConnectFailure("refused", f"{host}:{port} refused the connection") from None
        if isinstance(exc, OSError) and not isinstance(exc, ConnectFailure):
            raise ConnectFailure(reason(exc), f"cannot connect to {host}:{port}: "
                                              f"{exc.strerror or exc}") from None
        raise
    return sock, time.perf_counter() - started


def interface_state(name: str, sys_class_net: Path = Path("/sys/class/net")) -> str:
    """'missing', 'down' (administratively), 'no-carrier' (up, but the link is not: the
    far end or the line is gone), or 'up'."""
    folder = sys_class_net / name
    try:
        flags = int((folder / "flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return "missing"
    if not flags & IFF_UP:
        return "down"
    try:
        carrier = (folder / "carrier").read_text().strip()
    except OSError:  # the kernel refuses to read it while the device is down
        return "down"
    return "up" if carrier == "1" else "no-carrier"


class Cutter:
    """Shuts `socket` at `deadline` under whoever reads it: a peer trickling a byte at a
    time meets every read's timeout, so only this ends a whole answer on time. Set
    `socket` to the TLS socket once it wraps the plain one; `cut` says it happened."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.socket = sock
        self.cut = threading.Event()
        self._timer = threading.Timer(left(deadline), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.cut.set()
        with contextlib.suppress(OSError):  # closed already
            self.socket.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()
