"""The settlement check against gateways as the provinces run them: Alibaba's x-ca
signature as its public reference clients compute it, every answer a real front-end
gives (GBK, envelopes, a proxy's error page, a connection closed mid-answer), the
gateway's own words, and TLS failures named. The lab's gateway (ops/lab/gateway.py)
checks each dialect with its own code, written from the same references."""

from __future__ import annotations

import base64
import datetime
import hmac
import subprocess
import time
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from probes.lib import dialects, fsi
from tests.certs import Authority
from tests.conftest import INSMON, render, value
from tests.test_settlement import KEY, SECRET, Platform, config, failures, signed


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    server = Platform(tmp_path / "control.json")
    yield server
    server.close()


# ------------------------------------------------------------------ x-ca: Alibaba's API gateway

# Known answers of the public reference client aliyun/api-gateway-demo-sign-python
# (commit 4a031a6, aliyun-api-gateway-demo-sign3/com/aliyun/api/gateway/sdk/auth/
# signature_composer.py build_sign_str, sha_hmac256.sign and md5_tool.get_md5_base64_str),
# run on these inputs; the same string as aliyun/api-gateway-demo-sign-java's
# util/SignUtil.java buildStringToSign builds.
BODY = b'{"infno":"1901","msgid":"H320102000012025112716000090001"}'
NONCE = "0b5b6c5e-3f52-4a53-9d5e-2d1b7f0c8a11"
SIGNED_HEADERS = (f"X-Ca-Key:{KEY}\nX-Ca-Nonce:{NONCE}\n"
                  "X-Ca-Signature-Method:{method}\nX-Ca-Timestamp:1764230400500\n")
REFERENCE = [  # (url, content_md5, the string to sign, the reference's HmacSHA256 signature)
    ("http://gw/fsi/api/rsfComIfsService/callService", True,
     "POST\napplication/json\nrPAFcybQcpZmF3v/UplsCg==\napplication/json;charset=utf-8\n\n"
     + SIGNED_HEADERS + "/fsi/api/rsfComIfsService/callService",
     "7lL5ooN/n78qYzqbAJXtn2eJC3Rj31bangSFlWhVGDc="),
    ("http://gw/fsi/api/rsfComIfsService/callService", False,
     "POST\napplication/json\n\napplication/json;charset=utf-8\n\n"
     + SIGNED_HEADERS + "/fsi/api/rsfComIfsService/callService",
     "B5iCYqGm2biUXN4/VPfaepytfSlNizIV4mmengV2doU="),
    ("http://gw/hsa/hgs/1901?b=2&a=1", False,  # the query, sorted by key
     "POST\napplication/json\n\napplication/json;charset=utf-8\n\n"
     + SIGNED_HEADERS + "/hsa/hgs/1901?a=1&b=2",
     "6KOp+2t2FuGKdOdnTJsUXIOGcmih7yis8i6tUZcQKIs="),
]


@pytest.mark.parametrize(("url", "content_md5", "string", "signature"), REFERENCE)
def test_x_ca_signs_as_alibabas_reference_client(url: str, content_md5: bool, string: str,
                                                 signature: str) -> None:
    gateway = fsi.Gateway(**signed("x-ca"), content_md5=content_md5)
    done = gateway.sign(url, "1901", BODY, now=1764230400.5, nonce=NONCE)
    assert done.string == string.replace("{method}", "HmacSHA256")
    assert done.headers["X-Ca-Signature"] == signature
    assert done.headers["X-Ca-Signature-Headers"] == (
        "X-Ca-Key,X-Ca-Nonce,X-Ca-Signature-Method,X-Ca-Timestamp")
    assert (done.headers["X-Ca-Key"], done.headers["X-Ca-Timestamp"],
            done.headers["X-Ca-Nonce"]) == (KEY, "1764230400500", NONCE)
    assert done.headers["Accept"] == "application/json"
    assert done.headers["Content-Type"] == "application/json;charset=utf-8"
    assert ("Content-MD5" in done.headers) == content_md5


