"""How each provincial gateway signs a message, one object per dialect, each written from
its reference (named in its docstring) and registered in DIALECTS below. A dialect says
all that differs between gateways: whether it needs the gateway's key and secret, the
config keys of its own (`gateway.<key>`, with their defaults), the headers that sign one
message and the string it signed (which `insmon settlement try` shows, the secret
starred, when a gateway refuses the signature), the headers whose values are secret
(starred wherever shown), and the headers in which its gateway says why it refused.
The settlement check's config (probes/lib/fsi.py: `Gateway`) is derived from DIALECTS.

A province that signs otherwise is another dialect: one class here, with its reference,
and one entry in DIALECTS.

SM3 comes from OpenSSL through hashlib (Debian, Ubuntu, Kylin and UOS builds have it);
where a host's OpenSSL lacks it, from the `gmssl` package (`pip install 'insmon[sm3]'`):
the most used pure-Python SM3, so no compiler is needed on a hospital host.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, Protocol
from urllib.parse import parse_qsl, urlsplit

# What every message of the platform's protocol is: JSON in UTF-8.
CONTENT_TYPE = "application/json;charset=utf-8"
ACCEPT = "application/json"


class Signed(NamedTuple):
    headers: dict[str, str]  # to send: the signature's, and those it covers
    string: str              # what was signed; may hold the secret (x-tif): star it


class Message(NamedTuple):
    """What a dialect may sign of one request."""
    url: str      # the whole URL: its path and query are signed by x-ca
    infno: str    # csb names the service after it
    body: bytes


class Credentials(NamedTuple):
    key: str
    secret: str
    options: Mapping[str, Any] = MappingProxyType({})  # the dialect's own keys' values


class Dialect(Protocol):
    name: str
    signs: bool  # needs the gateway's key and secret
    # Its own keys of the gateway's config: name -> (type, default), as pydantic's
    # create_model takes them. Under another dialect a key set to other than None is an
    # error, so a key that must be refused there has the default None.
    options: Mapping[str, tuple[Any, Any]]
    signature_headers: frozenset[str]  # lower-case: starred wherever shown
    refusal_headers: tuple[str, ...]   # lower-case: where its gateway says why it refused

    def check(self, options: Mapping[str, Any]) -> None:
        """ValueError when its keys' values cannot sign on this host."""

    def sign(self, credentials: Credentials, message: Message, now: float,
             nonce: str | None) -> Signed: ...


# ------------------------------------------------------------------ SM3

def _sm3_openssl(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, "sm3").digest()


def _sm3_gmssl(key: bytes, message: bytes) -> bytes:
    """HMAC (RFC 2104, 64-byte blocks) over gmssl's SM3, which hashes lists of bytes."""
    from gmssl import sm3

    def digest(data: bytes) -> bytes:
        return bytes.fromhex(sm3.sm3_hash(list(data)))

    if len(key) > 64:
        key = digest(key)
    key = key.ljust(64, b"\0")
    inner = digest(bytes(b ^ 0x36 for b in key) + message)
    return digest(bytes(b ^ 0x5C for b in key) + inner)


def _sm3() -> Callable[[bytes, bytes], bytes] | None:
    if "sm3" in hashlib.algorithms_available:
        return _sm3_openssl
    try:
        import gmssl.sm3  # noqa: F401
    except ImportError:
        return None
    return _sm3_gmssl


hmac_sm3 = _sm3()


# ------------------------------------------------------------------ the dialects

class BaseDialect:
    """What most dialects share: no keys of their own, nothing to check."""
    signs = True
    options: Mapping[str, tuple[Any, Any]] = MappingProxyType({})
    signature_headers: frozenset[str] = frozenset()
    refusal_headers: tuple[str, ...] = ()

    def check(self, options: Mapping[str, Any]) -> None:
        return None


class Unsigned(BaseDialect):
    """The site's own front-end (前置机) signs: the message goes as it is."""
    name = "none"
    signs = False

    def sign(self, credentials: Credentials, message: Message, now: float,
             nonce: str | None) -> Signed:
        return Signed({}, "")


class XTif(BaseDialect):
    """x-tif-paasid, x-tif-timestamp (s), x-tif-nonce and x-tif-signature =
    hex(SHA-256(timestamp + token + nonce + timestamp)) (e.g. Guangdong, Hebei). `key` is
    the paas id, `secret` the paas token."""
    name = "x-tif"
    signature_headers = frozenset({"x-tif-signature"})

    def sign(self, credentials: Credentials, message: Message, now: float,
             nonce: str | None) -> Signed:
        stamp, nonce = str(int(now)), nonce or uuid.uuid4().hex
        text = f"{stamp}{credentials.secret}{nonce}{stamp}"
        return Signed({"x-tif-paasid": credentials.key, "x-tif-timestamp": stamp,
                       "x-tif-nonce": nonce,
                       "x-tif-signature": hashlib.sha256(text.encode()).hexdigest()}, text)


