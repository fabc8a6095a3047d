"""The national medical-security platform's interface (国家医保信息平台接口) as a client
speaks it to a provincial gateway: the gateway's settings (its dialect's signature,
probes/lib/dialects.py, and the envelope it may wrap answers in), each transaction's
URL, message ids, one exchange over HTTP or HTTPS, and what an answer says.

An answer is read as real front-ends send it: the charset its Content-Type names, else
UTF-8, else GB18030 (old front-ends answer in GBK); the platform's JSON as it is or in
the gateway's own envelope ({"code": 0, "data": {...}}, {"code": "0000", "message":
"成功", "data": {...}}); the gateway's words from message, msg, errMsg or the header
its dialect names for them (x-ca: X-Ca-Error-Message). Each failure has a reason that
tells faults apart:
  gateway_rejected     the gateway refused the message (HTTP 401/403/4xx, its envelope's
                       code not a success, an X-Ca-Error-Message)
  gateway_unavailable  HTTP 5xx without the platform's answer: a proxy's 502/503/504, the
                       gateway with nothing behind it (in its own JSON too)
  platform_error       the platform answered, infcode not 0 (its err_msg in the detail),
                       also inside an envelope whose code says failure
  bad_answer           only what cannot be read as any of these
and the network reasons (probes/lib/net.py), connection_closed among them.
"""

from __future__ import annotations

import http.client
import itertools
import json
import re
import secrets
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from probes.lib import dialects, net
from probes.lib.net import failure, legacy_name_check, redacted
from probes.lib.secret import Secret

MAX_ANSWER = 1 << 20
# The platform's and the gateways' words for what went wrong, first found first.
WORDS = ("err_msg", "message", "msg", "errMsg", "error_msg", "errmsg")


class Envelope(BaseModel):
    """Where a gateway that wraps the platform's answer puts it, and which of its codes
    mean success. The defaults recognise the common ones."""
    model_config = ConfigDict(extra="forbid")
    code: str = "code"  # the gateway's own result code
    data: str = "data"  # the platform's answer (an object, or JSON in a string)
    ok_codes: list[int | str] = Field(default_factory=lambda: [0, "0", "0000", 200, "200"],
                                      min_length=1)

    def ok(self, code: object) -> bool:
        return str(code) in {str(c) for c in self.ok_codes}


DialectName = Literal[tuple(dialects.DIALECTS)]  # type: ignore[valid-type]


class GatewayKeys(BaseModel):
    """The provincial gateway: a check's `gateway` key. `key` and `secret` are what the
    dialect calls them (x-tif: the paas id and token; csb: the access and secret key;
    x-ca: the app key and secret); each dialect's own keys are added by Gateway below."""
    model_config = ConfigDict(extra="forbid")
    dialect: DialectName = "none"
    key: str = ""
    secret: Secret | None = None
    envelope: Envelope = Envelope()

    @property
    def options(self) -> dict[str, Any]:
        """The values of the dialect's own keys."""
        return {name: getattr(self, name) for name in dialects.DIALECTS[self.dialect].options}

    @model_validator(mode="after")
    def _credentials(self) -> GatewayKeys:
        dialect = dialects.DIALECTS[self.dialect]
        if not dialect.signs:
            if self.key or self.secret is not None:
                signers = [d.name for d in dialects.DIALECTS.values() if d.signs]
                raise ValueError(f"dialect {dialect.name} signs nothing (the front-end signs): "
                                 f"key and secret belong to {', '.join(signers[:-1])} or "
                                 f"{signers[-1]}")
        elif not self.key or self.secret is None:
            raise ValueError(f"the {self.dialect} dialect needs key and secret")
        for other in dialects.DIALECTS.values():
            # another dialect's keys that it refuses elsewhere: those whose default is None
            refused = [name for name, (_, default) in other.options.items() if default is None]
            if other is not dialect and any(getattr(self, k) is not None for k in refused):
                raise ValueError(f"{' and '.join(refused)} "
                                 f"{'is' if len(refused) == 1 else 'are'} the {other.name} "
                                 "dialect's")
        dialect.check(self.options)
        return self

    def sign(self, url: str, infno: str, body: bytes, now: float | None = None,
             nonce: str | None = None) -> dialects.Signed:
        """The headers that sign one message in the gateway's dialect, and what was
        signed; SecretError when the secret cannot be read."""
        if not dialects.DIALECTS[self.dialect].signs or self.secret is None:
            return dialects.Signed({}, "")
        credentials = dialects.Credentials(
            self.key, self.secret.reveal(f"gateway {self.dialect} secret"), self.options)
        return dialects.sign(self.dialect, credentials, dialects.Message(url, infno, body),
                             now, nonce)


