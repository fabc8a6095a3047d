#!/usr/bin/env python3
"""The insurance platform behind a provincial gateway, in the test lab: it answers the
national medical-security platform's JSON messages as the real one does, in each
gateway dialect and URL style, with faults the tests switch on.

    gateway.py ADDRESS PORT CONTROL [CERT KEY [CLIENT_CA]]

With CERT and KEY it speaks HTTPS (and with CLIENT_CA asks for a client certificate); at
OpenSSL's security level 0, so that it can serve an agency's old certificate too.
CONTROL is a JSON file read on every request:
  dialect  none (default), x-tif, csb or x-ca, with `key` and `secret`: checked as each
           gateway does (this file's own code, from each dialect's references, never the
           probe's), and refused in its words (x-tif: HTTP 401 {"code": 401, "msg": ...};
           csb: HTTP 200 with {"code": 401, "message": "签名不一致!"}, 缺少服务网关的请求头!,
           签名时间戳超时!, 非法用户!; x-ca: HTTP 400, an empty body and the reason in
           X-Ca-Error-Message, as Alibaba's API gateway answers: Invalid Signature with the
           gateway's StringToSign (line feeds as #), Invalid AppKey, Invalid Timestamp,
           Nonce Used, Invalid Content-MD5, Invalid Signature Method)
  style    the URL of a transaction: body (default: any path under /fsi/api/, infno in
           the body), infno (/hsa/hgs/{infno}), csb (/CSB/hsa-fsi-{infno}, and the
           _api_name hsa-fsi-{infno}), services (one path per service, SERVICES); another
           path is a 404
  envelope the gateway's own wrapper around the platform's answer: code0 ({"code": 0,
           "data": ...}), code0000 ({"code": "0000", "message": "成功", "data": ...}),
           string ({"code": 200, "msg": "ok", "data": "<the answer as JSON text>"}),
           follows (the gateway's code follows the platform's: {"code": "0000", "data":
           ...} for infcode 0, else {"code": "9999", "message": "交易失败", "data": ...})
  charset  gbk: answers in GBK, saying charset=GBK; gbk-unsaid: in GBK, saying no charset
  bom      the answer starts with a UTF-8 byte order mark (.NET and Windows front-ends)
  single_session  a new sign_no at every 9001, ending the operator's earlier one (some
           provinces' gateways do)
  fault    platform_error (infcode -1 系统繁忙), gateway_reject (refused in the dialect's
           words, whatever the signature), stall (answers after 5 s), trickle (a byte every
           0.3 s), not_json (an HTML page with HTTP 200), proxy_502 and proxy_504 (nginx's
           error pages), closed (the connection closed with no answer), closed_after_headers
           (closed after the headers, before the body they promise), redirect (HTTP 301
           to https://, as a gateway moved to TLS answers), huge (2 MiB of answer), primary_broken
           (platform_error for the primary line's address 198.18.1.1 only)
  epoch    when it changes, every sign-in is forgotten (the platform restarted)
  today    the platform's date (YYYY-MM-DD) instead of Beijing's today

The platform checks each message's common fields (a 30-character msgid of this
institution, inf_time) and each transaction's input: 9001 signIn gives the operator's
sign_no of the day (the same operator the same day gets the same one); 1901 (and any
other query) needs that sign_no, else "未签到或签到已失效，请重新签到"; 9002 signOut
needs it too ("当天有签到信息才可以签退") and ends it. Answers carry a 30-character
inf_refmsgid and 17-digit refmsg_time and respond_time. Every request is appended to
CONTROL + ".log" (client, path, infno, msgid, opter, sign_no, a 9001's mac and ip, and
what was refused).
Exits by itself after 10 minutes at the most.
"""

import base64
import hashlib
import hmac
import itertools
import json
import re
import ssl
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qsl, urlsplit

MAX_SECONDS = 600
BEIJING = timezone(timedelta(hours=8))
COMMON = ("infno", "msgid", "mdtrtarea_admvs", "insuplc_admdvs", "recer_sys_code",
          "dev_no", "dev_safe_info", "cainfo", "signtype", "infver", "opter_type", "opter",
          "opter_name", "inf_time", "fixmedins_code", "fixmedins_name", "sign_no", "input")
