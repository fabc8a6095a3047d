"""The national medical-security platform's interface (国家医保信息平台接口) as a client
speaks it to a provincial gateway: the gateway's signature in each dialect, each
transaction's URL, message ids, and one exchange over HTTP or HTTPS.

Dialects (the gateway in front of the platform differs by province):
  none   the site's own front-end (前置机) signs: the message goes as it is
  x-tif  x-tif-paasid, x-tif-timestamp (s), x-tif-nonce and x-tif-signature =
         hex(SHA-256(timestamp + token + nonce + timestamp)) (e.g. Guangdong, Hebei)
  csb    an Alibaba CSB gateway: _api_name, _api_version, _api_timestamp (ms),
         _api_access_key, _api_nonce and _api_signature = Base64(HMAC-SHA1(secret key,
         the _api_* fields sorted by name, k=v joined by &)); the body is not signed
  x-ca   x-ca-key, x-ca-timestamp (ms) and x-ca-signature = timestamp + ":" +
         hex(HMAC-SM3(secret, timestamp + "\\n" + body)); the body is signed

SM3 comes from OpenSSL through hashlib (Debian, Ubuntu, Kylin and UOS builds have it);
where a host's OpenSSL lacks it, from the `gmssl` package (`pip install 'insmon[sm3]'`):
the most used pure-Python SM3, so no compiler is needed on a hospital host.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import itertools
import json
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, model_validator

from probes.lib.net import Cutter, connect_within, failure, left
from probes.lib.secret import Secret

DIALECTS = ("none", "x-tif", "csb", "x-ca")
# Header values that would let someone replay a message: starred wherever one is shown.
SIGNATURES = frozenset({"x-tif-signature", "_api_signature", "x-ca-signature"})
MAX_ANSWER = 1 << 20


def _sm3_openssl(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, "sm3").hexdigest()


def _sm3_gmssl(key: bytes, message: bytes) -> str:
    """HMAC (RFC 2104, 64-byte blocks) over gmssl's SM3, which hashes lists of bytes."""
    from gmssl import sm3

    def digest(data: bytes) -> bytes:
        return bytes.fromhex(sm3.sm3_hash(list(data)))

    if len(key) > 64:
        key = digest(key)
    key = key.ljust(64, b"\0")
    inner = digest(bytes(b ^ 0x36 for b in key) + message)
    return digest(bytes(b ^ 0x5C for b in key) + inner).hex()


def _sm3() -> Callable[[bytes, bytes], str] | None:
    if "sm3" in hashlib.algorithms_available:
        return _sm3_openssl
    try:
        import gmssl.sm3  # noqa: F401
    except ImportError:
        return None
    return _sm3_gmssl


hmac_sm3 = _sm3()


class Gateway(BaseModel):
    """The provincial gateway's signature: a check's `gateway` key."""
    model_config = ConfigDict(extra="forbid")
    dialect: Literal["none", "x-tif", "csb", "x-ca"] = "none"
    key: str = ""                 # x-tif: the paas id; csb: the access key; x-ca: the app key
    secret: Secret | None = None  # x-tif: the paas token; csb and x-ca: the secret key
    api_name: str = "hsa-fsi-{infno}"  # csb: the service name of a transaction
    api_version: str = "1.0.0"         # csb

    @model_validator(mode="after")
    def _credentials(self) -> Gateway:
        if self.dialect == "none":
            if self.key or self.secret is not None:
                raise ValueError("dialect none signs nothing (the front-end signs): key and "
                                 "secret belong to x-tif, csb or x-ca")
        elif not self.key or self.secret is None:
            raise ValueError(f"the {self.dialect} dialect needs key and secret")
        if self.dialect == "x-ca" and hmac_sm3 is None:
            raise ValueError("the x-ca dialect signs with SM3, which this host's OpenSSL "
                             "lacks: install the gmssl package (pip install 'insmon[sm3]')")
        return self