# The gateway's config: its common keys and every dialect's own (from the registry).
Gateway = create_model("Gateway", __base__=GatewayKeys, __module__=__name__, **{
    name: definition for dialect in dialects.DIALECTS.values()
    for name, definition in dialect.options.items()})


class Tls(BaseModel):
    """HTTPS to the gateway: the CA that signed its certificate, and the hospital's
    client certificate where the gateway asks for one."""
    model_config = ConfigDict(extra="forbid")
    ca_file: Path | None = None  # else the system's CAs
    cert_file: Path | None = None
    key_file: Path | None = None  # else the key is in cert_file
    server_name: str | None = None  # the name in the gateway's certificate, if not the URL's
    # An agency's old certificate or server (RSA-1024, SHA-1, a CN without SAN, TLS 1.0)
    # that the HIS accepts: OpenSSL's security level 0, said by a metric. Never a default.
    legacy: bool = False

    @model_validator(mode="after")
    def _pair(self) -> Tls:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file without cert_file")
        return self

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file else None)
        if self.legacy:
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
            with warnings.catch_warnings():  # TLS 1.0 and 1.1: deprecated, and wanted here
                warnings.simplefilter("ignore", DeprecationWarning)
                context.minimum_version = ssl.TLSVersion.TLSv1
            context.check_hostname = False  # legacy_name_check, which reads a CN too
        if self.cert_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


def check_url(url: str) -> str:
    parts = urlsplit(url.replace("{infno}", "0000"))
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.password:
        raise ValueError("expected an http:// or https:// URL with a host and no password "
                         f"in it, got {redacted(url)!r}")
    return url


def check_paths(paths: dict[str, str]) -> dict[str, str]:
    for infno, path in paths.items():
        if not (len(infno) == 4 and infno.isdigit()):
            raise ValueError(f"{infno!r} is no infno (four digits)")
        if not path.startswith("/"):
            check_url(path)
    return paths


def url_of(url: str, paths: Mapping[str, str], infno: str) -> str:
    """A transaction's URL: `url` with {infno} put in (one endpoint for all when it has
    none), unless `paths` names the transaction: a path on url's host, or a URL."""
    target = paths.get(infno)
    if target is None:
        return url.replace("{infno}", infno)
    if target.startswith("/"):
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}{target}"
    return target.replace("{infno}", infno)


def sequence_range(text: str) -> tuple[int, int]:
    """'9000-9999': the msgid sequence numbers a check may use, within 0000-9999."""
    match = re.fullmatch(r"\s*(\d{1,4})\s*-\s*(\d{1,4})\s*", text)
    if not match or int(match[1]) > int(match[2]):
        raise ValueError(f"expected FIRST-LAST within 0-9999 (such as 9000-9999), got {text!r}")
    first, last = int(match[1]), int(match[2])
    if last - first < 9:
        raise ValueError(f"{text!r} holds {last - first + 1} numbers: give at least 10, so no "
                         "two messages of a second share an id")
    return first, last


_sequence = itertools.count(secrets.randbelow(10000))
_sequence_lock = threading.Lock()


def msgid(fixmedins_code: str, now: Any, numbers: tuple[int, int] = (0, 9999)) -> str:
    """The 30-character message id: institution code, yyyyMMddHHmmss, a 4-digit sequence
    number from `numbers` (a range the HIS's own messages leave clear). One sequence for
    every check and link of the process, from a random start, so no two messages of a
    second share an id (nor, but by a small chance, across a restart within it)."""
    first, last = numbers
    with _sequence_lock:
        sequence = first + next(_sequence) % (last - first + 1)
    return f"{fixmedins_code}{now:%Y%m%d%H%M%S}{sequence:04d}"


