"""Local stand-ins for the chat robots the pager posts to (the real ones are on the
internet): each checks the documented request format and signature, answers the
documented error codes (bad signature, too fast) and keeps what it accepted.

    WeCom 企业微信群机器人   POST ...?key=K   {"msgtype": "markdown"|"text", ...}
        -> {"errcode": 0}; 93000 bad key; 45009 too fast (20 a minute)
    DingTalk 钉钉机器人     POST ...?access_token=T&timestamp=MS&sign=S, sign =
        base64(HMAC-SHA256(secret, f"{MS}\\n{secret}")), within an hour
        -> {"errcode": 0}; 310000 bad sign; 130101 too fast (20 a minute)
    Feishu 飞书机器人       POST, body {"timestamp": S, "sign": base64(HMAC-SHA256(
        key=f"{S}\\n{secret}", msg="")), "msg_type": "text", "content": {"text": ...}}
        -> {"code": 0}; 19021 bad sign; 11232 too fast
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar


class Robot:
    """One robot endpoint. `mode`: "ok", "500" (the server fails), "hang" (answers
    nothing for a minute), "proxy" (a proxy or captive portal answers 200 with its own
    HTML page) or "empty" (200 with an empty JSON object): the last two are no robot's
    answer, and took nothing."""


    def __init__(self, secret: str = "", per_minute: int = 20,
                 host: str = "127.0.0.1") -> None:
        """`host`: the address it listens on (a namespace's pager reaches the host's)."""
        self.secret, self.per_minute, self.host = secret, per_minute, host
        self.accepted: list[dict] = []
        self.accepted_at: list[float] = []  # when each came
        self.refused: list[tuple[int, str]] = []
        self.hung: list[float] = []  # when each request it never answered came ("hang")
        self.mode = "ok"
        self._times: list[float] = []
        # its minute's clock: a pager on a clock the test moves (tests/pager_harness.py)
        # is held to the robot's limit on that clock
        self.clock: Callable[[], float] = time.time
        self._lock = threading.RLock()
        robot = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if robot.mode == "hang":
                    robot.hung.append(time.time())
                    time.sleep(60)
                    return
                if robot.mode == "500":
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if robot.mode in ("proxy", "empty"):
                    page = ("<html><body>请先登录 please log in</body></html>".encode()
                            if robot.mode == "proxy" else b"{}")
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html" if robot.mode == "proxy"
                                     else "application/json")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                reply = robot.handle(urllib.parse.urlsplit(self.path), body)
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        # a short poll: close() (shutdown) waits up to one, for each robot of each test
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def handle(self, url: urllib.parse.SplitResult, body: bytes) -> dict:
        try:
            payload = json.loads(body)
        except ValueError:
            return self._refuse(40001, "invalid json")
        error = self.check(dict(urllib.parse.parse_qsl(url.query)), payload)
        if error:
            return self._refuse(*error)
        with self._lock:
            now = self.clock()
            self._times = [t for t in self._times if t > now - 60]
            if len(self._times) >= self.per_minute:
                return self._refuse(*self.too_fast)
            self._times.append(now)
            self.accepted.append(payload)
            self.accepted_at.append(now)
        return self.ok

    def _refuse(self, code: int, message: str) -> dict:
        with self._lock:
            self.refused.append((code, message))
        return self.error(code, message)

    def texts(self) -> list[str]:
        with self._lock:
            return [self.text(p) for p in self.accepted]

    def posts(self) -> list[tuple[float, str]]:
        """(when it came, text) of every post accepted."""
        with self._lock:
            return [(at, self.text(p)) for at, p in zip(self.accepted_at, self.accepted,
                                                        strict=True)]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # per robot
    ok: ClassVar[dict] = {}
    too_fast: tuple[int, str] = (0, "")

    def check(self, query: dict, payload: dict) -> tuple[int, str] | None:
        raise NotImplementedError

    def error(self, code: int, message: str) -> dict:
        return {"errcode": code, "errmsg": message}

    def text(self, payload: dict) -> str:
        raise NotImplementedError


class WeComRobot(Robot):
    ok: ClassVar[dict] = {"errcode": 0, "errmsg": "ok"}
    too_fast = (45009, "api freq out of limit")
    KEY = "6a7b8c9d-0000-4000-8000-000000000001"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/cgi-bin/webhook/send?key={self.KEY}"

    def check(self, query: dict, payload: dict) -> tuple[int, str] | None:
        if query.get("key") != self.KEY:
            return 93000, "invalid webhook url"
        kind = payload.get("msgtype")
        if kind == "markdown":
            content = payload.get("markdown", {}).get("content")
            if not isinstance(content, str) or not content or len(content.encode()) > 4096:
                return 40058, "markdown.content exceed max length 4096 or empty"
        elif kind == "text":
            text = payload.get("text", {})
            if not isinstance(text.get("content"), str) or len(text["content"].encode()) > 2048:
                return 40058, "text.content exceed max length 2048 or empty"
            if not isinstance(text.get("mentioned_mobile_list", []), list):
                return 40035, "invalid mentioned_mobile_list"
        else:
            return 40008, "invalid message type"
        return None

    def text(self, payload: dict) -> str:
        if payload["msgtype"] == "markdown":
            return payload["markdown"]["content"]
        return payload["text"]["content"] + " @" + ",".join(
            payload["text"].get("mentioned_mobile_list", []))


class DingTalkRobot(Robot):
    ok: ClassVar[dict] = {"errcode": 0, "errmsg": "ok"}
    too_fast = (130101, "send too fast, exceed 20 times per minute")
    TOKEN = "d1n9"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/robot/send?access_token={self.TOKEN}"

    def check(self, query: dict, payload: dict) -> tuple[int, str] | None:
        if query.get("access_token") != self.TOKEN:
            return 300001, "token is not exist"
        if self.secret:
            stamp, sign = query.get("timestamp", ""), query.get("sign", "")
            digest = hmac.new(self.secret.encode(), f"{stamp}\n{self.secret}".encode(),
                              hashlib.sha256).digest()
            if (not stamp.isdigit() or abs(time.time() * 1000 - int(stamp)) > 3600_000
                    or not hmac.compare_digest(sign, base64.b64encode(digest).decode())):
                return 310000, "sign not match"
        if payload.get("msgtype") != "markdown":
            return 40035, "unsupported msgtype"
        markdown = payload.get("markdown", {})
        if not markdown.get("title") or not markdown.get("text"):
            return 40035, "markdown title and text are required"
        if not isinstance(payload.get("at", {}).get("atMobiles", []), list):
            return 40035, "invalid at"
        return None

    def text(self, payload: dict) -> str:
        return payload["markdown"]["text"] + " @" + ",".join(payload["at"]["atMobiles"])


class FeishuRobot(Robot):
    ok: ClassVar[dict] = {"code": 0, "msg": "success", "data": {}}
    too_fast = (11232, "frequency limited")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/open-apis/bot/v2/hook/0f0f"

    def error(self, code: int, message: str) -> dict:
        return {"code": code, "msg": message, "data": {}}

    def check(self, query: dict, payload: dict) -> tuple[int, str] | None:
        if self.secret:
            stamp, sign = str(payload.get("timestamp", "")), payload.get("sign", "")
            digest = hmac.new(f"{stamp}\n{self.secret}".encode(), b"", hashlib.sha256).digest()
            if (not stamp.isdigit() or abs(time.time() - int(stamp)) > 3600
                    or not hmac.compare_digest(sign, base64.b64encode(digest).decode())):
                return 19021, "sign match fail or timestamp is not within one hour from now"
        if payload.get("msg_type") != "text" or not payload.get("content", {}).get("text"):
            return 9499, "Bad Request: msg_type text needs content.text"
        return None

    def text(self, payload: dict) -> str:
        return payload["content"]["text"]
