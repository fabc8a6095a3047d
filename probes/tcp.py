"""TCP connect to the settlement front-end (前置机) and to kiosks and terminals.

Each target is host:port; the check fails when any target cannot be connected to, and
each failure is counted by reason: dns, refused, timeout, unreachable, other.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field, field_validator

from probes.base import CheckBase, Kind, MetricSpec, ProbeResult, Sample, one_hot
from probes.lib.net import CONNECT_REASONS, ConnectFailure, connect, host_port


class Config(CheckBase):
    kind: Literal["tcp"]
    targets: list[str] = Field(min_length=1)  # host:port, [v6]:port
    source: str | None = None  # source address
    interface: str | None = None  # bind to this interface (SO_BINDTODEVICE)

    @field_validator("targets")
    @classmethod
    def _host_ports(cls, targets: list[str]) -> list[str]:
        for target in targets:
            host_port(target)
        if len(set(targets)) != len(targets):
            raise ValueError("a target is listed twice")
        return targets


LABELS = ("target",)
METRICS = (
    MetricSpec("insmon_tcp_connect_seconds", "gauge",
               "Time the last successful connect took (DNS lookup included).", LABELS,
               "seconds"),
    MetricSpec("insmon_tcp_up", "gauge",
               "1 if the last connect succeeded, 0 if not.", LABELS),
    MetricSpec("insmon_tcp_failures_total", "counter",
               "Failed connects by reason: dns, refused, timeout, unreachable, other.",
               (*LABELS, "reason")),
)


class Probe:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    async def run(self) -> ProbeResult:
        cfg = self.cfg
        # Each connect gets what remains of the run, less a margin to report in.
        budget = cfg.timeout * 0.9
        outcomes = await asyncio.gather(*(self._one(t, budget) for t in cfg.targets))
        samples: list[Sample] = []
        failures = []
        for target, (seconds, failure) in zip(cfg.targets, outcomes, strict=True):
            labels = {"target": target}
            samples.append(Sample("insmon_tcp_up", float(failure is None), labels))
            samples += one_hot("insmon_tcp_failures_total", "reason", CONNECT_REASONS,
                               failure.reason if failure else None, labels)
            if failure is None:
                samples.append(Sample("insmon_tcp_connect_seconds", seconds, labels))
            else:
                failures.append(str(failure))
        if failures:
            return ProbeResult("failed", tuple(samples), "; ".join(failures[:5]) + (
                f" and {len(failures) - 5} more" if len(failures) > 5 else ""))
        slowest = max(o[0] for o in outcomes)
        return ProbeResult("ok", tuple(samples), f"{len(cfg.targets)} connected, slowest "
                                                 f"{slowest * 1000:.2f} ms")

    async def _one(self, target: str, timeout: float) -> tuple[float, ConnectFailure | None]:
        host, port = host_port(target)
        try:
            sock, seconds = await connect(host, port, timeout, self.cfg.source,
                                          self.cfg.interface)
        except ConnectFailure as failure:
            return 0.0, failure
        sock.close()
        return seconds, None


KIND = Kind(Config, METRICS, Probe)
