"""Can a bill settle right now, and through which line? A read-only transaction of the
national medical-security platform's protocol (1901 字典表查询 by default), sent through
each private-network link to the front-end (前置机) or the provincial gateway, in the
gateway's dialect (probes/lib/dialects.py), within the day's sign-in.

A tunnel can be up and the front-end's port open while the platform answers every
transaction with an error (its own outage, an expired sign-in, a gateway that rejects the
hospital's signature): this check asks the platform itself. Per link it reports whether
the transaction succeeded, the HTTP status, the platform's `infcode`, the time it took,
and why it failed (probes/lib/fsi.py): the network reasons of the other checks
(connection_closed among them), gateway_rejected, gateway_unavailable, platform_error,
bad_answer (nothing readable), or circuit_open. The words of the platform or the gateway
go to the detail and the log, never into a label.

Sign-in is a day's session, as real clients keep it: per operator (`opter`, per link
where the links have their own), 9001 签到 when the check first needs it, when the day
changes (Beijing time), and when the platform says the sign-in is no longer valid; its
`sign_no` is kept in a small state file across restarts and sent with every transaction
of the operator's links. Links of one operator share its session, so a gateway that ends
an operator's earlier sign-in at each new one never has two links knock each other out;
and `max_sign_ins` a day per operator bounds the sign-ins whatever the platform does.
The 9001 carries the MAC and IP of the interface the link's traffic leaves through
(overridable). With `sign_out`, 9002 签退 when insmon stops.

The agency's systems are not ours to load: one transaction per link per run in business
hours (working days of the Chinese calendar, `business_hours`), one per
`quiet_interval` at nights, weekends and holidays (the runs between say the last
measurement again, marked as such); msgids from the sequence numbers the HIS leaves
clear (`msgid_sequence`); and a per-link circuit breaker: after `breaker_after`
platform-side failures in a row, the link's transactions pause for one interval, then
two, four, ... up to 10 minutes, while the platform keeps answering so.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from probes.base import (
    CheckBase,
    Kind,
    MetricSpec,
    ProbeFailure,
    ProbeResult,
    Sample,
    one_hot,
    run_blocking,
)
from probes.calendar import WorkingCalendar
from probes.lib import fsi, net
from probes.lib.net import NET_REASONS
from probes.lib.secret import SecretError
from vocabulary import SHANGHAI, Duration, format_duration

PLATFORM_REASONS = ("gateway_rejected", "gateway_unavailable", "platform_error", "bad_answer",
                    "circuit_open")
REASONS = (*NET_REASONS, *PLATFORM_REASONS)
# What the platform's side answered wrongly: the breaker pauses for these.
PLATFORM_SIDE = ("gateway_rejected", "gateway_unavailable", "platform_error", "bad_answer")
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
MAX_PAUSE = 600.0
MAX_QUIET = 900.0  # the longest a night may say a transaction's result again
SIGN_IN, SIGN_OUT = "9001", "9002"
# 1901 字典表查询 of one small dictionary (gender): read-only, and refused without a
# valid sign-in, so a success proves the line, the gateway, the platform and the session.
QUERY_INPUT = {"data": {"type": "GEND", "parentValue": "", "admdvs": "", "date": "",
                        "valiFlag": "1"}}
# What the platforms answer when a transaction's sign-in is not (or no longer) valid.
NOT_SIGNED_IN = r"未签到|签到.{0,8}(失效|过期|无效|不存在)|重新签到|sign_no"
STATE_DIRECTORY = Path(os.environ.get("STATE_DIRECTORY", "/var/lib/insmon"))
DAY = 86400.0

log = logging.getLogger("insmon.settlement")


class Link(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")  # the `link` label
    role: Literal["primary", "backup"]
    interface: str | None = None  # the tunnel interface (SO_BINDTODEVICE)
    source: str | None = None     # or the source address
    opter: str | None = Field(default=None, min_length=1)  # its own operator (经办人)
    opter_name: str | None = Field(default=None, min_length=1)
    mac: str | None = None  # what its 9001 says: else the interface's own
    ip: str | None = None


class Config(CheckBase):
    kind: Literal["settlement"]
    # the transaction URL: {infno} is put in (…/hsa/hgs/{infno}, …/CSB/hsa-fsi-{infno});
    # without it one endpoint takes every transaction (infno in the body)
    url: str
    # per infno, where services differ: a path on url's host, or a URL
    paths: dict[str, str] = Field(default_factory=dict)
    gateway: fsi.Gateway = fsi.Gateway()
    tls: fsi.Tls | None = None
    # business hours (working days, `business_hours`): a transaction per link each interval
    interval: Duration = Field(default=60.0, ge=10.0)
    # nights, weekends and holidays: one per quiet_interval (the interval's to keep the rate)
    quiet_interval: Duration = 300.0
    business_hours: str = "08:00-18:00"  # Asia/Shanghai, on working days
    calendar_file: Path | None = None  # the site's dates, as the calendar check's `file`
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
    mac: str | None = None  # what each 9001 says: else the MAC and IP of the link's interface
    ip: str | None = None
    # the msgid's 4-digit sequence numbers: a range the HIS's own messages leave clear
    msgid_sequence: str = "9000-9999"
    not_signed_in: re.Pattern[str] = re.compile(NOT_SIGNED_IN)  # err_msg: sign in again
    sign_out: bool = False  # 9002 签退 of each operator's sign-in when insmon stops
    max_sign_ins: int = Field(default=4, ge=1, le=100)  # per operator per Beijing day
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

    @field_validator("business_hours")
    @classmethod
    def _hours(cls, hours: str) -> str:
        business_hours(hours)
        return hours

    @field_validator("msgid_sequence")
    @classmethod
    def _sequence(cls, text: str) -> str:
        fsi.sequence_range(text)
        return text

    @model_validator(mode="after")
    def _transaction(self) -> Config:
        if self.infno in (SIGN_IN, SIGN_OUT):
            raise ValueError(f"infno {self.infno}: the sign-in is the check's own, once a day "
                             "per operator; each run sends a transaction that needs it, such "
                             "as 1901 (the default)")
        if self.input is None and self.infno != "1901":
            raise ValueError(f"infno {self.infno} needs its `input`")
        quiet = format_duration(self.quiet_interval)
        if self.quiet_interval < self.interval:
            raise ValueError(f"quiet_interval ({quiet}) is shorter than interval "
                             f"({format_duration(self.interval)}): outside business hours "
                             "the rate only slows down")
        if self.quiet_interval > MAX_QUIET:
            raise ValueError(f"quiet_interval ({quiet}) is over {MAX_QUIET // 60:.0f} minutes: "
                             "the runs between say the last result again, and a night's "
                             "outage must not read as settling for longer")
        runs = self.quiet_interval / self.interval
        if abs(runs - round(runs)) > 1e-6:
            raise ValueError(f"quiet_interval ({quiet}) is no whole number of intervals "
                             f"({format_duration(self.interval)}): the transactions go out "
                             "on the check's runs")
        return self

    @property
    def sessions_file(self) -> Path:
        return self.state_file or STATE_DIRECTORY / f"settlement-{self.name}.json"

    def url_of(self, infno: str) -> str:
        return fsi.url_of(self.url, self.paths, infno)

    def operator(self, link: Link) -> tuple[str, str]:
        return link.opter or self.opter, link.opter_name or self.opter_name

    def queries_a_day(self, workday: bool) -> tuple[int, int]:
        """Transactions per link on such a day: (in business hours, outside them)."""
        start, end = business_hours(self.business_hours)
        busy = (end - start) * 60.0 if workday else 0.0
        return int(busy // self.interval), int((DAY - busy) // self.quiet_interval)

    def platform_load(self) -> str:
        """What the check asks of the platform a day, for `insmon validate`."""
        inside, outside = self.queries_a_day(True)
        off = sum(self.queries_a_day(False))
        operators = len({self.operator(link)[0] for link in self.links})
        links = len(self.links)
        return (f"{self.name}: per link {inside + outside:,} requests ({self.infno}) on a "
                f"working day ({inside:,} every {format_duration(self.interval)} in business "
                f"hours {self.business_hours}, {outside:,} every "
                f"{format_duration(self.quiet_interval)} outside), {off:,} on a day off; "
                f"a sign-in (9001) a day per operator ({operators}); with "
                f"{links} link{'s' if links > 1 else ''}: "
                f"{links * (inside + outside) + operators:,} requests on a working day")


def business_hours(text: str) -> tuple[int, int]:
    """'08:00-18:00': (start, end) in minutes after midnight; 24:00 ends the day."""
    match = re.fullmatch(r"\s*(\d\d):(\d\d)\s*-\s*(\d\d):(\d\d)\s*", text)
    if not match:
        raise ValueError(f"expected HH:MM-HH:MM (such as 08:00-18:00), got {text!r}")
    h1, m1, h2, m2 = map(int, match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > 1440:
        raise ValueError(f"no such time in {text!r}")
    if end <= start:
        raise ValueError(f"{text!r} ends before it starts")
    return start, end


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
               "unreachable, tls, connection_closed, other), gateway_rejected, "
               "gateway_unavailable, platform_error, bad_answer, circuit_open (paused, not "
               "sent).", (*LABELS, "reason")),
    MetricSpec("insmon_settlement_sign_ins_total", "counter",
               "Sign-ins (9001) sent through the link: about one a day per operator; more "
               "means the platform keeps refusing the session.", LABELS),
    MetricSpec("insmon_settlement_tls_legacy", "gauge",
               "1 while the check accepts the gateway's old certificate or protocol "
               "(tls.legacy: OpenSSL security level 0)."),
    MetricSpec("insmon_settlement_last_transaction_timestamp_seconds", "gauge",
               "When the last transactions were sent (Unix time): outside business hours "
               "runs between them say their result again.", unit="seconds"),
)


class Breaker:
    """Per link: platform-side failures in a row, and until when it pauses."""

    def __init__(self) -> None:
        self.failures = 0
        self.pauses = 0
        self.until = 0.0

    def record(self, answer: fsi.Answer, after: int, interval: float) -> None:
        if answer.reason in PLATFORM_SIDE:
            self.failures += 1
            if self.failures >= after:
                self.until = time.monotonic() + min(interval * 2 ** self.pauses, MAX_PAUSE)
                self.pauses += 1
        elif answer.reason is None:
            self.failures = self.pauses = 0


class Session(NamedTuple):
    sign_no: str
    day: str             # the Beijing date of the sign-in
    fixmedins_code: str  # at which institution: another one needs its own
    sign_ins: int = 1    # the operator's sign-ins that day (at most max_sign_ins)


class Sessions:
    """Each operator's sign-in of the day, kept in a JSON file (written whole, then
    renamed) so a restart reuses it. A file that cannot be written costs a sign-in per
    restart, and is said in the log once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._warned = False
        self._operators: dict[str, Session] = {}
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError, KeyError):
            saved = json.loads(path.read_text())
            self._operators = {opter: Session(**fields)
                               for opter, fields in saved["operators"].items()}

    def get(self, opter: str, fixmedins_code: str, day: str) -> Session | None:
        """The operator's session of that day at that institution, if any."""
        session = self._operators.get(opter)
        if session is None or (session.day, session.fixmedins_code) != (day, fixmedins_code):
            return None
        return session

    def put(self, opter: str, session: Session | None) -> None:
        with self._lock:
            if session is None:
                self._operators.pop(opter, None)
            else:
                self._operators[opter] = session
            text = json.dumps({"operators": {k: v._asdict()
                                             for k, v in self._operators.items()}})
            # of this process: `insmon settlement try` may write beside the running check
            temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # a sign_no is a session's credential: readable by insmon only
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                if os.geteuid() == 0:  # `settlement try` by root: still insmon's file
                    owner = os.stat(self.path if self.path.exists() else self.path.parent)
                    os.fchown(fd, owner.st_uid, owner.st_gid)
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
        return {opter: session.sign_no for opter, session in self._operators.items()}


