"""The channel contract: what every channel type's module (registered in
`pager.channels.CHANNELS`) defines, and what a channel takes (a `Message`).

A channel type is its config model, a `ChannelConfig` subclass whose `type` is a
Literal; the model's methods are the channel's behaviour, so that the config of one
channel is all it needs to send:
- `send(people, message)` returns when the channel confirmed the message (a robot's
  success code, the SMTP server's 250, a gateway's 2xx and its own success answer), or,
  for SMS, with the files it handed to gammu-smsd's outbox, which `confirm` follows to
  the sent folder; it raises Failed (retry, then the person's next channel) or
  RateLimited (the channel said too fast: the message waits for the next batch);
- `reaches(person)`: whether it has an address for them (`address`: the person's field
  it sends to; None: it reaches anyone, as a group robot @s anyone in its group);
- `fits(people, message)`: whether it takes the message in one post (its size limit);
  `posts(people)`: the requests one message makes, as its rate limit counts them;
- `group`: a group chat (a robot): one post @ every person in it, batched, its rate
  limit shared; otherwise one message to each person;
- `inboxes()`: where people's replies to it arrive (SMS), for `insmon pager sms-received`;
- `host_services()`: the services of this host it hands messages to, and their config
  files, which `insmon doctor` examines (monitor/doctor.py: gammu-smsd's, `_modem`).
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from vocabulary import Duration

if TYPE_CHECKING:
    from pager.config import Person


class Failed(Exception):
    pass


class RateLimited(Failed):
    pass


class Short(NamedTuple):
    """An SMS's fields, kept apart until `fit` puts them together: what happened, since
    when and how to acknowledge, and the ack link (a summary may hold any character)."""
    head: str
    tail: str
    link: str = ""


@dataclass(frozen=True)
class Message:
    title: str
    text: str
    short: Short
    # what it tells whom, as (incident, kind, step, person): whose it may be, and
    # whether it went out (the pager's log, and the invariants' simulation)
    news: frozenset[tuple[int, str, int, str]] = frozenset()

    @property
    def incidents(self) -> frozenset[int]:
        return frozenset(news[0] for news in self.news)


def fit(short: Short, limit: int) -> str:
    """What it is and what to do, within `limit` characters: the link goes first when
    there is no room (a reply acknowledges too), then the head is cut."""
    head, tail, link = short
    whole = " ".join(filter(None, (head, tail, link)))
    if len(whole) <= limit:
        return whole
    room = limit - len(tail) - 1
    if room < len(head):
        head = head[:max(room - 1, 0)] + "…"
    return f"{head} {tail}"[:limit]


class ChannelConfig(BaseModel):
    """One channel of the pager's config, and how it sends (see the module's docstring)."""
    model_config = ConfigDict(extra="forbid")

    # `type: Literal["<name>"]` in each channel type: its name in the config and registry
    # Robots' documented limits: 20 messages a minute per robot (WeCom, DingTalk), 100 a
    # minute and 5 a second (Feishu). Over the limit, messages wait and go out together.
    per_minute: int = Field(default=20, ge=1)
    timeout: Duration = 10.0
    retries: int = Field(default=3, ge=1, le=10)  # tries before the person's next channel

    group: ClassVar[bool] = False
    address: ClassVar[str | None] = None

    def send(self, people: list[Person], message: Message) -> list[str] | None:
        raise NotImplementedError

    def reaches(self, person: Person) -> bool:
        return self.address is None or getattr(person, self.address) is not None

    def fits(self, people: list[Person], message: Message) -> bool:
        return True

    def posts(self, people: list[Person]) -> int:
        return 1

    def confirm(self, files: list[str], withdraw: bool = False) -> bool | None:
        raise Failed(f"no files to follow on a {self.type} channel")

    def inboxes(self) -> list[Path]:
        return []

    def host_services(self) -> dict[str, Path]:
        return {}


def post(url: str, body: bytes | None, timeout: float, method: str = "POST",
         headers: dict[str, str] | None = None) -> bytes:
    """One HTTP request; its answer's body when it is a 2xx, else Failed."""
    request = urllib.request.Request(
        url, data=body, method=method,
        headers={"Content-Type": "application/json; charset=utf-8", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if not 200 <= response.status < 300:
                raise Failed(f"HTTP {response.status} from {host(url)}")
            return response.read(1 << 20)
    except urllib.error.HTTPError as exc:
        raise Failed(f"HTTP {exc.code} from {host(url)}") from None
    except (OSError, ValueError) as exc:  # refused, timed out, bad URL
        raise Failed(f"{host(url)}: {getattr(exc, 'reason', None) or exc}") from None


def host(url: str) -> str:
    """The host only: robot URLs carry their access token in the query."""
    return urllib.parse.urlsplit(url).netloc or url[:40]