class Csb(BaseDialect):
    """An Alibaba CSB gateway: _api_name, _api_version, _api_timestamp (ms),
    _api_access_key, _api_nonce and _api_signature = Base64(HMAC-SHA1(secret key, the
    _api_* fields sorted by name, k=v joined by &)); the body is not signed. `key` is
    the access key, `secret` the secret key."""
    name = "csb"
    # Defaults that are no None: another dialect's config may carry them, as it always
    # could.
    options = MappingProxyType({
        "api_name": (str, "hsa-fsi-{infno}"),  # the service name of a transaction
        "api_version": (str, "1.0.0")})
    signature_headers = frozenset({"_api_signature"})

    def sign(self, credentials: Credentials, message: Message, now: float,
             nonce: str | None) -> Signed:
        options = {name: default for name, (_, default) in self.options.items()} | \
            dict(credentials.options)
        fields = {"_api_name": options["api_name"].replace("{infno}", message.infno),
                  "_api_version": options["api_version"],
                  "_api_timestamp": str(int(now * 1000)),
                  "_api_access_key": credentials.key, "_api_nonce": nonce or uuid.uuid4().hex}
        text = "&".join(f"{k}={v}" for k, v in sorted(fields.items()))
        signature = base64.b64encode(hmac.new(credentials.secret.encode(), text.encode(),
                                              "sha1").digest()).decode()
        return Signed(fields | {"_api_signature": signature}, text)


X_CA_METHODS = ("HmacSHA256", "HmacSHA1", "HmacSM3")


class XCa(BaseDialect):
    """Alibaba's API gateway (阿里云 API 网关, 摘要签名), as its public reference clients
    sign (aliyun/api-gateway-demo-sign-python, aliyunsdkgw/auth/signature_composer.py and
    sha_hmac256.py; aliyun/api-gateway-demo-sign-java, util/SignUtil.java):
        METHOD \\n Accept \\n Content-MD5 \\n Content-Type \\n Date \\n
        + each signed X-Ca-* header as name:value\\n, sorted by name
        + the path, and its query sorted by key (key=value, or the key alone)
    signed with HmacSHA256 (the default), HmacSHA1 or HmacSM3 (国密 gateways), Base64;
    X-Ca-Key, X-Ca-Timestamp (ms), X-Ca-Nonce (a UUID), X-Ca-Signature-Method, and
    X-Ca-Signature-Headers naming the signed ones. Content-MD5 (Base64 MD5 of the body,
    so the body is signed too) unless the gateway is set not to want it. `key` is the
    app key, `secret` the app secret. The gateway says why it refused in
    X-Ca-Error-Message."""
    name = "x-ca"
    options = MappingProxyType({
        "signature_method": (Literal[X_CA_METHODS] | None, None),  # HmacSHA256 unless set
        "content_md5": (bool | None, None)})  # send (and sign) the body's MD5; unless set, yes
    signature_headers = frozenset({"x-ca-signature"})
    refusal_headers = ("x-ca-error-message",)

    def check(self, options: Mapping[str, Any]) -> None:
        if options.get("signature_method") == "HmacSM3" and hmac_sm3 is None:
            raise ValueError("HmacSM3 needs SM3, which this host's OpenSSL lacks: install "
                             "the gmssl package (pip install 'insmon[sm3]')")

    def sign(self, credentials: Credentials, message: Message, now: float,
             nonce: str | None) -> Signed:
        method = credentials.options.get("signature_method") or "HmacSHA256"
        standard = {"Accept": ACCEPT, "Content-Type": CONTENT_TYPE}
        if credentials.options.get("content_md5") is not False:
            standard["Content-MD5"] = base64.b64encode(
                hashlib.md5(message.body).digest()).decode()
        signed = {"X-Ca-Key": credentials.key, "X-Ca-Nonce": nonce or str(uuid.uuid4()),
                  "X-Ca-Signature-Method": method,
                  "X-Ca-Timestamp": str(int(now * 1000))}
        text = "".join(f"{standard.get(name, '')}\n" for name in
                       ("Accept", "Content-MD5", "Content-Type", "Date"))
        text = "POST\n" + text + "".join(f"{name}:{value}\n" for name, value
                                         in sorted(signed.items())) + _resource(message.url)
        digest = x_ca_hmac(method, credentials.secret.encode(), text.encode())
        return Signed(standard | signed | {
            "X-Ca-Signature-Headers": ",".join(sorted(signed)),
            "X-Ca-Signature": base64.b64encode(digest).decode()}, text)


def x_ca_hmac(method: str, key: bytes, text: bytes) -> bytes:
    if method == "HmacSM3":
        if hmac_sm3 is None:  # the config refuses HmacSM3 then; never sign otherwise
            raise ValueError("no SM3 on this host")
        return hmac_sm3(key, text)
    return hmac.new(key, text, {"HmacSHA256": "sha256", "HmacSHA1": "sha1"}[method]).digest()


def _resource(url: str) -> str:
    """The path, then its query sorted by key: key=value, or the key alone when it has
    no value (the references' buildResource). The values as the gateway reads them,
    decoded (%XX, + a space: the Java reference signs a value as it is and sends it
    URLEncoder-encoded), and a repeated key's first (the Python reference's)."""
    parts = urlsplit(url)
    query: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        query.setdefault(key, value)
    if not query:
        return parts.path or "/"
    return (parts.path or "/") + "?" + "&".join(f"{k}={v}" if v else k
                                                for k, v in sorted(query.items()))


# The registry: the config's `gateway.dialect` takes these names, in this order.
DIALECTS: dict[str, Dialect] = {d.name: d for d in (Unsigned(), XTif(), Csb(), XCa())}
SIGNATURE_HEADERS = frozenset().union(*(d.signature_headers for d in DIALECTS.values()))
REFUSAL_HEADERS = tuple(dict.fromkeys(h for d in DIALECTS.values() for h in d.refusal_headers))


def sign(dialect: str, credentials: Credentials, message: Message, now: float | None = None,
         nonce: str | None = None) -> Signed:
    return DIALECTS[dialect].sign(credentials, message, time.time() if now is None else now,
                                  nonce)
