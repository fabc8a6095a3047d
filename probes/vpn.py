"""The insurance private network (医保专网) as the emergency plans see it: links.

Each link is a tunnel interface to the insurance agency: role `primary` (the private
line's VPN) or `backup` (e.g. the temporary 4G wireless VPN). Per link, every run:
  - the interface: present, administratively up, running (carrier);
  - WireGuard: the age of the latest handshake (when `wg` is installed and it is one);
  - the far-end gateway answers ping *through that interface* (SO_BINDTODEVICE);
  - the settlement front-end accepts a TCP connect through that interface.
A link is up (carries traffic) when all of those hold. The site has a settlement path
when at least one link is up; the active role is the first up of primary, backup. So
"primary down, backup carrying" (grade II) and "no path at all" (grade I) differ.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import time
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from probes.base import (
    CHECK_NAME,
    CheckBase,
    Kind,
    MetricSpec,
    ProbeFailure,
    ProbeResult,
    Sample,
    one_hot,
    run_command,
)
from probes.lib import pinger
from probes.lib.net import CONNECT_REASONS, ConnectFailure, connect, host_port, interface_state
from vocabulary import Duration, format_duration

ROLES = ("primary", "backup")


class Link(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=CHECK_NAME)  # the `link` label
    role: Literal["primary", "backup"]
    interface: str  # the tunnel interface (wg0, tun0, ipsec0, ...)
    gateway: str  # the agency-side tunnel address, pinged through the interface
    standby: bool = False  # a backup normally down, opened when needed: no failure

    @field_validator("gateway")
    @classmethod
    def _address(cls, value: str) -> str:
        ipaddress.ip_address(value)
        return value


class Config(CheckBase):
    kind: Literal["vpn"]
    links: list[Link] = Field(min_length=1)
    front_end: str | None = None  # host:port of the settlement front-end
    ping_count: int = Field(default=3, ge=1, le=20)
    packet_interval: Duration = 0.2
    packet_timeout: Duration = 1.0

    @field_validator("front_end")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            host_port(value)
        return value

    @model_validator(mode="after")
    def _sane(self) -> Config:
        names = [link.name for link in self.links]
        if len(set(names)) != len(names):
            raise ValueError("link names must be unique")
        needed = (self.ping_count - 1) * self.packet_interval + self.packet_timeout
        if needed + self.packet_timeout >= self.timeout:
            raise ValueError(
                f"(ping_count - 1) x packet_interval + 2 x packet_timeout "
                f"({format_duration(needed + self.packet_timeout)}) must be shorter than "
                f"timeout ({format_duration(self.timeout)})")
        return self


LINK = ("link", "role")
METRICS = (
    MetricSpec("insmon_vpn_link_up", "gauge",
               "1 if the link carries traffic: interface up and running, gateway answering "
               "through it, and the front-end reachable through it (when configured).",
               LINK),
    MetricSpec("insmon_vpn_interface_up", "gauge",
               "1 if the tunnel interface is present, up and running.", LINK),
    MetricSpec("insmon_vpn_gateway_loss_ratio", "gauge",
               "Share of pings to the far-end gateway through the link that got no reply.",
               LINK, "ratio"),
    MetricSpec("insmon_vpn_gateway_rtt_seconds", "gauge",
               "Mean round trip to the far-end gateway through the link.", LINK,
               "seconds"),
    MetricSpec("insmon_vpn_front_end_up", "gauge",
               "1 if the settlement front-end accepted a TCP connect through the link.",
               LINK),
    MetricSpec("insmon_vpn_front_end_failures_total", "counter",
               "Failed connects to the front-end through the link, by reason: dns, refused, "
               "timeout, unreachable, other (the tcp probe's reasons).", (*LINK, "reason")),
    MetricSpec("insmon_vpn_handshake_age_seconds", "gauge",
               "Time since the WireGuard tunnel's latest handshake (WireGuard links).",
               LINK, "seconds"),
    MetricSpec("insmon_settlement_path_up", "gauge",
               "1 if at least one link carries traffic to the insurance agency; 0 means no "
               "settlement path at all."),
    MetricSpec("insmon_settlement_active_role", "gauge",
               "1 for the role carrying traffic now (primary before backup), or none.",
               ("role",)),
)


class LinkState(NamedTuple):
    link: Link
    interface: str  # interface_state()
    received: int
    sent: int
    rtt: float | None
    front_end: bool | None  # None: not configured, or not tried (link down before)
    front_end_failure: str | None  # its CONNECT_REASONS value when it failed
    handshake_age: float | None
    why: str  # empty when up

    @property
    def up(self) -> bool:
        return not self.why


class Probe:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    async def run(self) -> ProbeResult:
        # the front-end's connect may take what is left of the run (a congested 4G
        # backup, a busy host), not just one ping's timeout
        deadline = time.monotonic() + self.cfg.timeout * 0.9
        states = await asyncio.gather(*(self._link(link, deadline) for link in self.cfg.links))
        samples: list[Sample] = []
        for s in states:
            ids = {"link": s.link.name, "role": s.link.role}
            samples += [Sample("insmon_vpn_link_up", float(s.up), ids),
                        Sample("insmon_vpn_interface_up", float(s.interface == "up"), ids)]
            if s.sent:
                samples.append(Sample("insmon_vpn_gateway_loss_ratio",
                                      1 - s.received / s.sent, ids))
            if s.rtt is not None:
                samples.append(Sample("insmon_vpn_gateway_rtt_seconds", s.rtt, ids))
            if s.front_end is not None:
                samples.append(Sample("insmon_vpn_front_end_up", float(s.front_end), ids))
                samples += one_hot("insmon_vpn_front_end_failures_total", "reason",
                                   CONNECT_REASONS, s.front_end_failure, ids)
            if s.handshake_age is not None:
                samples.append(Sample("insmon_vpn_handshake_age_seconds", s.handshake_age,
                                      ids))
        active = next((role for role in ROLES for s in states if s.up and s.link.role == role),
                      "none")
        samples.append(Sample("insmon_settlement_path_up", float(active != "none")))
        samples += one_hot("insmon_settlement_active_role", "role", (*ROLES, "none"), active)
        described = "; ".join(
            f"{s.link.name} ({s.link.role}) "
            + (f"up, gateway {s.rtt * 1000:.2f} ms" if s.up and s.rtt is not None
               else f"DOWN: {s.why}" if not s.up else "up")
            for s in states)
        if active == "none":
            return ProbeResult("failed", tuple(samples),
                               f"no settlement path: every link is down; {described}")
        failing = [s for s in states if not s.up and not s.link.standby]
        summary = f"settlement path via {active}; {described}"
        return ProbeResult("failed" if failing else "ok", tuple(samples), summary)

    async def _link(self, link: Link, deadline: float) -> LinkState:
        cfg = self.cfg
        state = interface_state(link.interface)
        handshake = await _handshake_age(link.interface) if state != "missing" else None
        if state != "up":
            why = {"missing": f"no interface {link.interface}",
                   "down": f"interface {link.interface} is down",
                   "no-carrier": f"interface {link.interface} has no carrier"}[state]
            return LinkState(link, state, 0, 0, None, None, None, handshake, why)
        try:
            echoes = (await pinger.ping([link.gateway], cfg.ping_count, cfg.packet_interval,
                                        cfg.packet_timeout, interface=link.interface)
                      )[link.gateway]
        except ProbeFailure as exc:
            return LinkState(link, state, 0, 0, None, None, None, handshake, str(exc))
        rtt = sum(echoes.rtts) / len(echoes.rtts) if echoes.rtts else None
        why = "" if echoes.received else f"gateway {link.gateway} does not answer"
        front_end = failure = None
        if cfg.front_end and not why:
            host, port = host_port(cfg.front_end)
            try:
                sock, _ = await connect(host, port, max(cfg.packet_timeout, round(
                    deadline - time.monotonic(), 2)), interface=link.interface)
                sock.close()
                front_end = True
            except ConnectFailure as exc:
                front_end, failure = False, exc.reason
                why = f"front-end: {exc}"
        return LinkState(link, state, echoes.received, echoes.sent, rtt, front_end, failure,
                         handshake, why)


async def _handshake_age(interface: str) -> float | None:
    """Seconds since the latest WireGuard handshake on the interface; None when `wg` is
    not installed or the interface is no WireGuard one."""
    if shutil.which("wg") is None:
        return None
    try:
        out = await run_command(["wg", "show", interface, "latest-handshakes"])
    except ProbeFailure:
        return None
    stamps = [int(fields[1]) for line in out.splitlines()
              if len(fields := line.split()) == 2 and fields[1].isdigit()]
    if not stamps:
        return None
    latest = max(stamps)
    return float("inf") if latest == 0 else max(0.0, time.time() - latest)


KIND = Kind(Config, METRICS, Probe)
