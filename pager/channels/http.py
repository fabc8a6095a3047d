"""A site's SMS or voice-call gateway: one templated HTTP request per person."""

from __future__ import annotations

import json
import re
import urllib.parse
from string import Template
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, field_validator

from pager.channels.base import ChannelConfig, Failed, Message, fit, host, post

if TYPE_CHECKING:
    from pager.config import Person


class HttpGateway(ChannelConfig):
    """A site's SMS or voice-call gateway: a templated request. In `body`, `url` and
    header values, $mobile, $name, $text and $text_json (the text as a JSON string) are
    replaced."""
    type: Literal["http"]
    url: str
    method: Literal["POST", "PUT", "GET"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str = '{"mobile": "$mobile", "text": $text_json}'
    max_chars: int | None = None  # a voice or SMS gateway's length limit
    per_minute: int = Field(default=600, ge=1)
    # the gateway's own success answer, a regular expression its body must match (e.g.
    # '"code":\s*0'); without it, any 2xx answer counts as sent
    expect: str | None = None

    address: ClassVar[str | None] = "mobile"

    @field_validator("expect")
    @classmethod
    def _expect(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    def send(self, people: list[Person], message: Message) -> None:
        """Sent on a 2xx answer that matches the gateway's `expect`, when it has one."""
        text = fit(message.short, self.max_chars) if self.max_chars else message.text
        for person in people:
            values = {"mobile": person.mobile or "", "name": person.name, "text": text,
                      "text_json": json.dumps(text, ensure_ascii=False)}
            url = Template(self.url).safe_substitute(
                {k: urllib.parse.quote(v) for k, v in values.items()})
            headers = {k: Template(v).safe_substitute(values)
                       for k, v in self.headers.items()}
            body = (Template(self.body).safe_substitute(values).encode()
                    if self.method != "GET" else None)
            answer = post(url, body, self.timeout, self.method, headers)
            if self.expect and not re.search(self.expect, answer.decode("utf-8", "replace")):
                raise Failed(f"{host(url)} answered without its success ({self.expect}): "
                             f"{answer[:200]!r}")
