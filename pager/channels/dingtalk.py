"""钉钉自定义机器人 (DingTalk custom robot): markdown, @ by user id or mobile; with 加签,
timestamp and sign on the URL (sign = base64(HMAC-SHA256(secret,
f"{timestamp}\\n{secret}"))). Its local server from the documented format and signature:
tests/robots.py (DingTalkRobot)."""

from __future__ import annotations

import time
import urllib.parse
from typing import TYPE_CHECKING, ClassVar, Literal

from pager.channels.base import Message
from pager.channels.robot import Robot, signature

if TYPE_CHECKING:
    from pager.config import Person


class DingTalk(Robot):
    """钉钉群机器人: markdown, signed with the robot's secret (加签), @ by mobile."""
    type: Literal["dingtalk"]
    url: str
    secret: str | None = None

    # its request 20 KB, kept under with room for the JSON around the text
    max_bytes: ClassVar[int] = 18000
    rate_limited: ClassVar[frozenset[int]] = frozenset({130101})
    result: ClassVar[tuple[str, ...]] = ("errcode",)

    def text(self, people: list[Person], message: Message) -> str:
        at = " ".join(f"@{m}" for m in (*(p.mobile for p in people if p.mobile and
                                           not p.dingtalk),
                                         *(p.dingtalk for p in people if p.dingtalk)))
        return (f"### {message.title}\n\n" + message.text.replace("\n", "\n\n")
                + (f"\n\n{at}" if at else ""))

    def send(self, people: list[Person], message: Message) -> None:
        url = self.url
        if self.secret:
            stamp = str(int(time.time() * 1000))
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(
                {"timestamp": stamp, "sign": signature(self.secret, f"{stamp}\n{self.secret}")})
        mobiles = [p.mobile for p in people if p.mobile and not p.dingtalk]
        ids = [p.dingtalk for p in people if p.dingtalk]
        self.post_json(url, {
            "msgtype": "markdown",
            "markdown": {"title": message.title, "text": self.text(people, message)},
            "at": {"atMobiles": mobiles, "atUserIds": ids, "isAtAll": False}})
