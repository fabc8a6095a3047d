"""SMS through the site's GSM modem, handed to gammu-smsd (works with no internet): in by
gammu-smsd-inject (its documented way in), followed through its files backend's folders
(gammu-smsd-files(7)); replies arrive in its inbox. Tests: a real gammu-smsd with gammu's
dummy phone driver (tests/test_pager_delivery.py)."""

from __future__ import annotations

import configparser
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from pager.channels.base import ChannelConfig, Failed, Message, fit
from vocabulary import Duration

if TYPE_CHECKING:
    from pager.config import Person


class Sms(ChannelConfig):
    """SMS through the site's GSM modem, handed to gammu-smsd (works with no internet).
    Sent once gammu-smsd moved it to its sent folder; in its error folder, or still in
    the outbox after `confirm_within` (taken back), it failed: the person's next channel."""
    type: Literal["sms"]
    gammu_config: Path = Path("/etc/gammu-smsdrc")
    max_chars: int = Field(default=134, ge=20)  # two concatenated UCS-2 parts (2 x 67)
    per_minute: int = Field(default=30, ge=1)
    confirm_within: Duration = 60.0

    address: ClassVar[str | None] = "mobile"

    def send(self, people: list[Person], message: Message) -> list[str]:
        """Handed to gammu-smsd's outbox; the daemon owns the modem and sends it, retrying
        on its own. The outbox files, for `confirm` to follow."""
        self.spool()  # a config the pager cannot follow fails now, not after the bound
        text = fit(message.short, self.max_chars)
        files = []
        for person in people:
            try:
                done = subprocess.run(
                    ["gammu-smsd-inject", "-c", str(self.gammu_config), "TEXT",
                     person.mobile, "-unicode", "-len", str(len(text) * 2), "-text", text],
                    capture_output=True, text=True, timeout=self.timeout,
                    stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise Failed(f"gammu-smsd-inject: {exc}") from None
            if done.returncode != 0:
                raise Failed(f"gammu-smsd-inject exited {done.returncode}: "
                             f"{(done.stderr or done.stdout).strip()[-300:]}")
            written = re.search(r"^Written message with ID (.+)$", done.stdout, re.MULTILINE)
            if written is None:
                raise Failed(f"gammu-smsd-inject named no outbox file: {done.stdout[-300:]!r}")
            files.append(Path(written.group(1).strip()).name)
        return files

    def spool(self) -> dict[str, Path]:
        """gammu-smsd's folders (outbox, sent, error, inbox) from its config; Failed when
        the pager cannot tell sent from waiting there: another backend than files, or a
        sent or error folder that is not a folder of its own (gammu-smsd's defaults)."""
        smsdrc = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            with open(self.gammu_config, encoding="utf-8", errors="replace") as file:
                smsdrc.read_file(file)
        except (OSError, configparser.Error) as exc:
            raise Failed(f"{self.gammu_config}: {exc}") from None
        get = lambda key: smsdrc.get("smsd", key, fallback=None)  # noqa: E731
        if (get("service") or "files").lower() != "files":
            raise Failed(f"{self.gammu_config}: service {get('service')}: the pager follows "
                         "gammu-smsd's files backend only (service = files)")
        folders = {key: get(f"{key}path") for key in ("outbox", "inbox")}
        folders |= {key: get(f"{key}smspath") for key in ("sent", "error")}
        paths = {k: Path(v).resolve() for k, v in folders.items() if v}
        for key in ("outbox", "sent", "error"):
            if key not in paths:
                raise Failed(f"{self.gammu_config}: [smsd] {key}"
                             f"{'path' if key == 'outbox' else 'smspath'} is not set: the "
                             "pager reads it to know whether an SMS went")
        if len({paths["outbox"], paths["sent"], paths["error"]}) < 3:
            raise Failed(f"{self.gammu_config}: outboxpath, sentsmspath and errorsmspath "
                         "must be three folders: the pager reads them to know whether an SMS "
                         "went")
        return paths

    def confirm(self, files: list[str], withdraw: bool = False) -> bool | None:
        """What became of the files handed to gammu-smsd: True once all are in its sent
        folder, False when one is in its error folder, None while they wait. `withdraw`:
        the wait is over; what is still in the outbox is taken back (False), so that it
        cannot go out after the person's next channel."""
        folders = self.spool()
        if any((folders["error"] / name).exists() for name in files):
            return False
        if all((folders["sent"] / name).exists() for name in files):
            return True
        if not withdraw:
            return None
        for name in files:
            (folders["outbox"] / name).unlink(missing_ok=True)
        # sent in the moment before it was taken back
        return all((folders["sent"] / name).exists() for name in files)

    def inboxes(self) -> list[Path]:
        """gammu-smsd's inboxpath (read as `insmon pager sms-received` always has: its
        config unread or without one, the working folder)."""
        smsdrc = configparser.ConfigParser(interpolation=None, strict=False)
        smsdrc.read(self.gammu_config)
        return [Path(smsdrc.get("smsd", "inboxpath", fallback="."))]

    def host_services(self) -> dict[str, Path]:
        return {"gammu-smsd": self.gammu_config}
