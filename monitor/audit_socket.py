"""The trail's one writer, and the commands that hand it their records.

insmon's service (`insmon run`) holds its trail's key and listens on `audit.sock` beside
the trail's folder (monitor/audit.py: `socket_of`), a Unix socket its own group may use.
A command (`insmon maintenance`, `insmon drill`) sends one JSON line: the event, the
outcome, the detail and who it says it is. The service asks the kernel who is at the
other end (SO_PEERCRED: the process, user and group; and that process's login uid, which
sudo keeps), records that as `who`, with what the command said beside it, and answers
with the record's sequence number and hash once it is on disk. So a record's `who`
cannot be forged, and nobody but the service needs to write the folder or read the key.

Where no service answers (a desk, a host without `insmon run`), the command writes the
trail itself if it may (the folder and the key are the service user's: root may), and the
record says it was written directly, `who` then being what the command was told.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import socket
import struct
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from monitor.audit import AuditError, Trail, socket_of, who

log = logging.getLogger("insmon.audit")

# what a command may hand over: never `config`, `rotated` or `keyed`, the writer's own
ACCEPTED = frozenset({"maintenance-declared", "maintenance-recurring", "maintenance-ended",
                      "maintenance-scheduled", "drill"})
MAX_REQUEST = 256 * 1024
TIMEOUT = 30.0       # a command waits this long for its answer
READ_TIMEOUT = 5.0   # the service, for a caller's line (a command sends it at once)
MAX_CALLERS = 8      # at a time; more are told the service is busy: a caller holding
                     # connections open must not take the descriptors insmon's checks need
UNSET = 0xFFFFFFFF  # a login uid never set (a daemon, a container)


@dataclass(frozen=True)
class Caller:
    """Who is at the other end of the socket, as the kernel says."""
    pid: int
    uid: int
    gid: int
    login_uid: int | None

    @classmethod
    def of(cls, sock: socket.socket) -> Caller:
        pid, uid, gid = struct.unpack("3i", sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        try:
            login = int(Path(f"/proc/{pid}/loginuid").read_text())
        except (OSError, ValueError):
            login = UNSET
        return cls(pid, uid, gid, None if login == UNSET else login)

    @property
    def who(self) -> str:
        """The user; where they logged in as another (sudo), that person first."""
        if self.login_uid is not None and self.login_uid != self.uid:
            return f"{_name(self.login_uid)} (as {_name(self.uid)})"
        return _name(self.uid)

    def detail(self, said: str | None) -> dict:
        return {"pid": self.pid, "uid": self.uid, "gid": self.gid,
                "login_uid": self.login_uid, "said": said}


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


async def serve(trail: Trail, path: Path | None = None, appended=lambda record: None
                ) -> asyncio.AbstractServer:
    """Take records on `path` (by default the socket beside the trail) until closed;
    `appended(record)` after each one is on disk."""
    path = path or socket_of(trail.folder)
    if path.is_socket():
        if _answers(path):
            raise OSError(f"{path}: another insmon takes this trail's records")
        path.unlink()  # a service before this one left it
    lock = asyncio.Lock()
    callers = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal callers
        callers += 1
        try:
            if callers > MAX_CALLERS:
                raise OSError(f"busy ({MAX_CALLERS} callers at once): try again")
            caller = Caller.of(writer.get_extra_info("socket"))
            line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
            answer = await _take(trail, caller, line, lock)
            if "seq" in answer:
                appended(answer)
        except (ValueError, AuditError, OSError, asyncio.LimitOverrunError) as exc:
            answer = {"error": str(exc)}
        except RecursionError:  # deeper than json goes
            answer = {"error": "the request is nested too deep"}
        except TimeoutError:
            answer = {"error": "nothing came"}
        finally:
            callers -= 1
        try:
            writer.write(json.dumps(answer, ensure_ascii=False).encode() + b"\n")
            await writer.drain()
            writer.close()
        except OSError:
            pass

    server = await asyncio.start_unix_server(handle, path=str(path), limit=MAX_REQUEST)
    path.chmod(0o660)  # the service's user and group (the operators); root
    return server


def _answers(path: Path) -> bool:
    """Does a service listen on this socket?"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


async def _take(trail: Trail, caller: Caller, line: bytes, lock: asyncio.Lock) -> dict:
    request = json.loads(line)
    if not isinstance(request, dict):
        raise ValueError("a JSON object, please")
    event, outcome, detail = request.get("event"), request.get("outcome"), \
        request.get("detail")
    said = request.get("who")
    if event not in ACCEPTED:
        raise ValueError(f"{event!r} is not an event a command records")
    if not isinstance(outcome, str) or not 0 < len(outcome) <= 32:
        raise ValueError("the outcome is a short text")
    if said is not None and not isinstance(said, str):
        raise ValueError("who is a text")
    if isinstance(detail, dict):
        detail = {**detail, "caller": caller.detail(said)}
    else:
        detail = {"detail": detail, "caller": caller.detail(said)}
    async with lock:
        record = await asyncio.to_thread(trail.append, event, caller.who, outcome, detail)
    log.info("recorded %s %s by %s (pid %d): record %d", event, outcome, caller.who,
             caller.pid, record["seq"])
    return {"seq": record["seq"], "hash": record["hash"], "who": record["who"]}


class Recorder:
    """What a command records in a trail: handed to the service over its socket when one
    answers, else written here (with the key beside the trail, made if there is none)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.socket = socket_of(self.folder)

    def append(self, event: str, said: str, outcome: str,
               detail: dict | str | None = None) -> dict:
        if self.socket.is_socket():
            try:
                return self._hand_over(event, said, outcome, detail)
            except (ConnectionRefusedError, FileNotFoundError):
                log.warning("nobody answers on %s (insmon's service is not running): "
                            "writing the trail here", self.socket)
        if isinstance(detail, dict) or detail is None:
            detail = {**(detail or {}), "caller": {"uid": os.getuid(), "said": said,
                                                   "directly": True}}
        return Trail.open(self.folder, create_key=True).append(event, said, outcome, detail)

    def _hand_over(self, event: str, said: str, outcome: str, detail) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(TIMEOUT)
            conn.connect(str(self.socket))
            conn.sendall(json.dumps({"event": event, "who": said, "outcome": outcome,
                                     "detail": detail}, ensure_ascii=False).encode() + b"\n")
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                answer += chunk
        try:
            reply = json.loads(answer)
        except ValueError:
            raise AuditError(f"{self.socket} answered {answer[:200]!r}") from None
        if "error" in reply or "seq" not in reply:
            raise AuditError(f"{self.socket}: {reply.get('error', reply)}")
        return reply

    def records(self, start: datetime | None = None, end: datetime | None = None,
                events: Collection[str] = ()) -> Iterator[dict]:
        return Trail(self.folder).records(start, end, events)


__all__ = ["ACCEPTED", "Caller", "Recorder", "serve", "who"]
