#!/usr/bin/env python3
"""A slow, lossy stretch of the private network, in user space (this kernel has no netem).

    impair.py TUN DELAY_SECONDS LOSS_RATIO SEED

Attaches to the TUN device (in the agency namespace), answers each ICMP echo request that
the kernel routes into it with an echo reply after DELAY_SECONDS, and drops a LOSS_RATIO
share of them (random with SEED, so a run is repeatable). Exits on SIGTERM, or by itself
after 10 minutes at the most.
"""

import fcntl
import heapq
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000
MAX_SECONDS = 600


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def reply_to(packet: bytes) -> bytes | None:
    """The IPv4 echo reply to an IPv4 echo request, or None for anything else."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 1:
        return None
    ihl = (packet[0] & 0x0F) * 4
    icmp = packet[ihl:]
    if icmp[0] != 8:
        return None
    body = b"\0\0\0\0" + icmp[4:]  # type 0, code 0, checksum to fill
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    header = bytearray(packet[:ihl])
    header[12:16], header[16:20] = packet[16:20], packet[12:16]  # swap addresses
    header[8] = 64  # TTL
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", checksum(bytes(header)))
    return bytes(header) + body


def main() -> None:
    name, delay, loss, seed = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    tun = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    stop = time.monotonic() + MAX_SECONDS
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    due: list[tuple[float, int, bytes]] = []  # (when, order, packet)
    order = 0
    while time.monotonic() < stop:
        wait = max(0.0, due[0][0] - time.monotonic()) if due else 0.5
        readable, _, _ = select.select([tun], [], [], wait)
        if readable:
            reply = reply_to(os.read(tun, 65535))
            if reply is not None and rng.random() >= loss:
                heapq.heappush(due, (time.monotonic() + delay, order, reply))
                order += 1
        while due and due[0][0] <= time.monotonic():
            os.write(tun, heapq.heappop(due)[2])


if __name__ == "__main__":
    main()
