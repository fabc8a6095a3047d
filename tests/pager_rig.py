"""What the pager tests run against: the real `insmon pager` process (or the same pager
in the test's process on a clock the test moves: tests/pager_harness.py), a real gammu-smsd
with gammu's dummy phone (a directory: an SMS put in its sms/1/ is received), a real SMTP
server with STARTTLS (aiosmtpd), and the robots."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import yaml
from aiosmtpd.controller import Controller

from ops.stack import free_port, wait_for
from pager import records
from tests.certs import Authority
from tests.conftest import INSMON
from tests.robots import WeComRobot

T = TypeVar("T")


class PagerClient:
    """A pager as its clients reach it, by its config file: Alertmanager's webhooks, the
    incident API, its store read as another process would."""

    def __init__(self, config_file: Path) -> None:
        self.config_file = config_file
        config = yaml.safe_load(config_file.read_text())
        self.url = f"http://{config['listen']}"
        token_file = (config.get("auth") or {}).get("token_file")
        self.auth = {"Authorization": f"Bearer {Path(token_file).read_text().strip()}"
                     } if token_file else {}
        self.database = Path(config["database"])

    def get(self, path: str) -> bytes | None:
        try:
            request = urllib.request.Request(self.url + path, headers=self.auth)
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.read()
        except OSError:
            return None

    def post(self, path: str, body: bytes | dict) -> tuple[int, bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  **self.auth})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def incidents(self) -> list[dict]:
        return json.loads(self.get("/api/incidents") or b"[]")

    def read(self, query: Callable[..., T], *args: object, **kwargs: object) -> T:
        """One of pager/records.py's queries on the pager's store, read as another
        process would (WAL allows it): `pager.read(records.deliveries)`."""
        db = sqlite3.connect(self.database, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            return query(db, *args, **kwargs)
        finally:
            db.close()

    def incidents_of(self, alertname: str) -> list[records.Incident]:
        """The store's incidents of an alert, in the order they opened."""
        return [i for i in self.read(records.incidents) if i.alertname == alertname]


class PagerProcess(PagerClient):
    """`insmon pager run` as a process."""

    def __init__(self, config_file: Path, role: str | None = None,
                 netns: str | None = None) -> None:
        """`role`: its role in the config's pair; `netns`: the network namespace it runs
        in (the pair's tests cut the link between two)."""
        super().__init__(config_file)
        self.role, self.netns = role, netns
        self.log = config_file.parent / "pager.log"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*(["ip", "netns", "exec", self.netns] if self.netns else []),
             INSMON, "--log-level", "info", "pager", "run", "-c", str(self.config_file),
             *(["--role", self.role] if self.role else [])],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self.log.open("a"))
        wait_for(lambda: self.proc.poll() is None and self.get("/healthz"), 20,
                 f"the pager to serve (log: {self.log})")

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def logged(self) -> str:
        return self.log.read_text()