class Answer(NamedTuple):
    """One exchange. reason None: infcode 0. `message` is the platform's or the
    gateway's own words, `body` the platform's answer (out of its envelope)."""
    reason: str | None
    status: int | None
    infcode: int | None
    seconds: float | None
    detail: str
    message: str = ""
    body: dict | None = None


class Wire(NamedTuple):
    """What went over the wire, for `insmon settlement try`."""
    url: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None
    answer_headers: tuple[tuple[str, str], ...] = ()
    answer: bytes = b""
    signed: str = ""  # the string the dialect signed


def shown(wire: Wire, answer: Answer | None = None, secrets: tuple[str, ...] = ()) -> str:
    """A request and its answer as text, signatures and the given secrets starred; for a
    message the gateway refused, also the string that was signed (to compare with the
    province's document or the gateway's own, which Alibaba's puts in its error)."""
    def starred(text: str) -> str:
        for secret in secrets:
            if secret:
                text = text.replace(secret, "****")
        return text

    lines = [f"> POST {wire.url}"]
    lines += [f"> {k}: {'****' if k.lower() in dialects.SIGNATURE_HEADERS else starred(v)}"
              for k, v in wire.headers.items()]
    lines += [">", "> " + starred(wire.body.decode(errors="replace")), ""]
    if wire.status is None:
        lines.append("< (no answer)")
    else:
        lines.append(f"< HTTP {wire.status}")
        lines += [f"< {k}: {starred(v)}" for k, v in wire.answer_headers]
        lines += ["<", "< " + starred(decode(wire.answer, dict(
            (k.lower(), v) for k, v in wire.answer_headers).get("content-type", "")) or
            wire.answer.decode(errors="replace"))]
    if answer is not None and answer.reason == "gateway_rejected" and wire.signed:
        lines += ["", "the string signed (secret starred, \\n a line feed):",
                  "  " + starred(wire.signed).replace("\n", "\\n")]
    return "\n".join(lines) + "\n"


