"""HTTP(S) to the settlement front-end's health page, phase by phase.

One connection per run, timed in phases like blackbox_exporter's: connect (DNS + TCP),
tls (handshake), processing (request sent until the response headers are in), transfer
(the body). For HTTPS the server certificate's expiry is exported, so an expiring
certificate pages someone weeks before it stops settlement. A failure is counted by
reason: dns, refused, timeout, unreachable, tls, connection_closed, status, body, other.
"""

from __future__ import annotations

import base64
import re
import ssl
import time
from pathlib import Path
from typing import Literal, NamedTuple
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator

from probes.base import CheckBase, Kind, MetricSpec, ProbeResult, Sample, one_hot, run_blocking
from probes.lib.net import NET_REASONS, exchange, failure, redacted
from vocabulary import VERSION

REASONS = (*NET_REASONS, "status", "body")
PHASES = ("connect", "tls", "processing", "transfer")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


class Config(CheckBase):
    kind: Literal["http"]
    url: str
    method: Literal["GET", "HEAD"] = "GET"
    valid_status: list[int] = Field(default_factory=lambda: list(range(200, 300)))
    body_regex: re.Pattern[str] | None = None  # the body must match (searched)
    headers: dict[str, str] = Field(default_factory=dict)
    tls_verify: bool = True
    ca_file: Path | None = None  # trust this CA (bundle) instead of the system's
    max_body_bytes: int = Field(default=1 << 20, ge=0)
    source: str | None = None
    interface: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL with a host, got "
                             f"{redacted(url)!r}")
        return url

    @field_validator("headers")
    @classmethod
    def _one_line(cls, headers: dict[str, str]) -> dict[str, str]:
        """A line break in a header would inject another header (and http.client's error
        about it repeats the value): refused here, without echoing it."""
        for name, value in headers.items():
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise ValueError("a header name holds only letters, digits and - _ . etc.")
            if any(c in value for c in "\r\n\0"):
                raise ValueError(f"the value of header {name} holds a line break or NUL")
        return headers

    @property
    def shown_url(self) -> str:
        """The URL as it may be shown: a password in it is starred."""
        return redacted(self.url)


METRICS = (
    MetricSpec("insmon_http_status_code", "gauge",
               "HTTP status code of the last response (absent when none came).",),
    MetricSpec("insmon_http_phase_seconds", "gauge",
               "Time each phase of the last request took: connect (DNS and TCP), tls, "
               "processing (until the response headers), transfer (the body).",
               ("phase",), "seconds"),
    MetricSpec("insmon_http_response_seconds", "histogram",
               "Time from the start of the connect to the end of the body, over all runs.",
               (), "seconds", BUCKETS),
    MetricSpec("insmon_http_tls_cert_expiry_timestamp_seconds", "gauge",
               "When the server certificate expires (Unix time); HTTPS only.", (),
               "seconds"),
    MetricSpec("insmon_http_failures_total", "counter",
               "Failed requests by reason: dns, refused, timeout, unreachable, tls, "
               "connection_closed, status (not a valid status), body (no match), other.",
               ("reason",)),
)


class Outcome(NamedTuple):
    phases: dict[str, float]
    status: int | None
    cert_expiry: float | None
    reason: str | None
    detail: str


def fetch(cfg: Config) -> Outcome:
    """One request, blocking (it runs on a thread of its own); never raises."""
    parts = urlsplit(cfg.url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    deadline = time.monotonic() + cfg.timeout * 0.9  # report our own timeout, with reason
    credentials = ({"Authorization": "Basic " + base64.b64encode(
        f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()}
        if parts.username else {})
    done = exchange(cfg.url, cfg.method, {
        "User-Agent": f"insmon/{VERSION}", "Accept": "*/*", "Connection": "close",
        **credentials, **cfg.headers}, deadline,
        limit=cfg.max_body_bytes if cfg.method == "GET" else 0,
        tls=lambda: _tls_context(cfg),
        source=cfg.source, interface=cfg.interface)
    phases, status, expiry = done.phases, done.status, _expiry(done.certificate)
    late = f"no complete answer from {host}:{port} within {cfg.timeout:g}s"
    if done.short is not None:
        if done.cut:  # we ended the body, at the deadline
            return Outcome(phases, status, expiry, "timeout", late)
        return Outcome(phases, status, expiry, "body",
                       f"the body of {cfg.shown_url} ended after {done.short[0]} of the "
                       f"{done.short[1]} bytes its Content-Length promised")
    if isinstance(done.error, OSError):
        why, words = failure(done.error, host, port, done.cut, late)
        return Outcome(phases, status, expiry, why, words)
    if done.error is not None:  # an HTTPException: a status line or headers that are no HTTP
        if done.cut:
            return Outcome(phases, status, expiry, "timeout", late)
        return Outcome(phases, status, expiry, "other", f"bad HTTP answer from {host}:{port}: "
                       f"{type(done.error).__name__} {done.error}")
    if status not in cfg.valid_status:
        return Outcome(phases, status, expiry, "status", f"status {status} from {cfg.shown_url}")
    if cfg.body_regex is not None and not cfg.body_regex.search(
            done.body.decode(errors="replace")):
        return Outcome(phases, status, expiry, "body",
                       f"body of {cfg.shown_url} does not match {cfg.body_regex.pattern!r}")
    return Outcome(phases, status, expiry, None, "")


def _tls_context(cfg: Config) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
    if not cfg.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _expiry(der: bytes | None) -> float | None:
    if not der:
        return None
    from cryptography import x509

    return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()


class Probe:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    async def run(self) -> ProbeResult:
        outcome = await run_blocking(fetch, self.cfg)
        samples = one_hot("insmon_http_failures_total", "reason", REASONS, outcome.reason)
        samples += [Sample("insmon_http_phase_seconds", s, {"phase": p})
                    for p, s in outcome.phases.items()]
        if outcome.status is not None:
            samples.append(Sample("insmon_http_status_code", float(outcome.status)))
        if outcome.cert_expiry is not None:
            samples.append(Sample("insmon_http_tls_cert_expiry_timestamp_seconds",
                                  outcome.cert_expiry))
        if outcome.reason is not None:
            return ProbeResult("failed", tuple(samples), outcome.detail)
        total = sum(outcome.phases.values())
        samples.append(Sample("insmon_http_response_seconds", total))
        expiry = ""
        if outcome.cert_expiry is not None:
            expiry = f", certificate valid {(outcome.cert_expiry - time.time()) / 86400:.0f} " \
                     "more days"
        return ProbeResult("ok", tuple(samples),
                           f"status {outcome.status} in {total * 1000:.1f} ms{expiry}")


KIND = Kind(Config, METRICS, Probe)
