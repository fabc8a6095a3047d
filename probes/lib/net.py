"""Network helpers the network probes share: addresses, TCP connect with a failure
reason, one HTTP exchange within a deadline, and the state of a local interface."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http.client
import ipaddress
import json
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from probes.base import ProbeFailure

IFF_UP = 0x1
UNREACHABLE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN)

# Why a network exchange failed: one taxonomy for tcp, http, settlement and the vpn links'
# front-end connects, because the alert rules and dashboards match these label values.
# connection_closed: the far end (or a box between) closed or reset the connection after
# it was made, before the whole answer came.
NET_REASONS = ("dns", "refused", "timeout", "unreachable", "tls", "connection_closed",
               "other")
# a plain TCP connect: no handshake, and no connection yet to be closed
CONNECT_REASONS = tuple(r for r in NET_REASONS if r not in ("tls", "connection_closed"))
CLOSED = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
          http.client.RemoteDisconnected, http.client.IncompleteRead)


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
    if isinstance(exc, CLOSED):
        return "connection_closed"
    if isinstance(exc, OSError) and exc.errno in UNREACHABLE:
        return "unreachable"
    return "other"


def failure(exc: Exception, host: str, port: int, cut: bool, timeout: str,
            legacy: str = "") -> tuple[str, str]:
    """A failed exchange's reason (NET_REASONS) and its words; `cut`: the deadline ended
    it (a trickled answer), `timeout` the words for that; `legacy` what accepts an old
    certificate or protocol, where the check has it."""
    why = "timeout" if cut else reason(exc)
    if why == "tls":
        return why, f"TLS with {host}:{port} failed: {tls_words(exc, legacy)}"
    if why == "connection_closed":
        return why, (f"{host}:{port} closed the connection before the whole answer "
                     f"({type(exc).__name__})")
    return why, {
        "dns": f"cannot resolve {host}: {getattr(exc, 'strerror', exc)}",
        "refused": f"{host}:{port} refused the connection",
        "timeout": timeout,
    }.get(why, f"cannot reach {host}:{port}: {getattr(exc, 'strerror', None) or exc}")


# OpenSSL's X509_V_ERR_* codes, named as an engineer needs them.
_EXPIRED, _NOT_YET_VALID = 10, 9
_UNKNOWN_ISSUER = (2, 18, 19, 20, 21)
_NAME_MISMATCH = (62, 63, 64)  # host name, e-mail, IP address
_WEAK_KEY, _WEAK_DIGEST = (66, 67), 68  # EE_KEY_TOO_SMALL, CA_KEY_TOO_SMALL, CA_MD_TOO_WEAK
_OLD_HANDSHAKE = ("UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE", "NO_SHARED_CIPHER",
                  "DH_KEY_TOO_SMALL", "SSLV3_ALERT_HANDSHAKE_FAILURE", "WRONG_VERSION_NUMBER",
                  "TLSV1_ALERT_PROTOCOL_VERSION", "EE_KEY_TOO_SMALL", "CA_MD_TOO_WEAK",
                  "CA_KEY_TOO_SMALL")


class NameMismatch(ssl.SSLError):
    """The certificate does not name the gateway (checked by legacy_name_check)."""


def tls_words(exc: BaseException, legacy: str = "") -> str:
    """Why a TLS handshake failed, named: expired, not yet valid, unknown issuer, name
    mismatch, a weak key or digest, an old protocol, a refused client certificate."""
    if isinstance(exc, NameMismatch):
        return f"name mismatch: {exc.args[0]}"
    code = getattr(exc, "verify_code", None)
    said = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc)
    old = f"; {legacy}" if legacy else ""
    if code == _EXPIRED:
        return f"the server's certificate has expired ({said})"
    if code == _NOT_YET_VALID:
        return f"the server's certificate is not valid yet: is this host's clock right? ({said})"
    if code in _UNKNOWN_ISSUER:
        return (f"unknown issuer: the server's certificate is not signed by a CA this check "
                f"trusts (its ca_file, else the system's) ({said})")
    if code in _NAME_MISMATCH:
        return f"name mismatch: {said}"
    if code in _WEAK_KEY:
        return f"weak key: the certificate's key is too small for this host's OpenSSL " \
               f"({said}){old}"
    if code == _WEAK_DIGEST:
        return f"weak digest: the certificate is signed with SHA-1 or MD5 ({said}){old}"
    reason_code = getattr(exc, "reason", None) or ""
    if reason_code in _OLD_HANDSHAKE:
        return f"an old protocol, cipher or key this host's OpenSSL refuses ({reason_code})" \
               f"{old}"
    if "CERTIFICATE_REQUIRED" in reason_code or "BAD_CERTIFICATE" in reason_code:
        return f"the server refused the client certificate ({reason_code})"
    return str(said)


def legacy_name_check(cert: dict, name: str) -> None:
    """The name check of a legacy gateway's certificate: its subjectAltName entries, or,
    on an old certificate without any, its CN (also for an IP address, which OpenSSL
    never takes from a CN). NameMismatch when none is `name`."""
    names = [v for k, v in cert.get("subjectAltName", ()) if k in ("DNS", "IP Address")]
    if not names:
        names = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
    if not any(_name_matches(pattern, name) for pattern in names):
        raise NameMismatch(f"the certificate names {', '.join(names) or 'nothing'}, "
                           f"not {name}")


def _name_matches(pattern: str, name: str) -> bool:
    try:
        return ipaddress.ip_address(pattern) == ipaddress.ip_address(name)
    except ValueError:
        pass
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*.") and "." in name:  # one left-most label, as RFC 6125 says
        return name.split(".", 1)[1] == pattern[2:]
    return pattern == name


def redacted(url: str) -> str:
    """The URL as it may be shown: a password in it is starred."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


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