PRIMARY_SOURCE = "198.18.1.1"
SERVICES = {"9001": "/signInSignOutService/signIn", "9002": "/signInSignOutService/signOut",
            "1901": "/catalogqueryservice/queryDataDic"}
CSB_HEADERS = ("_api_name", "_api_version", "_api_timestamp", "_api_access_key",
               "_api_signature")
NOT_SIGNED_IN = "未签到或签到已失效，请重新签到"
GENDERS = [{"value": "1", "label": "男"}, {"value": "2", "label": "女"},
           {"value": "9", "label": "未说明性别"}]
# Alibaba's API gateway: the HMACs X-Ca-Signature-Method may name, and how long a
# timestamp and a nonce hold (15 minutes).
X_CA_HMACS = {"HmacSHA256": "sha256", "HmacSHA1": "sha1", "HmacSM3": "sm3"}
X_CA_WINDOW_MS = 900_000
NGINX_PAGE = ("<html>\r\n<head><title>{0}</title></head>\r\n<body>\r\n<center><h1>{0}</h1>"
              "</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")


class Platform:
    """Sign-ins per operator per day, forgotten when the control's epoch changes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.epoch = None
        self.sign_ins: dict[tuple[str, str], str] = {}
        self.numbers = itertools.count(1)

    def sign_in(self, opter: str, day: str, single: bool = False) -> str:
        """The operator's sign_no of the day; `single`: a new one, ending the earlier."""
        with self.lock:
            if single:
                self.sign_ins.pop((opter, day), None)
            return self.sign_ins.setdefault(
                (opter, day), f"{day.replace('-', '')}{next(self.numbers):08d}")

    def valid(self, opter: str, day: str, sign_no: str) -> bool:
        with self.lock:
            return bool(sign_no) and self.sign_ins.get((opter, day)) == sign_no

    def sign_out(self, opter: str, day: str) -> None:
        with self.lock:
            self.sign_ins.pop((opter, day), None)

    def forget_unless(self, epoch: object) -> None:
        with self.lock:
            if epoch != self.epoch:
                self.epoch, self.sign_ins = epoch, {}


