"""Can a bill settle right now, and through which line? A read-only transaction of the
national medical-security platform's protocol (1901 字典表查询 by default), sent through
each private-network link to the front-end (前置机) or the provincial gateway, in the
gateway's dialect (probes/lib/fsi.py), within the day's sign-in.

A tunnel can be up and the front-end's port open while the platform answers every
transaction with an error (its own outage, an expired sign-in, a gateway that rejects the
hospital's signature): this check asks the platform itself. Per link it reports whether
the transaction succeeded, the HTTP status, the platform's `infcode`, the time it took,
and why it failed, as one of: the network reasons of the other checks (dns, refused,
timeout, unreachable, tls, other), gateway_rejected (HTTP 401/403, or the gateway's own
{"code", "message"} refusal), platform_error (infcode not 0; its err_msg goes to the
detail and the log, never into a label), bad_answer (not the platform's JSON), or
circuit_open.

Sign-in is a day's session, as real clients keep it: per link, 9001 签到 when the check
first needs it, when the day changes (Beijing time), and when the platform says the
sign-in is no longer valid; its `sign_no` is kept in a small state file across restarts
and sent with every transaction. With `sign_out`, 9002 签退 when insmon stops.

The agency's systems are not ours to load: one transaction per link per run (60 s by
default; agree the rate with the agency), and a per-link circuit breaker: after
`breaker_after` platform-side failures in a row, the link's transactions pause for one
interval, then two, four, ... up to 10 minutes, while the platform keeps answering so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
from probes.lib import fsi
from probes.lib.net import NET_REASONS
from probes.lib.secret import SecretError

PLATFORM_REASONS = ("gateway_rejected", "platform_error", "bad_answer", "circuit_open")
REASONS = (*NET_REASONS, *PLATFORM_REASONS)
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
MAX_PAUSE = 600.0
SIGN_IN, SIGN_OUT = "9001", "9002"
# 1901 字典表查询 of one small dictionary (gender): read-only, and refused without a
# valid sign-in, so a success proves the line, the gateway, the platform and the session.
QUERY_INPUT = {"data": {"type": "GEND", "parentValue": "", "admdvs": "", "date": "",
                        "valiFlag": "1"}}
# What the platforms answer when a transaction's sign-in is not (or no longer) valid.
NOT_SIGNED_IN = r"未签到|签到.{0,8}(失效|过期|无效|不存在)|重新签到|sign_no"
STATE_DIRECTORY = Path(os.environ.get("STATE_DIRECTORY", "/var/lib/insmon"))

log = logging.getLogger("insmon.settlement")


class Link(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")  # the `link` label
    role: Literal["primary", "backup"]
    interface: str | None = None  # the tunnel interface (SO_BINDTODEVICE)
    source: str | None = None     # or the source address


class Config(CheckBase):
    kind: Literal["settlement"]
    # the transaction URL: {infno} is put in (…/hsa/hgs/{infno}, …/CSB/hsa-fsi-{infno});
    # without it one endpoint takes every transaction (infno in the body)
    url: str
    # per infno, where services differ: a path on url's host, or a URL
    paths: dict[str, str] = Field(default_factory=dict)
    gateway: fsi.Gateway = fsi.Gateway()
    tls: fsi.Tls | None = None
    interval: Duration = Field(default=60.0, ge=10.0)
    links: list[Link] = Field(default_factory=lambda: [Link(name="default", role="primary")])
    infno: str = Field(default="1901", pattern=r"^\d{4}$")  # each run's transaction
    input: dict[str, Any] | None = None   # its input: default 1901's small dictionary
    fixmedins_code: str = Field(pattern=r"^\w{12}$")  # the institution (定点医药机构) code
    fixmedins_name: str
    mdtrtarea_admvs: str = Field(pattern=r"^\d{6}$")  # where the hospital is (就医地)
    insuplc_admdvs: str = ""              # insured's area: empty for these transactions
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
    not_signed_in: re.Pattern[str] = re.compile(NOT_SIGNED_IN)  # err_msg: sign in again
    sign_out: bool = False  # 9002 签退 of each link's sign-in when insmon stops
    state_file: Path | None = None  # default: $STATE_DIRECTORY or /var/lib/insmon
    breaker_after: int = Field(default=3, ge=1, le=100)

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        return fsi.check_url(url)

    @field_validator("paths")
    @classmethod
    def _paths(cls, paths: dict[str, str]) -> dict[str, str]:
        return fsi.check_paths(paths)

    @field_validator("links")
    @classmethod
    def _distinct(cls, links: list[Link]) -> list[Link]:
        if len({link.name for link in links}) != len(links):
            raise ValueError("a link name is used twice")
        return links

    @model_validator(mode="after")
    def _transaction(self) -> Config:
        if self.infno in (SIGN_IN, SIGN_OUT):
            raise ValueError(f"infno {self.infno}: the sign-in is the check's own, once a day "
                             "per link; each run sends a transaction that needs it, such as "
                             "1901 (the default)")
        if self.input is None and self.infno != "1901":
            raise ValueError(f"infno {self.infno} needs its `input`")
        return self

    @property
    def sessions_file(self) -> Path:
        return self.state_file or STATE_DIRECTORY / f"settlement-{self.name}.json"

    def url_of(self, infno: str) -> str:
        return fsi.url_of(self.url, self.paths, infno)


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
    MetricSpec("insmon_settlement_sign_ins_total", "counter",
               "Sign-ins (9001) sent through the link: about one a day; more means the "
               "platform keeps refusing the session.", LABELS),
)


class Breaker:
    """Per link: platform-side failures in a row, and until when it pauses."""

    def __init__(self) -> None:
        self.failures = 0
        self.pauses = 0
        self.until = 0.0

    def record(self, answer: fsi.Answer, after: int, interval: float) -> None:
        if answer.reason in ("gateway_rejected", "platform_error", "bad_answer"):
            self.failures += 1
            if self.failures >= after:
                self.until = time.monotonic() + min(interval * 2 ** self.pauses, MAX_PAUSE)
                self.pauses += 1
        elif answer.reason is None:
            self.failures = self.pauses = 0


class Session(NamedTuple):
    sign_no: str
    day: str     # the Beijing date of the sign-in
    opter: str   # who signed in, at which institution: another one needs its own
    fixmedins_code: str


class Sessions:
    """Each link's sign-in of the day, kept in a JSON file (written whole, then renamed)
    so a restart reuses it. A file that cannot be written costs a sign-in per restart,
    and is said in the log once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._warned = False
        self._links: dict[str, Session] = {}
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            saved = json.loads(path.read_text())
            self._links = {name: Session(**fields) for name, fields in saved["links"].items()}

    def get(self, link: str, cfg: Config, day: str) -> str | None:
        session = self._links.get(link)
        if session is None or session != Session(session.sign_no, day, cfg.opter,
                                                 cfg.fixmedins_code):
            return None  # none yet, of another day, or of another operator
        return session.sign_no

    def put(self, link: str, session: Session | None) -> None:
        with self._lock:
            if session is None:
                self._links.pop(link, None)
            else:
                self._links[link] = session
            text = json.dumps({"links": {k: v._asdict() for k, v in self._links.items()}})
            # of this process: `insmon settlement try` may write beside the running check
            temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # a sign_no is a session's credential: readable by insmon only
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with open(fd, "w") as file:
                    file.write(text)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, self.path)
            except OSError as exc:
                if not self._warned:
                    log.warning("cannot keep the settlement sign-ins in %s (%s): a restart "
                                "signs in again", self.path, exc.strerror or exc)
                    self._warned = True

    def signed_in(self) -> dict[str, str]:
        return {link: session.sign_no for link, session in self._links.items()}