def test_x_ca_signs_the_query_as_the_gateway_reads_it() -> None:
    """The gateway signs its parameters' values, decoded (the Java reference signs a
    query value as it is and sends it URLEncoder-encoded: %XX and + for a space), and a
    repeated key's first value (the Python reference's _build_resource keeps the first)."""
    url = "http://gw/hsa/hgs/1901?region=%E5%8D%97%E4%BA%AC&q=a+b&k=1&k=2&flag&e="
    done = fsi.Gateway(**signed("x-ca")).sign(url, "1901", BODY, now=1764230400.5,
                                              nonce=NONCE)
    assert done.string.endswith("\n/hsa/hgs/1901?e&flag&k=1&q=a b&region=南京"), done.string


async def test_x_ca_settles_through_a_url_with_an_encoded_query(
        platform: Platform, tmp_path: Path) -> None:
    platform.set(dialect="x-ca", key=KEY, secret=SECRET, style="infno")
    url = platform.base + "/hsa/hgs/{infno}?region=%E5%8D%97%E4%BA%AC&q=a+b&k=1&k=2"
    status, _ = await render(config(url, tmp_path, gateway=signed("x-ca")),
                             "insmon_settlement_")
    assert status.startswith("# ok: 1901 settles"), status


@pytest.mark.parametrize(("method", "digest"), [("HmacSHA1", "sha1"), ("HmacSM3", "sm3")])
def test_x_ca_signs_the_same_string_with_hmac_sha1_or_sm3(method: str, digest: str) -> None:
    """The string is the reference's with the method named; the HMAC is RFC 2104 over
    SHA-1 or SM3 (SM3's own vectors: test_settlement.py), Base64 as for HmacSHA256."""
    url, _, string, _ = REFERENCE[0]
    done = fsi.Gateway(**signed("x-ca"), signature_method=method).sign(
        url, "1901", BODY, now=1764230400.5, nonce=NONCE)
    assert done.string == string.replace("{method}", method)
    assert done.headers["X-Ca-Signature-Method"] == method
    assert done.headers["X-Ca-Signature"] == base64.b64encode(hmac.new(
        SECRET.encode(), done.string.encode(), digest).digest()).decode()


@pytest.mark.parametrize("gateway", [
    {"signature_method": "HmacSHA256"}, {"signature_method": "HmacSHA1"},
    {"signature_method": "HmacSM3"}, {"content_md5": False}, {},
])
async def test_x_ca_settles_through_alibabas_gateway_in_each_method(
        platform: Platform, tmp_path: Path, gateway: dict) -> None:
    platform.set(dialect="x-ca", key=KEY, secret=SECRET, style="infno")
    status, _ = await render(config(platform.base + "/hsa/hgs/{infno}", tmp_path,
                                    gateway=signed("x-ca") | gateway), "insmon_settlement_")
    assert status.startswith("# ok: 1901 settles"), status
    assert [r["refused"] for r in platform.received()] == [None, None]


def test_x_ca_refusals_are_read_from_x_ca_error_message(platform: Platform) -> None:
    """Alibaba's gateway refuses with HTTP 400, an empty body and its reason in the
    X-Ca-Error-Message header: that is the refusal's words, never 'bad_answer'."""
    platform.set(dialect="x-ca", key=KEY, secret=SECRET)
    gateway = fsi.Gateway(**signed("x-ca"))

    def post(headers: dict, body: bytes = b"{}") -> fsi.Answer:
        return fsi.exchange(platform.url, headers, body, time.monotonic() + 5)

    fresh = gateway.sign(platform.url, "1901", b"{}").headers
    assert post(fresh).reason == "platform_error"  # let through: the platform refused "{}"
    replay = post(fresh)
    stale = post(gateway.sign(platform.url, "1901", b"{}", now=time.time() - 3600).headers)
    tampered = post(gateway.sign(platform.url, "1901", b"{}").headers, b'{"infno":"9002"}')
    stranger = post(fsi.Gateway(**signed("x-ca", key="someone-else")).sign(
        platform.url, "1901", b"{}").headers)
    forged = post(fsi.Gateway(**signed("x-ca", secret="guessed")).sign(
        platform.url, "1901", b"{}").headers)
    for answer, words in ((replay, "Nonce Used"), (stale, "Invalid Timestamp"),
                          (tampered, "Invalid Content-MD5"), (stranger, "Invalid AppKey"),
                          (forged, "Invalid Signature, Server StringToSign:`POST#")):
        assert (answer.reason, answer.status) == ("gateway_rejected", 400), answer
        assert answer.message.startswith(words), answer
        assert answer.detail.startswith(f"the gateway refused the message: HTTP 400 {words}")
    assert [r["refused"] for r in platform.received()][:2] == [
        None, {"X-Ca-Error-Message": "Nonce Used"}]


