"""ICMP echo for many targets at once: one socket per address family, not one per target.

Why not icmplib (its source, and measured on a 2-core machine with 5,000 loopback
targets: 0.5-1.1 s and up to half of the live targets reported dead at high concurrency,
where a single-socket pinger takes about 60 ms): it opens a raw socket per in-flight
target, every one of which receives a copy of every reply, so its cost grows with
concurrency; its RTTs include event-loop delay; it matches replies on (id, sequence)
only, so two monitors can take each other's replies. bench/icmp_fanout.py measures this
pinger beside fping. Here:
  - one socket per family; a reply is matched on (id, sequence, source address);
  - RTT = the kernel's receive timestamp (SO_TIMESTAMPNS) - the time just before send,
    so a busy event loop does not inflate it;
  - privileged (raw, CAP_NET_RAW) or unprivileged (ICMP datagram sockets, allowed by
    net.ipv4.ping_group_range) sockets, with a clear error when neither is allowed;
  - source address and interface binding, TTL, payload size, pacing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from probes.base import ProbeFailure

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SOL_RAW, ICMP_FILTER, ICMP6_FILTER = 255, 1, 1  # linux/icmp.h, linux/icmpv6.h
ECHO_REQUEST = {socket.AF_INET: 8, socket.AF_INET6: 128}
ECHO_REPLY = {socket.AF_INET: 0, socket.AF_INET6: 129}
PROTO = {socket.AF_INET: socket.IPPROTO_ICMP, socket.AF_INET6: socket.IPPROTO_ICMPV6}
MAX_PACKETS = 65536  # sequence numbers are 16 bits: one run sends at most this many
SEND_BATCH = 64  # sends between yields to the event loop, so replies are read meanwhile


class PingError(ProbeFailure):
    """ICMP cannot be used here at all (no permission, bad source or interface)."""


@dataclass
class Echoes:
    """What one target answered in one run."""

    sent: int = 0
    rtts: list[float] = field(default_factory=list)  # seconds, one per reply

    @property
    def received(self) -> int:
        return len(self.rtts)


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def _fold(total: int) -> int:
    """The Internet checksum of 16-bit words that sum to `total`."""
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def family_of(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def canonical(address: str) -> str:
    """The address as the kernel reports a reply's source (inet_pton is C: thousands of
    targets per run make ipaddress's parsing show)."""
    family = family_of(address)
    return socket.inet_ntop(family, socket.inet_pton(family, address.split("%")[0]))


def open_socket(family: socket.AddressFamily, source: str | None = None,
                interface: str | None = None, ttl: int | None = None
                ) -> tuple[socket.socket, bool]:
    """An ICMP socket, raw if allowed, else datagram; (socket, raw?)."""
    proto = PROTO[family]
    try:
        sock, raw = socket.socket(family, socket.SOCK_RAW, proto), True
    except PermissionError:
        try:
            sock, raw = socket.socket(family, socket.SOCK_DGRAM, proto), False
        except PermissionError:
            low, high = _ping_group_range()
            raise PingError(
                "ICMP is not allowed for this process: it needs CAP_NET_RAW (run as root, "
                "or `setcap cap_net_raw+ep` on the Python binary, or AmbientCapabilities="
                "CAP_NET_RAW in systemd), or net.ipv4.ping_group_range covering its group "
                f"{os.getgid()} (now {low} {high})") from None
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if raw:
            _only_echo_replies(sock, family)
        with contextlib.suppress(OSError):  # a larger buffer for bursts of replies
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        if ttl is not None:
            if family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        if interface:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                                interface.encode() + b"\0")
            except OSError as exc:
                raise PingError(f"cannot bind to interface {interface}: "
                                f"{exc.strerror or exc}") from None
        if source:
            try:
                sock.bind((source, 0))
            except OSError as exc:
                raise PingError(f"cannot use source address {source}: "
                                f"{exc.strerror or exc}") from None
    except BaseException:
        sock.close()
        raise
    return sock, raw


def _only_echo_replies(sock: socket.socket, family: socket.AddressFamily) -> None:
    """Have the kernel pass this raw socket echo replies only (Linux ICMP_FILTER and
    ICMP6_FILTER): on a busy host, or on loopback where our own requests come back, it
    saves reading and dropping every other ICMP packet in Python."""
    with contextlib.suppress(OSError):
        if family == socket.AF_INET:  # a set bit blocks that ICMP type
            sock.setsockopt(SOL_RAW, ICMP_FILTER,
                            struct.pack("I", ~(1 << ECHO_REPLY[family]) & 0xFFFFFFFF))
        else:
            words = [0xFFFFFFFF] * 8
            words[ECHO_REPLY[family] >> 5] &= ~(1 << (ECHO_REPLY[family] & 31)) & 0xFFFFFFFF
            sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("8I", *words))


def _ping_group_range() -> tuple[str, str]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ping_group_range").read_text().split()
        return low, high
    except (OSError, ValueError):
        return "?", "?"


