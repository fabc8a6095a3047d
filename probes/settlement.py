"""Can a bill settle right now, and through which line? A harmless transaction of the
national medical-security platform's protocol (9001 签到, sign-in, by default), sent
through each private-network link to the front-end (前置机) or the regional gateway.

A tunnel can be up and the front-end's port open while the platform answers every
transaction with an error (its own outage, an expired sign-in, a gateway that rejects the
hospital's signature): this check asks the platform itself. Per link it reports whether
the transaction succeeded, the HTTP status, the platform's `infcode`, the time it took,
and why it failed, as one of: the network reasons of the other checks (dns, refused,
timeout, unreachable, tls, other), gateway_rejected (HTTP 401/403: the gateway refused the
hospital's signature), platform_error (infcode not 0; its err_msg goes to the detail and
the log, never into a label), bad_answer (not the platform's JSON), or circuit_open.

The agency's systems are not ours to load: one transaction per link per run (60 s by
default; agree the rate with the agency), and a per-link circuit breaker: after
`breaker_after` platform-side failures in a row, the link's transactions pause for one
interval, then two, four, ... up to 10 minutes, while the platform keeps answering so.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import secrets
import socket
import time
from datetime import datetime
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from probes.base import (
    SHANGHAI,
    CheckBase,
    Duration,
    Kind,
    MetricSpec,
    ProbeResult,
    Sample,
    one_hot,
    run_blocking,
)
from probes.lib.net import NET_REASONS, Cutter, connect_within, left, reason
from probes.lib.secret import Secret

PLATFORM_REASONS = ("gateway_rejected", "platform_error", "bad_answer", "circuit_open")
REASONS = (*NET_REASONS, *PLATFORM_REASONS)
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
MAX_PAUSE = 600.0


class Link(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")  # the `link` label
    role: Literal["primary", "backup"]
    interface: str | None = None  # the tunnel interface (SO_BINDTODEVICE)
    source: str | None = None     # or the source address


class Paas(BaseModel):
    """The provincial gateway's headers (x-tif-*): the paas id and token it issued."""
    model_config = ConfigDict(extra="forbid")
    id: str
    token: Secret


class Config(CheckBase):
    kind: Literal["settlement"]
    url: str                              # the front-end's or the gateway's transaction URL
    interval: Duration = Field(default=60.0, ge=10.0)
    links: list[Link] = Field(default_factory=lambda: [Link(name="default", role="primary")])
    infno: str = Field(default="9001", pattern=r"^\d{4}$")
    input: dict[str, Any] | None = None   # default: the 9001 sign-in's signIn block
    fixmedins_code: str = Field(pattern=r"^\w{12}$")  # the institution (定点医药机构) code
    fixmedins_name: str
    mdtrtarea_admvs: str = Field(pattern=r"^\d{6}$")  # where the hospital is (就医地)
    insuplc_admdvs: str = ""              # insured's area: empty for a sign-in
    recer_sys_code: str = "FSI_LOCAL"
    dev_no: str = ""
    dev_safe_info: str = ""
    cainfo: str = ""
    signtype: str = ""
    infver: str = "V1.0"
    opter_type: str = "1"
    opter: str = Field(min_length=1)      # the operator (经办人) the platform knows
    opter_name: str = Field(min_length=1)
    mac: str = "00:00:00:00:00:00"
    ip: str = "127.0.0.1"
    paas: Paas | None = None
    sign_out: bool = False  # after a successful 9001 sign-in, sign out again (9002)
    breaker_after: int = Field(default=3, ge=1, le=100)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.password:
            raise ValueError("expected an http:// URL with a host and no password in it")
        return url

    @field_validator("links")
    @classmethod
    def _distinct(cls, links: list[Link]) -> list[Link]:
        if len({link.name for link in links}) != len(links):
            raise ValueError("a link name is used twice")
        return links


LABELS = ("link",)
METRICS = (
    MetricSpec("insmon_settlement_transaction_ok", "gauge",
               "1 if the last transaction through the link succeeded (infcode 0).", LABELS),
    MetricSpec("insmon_settlement_possible", "gauge",
               "1 if the last transaction succeeded through at least one link: a bill can "
               "settle."),
    MetricSpec("insmon_settlement_http_status", "gauge",
               "HTTP status of the last answer through the link (absent when none came).",
               LABELS),
    MetricSpec("insmon_settlement_infcode", "gauge",
               "The platform's infcode in the last answer (0 success; absent when none).",
               LABELS),
    MetricSpec("insmon_settlement_transaction_seconds", "histogram",
               "Time from the connect to the whole answer, over all transactions.", LABELS,
               "seconds", BUCKETS),
    MetricSpec("insmon_settlement_circuit_open", "gauge",
               "1 while the link's transactions pause after repeated platform errors.",
               LABELS),
    MetricSpec("insmon_settlement_failures_total", "counter",
               "Failed transactions by reason: the network reasons (dns, refused, timeout, "
               "unreachable, tls, other), gateway_rejected, platform_error, bad_answer, "
               "circuit_open (paused, not sent).", (*LABELS, "reason")),
)