def test_x_ca_refusal_words_in_utf_8_are_read_as_the_gateway_wrote_them(
        platform: Platform) -> None:
    """The gateway's StringToSign carries the query as it decoded it: a hospital named in
    the query comes back in X-Ca-Error-Message as UTF-8 bytes, which HTTP's header
    decoding (Latin-1) would turn into mojibake in the engineer's reason."""
    platform.set(dialect="x-ca", key=KEY, secret=SECRET)
    url = platform.url + "?fixmedins_name=%E5%AE%9E%E9%AA%8C%E5%8C%BB%E9%99%A2"
    forged = fsi.Gateway(**signed("x-ca", secret="guessed")).sign(url, "1901", b"{}")
    wires: list[fsi.Wire] = []
    answer = fsi.exchange(url, forged.headers, b"{}", time.monotonic() + 5,
                          trace=lambda wire, _: wires.append(wire))
    assert (answer.reason, answer.status) == ("gateway_rejected", 400), answer
    assert answer.message.startswith("Invalid Signature, Server StringToSign:`POST#"), answer
    [words] = [v for k, v in wires[0].answer_headers if k == "X-Ca-Error-Message"]
    assert words.endswith("/callService?fixmedins_name=实验医院`"), words


def test_settlement_try_shows_what_was_signed_when_x_ca_refuses(
        platform: Platform, tmp_path: Path) -> None:
    """A refused signature: insmon's string (the secret starred) beside the gateway's own
    (Alibaba's puts it in X-Ca-Error-Message), for the engineer to compare."""
    platform.set(dialect="x-ca", key=KEY, secret="the-agencys-new-secret")
    check = {"name": "settle", "kind": "settlement", "url": platform.url,
             "fixmedins_code": "H32010200001", "fixmedins_name": "实验医院",
             "mdtrtarea_admvs": "320102", "opter": "001", "opter_name": "收费员",
             "state_file": str(tmp_path / "sessions.json"),
             "gateway": {"dialect": "x-ca", "key": KEY, "secret": {"value": SECRET},
                         "signature_method": "HmacSM3"}}
    config_file = tmp_path / "insmon.yaml"
    config_file.write_text(yaml.safe_dump({"checks": [check]}, allow_unicode=True))
    done = subprocess.run([INSMON, "settlement", "try", "-c", str(config_file)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    out = done.stdout
    assert "== default: FAILED: sign-in (9001): the gateway refused the message: HTTP 400 " \
           "Invalid Signature, Server StringToSign:`POST#application/json#" in out, out
    assert "> X-Ca-Signature: ****" in out and "> X-Ca-Signature-Method: HmacSM3" in out
    assert "the string signed (secret starred, \\n a line feed):\n  POST\\napplication/json\\n" \
        in out
    assert "\\nX-Ca-Signature-Method:HmacSM3\\n" in out and SECRET not in out


# ------------------------------------------------------------------ answers as front-ends give them

@pytest.mark.parametrize("setup", [
    {"charset": "gbk"},          # charset=GBK, as older front-ends answer
    {"charset": "gbk-unsaid"},   # GBK bytes, no charset: UTF-8 fails, GB18030 reads them
    {"envelope": "code0"},       # {"code": 0, "data": {...}}
    {"envelope": "code0000"},    # {"code": "0000", "message": "成功", "data": {...}}
    {"envelope": "string"},      # {"code": 200, "msg": "ok", "data": "{...}"}
    {"envelope": "code0000", "charset": "gbk"},
    {"bom": True},               # a UTF-8 BOM, charset=utf-8 said (.NET, Windows front-ends)
    {"bom": True, "envelope": "code0000"},
])
async def test_a_healthy_link_reads_healthy_whatever_the_wrapping(
        platform: Platform, tmp_path: Path, setup: dict) -> None:
    platform.set(**setup)
    status, series = await render(config(platform.url, tmp_path), "insmon_settlement_")
    assert status.startswith("# ok: 1901 settles: default (primary) infcode 0 in "), status
    assert value(series, 'insmon_settlement_possible{check="settle"}') == 1


async def test_a_platform_error_inside_an_envelope_in_gbk_keeps_its_words(
        platform: Platform, tmp_path: Path) -> None:
    platform.set(envelope="code0000", charset="gbk", fault="platform_error")
    status, series = await render(config(platform.url, tmp_path), "insmon_settlement_")
    assert "sign-in (9001): infcode -1: 系统繁忙，请稍后再试" in status, status
    assert failures(series, "platform_error") == 1


async def test_the_platforms_answer_inside_a_failing_envelope_is_the_platforms(
        platform: Platform, tmp_path: Path) -> None:
    """A gateway whose code follows the platform's ({"code": "9999", "message": "交易失败",
    "data": {"infcode": -1, "err_msg": ...}}): what the platform said inside is the
    evidence. Its 'sign in again' renews the sign-in (else the link reads down all day),
    and its err_msg is the detail, not the gateway's 交易失败."""
    platform.set(envelope="follows")
    cfg = config(platform.url, tmp_path)
    status, _ = await render(cfg, "insmon_settlement_")
    assert status.startswith("# ok: 1901 settles"), status
    platform.set(epoch=2)  # the platform restarted: the day's sign-in is gone
    status, series = await render(cfg, "insmon_settlement_")
    assert status.startswith("# ok: 1901 settles: default (primary) infcode 0 in "), status
    assert "signed in again (the platform had refused the sign-in)" in status, status
    platform.set(fault="platform_error")
    status, series = await render(cfg, "insmon_settlement_")
    assert "default (primary) infcode -1: 系统繁忙，请稍后再试" in status, status
    assert failures(series, "platform_error") == 1 and failures(series, "gateway_rejected") == 0


def test_a_gateway_busy_in_its_own_json_is_unavailable_not_a_refusal() -> None:
    """HTTP 503 with the gateway's JSON and no platform answer: nothing behind the
    gateway, as a proxy's HTML 503 is; 'refused the message' would send the engineer to
    the signature."""
    answer = fsi.judge(503, {"content-type": "application/json;charset=UTF-8"},
                       '{"code": 503, "message": "服务暂不可用"}'.encode(), 0.01)
    assert (answer.reason, answer.message) == ("gateway_unavailable", "服务暂不可用")
    assert answer.detail == "HTTP 503 from the gateway or a proxy before it, without the " \
                            "platform's answer: 服务暂不可用"
    # a refusal in the gateway's JSON stays one, whatever the status
    assert fsi.judge(200, {}, '{"code": 401, "message": "签名不一致!"}'.encode(),
                     0.01).reason == "gateway_rejected"


def test_a_gateway_success_without_the_platforms_answer_cannot_tell() -> None:
    """'成功' from the gateway with no platform answer is neither a refusal nor a
    success: it is an answer insmon cannot read."""
    answer = fsi.judge(200, {"content-type": "application/json"},
                       '{"code": "0000", "message": "成功"}'.encode(), 0.01)
    assert answer.reason == "bad_answer"
    assert answer.detail == "HTTP 200: the gateway said code 0000 成功 but `data` holds no " \
                            "platform answer"


def test_a_gateways_own_envelope_is_configured(tmp_path: Path) -> None:
    cfg = config("http://127.0.0.1:1/fsi", tmp_path, gateway={"envelope": {
        "code": "retCode", "data": "result", "ok_codes": ["S"]}})
    envelope = cfg.gateway.envelope
    inner = '{"infcode": 0, "output": {}}'
    ok = fsi.judge(200, {}, f'{{"retCode": "S", "result": {inner}}}'.encode(), 0.01, envelope)
    assert ok.reason is None and ok.infcode == 0
    refused = fsi.judge(200, {}, '{"retCode": "F", "errMsg": "应用未授权"}'.encode(), 0.01,
                        envelope)
    assert (refused.reason, refused.message) == ("gateway_rejected", "应用未授权")
    # the common envelope is not this gateway's: {"code": 0} is no success of it
    assert fsi.judge(200, {}, f'{{"code": 0, "data": {inner}}}'.encode(), 0.01,
                     envelope).reason == "bad_answer"


@pytest.mark.parametrize(("fault", "reason", "detail"), [
    ("proxy_502", "gateway_unavailable", "HTTP 502 from the gateway or a proxy before it, "
     "without the platform's answer: 502 Bad Gateway"),
    ("proxy_504", "gateway_unavailable", "HTTP 504 from the gateway or a proxy before it, "
     "without the platform's answer: 504 Gateway Timeout"),
    ("closed", "connection_closed", "closed the connection before the whole answer"),
    ("closed_after_headers", "connection_closed",
     "closed the connection before the whole answer (IncompleteRead)"),
    ("not_json", "bad_answer", "HTTP 200 without the platform's JSON: b'<html>"),
    ("redirect", "bad_answer", "HTTP 301: the gateway sends the message elsewhere: Location "
     "https://127.0.0.1:"),
    ("huge", "bad_answer", "HTTP 200: an answer over 1 MiB, not read further"),
])
async def test_each_front_end_fault_has_its_own_reason(
        platform: Platform, tmp_path: Path, fault: str, reason: str, detail: str) -> None:
    platform.set(fault=fault)
    status, series = await render(config(platform.url, tmp_path), "insmon_settlement_")
    assert status.startswith("# failed: 1901 CANNOT settle: default (primary) sign-in (9001): ")
    assert detail in status, status
    assert failures(series, reason) == 1
    assert sum(failures(series, other) for other in ("bad_answer", "gateway_unavailable",
                                                     "connection_closed", "other")) == 1


def test_x_tif_refusals_keep_their_words(platform: Platform) -> None:
    """x-tif says why in `msg`: a clock out of step and a wrong token read differently."""
    platform.set(dialect="x-tif", key=KEY, secret=SECRET)

    def post(gateway: fsi.Gateway, now: float | None = None) -> fsi.Answer:
        headers = gateway.sign(platform.url, "9001", b"{}", now=now).headers
        return fsi.exchange(platform.url, headers, b"{}", time.monotonic() + 5)

    skewed = post(fsi.Gateway(**signed("x-tif")), now=time.time() - 900)
    wrong = post(fsi.Gateway(**signed("x-tif", secret="old-token")))
    assert (skewed.reason, skewed.status) == (wrong.reason, wrong.status) == (
        "gateway_rejected", 401)
    assert skewed.message == "时间戳超出有效范围，请校准时间"
    assert wrong.message == "签名校验失败"


# ------------------------------------------------------------------ TLS, named

def _agency(tmp_path: Path, **cert: object) -> tuple[Authority, Platform]:
    """The agency's CA and its gateway, serving a certificate issued as `cert` says."""
    (tmp_path / "agency").mkdir()
    ca = Authority(tmp_path / "agency")
    server_cert, server_key = ca.issue("gateway", **({"ip": "127.0.0.1"} | cert))
    return ca, Platform(tmp_path / "control.json", (server_cert, server_key))


@pytest.mark.parametrize(("cert", "words"), [
    ({"starts": datetime.timedelta(days=-3), "days": -1},
     "the server's certificate has expired"),
    ({"starts": datetime.timedelta(days=1)}, "the server's certificate is not valid yet"),
    ({"ip": "127.0.0.9"}, "name mismatch: IP address mismatch"),
    ({"rsa_bits": 1024}, "weak key: "),
    ({"sha1": True}, "weak digest: the certificate is signed with SHA-1 or MD5"),
])
async def test_each_tls_failure_is_named(tmp_path: Path, cert: dict, words: str) -> None:
    ca, server = _agency(tmp_path, **cert)
    try:
        status, series = await render(config(server.url, tmp_path, tls={"ca_file": ca.file}),
                                      "insmon_settlement_")
    finally:
        server.close()
    assert f"sign-in (9001): TLS with 127.0.0.1:{server.port} failed: {words}" in status, \
        status
    assert failures(series, "tls") == 1
    assert value(series, 'insmon_settlement_tls_legacy{check="settle"}') == 0


async def test_a_certificate_of_another_ca_is_an_unknown_issuer(tmp_path: Path) -> None:
    _, server = _agency(tmp_path)
    other = Authority(tmp_path, "another CA")
    try:
        status, _ = await render(config(server.url, tmp_path, tls={"ca_file": other.file}),
                                 "insmon_settlement_")
    finally:
        server.close()
    assert "failed: unknown issuer: the server's certificate is not signed by a CA this " \
           "check trusts" in status, status


async def test_tls_legacy_accepts_an_agencys_old_certificate_and_says_so(
        tmp_path: Path) -> None:
    """RSA-1024, SHA-1, the address only in the CN: refused unless tls.legacy."""
    ca, server = _agency(tmp_path, rsa_bits=1024, sha1=True, san=False)
    try:
        status, _ = await render(config(server.url, tmp_path, tls={"ca_file": ca.file}),
                                 "insmon_settlement_")
        assert "TLS with 127.0.0.1:" in status and "tls.legacy: true accepts it" in status
        legacy = {"ca_file": ca.file, "legacy": True}
        status, series = await render(config(server.url, tmp_path, tls=legacy),
                                      "insmon_settlement_")
        assert status.startswith("# ok: 1901 settles"), status
        assert value(series, 'insmon_settlement_tls_legacy{check="settle"}') == 1
        # legacy is no blank cheque: the name and the issuer are still checked
        status, _ = await render(config(server.url.replace("127.0.0.1", "localhost"),
                                        tmp_path, tls=legacy), "insmon_settlement_")
        assert "name mismatch: the certificate names 127.0.0.1, not localhost" in status
        other = Authority(tmp_path, "another CA")
        status, _ = await render(config(server.url, tmp_path, tls={
            "ca_file": other.file, "legacy": True}), "insmon_settlement_")
        assert "unknown issuer" in status, status
    finally:
        server.close()


def test_the_dialects_star_their_signatures() -> None:
    starred = {"x-tif-signature", "_api_signature", "x-ca-signature"}
    assert starred == dialects.SIGNATURE_HEADERS
    wire = fsi.Wire("http://gw/x", {"X-Ca-Signature": "c2lnbmF0dXJl", "X-Ca-Key": KEY},
                    b"{}", 400, (("X-Ca-Error-Message", "Invalid Signature"),), b"",
                    f"POST\n{SECRET}\n")
    text = fsi.shown(wire, fsi.Answer("gateway_rejected", 400, None, 0.1, ""), (SECRET,))
    assert "> X-Ca-Signature: ****" in text and "c2lnbmF0dXJl" not in text
    assert "  POST\\n****\\n" in text and SECRET not in text


@pytest.mark.parametrize("name", sorted(dialects.DIALECTS))
def test_each_dialect_is_one_object_the_config_and_the_exchange_follow(name: str) -> None:
    """A dialect registered in probes/lib/dialects.py is all a gateway needs: the config
    takes its name and its own keys (and refuses them under another dialect), asks for
    key and secret when it signs, sends its headers, stars its secret ones and reads its
    gateway's refusals."""
    dialect = dialects.DIALECTS[name]
    assert dialect.name == name and name in typing.get_args(fsi.DialectName)
    assert set(dialect.options) <= set(fsi.Gateway.model_fields)
    assert not set(dialect.options) & set(fsi.GatewayKeys.model_fields)
    others = [d for d in dialects.DIALECTS.values() if d is not dialect]
    assert not any(set(dialect.options) & set(other.options) for other in others)
    if not dialect.signs:
        assert fsi.Gateway(dialect=name).sign("http://gw/fsi", "1901", BODY).headers == {}
        with pytest.raises(ValidationError, match="signs nothing"):
            fsi.Gateway(**signed(name))
        return
    with pytest.raises(ValidationError, match=f"the {name} dialect needs key and secret"):
        fsi.Gateway(dialect=name)
    done = fsi.Gateway(**signed(name)).sign("http://gw/fsi?b=2", "1901", BODY, now=1764230400.5)
    sent = {k.lower() for k in done.headers}
    assert dialect.signature_headers and dialect.signature_headers <= sent
    shown = fsi.shown(fsi.Wire("http://gw/fsi", done.headers, BODY))
    for header, sent_value in done.headers.items():
        starred = header.lower() in dialect.signature_headers
        assert (f"> {header}: ****" in shown, sent_value in shown) == (starred, not starred)
    for header in dialect.refusal_headers:
        refused = fsi.judge(400, {header: "签名错误"}, b"", 0.01)
        assert (refused.reason, refused.message) == ("gateway_rejected", "签名错误")


def test_a_dialects_own_keys_are_refused_under_another() -> None:
    with pytest.raises(ValidationError, match="signature_method and content_md5 are the "
                                              "x-ca dialect's"):
        fsi.Gateway(**signed("x-tif"), content_md5=False)
    # csb's keys have defaults, and a config of another dialect may carry them
    assert fsi.Gateway(**signed("x-tif"), api_name="hsa-{infno}").sign(
        "http://gw/fsi", "1901", BODY).headers.keys() >= {"x-tif-signature"}