class _Run:
    """One ping run on one socket: sends, matches replies, collects RTTs."""

    def __init__(self, sock: socket.socket, raw: bool, family: socket.AddressFamily,
                 targets: list[str], payload: bytes) -> None:
        self.sock, self.raw, self.family = sock, raw, family
        self.targets = targets
        self.canonical = [canonical(t) for t in targets]
        self.payload = payload
        # A datagram socket's id is its port, set by the kernel; a raw one's is ours.
        self.ident = (os.getpid() ^ id(self)) & 0xFFFF if raw else None
        # The checksum's sum over the parts that do not change between packets.
        self.fixed_sum = _sum16(struct.pack("!BBH", ECHO_REQUEST[family], 0, self.ident or 0)
                                + payload)
        self.pending: dict[int, tuple[int, int]] = {}  # seq -> (target index, send ns)
        self.echoes = [Echoes() for _ in targets]
        self.done = asyncio.Event()

    def packet(self, seq: int) -> bytes:
        # ICMPv6 checksums are the kernel's; ICMP ones ours, from the precomputed sum.
        total = 0 if self.family == socket.AF_INET6 else _fold(self.fixed_sum + seq)
        return struct.pack("!BBHHH", ECHO_REQUEST[self.family], 0, total, self.ident or 0,
                           seq) + self.payload

    def send(self, seq: int, index: int) -> bool:
        """Send one echo request; False when the socket's buffer is full (try again)."""
        self.pending[seq] = (index, time.time_ns())
        try:
            self.sock.sendto(self.packet(seq), (self.targets[index], 0))
        except BlockingIOError:
            del self.pending[seq]
            return False
        except OSError:  # unreachable at once (no route, interface down): a loss
            del self.pending[seq]
        self.echoes[index].sent += 1
        return True

    def readable(self) -> None:
        while True:
            try:
                data, ancillary, _flags, address = self.sock.recvmsg(
                    65535, socket.CMSG_SPACE(16))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            received_ns = _kernel_timestamp(ancillary) or time.time_ns()
            self._match(data, address[0], received_ns)

    def _match(self, data: bytes, source: str, received_ns: int) -> None:
        if self.raw and self.family == socket.AF_INET:
            data = data[(data[0] & 0x0F) * 4:]  # raw IPv4 sockets include the IP header
        if len(data) < 8:
            return
        kind, _code, _sum, ident, seq = struct.unpack("!BBHHH", data[:8])
        if kind != ECHO_REPLY[self.family] or (self.ident is not None and ident != self.ident):
            return
        entry = self.pending.get(seq)
        if entry is None:
            return
        index, sent_ns = entry
        if source.split("%")[0] != self.canonical[index]:
            return  # a reply with our sequence from someone else
        del self.pending[seq]
        self.echoes[index].rtts.append(max(0, received_ns - sent_ns) / 1e9)
        if not self.pending and self.sending_done:
            self.done.set()

    sending_done = False


def _kernel_timestamp(ancillary: list) -> int | None:
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            seconds, nanos = struct.unpack("qq", value[:16])
            return seconds * 1_000_000_000 + nanos
    return None


async def ping(targets: list[str], count: int = 3, interval: float = 0.2,
               timeout: float = 1.0, payload_size: int = 56, source: str | None = None,
               interface: str | None = None, ttl: int | None = None) -> dict[str, Echoes]:
    """Send `count` echo requests to each target (a round to all targets every
    `interval`), wait up to `timeout` after the last send, and return what came back."""
    if len(targets) * count > MAX_PACKETS:
        raise PingError(f"{len(targets)} targets x {count} packets is more than "
                        f"{MAX_PACKETS} per run")
    payload = bytes(i & 0xFF for i in range(payload_size))
    results: dict[str, Echoes] = {}
    families: dict[socket.AddressFamily, list[str]] = {}
    for target in targets:
        families.setdefault(family_of(target), []).append(target)
    runs = await asyncio.gather(*(
        _ping_family(family, group, count, interval, timeout, payload, source, interface, ttl)
        for family, group in families.items()))
    for run in runs:
        results.update(zip(run.targets, run.echoes, strict=True))
    return {target: results[target] for target in targets}


async def _ping_family(family: socket.AddressFamily, targets: list[str], count: int,
                       interval: float, timeout: float, payload: bytes, source: str | None,
                       interface: str | None, ttl: int | None) -> _Run:
    src = source if source and family_of(source) == family else None
    sock, raw = open_socket(family, src, interface, ttl)
    loop = asyncio.get_running_loop()
    run = _Run(sock, raw, family, targets, payload)
    loop.add_reader(sock.fileno(), run.readable)
    try:
        seq = 0
        for round_number in range(count):
            started = time.monotonic()
            for index in range(len(targets)):
                for _ in range(100):  # a full send buffer: wait for room, a bounded while
                    if run.send(seq, index):
                        break
                    await asyncio.sleep(0.001)
                seq += 1
                if seq % SEND_BATCH == 0:
                    await asyncio.sleep(0)  # let replies be read: timestamps are kernel's
            if round_number < count - 1:
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
        run.sending_done = True
        if not run.pending:
            run.done.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.done.wait(), timeout)
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()
    return run