class Result(NamedTuple):
    answer: fsi.Answer
    sign_ins: int


Trace = Callable[[fsi.Wire, fsi.Answer], None]


class Probe:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.breakers = {link.name: Breaker() for link in cfg.links}
        self.sessions = Sessions(cfg.sessions_file)
        # one at a time per operator: the links of one operator share its sign-in
        self._operators = {cfg.operator(link)[0]: threading.Lock() for link in cfg.links}
        self._numbers = fsi.sequence_range(cfg.msgid_sequence)
        self._hours = business_hours(cfg.business_hours)
        self._calendar: WorkingCalendar | None = None
        self._calendar_warned = False
        self._last: tuple[datetime.datetime, ProbeResult] | None = None  # sent at, result

    async def run(self) -> ProbeResult:
        held = self._held()
        if held is not None:
            return held
        self._last = None  # a run abandoned at its deadline leaves no older result to repeat
        cfg = self.cfg
        sent_at = beijing_now()
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
                breaker.record(answer, cfg.breaker_after, self._interval_now(sent_at))
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
        samples.append(Sample("insmon_settlement_tls_legacy",
                              float(cfg.tls is not None and cfg.tls.legacy)))
        samples.append(Sample("insmon_settlement_last_transaction_timestamp_seconds",
                              sent_at.timestamp()))
        detail = f"{cfg.infno} {'settles' if possible else 'CANNOT settle'}: " + "; ".join(parts)
        result = ProbeResult("ok" if all(r.answer.reason is None for r in results)
                             else "failed", tuple(samples), detail)
        self._last = (sent_at, result)
        return result

    # ------------------------------------------------------------------ the rate

    def _business(self, moment: datetime.datetime) -> bool:
        """Whether `moment` (Beijing time) is in business hours on a working day."""
        start, end = self._hours
        if not start <= moment.hour * 60 + moment.minute < end:
            return False
        try:
            if self._calendar is None:
                self._calendar = WorkingCalendar(self.cfg.calendar_file)
            return self._calendar.is_workday(moment.date())
        except (ProbeFailure, ImportError) as exc:  # unknown: the business hours' rate
            if not self._calendar_warned:
                log.warning("check %s: %s: the transactions keep the business hours' rate",
                            self.cfg.name, exc)
                self._calendar_warned = True
            return True

    def _interval_now(self, moment: datetime.datetime) -> float:
        return self.cfg.interval if self._business(moment) else self.cfg.quiet_interval

    def _held(self) -> ProbeResult | None:
        """Outside business hours, a run between two transactions says the last result
        again, without its counts, marked as such; None when a transaction is due."""
        if self._last is None or self.cfg.quiet_interval <= self.cfg.interval:
            return None
        now = beijing_now()
        business = self._business(now)
        sent_at, last = self._last
        elapsed = (now - sent_at).total_seconds()
        # the scheduler's runs come an interval apart, give or take its jitter
        if business or not 0 <= elapsed < self.cfg.quiet_interval - self.cfg.interval / 2:
            return None
        counts = ("insmon_settlement_failures_total", "insmon_settlement_sign_ins_total",
                  "insmon_settlement_transaction_seconds")
        samples = tuple(s for s in last.samples if s.metric not in counts)
        samples += tuple(s._replace(value=0.0) for s in last.samples
                         if s.metric in counts[:2])
        return ProbeResult(last.status, samples, f"{last.detail} [measured "
                           f"{sent_at:%H:%M:%S}; outside business hours one transaction every "
                           f"{format_duration(self.cfg.quiet_interval)}]")

    # ------------------------------------------------------------------ one link

    def transact(self, link: Link, deadline: float, trace: Trace | None = None) -> Result:
        """One run through one link, blocking (on a thread of its own); never raises:
        the operator's sign-in of the day when there is none, then the transaction; when
        the platform says the sign-in is not valid, a new one (unless another link of
        the operator just made one) and the transaction again."""
        cfg = self.cfg
        day = f"{beijing_now():%Y-%m-%d}"
        failed, sign_no, sign_ins = self._session(link, day, "", deadline, trace)
        if failed is not None:
            return Result(failed, sign_ins)
        answer = self._send(link, cfg.infno, cfg.input or QUERY_INPUT, sign_no, deadline, trace)
        if answer.reason != "platform_error" or not cfg.not_signed_in.search(answer.message):
            return Result(answer._replace(detail=answer.detail + (", signed in" if sign_ins
                                                                  else "")), sign_ins)
        log.info("check %s link %s: the platform refused the day's sign-in (%s)", cfg.name,
                 link.name, answer.message)
        failed, sign_no, renewed = self._session(link, day, sign_no, deadline, trace)
        if failed is not None:
            return Result(failed, sign_ins + renewed)
        answer = self._send(link, cfg.infno, cfg.input or QUERY_INPUT, sign_no, deadline, trace)
        how = ("signed in again (the platform had refused the sign-in)" if renewed else
               "with the sign-in another link of the operator had just renewed")
        return Result(answer._replace(detail=f"{answer.detail}, {how}"), sign_ins + renewed)

    def _session(self, link: Link, day: str, refused: str, deadline: float,
                 trace: Trace | None) -> tuple[fsi.Answer | None, str, int]:
        """(None, the operator's sign_no, sign-ins sent): the day's session, or a new one
        when `refused` is the one kept; or (why there is none, "", sign-ins sent)."""
        cfg = self.cfg
        opter = cfg.operator(link)[0]
        lock = self._operators[opter]
        if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return fsi.Answer("timeout", None, None, None, f"the sign-in of operator {opter} "
                              "through another link took the whole run"), "", 0
        try:
            session = self.sessions.get(opter, cfg.fixmedins_code, day)
            if session is not None and session.sign_no != refused:
                return None, session.sign_no, 0
            done = session.sign_ins if session is not None else 0
            if done >= cfg.max_sign_ins:
                return fsi.Answer(
                    "platform_error", None, None, None,
                    f"the platform ended operator {opter}'s sign-in again after {done} "
                    f"sign-ins today (max_sign_ins): does another client sign in as {opter}? "
                    f"Give the check an operator of its own (opter); no more sign-ins today"
                ), "", 0
            failed, sign_no = self._sign_in(link, deadline, trace)
            if failed is None:
                self.sessions.put(opter, Session(sign_no, day, cfg.fixmedins_code, done + 1))
            return failed, sign_no, 1
        finally:
            lock.release()

    def _sign_in(self, link: Link, deadline: float,
                 trace: Trace | None) -> tuple[fsi.Answer | None, str]:
        """(None, the sign_no); or (why the sign-in failed, "")."""
        mac, ip = self.identity(link)
        opter = self.cfg.operator(link)[0]
        answer = self._send(link, SIGN_IN, {"signIn": {"opter_no": opter, "mac": mac,
                                                       "ip": ip}}, "", deadline, trace)
        output = (answer.body or {}).get("output")
        signed = output.get("signinoutb") if isinstance(output, dict) else None
        sign_no = str(signed.get("sign_no") or "") if isinstance(signed, dict) else ""
        if answer.reason is None and not sign_no:
            answer = answer._replace(reason="bad_answer",
                                     detail="infcode 0 without output.signinoutb.sign_no")
        if answer.reason is not None:
            return answer._replace(detail=f"sign-in (9001): {answer.detail}"), ""
        return None, sign_no

    def identity(self, link: Link) -> tuple[str, str]:
        """The MAC and IP a 9001 through the link gives: the config's, else those of the
        interface its traffic leaves through (a tunnel has no MAC: the host's first
        card's)."""
        mac, ip = link.mac or self.cfg.mac, link.ip or self.cfg.ip
        if mac and ip:
            return mac, ip
        parts = urlsplit(self.cfg.url_of(SIGN_IN))
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            address = net.local_address(host, port, link.source, link.interface)
        except OSError:
            address = ""  # no route: the sign-in fails for that reason anyway
        device = link.interface or (net.route_device(host, address) if address else None)
        return (mac or net.mac_of(device) or net.first_mac() or "00:00:00:00:00:00",
                ip or address)

    def sign_out(self, opter: str, deadline: float,
                 trace: Trace | None = None) -> fsi.Answer | None:
        """9002 签退 of the operator's sign-in, if it has one, through the first of its
        links that reaches the platform; the session ends either way."""
        sign_no = self.sessions.signed_in().get(opter)
        if sign_no is None:
            return None
        self.sessions.put(opter, None)
        answer = None
        for link in (li for li in self.cfg.links if self.cfg.operator(li)[0] == opter):
            answer = self._send(link, SIGN_OUT, {"signOut": {"sign_no": sign_no,
                                                             "opter_no": opter}},
                                sign_no, deadline, trace)
            if answer.reason not in NET_REASONS:
                break
        return answer

    async def close(self) -> None:
        """insmon stops: sign out where the site wants it."""
        if not self.cfg.sign_out:
            return
        deadline = time.monotonic() + self.cfg.timeout
        opters = list(self._operators)
        answers = await asyncio.gather(*(run_blocking(self.sign_out, opter, deadline)
                                         for opter in opters))
        for opter, answer in zip(opters, answers, strict=True):
            if answer is not None:
                log.info("check %s operator %s: sign-out (9002): %s", self.cfg.name, opter,
                         answer.detail if answer.reason else "done")

    def _send(self, link: Link, infno: str, data: dict, sign_no: str, deadline: float,
              trace: Trace | None) -> fsi.Answer:
        cfg = self.cfg
        body = json.dumps(self.message(link, infno, data, sign_no),
                          ensure_ascii=False).encode()
        url = cfg.url_of(infno)
        try:
            signed = cfg.gateway.sign(url, infno, body)
        except SecretError as exc:  # an unset variable, an unreadable file
            return fsi.Answer("other", None, None, None, str(exc))
        return fsi.exchange(url, signed.headers, body, deadline, cfg.tls, link.source,
                            link.interface, cfg.gateway.envelope, signed.string, trace)

    def message(self, link: Link, infno: str, data: dict, sign_no: str) -> dict[str, Any]:
        """The platform's common fields around a transaction's input."""
        cfg = self.cfg
        now = beijing_now()
        opter, opter_name = cfg.operator(link)
        return {
            "infno": infno, "msgid": fsi.msgid(cfg.fixmedins_code, now, self._numbers),
            "mdtrtarea_admvs": cfg.mdtrtarea_admvs, "insuplc_admdvs": cfg.insuplc_admdvs,
            "recer_sys_code": cfg.recer_sys_code, "dev_no": cfg.dev_no,
            "dev_safe_info": cfg.dev_safe_info, "cainfo": cfg.cainfo,
            "signtype": cfg.signtype, "infver": cfg.infver, "opter_type": cfg.opter_type,
            "opter": opter, "opter_name": opter_name,
            "inf_time": f"{now:%Y-%m-%d %H:%M:%S}", "fixmedins_code": cfg.fixmedins_code,
            "fixmedins_name": cfg.fixmedins_name, "sign_no": sign_no, "input": data,
        }


def beijing_now() -> datetime.datetime:
    return datetime.datetime.now(SHANGHAI)


async def _paused(seconds: float) -> Result:
    return Result(fsi.Answer("circuit_open", None, None, None,
                             f"paused after repeated platform errors, {seconds:.0f} s more"), 0)


def try_links(cfg: Config, say: Callable[[str], None]) -> int:
    """`insmon settlement try`: one run of the check through each link, every request and
    answer said with the secrets starred (with the agency's engineer, before the check is
    enabled); how many links failed. SecretError when the secret cannot be read."""
    secrets = (cfg.gateway.secret.reveal("gateway secret"),) if cfg.gateway.secret else ()
    probe = Probe(cfg)
    failed = 0
    for link in cfg.links:
        say(f"== {cfg.name}: link {link.name} ({link.role}), {cfg.gateway.dialect} dialect")
        result = probe.transact(link, time.monotonic() + cfg.timeout,
                                lambda wire, answer: say(fsi.shown(wire, answer, secrets)))
        say(f"== {link.name}: {'OK' if result.answer.reason is None else 'FAILED'}: "
            f"{result.answer.detail}\n")
        failed += result.answer.reason is not None
    return failed


KIND = Kind(Config, METRICS, Probe)