def resolve(host: str, port: int, deadline: float) -> tuple:
    """getaddrinfo's first TCP answer for host:port by `deadline`. The resolver keeps its
    own time (resolv.conf: 5 s a try, per server, by default) and cannot be interrupted,
    so it asks on a thread of its own and a silent name server is a "dns" failure at the
    check's deadline (the thread ends at the resolver's time, holding nothing)."""
    answer: list = []

    def ask() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0])
        except OSError as exc:
            answer.append(exc)

    thread = threading.Thread(target=ask, name=f"resolve {host}", daemon=True)
    thread.start()
    thread.join(left(deadline))
    if not answer:
        raise socket.gaierror(socket.EAI_AGAIN,
                              "no answer from the name server within the deadline")
    if isinstance(answer[0], OSError):
        raise answer[0]
    return answer[0]


def connect_within(host: str, port: int, source: str | None, interface: str | None,
                   deadline: float) -> socket.socket:
    """A blocking TCP connection from `source` and/or out of `interface`, by `deadline`
    (for the checks that speak HTTP on a thread of their own)."""
    family, kind, proto, _, address = resolve(host, port, deadline)
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
            why = reason(exc)
            raise ConnectFailure(why if why in CONNECT_REASONS else "other",
                                 f"cannot connect to {host}:{port}: "
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


@dataclass
class Exchange:
    """One HTTP request and its answer, as far as it got: the phases it passed (connect:
    DNS and TCP; tls: the handshake; processing: the request sent until the answer's
    headers; transfer: the body), the server's certificate (DER), and the error that
    ended it. `cut`: the deadline shut the socket; `short`: the body ended before its
    Content-Length, (bytes got, bytes promised)."""
    phases: dict[str, float] = field(default_factory=dict)
    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    certificate: bytes | None = None
    error: Exception | None = None
    cut: bool = False
    short: tuple[int, int] | None = None


def exchange(url: str, method: str, headers: Mapping[str, str], deadline: float, *,
             body: bytes | None = None, limit: int = 1 << 20,
             tls: Callable[[], ssl.SSLContext] | None = None, server_name: str | None = None,
             check_peer: Callable[[ssl.SSLSocket], None] | None = None,
             source: str | None = None, interface: str | None = None) -> Exchange:
    """One request to `url` answered by `deadline` (time.monotonic()), through the
    link's `interface` or from its `source`, on a thread of the caller's: up to `limit`
    bytes of the body are read. HTTPS with the context `tls()` makes (made here, so a CA
    file that cannot be read is this exchange's error; the default context unless
    given), its certificate checked for `server_name` (the URL's host unless given) and
    by `check_peer`. Never raises for what the network, the server or the files do: an
    OSError or HTTPException is the result's error (TimeoutError when the deadline cut
    it)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    done = Exchange()
    sock: socket.socket | None = None
    # The deadline covers the whole answer: a server trickling a byte a second resets
    # every read's timeout, so at the deadline the socket is shut under the reader.
    cutter: Cutter | None = None
    try:
        t = time.perf_counter()
        sock = connect_within(host, port, source, interface, deadline)
        cutter = Cutter(sock, deadline)
        done.phases["connect"] = time.perf_counter() - t
        if parts.scheme == "https":
            t = time.perf_counter()
            context = tls() if tls else ssl.create_default_context()
            sock = cutter.socket = context.wrap_socket(
                sock, server_hostname=server_name or host)
            done.phases["tls"] = time.perf_counter() - t
            done.certificate = sock.getpeercert(binary_form=True)
            if check_peer is not None:
                check_peer(sock)
        sock.settimeout(left(deadline))
        conn = http.client.HTTPConnection(host, port, timeout=left(deadline))
        conn.sock = sock
        t = time.perf_counter()
        conn.request(method, target, body=body, headers=dict(headers))
        response = conn.getresponse()
        done.phases["processing"] = time.perf_counter() - t
        done.status = response.status
        done.headers = tuple((k, header_text(v)) for k, v in response.getheaders())
        t = time.perf_counter()
        done.body = _body(response, limit, done)
        done.phases["transfer"] = time.perf_counter() - t
        if cutter.cut.is_set():
            raise TimeoutError
    except (OSError, http.client.HTTPException) as exc:
        done.error = exc
    finally:
        if cutter is not None:
            cutter.cancel()
            done.cut = cutter.cut.is_set()
        if sock is not None:
            sock.close()
    return done


def header_text(value: str) -> str:
    """A header's value as its server wrote it: HTTP hands over its bytes as Latin-1, and
    a gateway that says why in Chinese (or quotes a Chinese query) writes UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:  # not UTF-8 (or already text): as it came
        return value


def _body(response: http.client.HTTPResponse, limit: int, done: Exchange) -> bytes:
    """Up to `limit` bytes of the body; IncompleteRead (and `done.short` said) when the
    answer ended short of the Content-Length it promised."""
    chunks, size = [], 0
    while size < limit:
        chunk = response.read1(min(1 << 16, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size < limit and response.length:  # stopped early, with bytes still promised
        done.short = (size, size + response.length)
        raise http.client.IncompleteRead(b"".join(chunks), response.length)
    return b"".join(chunks)


def local_address(host: str, port: int, source: str | None, interface: str | None) -> str:
    """The address this host sends from to reach host:port through a link: the kernel's
    choice for a socket bound as the link's are (a UDP connect sends nothing)."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        bind(sock, source, interface)
        sock.connect(address)
        return sock.getsockname()[0]


def route_device(host: str, source: str) -> str | None:
    """The interface the kernel sends from `source` to `host` through (iproute2's
    `ip route get`, which follows policy routing as the packets do), or None."""
    try:
        target = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)[0][4][0]
        done = subprocess.run(["ip", "-j", "route", "get", target, "from", source],
                              capture_output=True, text=True, timeout=5, check=True)
        return json.loads(done.stdout)[0].get("dev")
    except (OSError, ValueError, IndexError, AttributeError, subprocess.SubprocessError):
        return None


def mac_of(device: str | None, sys_class_net: Path = Path("/sys/class/net")) -> str | None:
    """The interface's MAC address, or None where it has none (loopback, a tunnel)."""
    if not device:
        return None
    try:
        mac = (sys_class_net / device / "address").read_text().strip().lower()
    except OSError:
        return None
    if not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", mac) or mac == "00:00:00:00:00:00":
        return None
    return mac


def first_mac(sys_class_net: Path = Path("/sys/class/net")) -> str | None:
    """The MAC of this host's first interface (by interface index) that is up with a
    carrier and has one: a tunnel's traffic leaves through such a card (never an ifb or
    an unplugged card numbered before it); else of the first that has one."""
    def index(folder: Path) -> int:
        try:
            return int((folder / "ifindex").read_text())
        except (OSError, ValueError):
            return 1 << 30
    try:
        folders = sorted(sys_class_net.iterdir(), key=index)
    except OSError:
        return None
    macs = [(interface_state(f.name, sys_class_net) == "up", mac) for f in folders
            if (mac := mac_of(f.name, sys_class_net))]
    return next((mac for up, mac in macs if up), None) or next((mac for _, mac in macs), None)
