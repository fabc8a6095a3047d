"""飞书自定义机器人 (Feishu custom robot): text, @ by open_id; with 签名校验, timestamp and
sign in the body (sign = base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}",
message=b""))). Its local server from the documented format and signature:
tests/robots.py (FeishuRobot)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from pager.channels.base import Message
from pager.channels.robot import Robot, signature

if TYPE_CHECKING:
    from pager.config import Person


class Feishu(Robot):
    """飞书群机器人: text, signed with the robot's secret (签名校验)."""
    type: Literal["feishu"]
    url: str
    secret: str | None = None
    per_minute: int = Field(default=100, ge=1)

    # its request 20 KB, kept under with room for the JSON around the text
    max_bytes: ClassVar[int] = 18000
    rate_limited: ClassVar[frozenset[int]] = frozenset({9499, 11232})
    result: ClassVar[tuple[str, ...]] = ("code", "StatusCode")  # StatusCode: its older answer

    def text(self, people: list[Person], message: Message) -> str:
        at = "".join(f'<at user_id="{p.feishu}">{p.name}</at>' for p in people if p.feishu)
        return f"{message.title}\n{message.text}{at}"

    def send(self, people: list[Person], message: Message) -> None:
        body: dict = {}
        if self.secret:
            stamp = str(int(time.time()))
            body = {"timestamp": stamp, "sign": signature(f"{stamp}\n{self.secret}", "")}
        body |= {"msg_type": "text", "content": {"text": self.text(people, message)}}
        self.post_json(self.url, body)