class Phone:
    """gammu-smsd on gammu's dummy phone driver, in `directory`. RunOnReceive is a wrapper
    that logs what `on_receive` prints, or with wrap=False `on_receive` itself, as a site
    writes it (gammu-smsd appends the inbox files' names)."""

    def __init__(self, directory: Path, on_receive: str, wrap: bool = True,
                 running: bool = True) -> None:
        """`running`: start gammu-smsd now (else `start()` later: a daemon that is down)."""
        self.dir = directory
        self.phone = directory / "phone"
        for sub in ("inbox", "outbox", "sent", "error", *(f"phone/sms/{i}" for i in range(1, 6))):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        script = directory / "on-receive.sh"
        script.write_text(f"#!/bin/sh\nexec {on_receive} >> {directory}/on-receive.log 2>&1\n")
        script.chmod(0o755)
        self.config = directory / "smsdrc"
        self.config.write_text(f"""[gammu]
device = {self.phone}/
model = dummy
connection = none

[smsd]
service = files
inboxpath = {directory}/inbox/
outboxpath = {directory}/outbox/
sentsmspath = {directory}/sent/
errorsmspath = {directory}/error/
logfile = {directory}/smsd.log
debuglevel = 0
commtimeout = 1
sendtimeout = 5
loopsleep = 1
receivefrequency = 1
statusfrequency = 0
checksecurity = 0
checkbattery = 0
checksignal = 0
checknetwork = 0
hardresetfrequency = 0
RunOnReceive = {script if wrap else on_receive}
""")
        self.proc: subprocess.Popen | None = None
        self._received = 0
        if running:
            self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(["gammu-smsd", "-c", str(self.config)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def sent(self) -> list[tuple[str, str]]:
        """(number, text) of every SMS gammu-smsd transmitted through the phone, its parts
        joined. (gammu-smsd moves each to sentsmspath once the phone took it; the dummy
        phone's own operations.log is buffered until it exits.)"""
        messages = []
        for path in sorted((self.dir / "sent").glob("OUT*")):
            number, text = "", ""
            blocks = path.read_text(errors="replace").split("[SMSBackup")[1:]
            # gammu-smsd appends a record of part 1 as each part goes out; the whole
            # message, all its parts, is the last run from [SMSBackup000]
            last = max(i for i, block in enumerate(blocks) if block.startswith("000]"))
            for block in blocks[last:]:
                fields = dict(line.split(" = ", 1) for line in block.splitlines()
                              if " = " in line)
                number = fields.get("Number", "").strip('"')
                text += "".join(bytes.fromhex(v).decode("utf-16-be", "replace")
                                for k, v in sorted(fields.items()) if k.startswith("Text"))
            messages.append((number, text))
        return messages

    def to(self, number: str) -> list[str]:
        return [text for n, text in self.sent() if n.endswith(number[-11:])]

    def reply(self, number: str, text: str) -> None:
        """An SMS from `number` arrives at the modem."""
        self._received += 1
        hexed = lambda s: "".join(f"{ord(c):04X}" for c in s)  # noqa: E731
        (self.phone / "sms" / "1" / str(self._received)).write_text(f"""[SMSBackup000]
SMSC = "+8613800100500"
State = UnRead
Number = "{number}"
NumberUnicode = {hexed(number)}
Text00 = {hexed(text)}
Coding = Unicode_No_Compression
Folder = 1
Length = {len(text)}
PDU = Deliver
DateTime = {time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}
""")

    def close(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class MailServer:
    """aiosmtpd with STARTTLS, its certificate from a test CA; keeps what it received."""

    def __init__(self, directory: Path) -> None:
        import ssl

        authority = Authority(directory)
        cert, key = authority.issue("127.0.0.1", ip="127.0.0.1")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.ca_file = authority.file
        self.messages: list[tuple[list[str], str]] = []
        self.times: list[float] = []  # when each of `messages` came
        self.answer = "250 OK"  # to DATA: "451 4.3.0 ..." takes nothing
        server = self

        class Handler:
            async def handle_DATA(self, smtp, session, envelope) -> str:
                if server.answer.startswith("250"):
                    server.messages.append((list(envelope.rcpt_tos),
                                            envelope.content.decode("utf-8", "replace")))
                    server.times.append(time.time())
                return server.answer

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                     tls_context=context, require_starttls=True)
        self.controller.start()

    def to(self, address: str) -> list[str]:
        import email
        import email.policy

        found = []
        for rcpts, raw in self.messages:
            if address in rcpts:
                mail = email.message_from_string(raw, policy=email.policy.default)
                found.append(f"{mail['Subject']}\n{mail.get_content()}")
        return found

    def close(self) -> None:
        self.controller.stop()


@contextmanager
def drill_pager(directory: Path) -> Iterator[tuple[PagerProcess, WeComRobot]]:
    """A pager whose drill rota is one person (演练值班员) on a local WeCom robot."""
    robot = WeComRobot()
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}",
        "database": str(directory / "pager.db"),
        "channels": {"wecom": {"type": "wecom", "url": robot.url}},
        "people": {"duty": {"name": "演练值班员", "wecom": "duty", "channels": ["wecom"]}},
        "teams": {"server_ops": {"name": "服务器运维组", "lead": "duty",
                                 "rotation": {"since": "2026-01-01", "order": ["duty"]}}},
        "drill": {"people": ["duty"]},
        "watchdog": {"timeout": "1h", "notify": ["server_ops"]},
        "auth": {"open": True},  # a lab pager on loopback
    }
    path = directory / "pager.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    pager = PagerProcess(path)
    try:
        yield pager, robot
    finally:
        pager.stop()
        robot.close()


def acknowledge_all(page: str, base: str) -> str:
    """A list page's "全部确认 · Acknowledge all" tapped: its form posted as a browser
    posts it (its hidden fields, form-encoded) to `base`; the page that comes back."""
    form = re.search(r'<form method=post action="(/list/[^"]+)">(.*?)</form>', page, re.S)
    assert form, "no acknowledge-all form on the page"
    fields = dict(re.findall(r'<input type=hidden name=(\w+) value="([^"]*)">', form.group(2)))
    request = urllib.request.Request(
        base + form.group(1), method="POST", data=urllib.parse.urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.read().decode()

