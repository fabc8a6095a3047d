#!/usr/bin/env python3
"""The insurance platform behind a provincial gateway, in the test lab: it answers the
national medical-security platform's JSON messages as the real one does, in each
gateway dialect and URL style, with faults the tests switch on.

    gateway.py ADDRESS PORT CONTROL [CERT KEY [CLIENT_CA]]

With CERT and KEY it speaks HTTPS (and with CLIENT_CA asks for a client certificate).
CONTROL is a JSON file read on every request:
  dialect  none (default), x-tif, csb or x-ca, with `key` and `secret`: checked as each
           gateway does, and refused in its words (x-tif: HTTP 403; csb: HTTP 200 with
           {"code": 401, "message": "签名不一致!"}, 缺少服务网关的请求头!, 签名时间戳超时!,
           非法用户!; x-ca: HTTP 400 with an X-Ca-Error-Message header)
  style    the URL of a transaction: body (default: any path under /fsi/api/, infno in
           the body), infno (/hsa/hgs/{infno}), csb (/CSB/hsa-fsi-{infno}, and the
           _api_name hsa-fsi-{infno}), services (one path per service, SERVICES); another
           path is a 404
  fault    platform_error (infcode -1 系统繁忙), gateway_reject (refused in the dialect's
           words, whatever the signature), stall (answers after 5 s), trickle (a byte every
           0.3 s), not_json (an HTML page), primary_broken (platform_error for the primary
           line's address 198.18.1.1 only)
  epoch    when it changes, every sign-in is forgotten (the platform restarted)
  today    the platform's date (YYYY-MM-DD) instead of Beijing's today

The platform checks each message's common fields (a 30-character msgid of this
institution, inf_time) and each transaction's input: 9001 signIn gives the operator's
sign_no of the day (the same operator the same day gets the same one); 1901 (and any
other query) needs that sign_no, else "未签到或签到已失效，请重新签到"; 9002 signOut
needs it too ("当天有签到信息才可以签退") and ends it. Answers carry a 30-character
inf_refmsgid and 17-digit refmsg_time and respond_time. Every request is appended to
CONTROL + ".log" (client, path, infno, msgid, opter, sign_no, and what was refused).
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


class Platform:
    """Sign-ins per operator per day, forgotten when the control's epoch changes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.epoch = None
        self.sign_ins: dict[tuple[str, str], str] = {}
        self.numbers = itertools.count(1)

    def sign_in(self, opter: str, day: str) -> str:
        with self.lock:
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

    def do_POST(self) -> None:
        try:
            with open(self.control) as control:
                setup = json.loads(control.read() or "{}")
        except (OSError, ValueError):
            setup = {}
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
        refused = (self._unsigned(setup, raw, message) or self._misrouted(setup, message)
                   or (self._rejection(setup) if fault == "gateway_reject" else None))
        record["refused"] = refused[1] if refused else None
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
            body = b"<html><body>502 Bad Gateway</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if fault == "platform_error" or (fault == "primary_broken"
                                         and self.client_address[0] == PRIMARY_SOURCE):
            return self._platform(message, -1, "系统繁忙，请稍后再试")
        self._transaction(message, day)

    # ------------------------------------------------------------------ the platform

    def _transaction(self, message: dict, day: str) -> None:
        infno, opter, data = message["infno"], str(message["opter"]), message["input"]
        sign_no = str(message["sign_no"])
        if infno == "9001":
            signin = data.get("signIn") if isinstance(data, dict) else None
            if not isinstance(signin, dict) or not all(signin.get(k) for k in
                                                       ("opter_no", "mac", "ip")):
                return self._platform(message, -1, "签到入参signIn不完整")
            return self._platform(message, 0, None, {"signinoutb": {
                "sign_time": _now17()[:14], "sign_no": self.platform.sign_in(opter, day)}})
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
        self._json(200, {"infcode": infcode,
                         "inf_refmsgid": f"{admvs}{now[:14]}{next(self.refmsgids):010d}",
                         "refmsg_time": now, "respond_time": _now17(), "err_msg": err_msg,
                         "output": output or {}})

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
            if h.get("x-tif-paasid") != key or not stamp.isdigit() or not nonce \
                    or abs(now - int(stamp)) > 300 or not hmac.compare_digest(
                        h.get("x-tif-signature", ""), hashlib.sha256(
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
            stamp = h.get("x-ca-timestamp", "")
            if h.get("x-ca-key") != key or not stamp.isdigit() \
                    or abs(now * 1000 - int(stamp)) > 900_000:
                return 400, {"code": 400, "message": "Invalid Key or Timestamp"}, \
                    {"X-Ca-Error-Message": "Invalid Key or Timestamp"}
            expected = stamp + ":" + hmac.new(secret.encode(), stamp.encode() + b"\n" + raw,
                                              "sm3").hexdigest()
            if not hmac.compare_digest(h.get("x-ca-signature", ""), expected):
                return self._rejection(setup)
        return None

    @staticmethod
    def _rejection(setup: dict) -> tuple:
        """A bad signature, in the dialect's words."""
        dialect = setup.get("dialect", "none")
        if dialect == "csb":
            return 200, {"code": 401, "message": "签名不一致!"}, {}
        if dialect == "x-ca":
            return 400, {"code": 400, "message": "Invalid Signature"}, \
                {"X-Ca-Error-Message": "Invalid Signature"}
        return 403, {"code": 403, "message": "网关签名校验失败"}, {}

    # ------------------------------------------------------------------ answers

    def _answer(self, status: int, body: dict, headers: dict) -> None:
        self._json(status, body, headers)

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
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
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
        context.load_cert_chain(sys.argv[4], sys.argv[5])
        if len(sys.argv) == 7:
            context.load_verify_locations(sys.argv[6])
            context.verify_mode = ssl.CERT_REQUIRED
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Timer(MAX_SECONDS, server.shutdown).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