def signature_headers(gateway: Gateway, infno: str, body: bytes, now: float | None = None,
                      nonce: str | None = None) -> dict[str, str]:
    """The headers that sign one message in the gateway's dialect."""
    if gateway.dialect == "none" or gateway.secret is None:
        return {}
    now = time.time() if now is None else now
    nonce = nonce or secrets.token_hex(16)
    secret = gateway.secret.reveal(f"gateway {gateway.dialect} secret")
    if gateway.dialect == "x-tif":
        stamp = str(int(now))
        return {"x-tif-paasid": gateway.key, "x-tif-timestamp": stamp, "x-tif-nonce": nonce,
                "x-tif-signature": hashlib.sha256(
                    f"{stamp}{secret}{nonce}{stamp}".encode()).hexdigest()}
    stamp = str(int(now * 1000))
    if gateway.dialect == "csb":
        fields = {"_api_name": gateway.api_name.replace("{infno}", infno),
                  "_api_version": gateway.api_version, "_api_timestamp": stamp,
                  "_api_access_key": gateway.key, "_api_nonce": nonce}
        return fields | {"_api_signature": csb_signature(secret, fields)}
    assert hmac_sm3 is not None  # the config refused x-ca without it
    return {"x-ca-key": gateway.key, "x-ca-timestamp": stamp,
            "x-ca-signature": f"{stamp}:" + hmac_sm3(secret.encode(),
                                                     stamp.encode() + b"\n" + body)}


def csb_signature(secret: str, fields: Mapping[str, str]) -> str:
    text = "&".join(f"{k}={v}" for k, v in sorted(fields.items()) if k != "_api_signature")
    return base64.b64encode(hmac.new(secret.encode(), text.encode(), "sha1").digest()).decode()


class Tls(BaseModel):
    """HTTPS to the gateway: the CA that signed its certificate, and the hospital's
    client certificate where the gateway asks for one."""
    model_config = ConfigDict(extra="forbid")
    ca_file: Path | None = None  # else the system's CAs
    cert_file: Path | None = None
    key_file: Path | None = None  # else the key is in cert_file
    server_name: str | None = None  # the name in the gateway's certificate, if not the URL's

    @model_validator(mode="after")
    def _pair(self) -> Tls:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file without cert_file")
        return self

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file else None)
        if self.cert_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


def check_url(url: str) -> str:
    parts = urlsplit(url.replace("{infno}", "0000"))
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.password:
        raise ValueError("expected an http:// or https:// URL with a host and no password "
                         "in it")
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


_sequence = itertools.count(secrets.randbelow(10000))
_sequence_lock = threading.Lock()


def msgid(fixmedins_code: str, now: Any) -> str:
    """The 30-character message id: institution code, yyyyMMddHHmmss, a 4-digit sequence.
    One sequence for every check and link of the process, from a random start, so no two
    messages of a second share an id (nor, but by a 1 in 10,000 chance, across a
    restart within that second)."""
    with _sequence_lock:
        sequence = next(_sequence) % 10000
    return f"{fixmedins_code}{now:%Y%m%d%H%M%S}{sequence:04d}"


class Answer(NamedTuple):
    """One exchange. reason None: infcode 0. `message` is the platform's or the
    gateway's own words (err_msg, message), `body` the answer's JSON object."""
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


def shown(wire: Wire, secrets: tuple[str, ...] = ()) -> str:
    """A request and its answer as text, signatures and the given secrets starred."""
    def starred(text: str) -> str:
        for secret in secrets:
            if secret:
                text = text.replace(secret, "****")
        return text

    lines = [f"> POST {wire.url}"]
    lines += [f"> {k}: {'****' if k.lower() in SIGNATURES else starred(v)}"
              for k, v in wire.headers.items()]
    lines += [">", "> " + starred(wire.body.decode(errors="replace")), ""]
    if wire.status is None:
        lines.append("< (no answer)")
    else:
        lines.append(f"< HTTP {wire.status}")
        lines += [f"< {k}: {starred(v)}" for k, v in wire.answer_headers]
        lines += ["<", "< " + starred(wire.answer.decode(errors="replace"))]
    return "\n".join(lines) + "\n"


