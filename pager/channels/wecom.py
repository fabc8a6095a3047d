"""企业微信群机器人 (WeCom group robot): markdown, `<@userid>` for who has a WeCom id; the
others are @-ed by mobile in a text message right after (markdown cannot @ by mobile).
Its local server from the documented format: tests/robots.py (WeComRobot)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, ClassVar, Literal

from pager.channels.base import Failed, Message
from pager.channels.robot import Robot

if TYPE_CHECKING:
    from pager.config import Person

log = logging.getLogger("insmon.pager.channels")


class WeCom(Robot):
    """企业微信群机器人: markdown, @ by the person's WeCom id or mobile."""
    type: Literal["wecom"]
    url: str

    # its markdown content 4,096 bytes (its text 2,048: errcode 40058 over either)
    max_bytes: ClassVar[int] = 4096
    rate_limited: ClassVar[frozenset[int]] = frozenset({45009})
    result: ClassVar[tuple[str, ...]] = ("errcode",)

    def text(self, people: list[Person], message: Message) -> str:
        mentions = " ".join(f"<@{p.wecom}>" for p in people if p.wecom)
        return f"**{message.title}**\n{message.text}" + (f"\n{mentions}" if mentions else "")

    def posts(self, people: list[Person]) -> int:
        """It @-s people with no WeCom id by mobile in a second, text post."""
        return 2 if any(p.mobile and not p.wecom for p in people) else 1

    def send(self, people: list[Person], message: Message) -> None:
        self.post_json(self.url, {"msgtype": "markdown", "markdown": {
            "content": self.text(people, message)}})
        mobiles = [p.mobile for p in people if not p.wecom and p.mobile]
        if mobiles:  # the text message's limit is 2,048 bytes: the title, cut to fit
            try:
                self.post_json(self.url, {"msgtype": "text", "text": {
                    "content": message.title.encode()[:1800].decode(errors="ignore"),
                    "mentioned_mobile_list": mobiles}})
            except Failed as exc:  # the group has the page; only the @ by mobile is missing
                log.warning("WeCom: the page went, its @ by mobile did not: %s", exc)