class Handler(BaseHTTPRequestHandler):
    control = ""
    platform = Platform()
    refmsgids = itertools.count(1)
    nonces: ClassVar[dict[str, float]] = {}  # x-ca: each nonce once in 15 minutes
    nonces_lock = threading.Lock()

    def do_POST(self) -> None:
        try:
            with open(self.control) as control:
                setup = json.loads(control.read() or "{}")
        except (OSError, ValueError):
            setup = {}
        self.setup = setup
        fault = setup.get("fault")
        self.platform.forget_unless(setup.get("epoch"))
        day = setup.get("today") or f"{datetime.now(BEIJING):%Y-%m-%d}"
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        record = {"client": self.client_address[0], "path": self.path}
        if isinstance(message, dict):
            record |= {k: message.get(k) for k in ("infno", "msgid", "opter", "sign_no")}
            signin = message.get("input")
            if message.get("infno") == "9001" and isinstance(signin, dict) \
                    and isinstance(signin.get("signIn"), dict):
                record |= {k: signin["signIn"].get(k) for k in ("mac", "ip")}
        refused = (self._unsigned(setup, raw, message) or self._misrouted(setup, message)
                   or (self._rejection(setup) if fault == "gateway_reject" else None))
        # what the gateway said: its body, or Alibaba's header when the body is empty
        record["refused"] = (refused[1] or refused[2]) if refused else None
        with open(self.control + ".log", "a") as log:
            log.write(json.dumps(record, ensure_ascii=False) + "\n")
        if refused:
            return self._answer(*refused)
        if message is None:
            return self._json(400, {"infcode": -1, "err_msg": "报文不是JSON"})
        problem = _invalid(message)
        if problem:
            return self._platform(message, -1, problem)
        if fault == "stall":
            time.sleep(5)
        if fault == "trickle":
            return self._trickle()
        if fault == "not_json":
            return self._html(200, "<html><body>Welcome</body></html>")
        if fault in ("proxy_502", "proxy_504"):
            status = int(fault[-3:])
            return self._html(status, NGINX_PAGE.format(
                f"{status} {self.responses[status][0]}"))
        if fault == "closed":
            self.close_connection = True
            return
        if fault == "redirect":
            self.send_response(301)
            self.send_header("Location", f"https://{self.headers.get('Host')}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault == "huge":
            filler = json.dumps({"infcode": 0, "output": {"list": ["x" * (2 << 20)]}})
            return self._html(200, filler)
        if fault == "closed_after_headers":
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", "200")
            self.end_headers()
            self.wfile.write(b'{"infcode": 0, ')
            self.wfile.flush()
            self.close_connection = True
            return
        if fault == "platform_error" or (fault == "primary_broken"
                                         and self.client_address[0] == PRIMARY_SOURCE):
            return self._platform(message, -1, "系统繁忙，请稍后再试")
        self._transaction(message, day, setup)

    # ------------------------------------------------------------------ the platform

    def _transaction(self, message: dict, day: str, setup: dict) -> None:
        infno, opter, data = message["infno"], str(message["opter"]), message["input"]
        sign_no = str(message["sign_no"])
        if infno == "9001":
            signin = data.get("signIn") if isinstance(data, dict) else None
            if not isinstance(signin, dict) or not all(signin.get(k) for k in
                                                       ("opter_no", "mac", "ip")):
                return self._platform(message, -1, "签到入参signIn不完整")
            return self._platform(message, 0, None, {"signinoutb": {
                "sign_time": _now17()[:14], "sign_no": self.platform.sign_in(
                    opter, day, bool(setup.get("single_session")))}})
        if not self.platform.valid(opter, day, sign_no):
            return self._platform(message, -1, "当天有签到信息才可以签退" if infno == "9002"
                                  else NOT_SIGNED_IN)
        if infno == "9002":
            signout = data.get("signOut") if isinstance(data, dict) else None
            if not isinstance(signout, dict) or signout.get("sign_no") != sign_no:
                return self._platform(message, -1, "签退入参signOut的sign_no与签到不符")
            self.platform.sign_out(opter, day)
            return self._platform(message, 0, None, {"signoutoutb": {
                "sign_time": _now17()[:14]}})
        if infno == "1901":
            query = data.get("data") if isinstance(data, dict) else None
            if not isinstance(query, dict) or not query.get("type"):
                return self._platform(message, -1, "字典类型type不能为空")
            return self._platform(message, 0, None, {"list": GENDERS})
        return self._platform(message, 0, None, {})

    def _platform(self, message: dict, infcode: int, err_msg: str | None,
                  output: dict | None = None) -> None:
        now = _now17()
        admvs = str(message.get("mdtrtarea_admvs") or "000000")[:6].rjust(6, "0")
        answer = {"infcode": infcode,
                  "inf_refmsgid": f"{admvs}{now[:14]}{next(self.refmsgids):010d}",
                  "refmsg_time": now, "respond_time": _now17(), "err_msg": err_msg,
                  "output": output or {}}
        envelope = self.setup.get("envelope")
        if envelope == "code0":
            answer = {"code": 0, "data": answer}
        elif envelope == "code0000":
            answer = {"code": "0000", "message": "成功", "data": answer}
        elif envelope == "string":
            answer = {"code": 200, "msg": "ok", "data": json.dumps(answer, ensure_ascii=False)}
        elif envelope == "follows":
            answer = ({"code": "0000", "message": "成功", "data": answer} if infcode == 0
                      else {"code": "9999", "message": "交易失败", "data": answer})
        self._json(200, answer)

    # ------------------------------------------------------------------ the gateway

    def _misrouted(self, setup: dict, message: object) -> tuple | None:
        style = setup.get("style", "body")
        infno = str(message.get("infno")) if isinstance(message, dict) else ""
        path = self.path.split("?")[0]
        expected = {"body": None, "infno": f"/hsa/hgs/{infno}",
                    "csb": f"/CSB/hsa-fsi-{infno}", "services": SERVICES.get(infno)}[style]
        if style == "body" and path.startswith("/fsi/api/"):
            return None
        if style == "csb" and setup.get("dialect") == "csb" \
                and self.headers.get("_api_name") != f"hsa-fsi-{infno}":
            return 200, {"code": 404, "message": "服务不存在!"}, {}
        if path == expected:
            return None
        return 404, {"code": 404, "message": f"no service at {path}"}, {}

    def _unsigned(self, setup: dict, raw: bytes, message: object) -> tuple | None:
        """The dialect's refusal of a message it cannot verify, or None."""
        dialect, key, secret = setup.get("dialect", "none"), setup.get("key"), \
            setup.get("secret", "")
        h = self.headers
        now = time.time()
        if dialect == "x-tif":
            stamp, nonce = h.get("x-tif-timestamp", ""), h.get("x-tif-nonce", "")
            if h.get("x-tif-paasid") != key:
                return 401, {"code": 401, "msg": "paasid不存在或未授权"}, {}
            if not stamp.isdigit() or not nonce:
                return 401, {"code": 401, "msg": "缺少时间戳或随机数"}, {}
            if abs(now - int(stamp)) > 300:
                return 401, {"code": 401, "msg": "时间戳超出有效范围，请校准时间"}, {}
            if not hmac.compare_digest(h.get("x-tif-signature", ""), hashlib.sha256(
                    f"{stamp}{secret}{nonce}{stamp}".encode()).hexdigest()):
                return self._rejection(setup)
        elif dialect == "csb":
            if not all(h.get(name) for name in CSB_HEADERS):
                return 200, {"code": 401, "message": "缺少服务网关的请求头!"}, {}
            if h["_api_access_key"] != key:
                return 200, {"code": 401, "message": "非法用户!"}, {}
            stamp = h["_api_timestamp"]
            if not re.fullmatch(r"\d{13}", stamp) or abs(now * 1000 - int(stamp)) > 900_000:
                return 200, {"code": 401, "message": "签名时间戳超时!"}, {}
            fields = {k: v for k, v in h.items() if k.startswith("_api_")
                      and k != "_api_signature"}
            text = "&".join(f"{k}={v}" for k, v in sorted(fields.items()))
            expected = base64.b64encode(hmac.new(secret.encode(), text.encode(),
                                                 "sha1").digest()).decode()
            if not hmac.compare_digest(h["_api_signature"], expected):
                return self._rejection(setup)
        elif dialect == "x-ca":
            return self._x_ca(key, secret, raw, now)
        return None

    def _x_ca(self, key: str, secret: str, raw: bytes, now: float) -> tuple | None:
        """Alibaba's API gateway's check of a signed request, written from its public
        documentation and reference clients (aliyun/api-gateway-demo-sign-java,
        util/SignUtil.java; aliyun/api-gateway-demo-sign-python, signature_composer.py):
        the string it signs is built here from what arrived, as the gateway does."""
        h = self.headers

        def refuse(words: str) -> tuple:
            return 400, None, {"X-Ca-Error-Message": words}

        if not h.get("X-Ca-Key") or h["X-Ca-Key"] != key:
            return refuse("Invalid AppKey")
        stamp = h.get("X-Ca-Timestamp", "")
        if not stamp.isdigit() or abs(now * 1000 - int(stamp)) > X_CA_WINDOW_MS:
            return refuse("Invalid Timestamp")
        nonce = h.get("X-Ca-Nonce")
        if nonce:
            with self.nonces_lock:
                for old in [n for n, t in self.nonces.items() if now - t > 900]:
                    del self.nonces[old]
                if nonce in self.nonces:
                    return refuse("Nonce Used")
                self.nonces[nonce] = now
        md5 = h.get("Content-MD5", "")
        if md5 and md5 != base64.b64encode(hashlib.md5(raw).digest()).decode():
            return refuse("Invalid Content-MD5")
        method = h.get("X-Ca-Signature-Method") or "HmacSHA256"
        if method not in X_CA_HMACS:
            return refuse("Invalid Signature Method")
        names = sorted(n.strip() for n in h.get("X-Ca-Signature-Headers", "").split(",")
                       if n.strip())
        text = "".join(f"{part}\n" for part in (self.command, h.get("Accept", ""), md5,
                                                h.get("Content-Type", ""), h.get("Date", "")))
        text += "".join(f"{name}:{h.get(name, '')}\n" for name in names)
        # the query as the gateway reads its parameters: decoded (the Java reference signs
        # the values and URLEncoder-encodes them on the wire), a repeated key's first value
        # (the Python reference's _build_resource keeps the first)
        parts = urlsplit(self.path)
        params: dict[str, str] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            params.setdefault(name, value)
        text += parts.path + ("?" + "&".join(f"{k}={v}" if v else k for k, v in
                                             sorted(params.items())) if params else "")
        expected = base64.b64encode(hmac.new(secret.encode(), text.encode(),
                                             X_CA_HMACS[method]).digest()).decode()
        if not hmac.compare_digest(h.get("X-Ca-Signature", ""), expected):
            return refuse(f"Invalid Signature, Server StringToSign:`{text.replace(chr(10), '#')}`")
        return None

    @staticmethod
    def _rejection(setup: dict) -> tuple:
        """A bad signature, in the dialect's words."""
        dialect = setup.get("dialect", "none")
        if dialect == "csb":
            return 200, {"code": 401, "message": "签名不一致!"}, {}
        if dialect == "x-ca":
            return 400, None, {"X-Ca-Error-Message": "Invalid Signature"}
        if dialect == "x-tif":
            return 401, {"code": 401, "msg": "签名校验失败"}, {}
        return 403, {"code": 403, "message": "网关签名校验失败"}, {}

    # ------------------------------------------------------------------ answers

    def _answer(self, status: int, body: dict | None, headers: dict) -> None:
        if body is None:  # x-ca: the reason is in the headers, the body is empty
            self.send_response(status)
            for name, value in headers.items():  # its StringToSign may hold UTF-8
                self.send_header(name, value.encode().decode("latin-1"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._json(status, body, headers)

    def _html(self, status: int, page: str) -> None:
        data = page.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _trickle(self) -> None:
        body = b'{"infcode": 0, "err_msg": null, "output": {}}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for byte in body:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.3)

    def _json(self, status: int, body: dict, headers: dict | None = None) -> None:
        charset = getattr(self, "setup", {}).get("charset")
        data = json.dumps(body, ensure_ascii=False).encode("gbk" if charset else "utf-8")
        if getattr(self, "setup", {}).get("bom"):
            data = b"\xef\xbb\xbf" + data
        self.send_response(status)
        self.send_header("Content-Type", {"gbk": "application/json; charset=GBK",
                                          "gbk-unsaid": "application/json"}.get(
                                              charset, "application/json; charset=utf-8"))
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        pass


def _now17() -> str:
    """yyyyMMddHHmmssSSS, Beijing time: the platform's refmsg_time and respond_time."""
    now = datetime.now(BEIJING)
    return f"{now:%Y%m%d%H%M%S}{now.microsecond // 1000:03d}"


def _invalid(message: object) -> str | None:
    """What is wrong with the message's common fields, in the platform's words, or None."""
    if not isinstance(message, dict):
        return "报文格式错误"
    missing = [f for f in COMMON if f not in message]
    if missing:
        return f"缺少字段: {', '.join(missing)}"
    msgid, code = str(message["msgid"]), str(message["fixmedins_code"])
    if not re.fullmatch(r"\w{12}\d{14}\d{4}", msgid) or not msgid.startswith(code):
        return f"msgid 格式错误: {msgid}"
    if not re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", str(message["inf_time"])):
        return "inf_time 格式错误"
    if not re.fullmatch(r"\d{4}", str(message["infno"])):
        return "infno 格式错误"
    return None


def main() -> None:
    address, port, control = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    Handler.control = control
    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    if len(sys.argv) >= 6:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # it may play an agency's old server
        context.load_cert_chain(sys.argv[4], sys.argv[5])
        if len(sys.argv) == 7:
            context.load_verify_locations(sys.argv[6])
            context.verify_mode = ssl.CERT_REQUIRED
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Timer(MAX_SECONDS, server.shutdown).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