class Outcome(NamedTuple):
    reason: str | None  # None: the transaction succeeded
    status: int | None
    infcode: int | None
    seconds: float | None
    detail: str


class Breaker:
    """Per link: platform-side failures in a row, and until when it pauses."""

    def __init__(self) -> None:
        self.failures = 0
        self.pauses = 0
        self.until = 0.0

    def record(self, outcome: Outcome, after: int, interval: float) -> None:
        if outcome.reason in ("gateway_rejected", "platform_error", "bad_answer"):
            self.failures += 1
            if self.failures >= after:
                self.until = time.monotonic() + min(interval * 2 ** self.pauses, MAX_PAUSE)
                self.pauses += 1
        elif outcome.reason is None:
            self.failures = self.pauses = 0


class Probe:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.sequence = 0
        self.breakers = {link.name: Breaker() for link in cfg.links}

    async def run(self) -> ProbeResult:
        cfg = self.cfg
        now = time.monotonic()
        jobs = []
        for link in cfg.links:
            if self.breakers[link.name].until > now:
                jobs.append(_paused(self.breakers[link.name].until - now))
            else:
                jobs.append(run_blocking(transact, cfg, link, self._message(),
                                         time.monotonic() + cfg.timeout * 0.9))
        outcomes = await asyncio.gather(*jobs)
        samples: list[Sample] = []
        parts = []
        for link, outcome in zip(cfg.links, outcomes, strict=True):
            breaker = self.breakers[link.name]
            if outcome.reason != "circuit_open":
                breaker.record(outcome, cfg.breaker_after, cfg.interval)
            labels = {"link": link.name}
            samples.append(Sample("insmon_settlement_transaction_ok",
                                  float(outcome.reason is None), labels))
            samples.append(Sample("insmon_settlement_circuit_open",
                                  float(breaker.until > time.monotonic()), labels))
            if outcome.status is not None:
                samples.append(Sample("insmon_settlement_http_status", outcome.status, labels))
            if outcome.infcode is not None:
                samples.append(Sample("insmon_settlement_infcode", outcome.infcode, labels))
            if outcome.seconds is not None:
                samples.append(Sample("insmon_settlement_transaction_seconds", outcome.seconds,
                                      labels))
            samples += [Sample(s.metric, s.value, {**labels, **s.labels}) for s in one_hot(
                "insmon_settlement_failures_total", "reason", REASONS, outcome.reason)]
            parts.append(f"{link.name} ({link.role}) {outcome.detail}")
        possible = any(o.reason is None for o in outcomes)
        samples.append(Sample("insmon_settlement_possible", float(possible)))
        detail = f"{cfg.infno} {'settles' if possible else 'CANNOT settle'}: " + "; ".join(parts)
        return ProbeResult("ok" if all(o.reason is None for o in outcomes) else "failed",
                           tuple(samples), detail)

    def _message(self) -> dict[str, Any]:
        """The platform's common fields around the transaction's input."""
        cfg = self.cfg
        self.sequence = (self.sequence + 1) % 10000
        now = datetime.now(SHANGHAI)
        return {
            "infno": cfg.infno,
            "msgid": f"{cfg.fixmedins_code}{now:%Y%m%d%H%M%S}{self.sequence:04d}",
            "mdtrtarea_admvs": cfg.mdtrtarea_admvs, "insuplc_admdvs": cfg.insuplc_admdvs,
            "recer_sys_code": cfg.recer_sys_code, "dev_no": cfg.dev_no,
            "dev_safe_info": cfg.dev_safe_info, "cainfo": cfg.cainfo,
            "signtype": cfg.signtype, "infver": cfg.infver, "opter_type": cfg.opter_type,
            "opter": cfg.opter, "opter_name": cfg.opter_name,
            "inf_time": f"{now:%Y-%m-%d %H:%M:%S}", "fixmedins_code": cfg.fixmedins_code,
            "fixmedins_name": cfg.fixmedins_name, "sign_no": "",
            "input": cfg.input if cfg.input is not None else {
                "signIn": {"opter_no": cfg.opter, "mac": cfg.mac, "ip": cfg.ip}},
        }


async def _paused(seconds: float) -> Outcome:
    return Outcome("circuit_open", None, None, None,
                   f"paused after repeated platform errors, {seconds:.0f} s more")