def exchange(url: str, headers: Mapping[str, str], body: bytes, deadline: float,
             tls: Tls | None = None, source: str | None = None, interface: str | None = None,
             envelope: Envelope | None = None, signed: str = "",
             trace: Callable[[Wire, Answer], None] | None = None) -> Answer:
    """POST one message by `deadline` (time.monotonic()), through the link's `interface`
    or from its `source`; never raises."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    sent = {"Content-Type": dialects.CONTENT_TYPE, "Connection": "close", **headers}
    within = f"within {max(0.0, deadline - time.monotonic()):.1f}s"
    started = time.perf_counter()
    tls = tls or Tls()
    name = tls.server_name or host
    done = net.exchange(
        url, "POST", sent, deadline, body=body, limit=MAX_ANSWER + 1,
        tls=tls.context, server_name=name,
        check_peer=(lambda sock: legacy_name_check(sock.getpeercert() or {}, name))
        if tls.legacy else None, source=source, interface=interface)
    status, answer_headers, raw = done.status, done.headers, done.body
    exc = done.error
    if exc is None and time.monotonic() > deadline:  # answered, but too late
        exc = TimeoutError()
    answer = None
    if isinstance(exc, OSError | http.client.IncompleteRead) or (exc is not None and done.cut):
        why, words = failure(exc, host, port, done.cut, f"no answer from {host}:{port} {within}",
                             "tls.legacy: true accepts it")
        answer = Answer(why, status, None, None, words)
    elif exc is not None:  # a status line or headers that are no HTTP
        answer = Answer("bad_answer", None, None, None,
                        f"not an HTTP answer from {host}:{port}: {type(exc).__name__}")
    elif len(raw) > MAX_ANSWER:
        raw = raw[:MAX_ANSWER]
        answer = Answer("bad_answer", status, None, time.perf_counter() - started,
                        f"HTTP {status}: an answer over {MAX_ANSWER >> 20} MiB, not read "
                        "further")
    if answer is None:
        answer = judge(status or 0, dict((k.lower(), v) for k, v in answer_headers), raw,
                       time.perf_counter() - started, envelope or Envelope())
    if trace is not None:
        trace(Wire(url, sent, body, status, answer_headers, raw, signed), answer)
    return answer


def decode(raw: bytes, content_type: str) -> str | None:
    """The answer's text: in the charset its Content-Type names, else UTF-8 (a BOM
    dropped), else GB18030 (a superset of GBK and GB2312); None when none reads it."""
    match = re.search(r"charset\s*=\s*\"?([\w.:-]+)", content_type, re.IGNORECASE)
    named = match[1].lower() if match else None
    if named in ("gbk", "gb2312", "cp936", "x-gbk"):
        named = "gb18030"
    if named in ("utf-8", "utf8"):  # a BOM before JSON said to be UTF-8 (.NET, Windows)
        named = "utf-8-sig"
    for charset in dict.fromkeys(c for c in (named, "utf-8-sig", "gb18030") if c):
        try:
            return raw.decode(charset)
        except (LookupError, UnicodeDecodeError):
            continue
    return None


def judge(status: int, headers: Mapping[str, str], raw: bytes, seconds: float,
          envelope: Envelope | None = None) -> Answer:
    """What an answer says (see the module's docstring)."""
    envelope = envelope or Envelope()
    text = decode(raw, headers.get("content-type", ""))
    body = _json_object(text)
    header_words = next((headers[h] for h in dialects.REFUSAL_HEADERS if headers.get(h)), "")
    if body is not None and "infcode" not in body and envelope.code in body:
        code = body[envelope.code]
        said = _said(body, header_words)
        inner = body.get(envelope.data)
        inner = _json_object(inner) if isinstance(inner, str) else inner
        platform = isinstance(inner, dict) and "infcode" in inner
        if not envelope.ok(code) and not (platform and str(inner["infcode"]) != "0"):
            # a failing code around the platform's own error is the platform's (below)
            if status >= 500 and not platform:  # nothing behind the gateway
                return Answer("gateway_unavailable", status, None, seconds,
                              f"HTTP {status} from the gateway or a proxy before it, "
                              f"without the platform's answer: {said or code}", said)
            return Answer("gateway_rejected", status, None, seconds,
                          f"the gateway refused the message: HTTP {status} code {code} "
                          f"{said}".rstrip(), said, body)
        if not platform:
            return Answer("bad_answer", status, None, seconds,
                          f"HTTP {status}: the gateway said code {code} {said}".rstrip()
                          + f" but `{envelope.data}` holds no platform answer", said)
        body = inner
    if body is None or "infcode" not in body:
        said = _said(body, header_words) or _title(text)
        if status >= 500:
            return Answer("gateway_unavailable", status, None, seconds,
                          f"HTTP {status} from the gateway or a proxy before it, without the "
                          f"platform's answer: {said or _start(raw)}", said)
        if 300 <= status < 400 and headers.get("location"):  # moved (to https://?)
            return Answer("bad_answer", status, None, seconds,
                          f"HTTP {status}: the gateway sends the message elsewhere: Location "
                          f"{headers['location'][:160]}")
        if status >= 400 or header_words:
            return Answer("gateway_rejected", status, None, seconds,
                          f"the gateway refused the message: HTTP {status} {said}".rstrip(),
                          said, body)
        return Answer("bad_answer", status, None, seconds,
                      f"HTTP {status} without the platform's JSON: {_start(raw)}")
    said = _said(body, header_words)
    try:
        infcode = int(body["infcode"])
    except (TypeError, ValueError):
        return Answer("bad_answer", status, None, seconds,
                      f"HTTP {status}: infcode {body['infcode']!r} is no number")
    if status != 200 or infcode != 0:
        return Answer("platform_error", status, infcode, seconds,
                      f"infcode {infcode}: {said}".rstrip(": "), said, body)
    return Answer(None, status, infcode, seconds, f"infcode 0 in {seconds * 1000:.0f} ms",
                  "", body)


def _json_object(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _said(body: dict | None, header_words: str = "") -> str:
    words = next((body[k] for k in WORDS if body and body.get(k)), None) or header_words
    return str(words or "")[:160]


def _title(text: str | None) -> str:
    """An HTML error page's title (nginx: <title>502 Bad Gateway</title>)."""
    match = re.search(r"<title>\s*(.*?)\s*</title>", text or "", re.IGNORECASE | re.DOTALL)
    return match[1][:120] if match else ""


def _start(raw: bytes) -> str:
    return repr(raw[:60])