class Result(NamedTuple):
    answer: fsi.Answer
    sign_ins: int


class Probe:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.breakers = {link.name: Breaker() for link in cfg.links}
        self.sessions = Sessions(cfg.sessions_file)

    async def run(self) -> ProbeResult:
        cfg = self.cfg
        now = time.monotonic()
        deadline = now + cfg.timeout * 0.9
        jobs = []
        for link in cfg.links:
            if self.breakers[link.name].until > now:
                jobs.append(_paused(self.breakers[link.name].until - now))
            else:
                jobs.append(run_blocking(self.transact, link, deadline))
        results = await asyncio.gather(*jobs)
        samples: list[Sample] = []
        parts = []
        for link, (answer, sign_ins) in zip(cfg.links, results, strict=True):
            breaker = self.breakers[link.name]
            if answer.reason != "circuit_open":
                breaker.record(answer, cfg.breaker_after, cfg.interval)
            labels = {"link": link.name}
            samples.append(Sample("insmon_settlement_transaction_ok",
                                  float(answer.reason is None), labels))
            samples.append(Sample("insmon_settlement_circuit_open",
                                  float(breaker.until > time.monotonic()), labels))
            samples.append(Sample("insmon_settlement_sign_ins_total", sign_ins, labels))
            if answer.status is not None:
                samples.append(Sample("insmon_settlement_http_status", answer.status, labels))
            if answer.infcode is not None:
                samples.append(Sample("insmon_settlement_infcode", answer.infcode, labels))
            if answer.seconds is not None:
                samples.append(Sample("insmon_settlement_transaction_seconds", answer.seconds,
                                      labels))
            samples += [Sample(s.metric, s.value, {**labels, **s.labels}) for s in one_hot(
                "insmon_settlement_failures_total", "reason", REASONS, answer.reason)]
            parts.append(f"{link.name} ({link.role}) {answer.detail}")
        possible = any(r.answer.reason is None for r in results)
        samples.append(Sample("insmon_settlement_possible", float(possible)))
        detail = f"{cfg.infno} {'settles' if possible else 'CANNOT settle'}: " + "; ".join(parts)
        return ProbeResult("ok" if all(r.answer.reason is None for r in results) else "failed",
                           tuple(samples), detail)

    def transact(self, link: Link, deadline: float,
                 trace: Callable[[fsi.Wire], None] | None = None) -> Result:
        """One run through one link, blocking (on a thread of its own); never raises:
        the day's sign-in when there is none, then the transaction; when the platform
        says the sign-in is not valid, one sign-in more and the transaction again."""
        cfg = self.cfg
        day = f"{beijing_now():%Y-%m-%d}"
        sign_no = self.sessions.get(link.name, cfg, day)
        sign_ins = 0
        if sign_no is None:
            sign_ins += 1
            failed, sign_no = self._sign_in(link, day, deadline, trace)
            if failed is not None:
                return Result(failed, sign_ins)
        answer = self._send(link, cfg.infno, cfg.input or QUERY_INPUT, sign_no, deadline, trace)
        if sign_ins or answer.reason != "platform_error" \
                or not cfg.not_signed_in.search(answer.message):
            return Result(answer._replace(detail=answer.detail + (", signed in" if sign_ins
                                                                  else "")), sign_ins)
        log.info("check %s link %s: the platform refused the day's sign-in (%s): signing in "
                 "again", cfg.name, link.name, answer.message)
        self.sessions.put(link.name, None)
        sign_ins += 1
        failed, sign_no = self._sign_in(link, day, deadline, trace)
        if failed is not None:
            return Result(failed, sign_ins)
        answer = self._send(link, cfg.infno, cfg.input or QUERY_INPUT, sign_no, deadline, trace)
        return Result(answer._replace(detail=f"{answer.detail}, signed in again (the "
                                      f"platform had refused the sign-in)"), sign_ins)

    def _sign_in(self, link: Link, day: str, deadline: float,
                 trace: Callable[[fsi.Wire], None] | None) -> tuple[fsi.Answer | None, str]:
        """(None, the sign_no), kept for the day; or (why the sign-in failed, "")."""
        cfg = self.cfg
        answer = self._send(link, SIGN_IN, {"signIn": {"opter_no": cfg.opter, "mac": cfg.mac,
                                                       "ip": cfg.ip}}, "", deadline, trace)
        output = (answer.body or {}).get("output")
        signed = output.get("signinoutb") if isinstance(output, dict) else None
        sign_no = str(signed.get("sign_no") or "") if isinstance(signed, dict) else ""
        if answer.reason is None and not sign_no:
            answer = answer._replace(reason="bad_answer",
                                     detail="infcode 0 without output.signinoutb.sign_no")
        if answer.reason is not None:
            return answer._replace(detail=f"sign-in (9001): {answer.detail}"), ""
        self.sessions.put(link.name, Session(sign_no, day, cfg.opter, cfg.fixmedins_code))
        return None, sign_no

    def sign_out(self, link: Link, deadline: float,
                 trace: Callable[[fsi.Wire], None] | None = None) -> fsi.Answer | None:
        """9002 签退 of the link's sign-in, if it has one; the session ends either way."""
        sign_no = self.sessions.signed_in().get(link.name)
        if sign_no is None:
            return None
        self.sessions.put(link.name, None)
        return self._send(link, SIGN_OUT, {"signOut": {"sign_no": sign_no,
                                                       "opter_no": self.cfg.opter}},
                          sign_no, deadline, trace)

    async def close(self) -> None:
        """insmon stops: sign out where the site wants it."""
        if not self.cfg.sign_out:
            return
        deadline = time.monotonic() + self.cfg.timeout
        answers = await asyncio.gather(*(run_blocking(self.sign_out, link, deadline)
                                         for link in self.cfg.links))
        for link, answer in zip(self.cfg.links, answers, strict=True):
            if answer is not None:
                log.info("check %s link %s: sign-out (9002): %s", self.cfg.name, link.name,
                         answer.detail if answer.reason else "done")

    def _send(self, link: Link, infno: str, data: dict, sign_no: str, deadline: float,
              trace: Callable[[fsi.Wire], None] | None) -> fsi.Answer:
        cfg = self.cfg
        body = json.dumps(self.message(infno, data, sign_no), ensure_ascii=False).encode()
        try:
            headers = fsi.signature_headers(cfg.gateway, infno, body)
        except SecretError as exc:  # an unset variable, an unreadable file
            return fsi.Answer("other", None, None, None, str(exc))
        return fsi.exchange(cfg.url_of(infno), headers, body, deadline, cfg.tls, link.source,
                            link.interface, trace)

    def message(self, infno: str, data: dict, sign_no: str) -> dict[str, Any]:
        """The platform's common fields around a transaction's input."""
        cfg = self.cfg
        now = beijing_now()
        return {
            "infno": infno, "msgid": fsi.msgid(cfg.fixmedins_code, now),
            "mdtrtarea_admvs": cfg.mdtrtarea_admvs, "insuplc_admdvs": cfg.insuplc_admdvs,
            "recer_sys_code": cfg.recer_sys_code, "dev_no": cfg.dev_no,
            "dev_safe_info": cfg.dev_safe_info, "cainfo": cfg.cainfo,
            "signtype": cfg.signtype, "infver": cfg.infver, "opter_type": cfg.opter_type,
            "opter": cfg.opter, "opter_name": cfg.opter_name,
            "inf_time": f"{now:%Y-%m-%d %H:%M:%S}", "fixmedins_code": cfg.fixmedins_code,
            "fixmedins_name": cfg.fixmedins_name, "sign_no": sign_no, "input": data,
        }


def beijing_now() -> datetime:
    return datetime.now(SHANGHAI)


async def _paused(seconds: float) -> Result:
    return Result(fsi.Answer("circuit_open", None, None, None,
                             f"paused after repeated platform errors, {seconds:.0f} s more"), 0)


KIND = Kind(Config, METRICS, Probe)
