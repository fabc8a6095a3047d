"""What the group chats' robots (WeCom, DingTalk, Feishu) share: one post @ every person
in the group, a size limit, documented "too fast" answers, and an answer that says in one
field whether the robot took the message."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import TYPE_CHECKING, ClassVar

from pager.channels.base import ChannelConfig, Failed, Message, RateLimited, post

if TYPE_CHECKING:
    from pager.config import Person


class Robot(ChannelConfig):
    group: ClassVar[bool] = True
    max_bytes: ClassVar[int]  # the robot's documented size limit, in UTF-8 bytes
    rate_limited: ClassVar[frozenset[int]]  # its documented "too fast" answers
    # Where its answer says whether it took the message, 0 when it did. An answer without
    # it (a proxy's or a captive portal's page, an empty 200) is no evidence.
    result: ClassVar[tuple[str, ...]]

    def text(self, people: list[Person], message: Message) -> str:
        """The text it posts, mentions included: what its size limit counts."""
        raise NotImplementedError

    def fits(self, people: list[Person], message: Message) -> bool:
        return len(self.text(people, message).encode()) <= self.max_bytes

    def post_json(self, url: str, body: dict) -> None:
        """Post to the robot; returns when its answer says it took the message."""
        answer = post(url, json.dumps(body, ensure_ascii=False).encode(), self.timeout)
        try:
            reply = json.loads(answer)
        except ValueError:
            raise Failed(f"answered with no JSON: {answer[:200]!r}") from None
        fields = [f for f in self.result if isinstance(reply, dict) and f in reply]
        if not fields:
            raise Failed(f"answered without {' or '.join(self.result)}: {answer[:200]!r}")
        code = reply[fields[0]]
        why = reply.get("errmsg") or reply.get("msg") or reply.get("StatusMessage")
        if code in self.rate_limited:
            raise RateLimited(f"rate limited: {code} {why}")
        if type(code) is not int or code != 0:
            raise Failed(f"refused: {code!r} {why}")


def signature(key: str, text: str) -> str:
    """base64(HMAC-SHA256(key, text)): how DingTalk's 加签 and Feishu's 签名校验 sign."""
    return base64.b64encode(hmac.new(key.encode(), text.encode(), hashlib.sha256).digest()
                            ).decode()
