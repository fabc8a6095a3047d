"""Ping: latency, jitter and loss to many targets per check (see pinger.py for how).

In the reference incident the engineers saw "request timeout" over the private network:
that is `insmon_ping_loss_ratio` 1. The check fails when any target answers nothing;
partial loss and latency are for the alert rules to judge.
"""

from __future__ import annotations

import ipaddress
import statistics
from typing import Literal

from pydantic import Field, field_validator, model_validator

from probes.base import CheckBase, Kind, MetricSpec, ProbeResult, Sample
from probes.lib import pinger
from vocabulary import Duration, format_duration

# 1 ms .. 5 s
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Config(CheckBase):
    kind: Literal["icmp"]
    targets: list[str] = Field(min_length=1)  # IPv4 or IPv6 addresses
    count: int = Field(default=3, ge=1, le=100)  # echo requests per target per run
    packet_interval: Duration = 0.2  # between a target's requests
    packet_timeout: Duration = 1.0  # wait for replies after the last request
    payload_size: int = Field(default=56, ge=0, le=65000)
    ttl: int | None = Field(default=None, ge=1, le=255)
    source: str | None = None  # source address: force the path through the tunnel
    interface: str | None = None  # bind to this interface (SO_BINDTODEVICE)

    @field_validator("targets")
    @classmethod
    def _addresses(cls, targets: list[str]) -> list[str]:
        for target in targets:
            try:
                ipaddress.ip_address(target.split("%")[0])
            except ValueError:
                raise ValueError(f"{target!r} is not an IPv4 or IPv6 address") from None
        if len(set(targets)) != len(targets):
            raise ValueError("a target is listed twice")
        return targets

    @field_validator("source")
    @classmethod
    def _source(cls, source: str | None) -> str | None:
        if source is not None:
            ipaddress.ip_address(source)
        return source

    @model_validator(mode="after")
    def _fits(self) -> Config:
        needed = (self.count - 1) * self.packet_interval + self.packet_timeout
        if needed >= self.timeout:
            raise ValueError(
                f"count x packet_interval + packet_timeout ({format_duration(needed)}) must "
                f"be shorter than timeout ({format_duration(self.timeout)})")
        if len(self.targets) * self.count > pinger.MAX_PACKETS:
            raise ValueError(f"targets x count must be at most {pinger.MAX_PACKETS}")
        return self


LABELS = ("target",)
METRICS = (
    MetricSpec("insmon_ping_rtt_seconds", "histogram",
               "Round-trip time of each echo reply, over all runs.", LABELS, "seconds",
               BUCKETS),
    MetricSpec("insmon_ping_rtt_min_seconds", "gauge",
               "Shortest round trip in the last run.", LABELS, "seconds"),
    MetricSpec("insmon_ping_rtt_avg_seconds", "gauge",
               "Mean round trip in the last run.", LABELS, "seconds"),
    MetricSpec("insmon_ping_rtt_max_seconds", "gauge",
               "Longest round trip in the last run.", LABELS, "seconds"),
    MetricSpec("insmon_ping_jitter_seconds", "gauge",
               "Standard deviation of the round trips in the last run (0 with one reply).",
               LABELS, "seconds"),
    MetricSpec("insmon_ping_loss_ratio", "gauge",
               "Share of echo requests of the last run that got no reply (1: request "
               "timeout, the target is unreachable).", LABELS, "ratio"),
    MetricSpec("insmon_ping_packets_sent_total", "counter",
               "Echo requests sent to the target.", LABELS),
    MetricSpec("insmon_ping_packets_received_total", "counter",
               "Echo replies received from the target in time.", LABELS),
)


def samples(target: str, echoes: pinger.Echoes) -> list[Sample]:
    labels = {"target": target}
    out = [Sample("insmon_ping_packets_sent_total", echoes.sent, labels),
           Sample("insmon_ping_packets_received_total", echoes.received, labels),
           Sample("insmon_ping_loss_ratio",
                  1 - echoes.received / echoes.sent if echoes.sent else 1.0, labels)]
    rtts = echoes.rtts
    if rtts:
        out += [Sample("insmon_ping_rtt_min_seconds", min(rtts), labels),
                Sample("insmon_ping_rtt_avg_seconds", statistics.fmean(rtts), labels),
                Sample("insmon_ping_rtt_max_seconds", max(rtts), labels),
                Sample("insmon_ping_jitter_seconds",
                       statistics.pstdev(rtts) if len(rtts) > 1 else 0.0, labels)]
        out += [Sample("insmon_ping_rtt_seconds", rtt, labels) for rtt in rtts]
    return out


class Probe:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    async def run(self) -> ProbeResult:
        cfg = self.cfg
        results = await pinger.ping(cfg.targets, cfg.count, cfg.packet_interval,
                                    cfg.packet_timeout, cfg.payload_size, cfg.source,
                                    cfg.interface, cfg.ttl)
        out: list[Sample] = []
        for target, echoes in results.items():
            out += samples(target, echoes)
        dead = [t for t, e in results.items() if not e.received]
        replies = [rtt for e in results.values() for rtt in e.rtts]
        sent = sum(e.sent for e in results.values())
        loss = 1 - len(replies) / sent if sent else 1.0
        summary = f"{len(results)} targets, loss {loss:.1%}"
        if replies:
            summary += f", rtt avg {statistics.fmean(replies) * 1000:.2f} ms, " \
                       f"max {max(replies) * 1000:.2f} ms"
        if dead:
            shown = ", ".join(dead[:5]) + (f" and {len(dead) - 5} more" if len(dead) > 5
                                           else "")
            return ProbeResult("failed", tuple(out),
                               f"request timeout from {shown}; {summary}")
        return ProbeResult("ok", tuple(out), summary)


KIND = Kind(Config, METRICS, Probe)
