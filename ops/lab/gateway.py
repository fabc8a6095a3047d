#!/usr/bin/env python3
"""The insurance platform's gateway in the test lab: answers the national medical-security
platform's JSON messages as the real one does, with faults the tests switch on.

    gateway.py ADDRESS PORT CONTROL [PAAS_ID PAAS_TOKEN]

POST /fsi/api/fsi/<anything>: the message must have the common fields, a 30-character
msgid (institution code, yyyyMMddHHmmss, 4-digit sequence) of this institution, an
inf_time, and `input`; with PAAS_ID the gateway headers x-tif-paasid, x-tif-timestamp
(within 5 minutes), x-tif-nonce and x-tif-signature = hex SHA-256 of timestamp + token +
nonce + timestamp. 9001 (签到) answers infcode 0 with output.signinoutb.

CONTROL is a JSON file read on every request: {"fault": F} with F one of
    platform_error   infcode -1, err_msg 系统繁忙，请稍后再试
    gateway_reject   HTTP 403 as if the signature were wrong
    stall            answers after 5 s
    trickle          a 200 whose JSON body comes a byte every 0.3 s (each read's timeout
                     is met, the answer never completes in time)
    not_json         a 200 with an HTML error page
    primary_broken   platform_error for the primary line's address (198.18.1.1) only
Every request is appended to CONTROL + ".log" (client address, infno, msgid). Exits by
itself after 10 minutes at the most.
"""

import hashlib
import hmac
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_SECONDS = 600
COMMON = ("infno", "msgid", "mdtrtarea_admvs", "insuplc_admdvs", "recer_sys_code",
          "dev_no", "dev_safe_info", "cainfo", "signtype", "infver", "opter_type", "opter",
          "opter_name", "inf_time", "fixmedins_code", "fixmedins_name", "sign_no", "input")
PRIMARY_SOURCE = "198.18.1.1"


class Handler(BaseHTTPRequestHandler):
    control = ""
    paas: tuple[str, str] | None = None

    def do_POST(self) -> None:
        try:
            with open(self.control) as control:
                fault = json.loads(control.read() or "{}").get("fault")
        except (OSError, ValueError):
            fault = None
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            message = json.loads(raw)
        except ValueError:
            return self._json(400, {"infcode": -1, "err_msg": "报文不是JSON"})
        with open(self.control + ".log", "a") as log:
            log.write(json.dumps({"client": self.client_address[0],
                                  "infno": message.get("infno"),
                                  "msgid": message.get("msgid")}) + "\n")
        if self.paas and not self._signed():
            return self._json(403, {"code": 403, "message": "网关签名校验失败"})
        if fault == "gateway_reject":
            return self._json(403, {"code": 403, "message": "网关签名校验失败"})
        problem = _invalid(message)
        if problem:
            return self._json(200, {"infcode": -1, "err_msg": problem})
        if fault == "stall":
            time.sleep(5)
        if fault == "trickle":
            body = b'{"infcode": 0, "err_msg": null, "output": {}}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for byte in body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.3)
            return
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
            return self._json(200, {"infcode": -1, "err_msg": "系统繁忙，请稍后再试",
                                    "inf_refmsgid": message["msgid"]})
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        output = ({"signinoutb": {"sign_time": now, "sign_no": f"{int(time.time())}"}}
                  if message["infno"] == "9001" else {})
        self._json(200, {"infcode": 0, "inf_refmsgid": message["msgid"],
                         "refmsg_time": now, "respond_time": now, "err_msg": None,
                         "output": output})

    def _signed(self) -> bool:
        paas_id, token = self.paas
        stamp = self.headers.get("x-tif-timestamp", "")
        nonce = self.headers.get("x-tif-nonce", "")
        if self.headers.get("x-tif-paasid") != paas_id or not stamp.isdigit() or not nonce:
            return False
        if abs(time.time() - int(stamp)) > 300:
            return False
        expected = hashlib.sha256(f"{stamp}{token}{nonce}{stamp}".encode()).hexdigest()
        return hmac.compare_digest(self.headers.get("x-tif-signature", ""), expected)

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        pass


def _invalid(message: object) -> str | None:
    """What is wrong with the message, in the platform's words, or None."""
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
    if len(sys.argv) == 6:
        Handler.paas = (sys.argv[4], sys.argv[5])
    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Timer(MAX_SECONDS, server.shutdown).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