def transact(cfg: Config, link: Link, message: dict, deadline: float) -> Outcome:
    """One transaction through one link, blocking (on a thread of its own); never
    raises. With `sign_out`, a successful sign-in is followed by its sign-out (9002),
    whose failure is told in the detail but fails nothing."""
    outcome, answer = _exchange(cfg, link, message, deadline)
    if outcome.reason is None and cfg.sign_out and cfg.infno == "9001":
        output = answer.get("output")
        signed = output.get("signinoutb") if isinstance(output, dict) else None
        sign_no = str(signed.get("sign_no", "")) if isinstance(signed, dict) else ""
        out = {**message, "infno": "9002", "msgid": message["msgid"][:-4] + "9999",
               "sign_no": sign_no, "input": {"signOut": {"sign_no": sign_no,
                                                          "opter_no": cfg.opter}}}
        signed_out, _ = _exchange(cfg, link, out, deadline)
        if signed_out.reason is not None:
            return outcome._replace(detail=f"{outcome.detail}; sign-out failed: "
                                    f"{signed_out.detail}")
    return outcome


def _exchange(cfg: Config, link: Link, message: dict, deadline: float
              ) -> tuple[Outcome, dict]:
    """One message and its answer: (the outcome, the answer's JSON when it had some)."""
    parts = urlsplit(cfg.url)
    host, port = parts.hostname or "", parts.port or 80
    body = json.dumps(message, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json;charset=utf-8", "Connection": "close"}
    if cfg.paas is not None:
        stamp, nonce = str(int(time.time())), secrets.token_hex(16)
        token = cfg.paas.token.reveal("paas token")
        headers |= {"x-tif-paasid": cfg.paas.id, "x-tif-timestamp": stamp,
                    "x-tif-nonce": nonce, "x-tif-signature": hashlib.sha256(
                        f"{stamp}{token}{nonce}{stamp}".encode()).hexdigest()}
    started = time.perf_counter()
    sock = cutter = None
    try:
        sock = _connected(host, port, link, deadline)
        cutter = Cutter(sock, deadline)  # a trickled answer ends at the deadline too
        conn = http.client.HTTPConnection(host, port, timeout=left(deadline))
        conn.sock = sock
        conn.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                     body=body, headers=headers)
        response = conn.getresponse()
        raw = response.read(1 << 20)
        if cutter.cut.is_set() or time.monotonic() > deadline:
            raise TimeoutError
    except OSError as exc:
        why = "timeout" if cutter is not None and cutter.cut.is_set() else reason(exc)
        return Outcome(why, None, None, None, {
            "refused": f"{host}:{port} refused the connection",
            "timeout": f"no answer from {host}:{port} within {cfg.timeout:g}s",
        }.get(why, f"cannot reach {host}:{port}: {exc.strerror or exc}")), {}
    except http.client.HTTPException as exc:
        if cutter is not None and cutter.cut.is_set():  # cut mid-answer at the deadline
            return Outcome("timeout", None, None, None,
                           f"no answer from {host}:{port} within {cfg.timeout:g}s"), {}
        return Outcome("bad_answer", None, None, None,
                       f"not an HTTP answer from {host}:{port}: {type(exc).__name__}"), {}
    finally:
        if cutter is not None:
            cutter.cancel()
        if sock is not None:
            sock.close()
    seconds = time.perf_counter() - started
    status = response.status
    if status in (401, 403):
        return Outcome("gateway_rejected", status, None, seconds,
                       f"the gateway refused the message: HTTP {status} {_said(raw)}"), {}
    try:
        answer = json.loads(raw)
        infcode = int(answer["infcode"])
    except (ValueError, KeyError, TypeError):
        return Outcome("bad_answer", status, None, seconds,
                       f"HTTP {status} without the platform's JSON: {raw[:60]!r}"), {}
    if status != 200 or infcode != 0:
        return Outcome("platform_error", status, infcode, seconds,
                       f"infcode {infcode}: {str(answer.get('err_msg') or '')[:120]}"), answer
    return Outcome(None, status, infcode, seconds,
                   f"infcode 0 in {seconds * 1000:.0f} ms"), answer


def _connected(host: str, port: int, link: Link, deadline: float) -> socket.socket:
    """A connection to the front-end through the link (its interface or source)."""
    sock = connect_within(host, port, link.source, link.interface, deadline)
    sock.settimeout(left(deadline))
    return sock


def _said(raw: bytes) -> str:
    try:
        answer = json.loads(raw)
    except ValueError:
        return ""
    return str(answer.get("message") or answer.get("err_msg") or "")[:120] \
        if isinstance(answer, dict) else ""


KIND = Kind(Config, METRICS, Probe)
