"""A plain JSON POST of the page for a site's own tools."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from pager.channels.base import ChannelConfig, Message, post

if TYPE_CHECKING:
    from pager.config import Person


class Webhook(ChannelConfig):
    """A plain JSON POST of the page (incident, person, text) for a site's own tools."""
    type: Literal["webhook"]
    url: str
    per_minute: int = Field(default=600, ge=1)

    def send(self, people: list[Person], message: Message) -> None:
        """Sent on a 2xx answer (its body is not read)."""
        body = {"title": message.title, "text": message.text,
                "people": [{"name": p.name, "mobile": p.mobile, "email": p.email}
                           for p in people]}
        post(self.url, json.dumps(body, ensure_ascii=False).encode(), self.timeout)
