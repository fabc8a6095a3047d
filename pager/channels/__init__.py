"""How a message reaches people: one module per channel type, each its config model and
its sending (the contract: `pager/channels/base.py`). `CHANNELS` is the only list of
them: the config's tagged union on `type` (`Channel`), the group robots (`ROBOTS`) and
who a channel reaches are derived from it.

A new channel type is one module here and one entry below (docs/architecture.md: "A
channel type")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Union

from pydantic import Field

from pager.channels import dingtalk, email, feishu, http, sms, webhook, wecom
from pager.channels.base import ChannelConfig, Failed, Message, RateLimited, Short, fit

if TYPE_CHECKING:
    from pager.config import Person

TYPES: tuple[type[ChannelConfig], ...] = (
    wecom.WeCom, dingtalk.DingTalk, feishu.Feishu, email.Email, sms.Sms, http.HttpGateway,
    webhook.Webhook)
CHANNELS: dict[str, type[ChannelConfig]] = {
    kind.model_fields["type"].annotation.__args__[0]: kind for kind in TYPES}
Channel = Annotated[Union[TYPES], Field(discriminator="type")]  # noqa: UP007
ROBOTS = tuple(name for name, kind in CHANNELS.items() if kind.group)  # group chats


def send(channel: ChannelConfig, people: list[Person], message: Message) -> list[str] | None:
    """One message to these people over one channel (a robot: one post @ all of them).
    None: the channel confirmed it; a list: the files handed to gammu-smsd (`confirm`)."""
    return channel.send(people, message)


def fits(channel: ChannelConfig, people: list[Person], message: Message) -> bool:
    """Whether the channel takes the message in one post (a robot's size limit)."""
    return channel.fits(people, message)


def posts(channel: ChannelConfig, people: list[Person]) -> int:
    """Requests one message makes to the channel, as its rate limit counts them."""
    return channel.posts(people)


def confirm(channel: ChannelConfig, files: list[str], withdraw: bool = False
            ) -> bool | None:
    """What became of the files `send` handed over (SMS): True sent, False failed, None
    waiting; `withdraw`: the wait is over, what waits is taken back."""
    return channel.confirm(files, withdraw)


__all__ = ["CHANNELS", "ROBOTS", "Channel", "ChannelConfig", "Failed", "Message",
           "RateLimited", "Short", "confirm", "fit", "fits", "posts", "send"]
