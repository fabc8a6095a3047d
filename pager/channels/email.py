"""E-mail through the site's SMTP server (tests: a real one, aiosmtpd)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from pager.channels.base import ChannelConfig, Failed, Message

if TYPE_CHECKING:
    from pager.config import Person


class Email(ChannelConfig):
    type: Literal["email"]
    host: str
    port: int = 587
    starttls: bool = True
    ca_file: Path | None = None  # the mail server's CA, when it is the hospital's own
    username: str | None = None
    password_file: Path | None = None
    sender: str
    per_minute: int = Field(default=600, ge=1)

    address: ClassVar[str | None] = "email"

    def send(self, people: list[Person], message: Message) -> None:
        """Sent when the server answered 250 to the message and took every recipient."""
        mail = EmailMessage()
        mail["Subject"] = message.title
        mail["From"] = self.sender
        mail["To"] = ", ".join(p.email for p in people if p.email)
        mail.set_content(message.text)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context(
                        cafile=str(self.ca_file) if self.ca_file else None))
                if self.username and self.password_file:
                    smtp.login(self.username, self.password_file.read_text().strip())
                refused = smtp.send_message(mail)
        except (OSError, smtplib.SMTPException) as exc:
            raise Failed(f"SMTP {self.host}:{self.port}: {exc}") from None
        if refused:  # some recipients taken, these not: not all of them have it
            raise Failed(f"SMTP {self.host}:{self.port} refused "
                         + ", ".join(f"{a} ({c})" for a, (c, _) in refused.items()))