def exchange(url: str, headers: Mapping[str, str], body: bytes, deadline: float,
             tls: Tls | None = None, source: str | None = None, interface: str | None = None,
             trace: Callable[[Wire], None] | None = None) -> Answer:
    """POST one message by `deadline` (time.monotonic()), through the link's `interface`
    or from its `source`; never raises."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    sent = {"Content-Type": "application/json;charset=utf-8", "Connection": "close",
            **headers}
    within = f"within {max(0.0, deadline - time.monotonic()):.1f}s"
    started = time.perf_counter()
    sock = cutter = None
    status, answer_headers, raw = None, (), b""
    try:
        sock = connect_within(host, port, source, interface, deadline)
        cutter = Cutter(sock, deadline)  # a trickled answer ends at the deadline too
        if parts.scheme == "https":
            context = (tls or Tls()).context()
            sock = cutter.socket = context.wrap_socket(
                sock, server_hostname=(tls.server_name if tls and tls.server_name else host))
        sock.settimeout(left(deadline))
        conn = http.client.HTTPConnection(host, port, timeout=left(deadline))
        conn.sock = sock
        conn.request("POST", target, body=body, headers=sent)
        response = conn.getresponse()
        status, answer_headers = response.status, tuple(response.getheaders())
        raw = response.read(MAX_ANSWER)
        if cutter.cut.is_set() or time.monotonic() > deadline:
            raise TimeoutError
    except OSError as exc:
        why, words = failure(exc, host, port, cutter is not None and cutter.cut.is_set(),
                             f"no answer from {host}:{port} {within}")
        return Answer(why, None, None, None, words)
    except http.client.HTTPException as exc:
        if cutter is not None and cutter.cut.is_set():  # cut mid-answer at the deadline
            return Answer("timeout", None, None, None, f"no answer from {host}:{port} {within}")
        return Answer("bad_answer", None, None, None,
                      f"not an HTTP answer from {host}:{port}: {type(exc).__name__}")
    finally:
        if cutter is not None:
            cutter.cancel()
        if sock is not None:
            sock.close()
        if trace is not None:
            trace(Wire(url, sent, body, status, answer_headers, raw))
    return judge(status, dict((k.lower(), v) for k, v in answer_headers), raw,
                 time.perf_counter() - started)


def judge(status: int, headers: Mapping[str, str], raw: bytes, seconds: float) -> Answer:
    """What an answer says: the gateway's refusal (HTTP 401/403, a CSB-style
    {"code", "message"} without infcode whatever the HTTP status, an x-ca error header),
    the platform's infcode, or no platform JSON at all."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = None
    said = _said(body, headers)
    if status in (401, 403) or (body is not None and "infcode" not in body
                                and str(body.get("code", "0")) not in ("0", "200")):
        return Answer("gateway_rejected", status, None, seconds,
                      f"the gateway refused the message: HTTP {status} {said}".rstrip(),
                      said, body)
    try:
        infcode = int(body["infcode"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return Answer("bad_answer", status, None, seconds,
                      f"HTTP {status} without the platform's JSON: {raw[:60]!r}")
    if status != 200 or infcode != 0:
        return Answer("platform_error", status, infcode, seconds,
                      f"infcode {infcode}: {said}", said, body)
    return Answer(None, status, infcode, seconds, f"infcode 0 in {seconds * 1000:.0f} ms",
                  "", body)


def _said(body: dict | None, headers: Mapping[str, str]) -> str:
    words = (body or {}).get("err_msg") or (body or {}).get("message") \
        or headers.get("x-ca-error-message") or ""
    return str(words)[:120]
