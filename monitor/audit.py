"""The audit trail (审计记录): what was paged, delivered, acknowledged and escalated, each
maintenance window, each config change and each refused login, kept at least 180 days
and protected against change.

A trail is a folder of JSON Lines files, one per month of Beijing time
(`audit-2026-11.jsonl`), each line one record in the order it was written:

    {"seq":12,"prev":"<hash of record 11>","at":"2026-11-27T10:00:00.123+08:00",
     "event":"maintenance-declared","who":"zhangsan","outcome":"ok","detail":{...},
     "hash":"<64 hex digits>"}

`hash` is the HMAC-SHA256, with the trail's key, of the line's bytes before `,"hash"`
(a plain SHA-256 where a trail has no key). So a changed line breaks its own hash, a
removed one leaves a gap in the sequence, and lines moved or copied show as out of
order or twice. `HEAD` holds what the next record needs (the last sequence number and
hash, the file written and its size, when the oldest month is due to be rotated), sealed
with the key: an append costs the same on a trail of a million records as on a new one.

The key is `audit.key` beside the folder (`<folder>.key`), made by the trail's writer
the first time and readable by it alone: whoever can write the folder but has not the
key cannot make a record, a HEAD or a `rotated` record that verifies. insmon's service is
the one writer of its trail; commands hand their records to it over `audit.sock` beside
the folder (monitor/audit_socket.py), which asks the kernel who is calling. Whoever holds
the key (the service's user, root) could still rewrite the chain: the witness catches
that. The service exports the head's sequence number and the first 52 bits of its hash
(`insmon_audit_head_sequence`, `insmon_audit_head_hash`, labelled with the trail's id),
Prometheus keeps them for 190 days outside the folder, and `verify(witness=...)`
compares every head the witness saw with the chain.

Several processes append to one trail in turn (a lock file); each line is written with
one write() and is on disk (fdatasync) before the call returns. A writer stopped between
the line and HEAD leaves a line HEAD does not know: the next append takes it when it
follows on.
Rotation: a month's file is removed once its last record is older than the retention
(190 days by default: over the six months the law asks for), and a `rotated` record
naming the file and its last hash is appended first, so the chain still verifies from
the first file kept. Records written before this format (their hash over the record's
canonical JSON) and before the trail had a key (up to its `keyed` record) still verify.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from array import array
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from vocabulary import SHANGHAI

try:  # what hmac.digest calls, without its wrapper: a verify makes a million of them
    from _hashlib import hmac_digest as _hmac_digest
except ImportError:  # pragma: no cover - a Python without OpenSSL's
    _hmac_digest = hmac.digest

RETENTION = timedelta(days=190)
FILE = re.compile(r"^audit-(\d{4})-(\d{2})\.jsonl$")
EVENT = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
GENESIS = "0" * 64
LEGACY_FIELDS = ("seq", "at", "who", "event", "outcome", "detail")
HASH_AT = b',"hash":"'
TAIL = len(HASH_AT) + 64 + len(b'"}\n')  # the bytes after the hashed part of a line
WITNESS_BITS = 52  # of the head's hash a metric carries: a float64 holds them exactly
KEYED = "keyed"    # the record from which a trail that had no key has one
HEAD_BLOCK = 512   # HEAD is written in place, in whole blocks of this size
MAX_FAULTS = 1000  # named one by one; more are counted
MAX_DOUBTED = 100_000  # records that do not verify, remembered for trusted()
# how the writer opens its files: never through a link someone who could write the folder
# put there (the writer, root among them, would write, chmod and chown what it points to)
WRITE = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
SLACK = 86400.0    # seconds a record may be older than the one before (the pager copies
                   # its store's events with their own time)


class AuditError(Exception):
    pass


@dataclass(frozen=True)
class Fault:
    where: str   # file:line, HEAD, or "" for the whole trail
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}" if self.where else self.what


def key_file_of(folder: str | Path) -> Path:
    """The key of a trail: `audit.key` beside the folder `audit`, not in it (whoever may
    write the folder must not be able to swap the key)."""
    folder = Path(os.path.abspath(folder))
    return folder.with_name(folder.name + ".key")


def socket_of(folder: str | Path) -> Path:
    """Where the trail's writer takes records from commands: `audit.sock` beside it."""
    folder = Path(os.path.abspath(folder))
    return folder.with_name(folder.name + ".sock")


def read_key(path: str | Path, create: bool = False) -> bytes | None:
    """The key in `path` (None when there is none); with `create`, one is made when there
    is none: 32 random bytes in hex, readable by this user alone."""
    path = Path(path)
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
        try:
            _owned(fd, path.parent)
            os.write(fd, secrets.token_hex(32).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(partial, path)  # never over a key another writer made meanwhile
        except FileExistsError:
            pass
        finally:
            partial.unlink()
        return read_key(path)
    if not key:
        raise AuditError(f"{path} is empty: it is no key")
    return key


def _owned(made: int | Path, folder: Path) -> None:
    """Root writing a trail itself (no service answered): what it makes (a file, by its
    descriptor, or a folder) is the owner's of the folder it is in, the service's, which
    must go on writing it."""
    if os.geteuid() == 0:
        owner = os.stat(folder)
        if os.stat(made).st_uid != owner.st_uid:
            os.chown(made, owner.st_uid, owner.st_gid)


def _mac(key: bytes | None, body: bytes) -> str:
    if key:
        return _hmac_digest(key, body, "sha256").hex()
    return hashlib.sha256(body).hexdigest()


def _canonical(fields: dict) -> bytes:
    return json.dumps(fields, ensure_ascii=False, sort_keys=True,
                      separators=(",", ":")).encode()


def witness_value(digest: str) -> int:
    """The part of a hash a witness keeps: its first 52 bits, as a number."""
    return int(digest[:WITNESS_BITS // 4], 16)


@dataclass
class Head:
    """What HEAD holds: all the next record needs."""
    id: str                 # the trail's own name: the witness's label
    seq: int = 0            # the last record's
    hash: str = GENESIS     # the last record's
    at: str = ""            # the last record's time
    file: str = ""          # the file the last record is in
    size: int = 0           # that file's size after it (-1: not known, from an old HEAD)
    rotate: float | None = None  # when the oldest month before `file` is due (Unix time)
    keyed: bool = False     # records are HMACs with the trail's key


@dataclass(frozen=True)
class Witness:
    """What a witness outside the folder saw of a trail's head: (time, sequence number,
    witness_value of the hash) at each view, and the highest sequence number it saw in
    each interval (so a head that was there for a moment counts too)."""
    source: str
    views: list[tuple[float, int, int]]
    peaks: list[tuple[float, int]] = field(default_factory=list)


class WitnessError(Exception):
    """The witness cannot be asked."""


@dataclass
class Verification:
    """What `Trail.verify` found."""
    folder: Path
    keyed: bool                       # a key was given
    records: int = 0                  # lines that are records
    verified: int = 0                 # of them, whose hash matches
    first: int | None = None          # the lowest and highest sequence numbers
    last: int | None = None
    trail_id: str | None = None
    faults: list[Fault] = field(default_factory=list)
    more: int = 0                     # faults beyond MAX_FAULTS, counted
    doubted: set[str] = field(default_factory=set)  # file:line of records not to trust
    doubted_all: bool = False
    untrusted_above: int | None = None  # the witness disagrees above this record
    witness: Witness | None = None
    witness_error: str | None = None  # why no witness was compared
    witnessed_last: float | None = None  # the witness's last view
    unwitnessed: int = 0              # records after it

    @property
    def intact(self) -> bool:
        """No fault, and a witness agreed: the claim `insmon audit --verify` exits 0 on."""
        return not self.faults and self.witness is not None and self.witness_error is None

    def fault(self, where: str, what: str) -> None:
        if len(self.faults) < MAX_FAULTS:
            self.faults.append(Fault(where, what))
        else:
            self.more += 1

    def doubt(self, where: str) -> None:
        if len(self.doubted) < MAX_DOUBTED:
            self.doubted.add(where)
        else:
            self.doubted_all = True

    def trusted(self, where: str, record: dict) -> bool:
        """Does this record (read at `where`) verify: its own hash, its place in the
        chain, and what the witness saw?"""
        if self.doubted_all or where in self.doubted or (self.records and not self.verified):
            return False
        if record.get("seq", 0) > (self.last or 0):
            return False  # written after the trail was read: never verified
        return self.untrusted_above is None or record.get("seq", 0) <= self.untrusted_above

    def summary(self) -> list[str]:
        """Lines for people: the chain, the key, the witness."""
        if not self.records:
            lines = ["no record"]
        elif self.faults:
            lines = [f"{len(self.faults) + self.more} fault(s) in {self.records} records"]
        else:
            lines = [f"every record is as written ({self.records} records, {self.first} to "
                     f"{self.last}, " + ("with the trail's key)" if self.keyed else
                                         "without a key: whoever can write the folder could "
                                         "have rewritten them)")]
        if self.witness_error:
            lines.append(f"not compared with a witness: {self.witness_error}")
        elif self.witness is not None:
            views = len(self.witness.views)
            first = _clock(self.witness.views[0][0]) if views else "-"
            lines.append(f"witness {self.witness.source}: {views} view(s) of the head from "
                         f"{first} to {_clock(self.witnessed_last)} "
                         + ("agree with the chain" if not any(
                             f.what.startswith("the witness") for f in self.faults)
                            else "do not all agree (above)")
                         + (f"; {self.unwitnessed} record(s) since rest on the key alone"
                            if self.unwitnessed else ""))
        return lines


def _clock(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, SHANGHAI).strftime(
        "%Y-%m-%d %H:%M:%S")


class Trail:
    def __init__(self, folder: str | Path, key: bytes | None = None,
                 retention: timedelta = RETENTION) -> None:
        self.folder = Path(folder)
        self.key = key or None
        self.retention = retention

    @classmethod
    def open(cls, folder: str | Path, key_file: str | Path | None = None,
             create_key: bool = False, retention: timedelta = RETENTION) -> Trail:
        """The trail with its key (`key_file`, by default the one beside the folder);
        `create_key`: its writer's, which makes the key the first time."""
        path = Path(key_file) if key_file else key_file_of(folder)
        key = read_key(path, create_key)
        if key is None and key_file:
            raise AuditError(f"{path}: no such key")
        return cls(folder, key, retention)

    # ------------------------------------------------------------------ writing

    def append(self, event: str, who: str, outcome: str, detail: dict | str | None = None,
               at: datetime | None = None) -> dict:
        """One record, chained to the last, on disk when this returns."""
        at = (at or datetime.now(SHANGHAI)).astimezone(SHANGHAI)
        if not EVENT.fullmatch(event):
            raise AuditError(f"{event!r} is not an event's name (a-z, 0-9, -)")
        if not isinstance(who, str) or not isinstance(outcome, str):
            raise AuditError("who and outcome are texts")
        if not self.folder.is_dir():
            # written by its one writer, read by its group (the operators)
            self.folder.mkdir(parents=True, exist_ok=True)
            self.folder.chmod(0o750)
            _owned(self.folder, self.folder.parent)
        with self._locked():
            head = self._current()
            if self.key and not head.keyed:
                head = self._take_key(head, at)
            elif head.keyed and not self.key:
                raise AuditError(f"the trail has a key ({key_file_of(self.folder)}), this "
                                 "writer has none: its records would not verify")
            if head.rotate is not None and at.timestamp() > head.rotate:
                head = self._rotate(head, at)
            head, record = self._write(head, at, who, event, outcome, detail)
            self._store(head)
            return record

    def _write(self, head: Head, at: datetime, who: str, event: str, outcome: str,
               detail: dict | str | None) -> tuple[Head, dict]:
        # filed in the order written: never in a month before the last record's file
        name = max(f"audit-{at:%Y-%m}.jsonl", head.file)
        stamp = at.isoformat(timespec="milliseconds")
        seq = head.seq + 1
        body = (f'{{"seq":{seq},"prev":"{head.hash}","at":{json.dumps(stamp)},'
                f'"event":"{event}","who":{json.dumps(who, ensure_ascii=False)},'
                f'"outcome":{json.dumps(outcome, ensure_ascii=False)},"detail":'
                f'{json.dumps(detail, ensure_ascii=False, separators=(",", ":"))}').encode()
        digest = _mac(self.key if head.keyed else None, body)
        line = body + HASH_AT + digest.encode() + b'"}\n'
        fd = os.open(self.folder / name, WRITE | os.O_APPEND, 0o640)
        try:
            start = os.fstat(fd).st_size
            if start == 0:
                os.fchmod(fd, 0o640)  # whatever the umask: the group reads, nobody else
                _owned(fd, self.folder)
            try:
                written = 0
                while written < len(line):  # a full disk takes part of a line
                    written += os.write(fd, line[written:])
                os.fdatasync(fd)  # the line and the file's new size
            except OSError:
                os.ftruncate(fd, start)  # no half line: the next record starts a line
                raise
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        rotate = head.rotate
        if head.file and name != head.file and rotate is None:
            # the month before is closed: due when its last record is old enough
            rotate = datetime.fromisoformat(head.at).timestamp() + \
                self.retention.total_seconds()
        new = Head(head.id, seq, digest, stamp, name, size, rotate, head.keyed)
        return new, {"seq": seq, "prev": head.hash, "at": stamp, "event": event, "who": who,
                     "outcome": outcome, "detail": detail, "hash": digest}

    def _store(self, head: Head) -> None:
        """HEAD rewritten in place, in one write of one block (a rename would cost a flush
        of its own on ext4; readers take the lock's shared side)."""
        fields = asdict(head)
        seal = _mac(self.key if head.keyed else None, _canonical(fields))
        text = json.dumps({**fields, "seal": seal}, separators=(",", ":")).encode()
        text = text.ljust(-(-(len(text) + 1) // HEAD_BLOCK) * HEAD_BLOCK - 1) + b"\n"
        fd = os.open(self.folder / "HEAD", WRITE, 0o640)
        try:
            if os.fstat(fd).st_size != len(text):
                os.fchmod(fd, 0o640)
                _owned(fd, self.folder)
                os.ftruncate(fd, len(text))
            os.pwrite(fd, text, 0)
        finally:
            os.close(fd)

    def head(self) -> Head | None:
        """What HEAD says, its seal checked; None when there is no HEAD yet. AuditError
        when it is damaged or its seal does not match. Read between two appends."""
        try:
            lock = open(self.folder / ".lock", "rb")  # noqa: SIM115 - closed below
        except OSError:
            return self._head()  # no writer yet, or none that lets us wait for it
        with lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            return self._head()

    def _head(self) -> Head | None:
        try:
            text = (self.folder / "HEAD").read_text().rstrip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise AuditError(f"cannot be read: {exc}") from None
        if not text.startswith("{"):
            return self._old_head(text)
        try:
            fields = json.loads(text)
            seal = fields.pop("seal")
            head = Head(**fields)
            int(head.seq), int(head.size), str(head.hash), bool(head.keyed)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise AuditError(f"is damaged: {exc}") from None
        if head.keyed and not self.key:
            raise AuditError("is sealed with the trail's key: wrong or missing key")
        if not hmac.compare_digest(str(seal), _mac(self.key if head.keyed else None,
                                                   _canonical(fields))):
            raise AuditError("does not match its seal: it was changed (or the key is wrong)")
        return head

    def _old_head(self, text: str) -> Head:
        """A HEAD of the format before (sequence, hash, seal): the rest is found by the
        writer (size -1)."""
        try:
            seq, digest, seal = text.split()
        except ValueError as exc:
            raise AuditError(f"is damaged: {exc}") from None
        body = f"{seq} {digest}".encode()
        keyed = bool(self.key) and hmac.compare_digest(seal, _mac(self.key, body))
        if not seq.isdigit() or not (keyed or hmac.compare_digest(seal, _mac(None, body))):
            raise AuditError("does not match its seal: it was changed (or the key is wrong)")
        return Head("", int(seq), digest, keyed=keyed, size=-1)

    def _current(self) -> Head:
        """HEAD for the next record: a new trail's, one of the old format completed, and
        lines a writer stopped before HEAD taken in."""
        try:
            head = self._head()
        except AuditError as exc:
            raise AuditError(f"{self.folder / 'HEAD'} {exc} (insmon audit --verify)") from None
        files = self.files()
        if head is None:
            if files:
                raise AuditError(f"{self.folder / 'HEAD'} is missing, yet the trail has "
                                 "records (insmon audit --verify)")
            return Head(secrets.token_hex(8))
        if head.size < 0:
            head = self._complete(head, files)
        if not head.file:
            if files:
                raise AuditError(f"{self.folder}: records HEAD does not know "
                                 "(insmon audit --verify)")
            return head
        return self._catch_up(head, files)

    def _complete(self, head: Head, files: list[Path]) -> Head:
        if head.seq == 0:
            return Head(secrets.token_hex(8), keyed=head.keyed)
        if not files:
            raise AuditError(f"{self.folder}: HEAD names record {head.seq}, no file has it")
        last = _last_line(files[-1])
        record = _record(last) if last else None
        if record is None or (record["seq"], record["hash"]) != (head.seq, head.hash):
            raise AuditError(f"{files[-1]} does not end with the record HEAD names "
                             "(insmon audit --verify)")
        rotate = None
        if len(files) > 1:
            oldest = _record(_last_line(files[0]) or b"")
            rotate = (datetime.fromisoformat(oldest["at"]).timestamp() if oldest else 0.0) + \
                self.retention.total_seconds()
        return Head(secrets.token_hex(8), head.seq, head.hash, record["at"], files[-1].name,
                    files[-1].stat().st_size, rotate, head.keyed)

    def _catch_up(self, head: Head, files: list[Path]) -> Head:
        try:
            size = (self.folder / head.file).stat().st_size
        except FileNotFoundError:
            raise AuditError(f"{self.folder / head.file}, where HEAD says the last record "
                             "is, is gone (insmon audit --verify)") from None
        newer = [p for p in files if p.name > head.file]
        if size == head.size and not newer:
            return head
        if size < head.size:
            raise AuditError(f"{self.folder / head.file} is shorter than HEAD says: records "
                             "were removed (insmon audit --verify)")
        for path, start in [(self.folder / head.file, head.size), *((p, 0) for p in newer)]:
            with path.open("rb") as lines:
                lines.seek(start)
                for line in lines:
                    parsed = _parse(line)
                    if parsed is None or isinstance(parsed[5], dict) or \
                            (parsed[0], parsed[1]) != (head.seq + 1, head.hash) or \
                            _mac(self.key if head.keyed else None, parsed[5]) != parsed[4]:
                        raise AuditError(f"{path} has lines HEAD does not know that do not "
                                         "follow on from it (insmon audit --verify)")
                    head = Head(head.id, parsed[0], parsed[4], parsed[2], path.name,
                                lines.tell(), head.rotate, head.keyed)
        return head

    def _take_key(self, head: Head, at: datetime) -> Head:
        """A trail that had no key gets this writer's: a `keyed` record (the first with
        the key) names the last record without, which holds every one before."""
        head.keyed = True
        if head.seq == 0:
            return head
        last = _parse(_last_line(self.folder / head.file) or b"")
        if last is not None and not isinstance(last[5], dict) and \
                _mac(self.key, last[5]) == last[4]:
            raise AuditError(f"{self.folder / 'HEAD'} says the trail has no key, its records "
                             "have one: HEAD was rewritten (insmon audit --verify)")
        head, _ = self._write(head, at, "insmon", KEYED, "ok",
                              {"after_seq": head.seq, "after_hash": head.hash})
        self._store(head)
        return head

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # the writer's alone: whoever may open a file may hold a flock on it, and would
        # stop every append (readers who cannot open it read HEAD without it)
        fd = os.open(self.folder / ".lock", WRITE, 0o600)
        try:
            _owned(fd, self.folder)
            if os.fstat(fd).st_mode & 0o077:
                with contextlib.suppress(PermissionError):  # not ours: left as it is
                    os.fchmod(fd, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)  # released as the file closes
            yield
        finally:
            os.close(fd)

    def _rotate(self, head: Head, at: datetime) -> Head:
        """Months before the one written whose last record is past the retention: a
        `rotated` record for each, then the file goes."""
        now = at.timestamp()
        head.rotate = None
        for path in self.files():
            if path.name >= head.file:
                break
            last = _record(_last_line(path) or b"")
            if last is None:
                continue  # no record in it: verify names it
            last_at = datetime.fromisoformat(last["at"]).timestamp()
            if now - last_at <= self.retention.total_seconds():
                head.rotate = last_at + self.retention.total_seconds()
                break
            head, _ = self._write(head, at, "insmon", "rotated", "ok",
                                  {"file": path.name, "last_seq": last["seq"],
                                   "last_hash": last["hash"], "last_at": last["at"]})
            self._store(head)
            path.unlink()
        return head

    def own(self) -> list[Path]:
        """The folder and its files writable by their owner alone (an install before
        let the operators' group write them); what was changed."""
        changed = []
        for path in (self.folder, *self.files(), self.folder / "HEAD"):
            try:
                mode = path.stat()
            except FileNotFoundError:
                continue
            if mode.st_mode & 0o022 and mode.st_uid == os.getuid():
                path.chmod(mode.st_mode & 0o7755)
                changed.append(path)
        return changed

    # ------------------------------------------------------------------ reading

    def files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if FILE.search(p.name))

    def entries(self, events: Collection[str] = ()) -> Iterator[tuple[str, dict | None]]:
        """(file:line, the record, or None when the line is none) of every line, in the
        order written; with `events`, only the lines that name one of them (the others
        are not parsed: a trail of a million records is read in seconds)."""
        tags = [f'"event":"{event}"'.encode() for event in events]
        for path in self.files():
            with path.open("rb") as lines:
                for number, line in enumerate(lines, 1):
                    if not tags or any(tag in line for tag in tags):
                        yield f"{path.name}:{number}", _record(line)

    def records(self, start: datetime | None = None, end: datetime | None = None,
                events: Collection[str] = ()) -> Iterator[dict]:
        for _, record in self.entries(events):
            if record is None:
                continue  # verify() names it
            if start is None and end is None:
                yield record
                continue
            at = datetime.fromisoformat(record["at"])
            if (start is None or at >= start) and (end is None or at < end):
                yield record

    def last_config(self, file: str) -> str | None:
        """The digest the last `config` record of `file` saw (None: never recorded)."""
        last = None
        for record in self.records(events=("config",)):
            detail = record.get("detail")
            if record["event"] == "config" and isinstance(detail, dict) and \
                    detail.get("file") == file and detail.get("after"):
                last = detail["after"]
        return last

    def verify(self, witness: Callable[[str], Witness] | None = None) -> Verification:
        """Every fault of the trail, reading it once, in the order its lines were written:
        a changed record, one missing, out of order or twice, a month removed without its
        rotation, a removed tail (HEAD), a wrong key; with `witness` (asked with the
        trail's id), every head it saw compared with the chain."""
        found = Verification(self.folder, self.key is not None)
        damaged = None
        try:
            head = self.head()
        except AuditError as exc:
            head, damaged = None, str(exc)
        files = self.files()
        chain = _Chain(self.key, found, [p.name for p in files],
                       self.retention.total_seconds())
        for index, path in enumerate(files):
            with path.open("rb") as lines:
                chain.feed(index, lines)
        keyed = found.verified if self.key else 0  # records with the key, so far
        chain.finish()
        if damaged:
            found.fault("HEAD", damaged)
        elif head is None and files:
            found.fault("HEAD", "is missing")
        elif head is not None and keyed and not head.keyed:
            # a trail gets a key, never loses it: only a writer without it seals so
            found.trail_id = head.id or None
            found.fault("HEAD", "is sealed without the trail's key, its records have it: "
                                "HEAD was written by someone without the key")
        elif head is not None:
            found.trail_id = head.id or None
            self._against(head, chain, found)
        if witness is not None:
            if not found.trail_id:
                found.witness_error = "HEAD names no trail id (a trail not yet written by " \
                                      "this version)"
            else:
                try:
                    seen = witness(found.trail_id)
                except WitnessError as exc:
                    found.witness_error = str(exc)
                else:
                    chain.compare(seen)
        return found

    def _against(self, head: Head, chain: _Chain, found: Verification) -> None:
        """The chain read against HEAD as it was before the reading: records after it
        are appends while it read (HEAD has moved on) or lines no writer wrote."""
        top = chain.top or 0
        if (head.seq, head.hash) == (top, chain.top_hash):
            return
        if top < head.seq:
            found.fault("HEAD", f"the trail ends at record {top}, HEAD says {head.seq}: "
                                "its last records were removed or changed")
        elif not chain.has(head.seq, head.hash):
            found.fault("HEAD", f"record {head.seq} is not the one HEAD names: it was "
                                "changed")
        else:
            try:
                moved = self.head() != head
            except AuditError:
                moved = False
            if not moved:
                found.fault(chain.where_of(head.seq + 1), f"records {head.seq + 1} to {top} "
                            "come after the last one HEAD knows: written by no writer of "
                            "the trail")

    def export_csv(self, out, start: datetime | None = None, end: datetime | None = None
                   ) -> int:
        writer = csv.writer(out)
        writer.writerow(["序号 seq", "时间 time (Beijing)", "人员 who", "事件 event",
                         "结果 outcome", "详情 detail", "hash"])
        count = 0
        for record in self.records(start, end):
            detail = record["detail"]
            writer.writerow([record["seq"], record["at"], *map(inert, (
                record["who"], record["event"], record["outcome"],
                detail if isinstance(detail, str) or detail is None else
                json.dumps(detail, ensure_ascii=False))), record["hash"]])
            count += 1
        return count


class _Chain:
    """The checks of `Trail.verify` as the lines stream by. Per record it keeps 15 bytes
    (the first 64 bits of its hash and where it is), so a million records take some 15 MB
    and any fault can name the line it concerns."""

    def __init__(self, key: bytes | None, found: Verification, names: list[str],
                 retention: float) -> None:
        self.key, self.found, self.names, self.retention = key, found, names, retention
        self.base: int | None = None  # the first sequence number: index 0 of the arrays
        self.top: int | None = None   # the highest so far
        self.top_next: int | None = None
        self._top_hash = GENESIS      # its hash, or the line it is in
        self.top_line: bytes | None = None
        self.top_at = (0, 0)          # its file and line
        self.first: tuple[int, str, str] = (0, GENESIS, "")
        self.prefix = array("Q")      # by seq - base: the first 64 bits of its hash
        self.file = array("H")        # and where it is
        self.line = array("L")
        self.seen = bytearray()
        self.gaps: list[list] = []    # [first, last, where] of sequence numbers not yet seen
        self.waiting: dict[int, tuple[int, str]] = {}  # seq: (its prev's bits, where)
        self.rotated: list[tuple[int, float, str, str]] = []  # last_seq, at, hash, where
        self.keyed_after: list[tuple[int, str, str]] = []     # after_seq, after_hash, where
        self.unkeyed: list[tuple[int, str]] = []  # records without the key (seq, where)
        self.changed: list[tuple[str, int]] = []  # records whose hash does not match

    def where(self, index: int, number: int) -> str:
        return f"{self.names[index]}:{number}"

    def feed(self, index: int, lines) -> None:
        """Every line of one file. The common case, a record of this format that follows
        the one before, is checked here with locals (a million of them); anything else
        by `_feed`."""
        key, found, waiting = self.key, self.found, self.waiting
        prefix, file, numbers, seen = self.prefix, self.file, self.line, self.seen
        top, top_next, top_line, top_at = self.top, self.top_next, None, None
        records = 0
        for number, line in enumerate(lines, 1):
            if top_next is not None and not waiting and line[:7] == b'{"seq":' and \
                    line[-TAIL:-TAIL + 9] == HASH_AT and line[-3:] == b'"}\n':
                i = line.find(b',"prev":"', 7, 40)
                if i > 7 and line[i + 73:i + 81] == b'","at":"' and line[7:i].isdigit() \
                        and int(line[7:i]) == top_next:
                    body = line[:-TAIL]
                    digest = _hmac_digest(key, body, "sha256") if key else \
                        hashlib.sha256(body).digest()
                    try:
                        ok = digest.hex().encode() == line[-TAIL + 9:-3] and \
                            prefix[-1] == int(line[i + 9:i + 25], 16)
                    except ValueError:
                        ok = False
                    if ok:
                        j = line.find(b'","event":"', i + 81) + 11
                        event = line[j:j + 8]
                        if event == b'rotated"' or event[:6] == b'keyed"':
                            self._note(event[:event.index(b'"')].decode(), line,
                                       self.where(index, number))
                        records += 1
                        prefix.append(int.from_bytes(digest[:8], "big"))
                        file.append(index)
                        numbers.append(number)
                        seen.append(1)
                        top, top_next, top_line, top_at = top_next, top_next + 1, line, \
                            (index, number)
                        continue
            if top_line is not None:  # what the common case kept in locals, first
                self.top, self.top_line, self.top_at = top, top_line, top_at
                top_line = None
            found.records += records
            found.verified += records
            records = 0
            self._feed(index, number, line)
            top = self.top
            top_next = None if top is None else top + 1
        if top_line is not None:
            self.top, self.top_line, self.top_at = top, top_line, top_at
        self.top_next = top_next
        found.records += records
        found.verified += records

    @property
    def top_hash(self) -> str:
        return self.top_line[-TAIL + 9:-3].decode() if self.top_line else self._top_hash

    def _feed(self, index: int, number: int, line: bytes) -> None:
        found = self.found
        parsed = _parse(line)
        try:
            bits = int(parsed[4][:16], 16) if parsed else None
            prev_bits = int(parsed[1][:16], 16) if parsed else None
        except ValueError:
            parsed = None
        if parsed is None:
            found.fault(self.where(index, number), "not a record of the trail")
            return
        seq, prev, _, event, digest, body = parsed
        found.records += 1
        if isinstance(body, dict):  # the format before
            body = _canonical({k: body[k] for k in (*LEGACY_FIELDS, "prev")})
        if _mac(self.key, body) == digest:
            found.verified += 1
            if event in ("rotated", KEYED):
                self._note(event, line, self.where(index, number))
        elif self.key and _mac(None, body) == digest:
            self.unkeyed.append((seq, self.where(index, number)))
        else:  # still in the sequence (its hash as stated): the next record names it
            found.doubt(self.where(index, number))
            if len(self.changed) < MAX_FAULTS:
                self.changed.append((self.where(index, number), seq))
            else:
                found.more += 1
        if self.base is None:
            self.base = self.top = seq
            self.first = (seq, prev, self.where(index, number))
        elif seq > self.top:
            if seq > self.top + 1:
                if seq - self.top > 10_000_000:
                    found.doubt(self.where(index, number))
                    found.fault(self.where(index, number), f"record {seq} jumps from "
                                f"{self.top}: not a sequence number of this trail")
                    return
                self.gaps.append([self.top + 1, seq - 1, self.where(index, number)])
        elif seq < self.base:
            found.doubt(self.where(index, number))
            found.fault(self.where(index, number), f"record {seq} comes before the first "
                                                   f"record kept ({self.base}): not in order")
            return
        elif self.seen[seq - self.base]:
            i = seq - self.base
            first = self.where(self.file[i], self.line[i])
            found.doubt(self.where(index, number))
            found.fault(self.where(index, number),
                        f"record {seq} again: a copy of {first}" if self.prefix[i] == bits
                        else f"a second record {seq} (the first at {first})")
            return
        else:  # a number not seen yet below the highest: out of the order written
            found.fault(self.where(index, number),
                        f"record {seq} comes after record {self.top} "
                        f"({self.where(*self.top_at)}): the order of the lines was changed")
            self._fill(seq)
        if seq >= self.top:
            self.top, self._top_hash, self.top_at = seq, digest, (index, number)
            self.top_line = None
        self._index(seq - self.base, bits, index, number)
        # record seq's prev is record seq - 1's hash, whichever line that is on
        if seq > self.base and self.seen[seq - 1 - self.base]:
            if self.prefix[seq - 1 - self.base] != prev_bits:
                found.fault(self.where(index, number), f"the record before {seq} is "
                                                       "missing or was changed")
        elif seq > self.base:
            self.waiting[seq] = (prev_bits, self.where(index, number))
        if self.waiting:
            after = self.waiting.pop(seq + 1, None)
            if after is not None and after[0] != bits:
                found.fault(after[1], f"the record before {seq + 1} is missing or was "
                                      "changed")

    def _index(self, i: int, bits: int, index: int, number: int) -> None:
        if i >= len(self.seen):
            grow = i - len(self.seen)
            if grow:
                self.prefix.extend(array("Q", bytes(8 * grow)))
                self.file.extend(array("H", bytes(2 * grow)))
                self.line.extend(array("L", bytes(self.line.itemsize * grow)))
                self.seen.extend(bytes(grow))
            self.prefix.append(bits)
            self.file.append(index)
            self.line.append(number)
            self.seen.append(1)
        else:
            self.prefix[i], self.file[i], self.line[i] = bits, index, number
            self.seen[i] = 1

    def _fill(self, seq: int) -> None:
        """A record that came late is no longer missing."""
        at = bisect_right(self.gaps, seq, key=lambda gap: gap[0]) - 1
        if at < 0:
            return
        first, last, where = self.gaps[at]
        if not first <= seq <= last:
            return
        pieces = [[a, b, where] for a, b in ((first, seq - 1), (seq + 1, last)) if a <= b]
        self.gaps[at:at + 1] = pieces

    def _note(self, event: str, line: bytes, where: str) -> None:
        try:
            record = json.loads(line)
            detail = record["detail"]
            if event == "rotated":
                self.rotated.append((int(detail["last_seq"]),
                                     datetime.fromisoformat(record["at"]).timestamp(),
                                     str(detail["last_hash"]), where))
            else:
                self.keyed_after.append((int(detail["after_seq"]), str(detail["after_hash"]),
                                         where))
        except (ValueError, KeyError, TypeError):
            self.found.fault(where, f"a {event} record that does not say what it must")

    def finish(self) -> None:
        found = self.found
        found.first, found.last = self.base, self.top
        if found.records and not found.verified:
            found.doubted_all = True
            if not self.unkeyed:
                found.fault("", "no record verifies " + (
                    "with this key: wrong or missing key (or every record was rewritten)"
                    if self.key else "without a key: wrong or missing key (the trail's "
                    "key: --key-file)"))
            elif len(self.unkeyed) == found.records and not self.keyed_after:
                found.fault("", "no record verifies with this key; they verify without one: "
                                "the trail was written without a key (or rewritten by "
                                "someone without it)")
            else:
                found.doubted_all = False
            if found.doubted_all:
                return
        for where, seq in self.changed:
            found.fault(where, f"record {seq} was changed (its hash does not match it)")
        for first, last, where in self.gaps:
            found.fault(where, f"records {first} to {last} are missing")
        for seq, (_, where) in self.waiting.items():
            if not self._missing(seq - 1):
                found.fault(where, f"the record before {seq} is missing or was changed")
        if self.base is not None:
            seq, prev, where = self.first
            if not ((seq == 1 and prev == GENESIS) or
                    any(prev == last_hash for _, _, last_hash, _ in self.rotated)):
                found.fault(where, f"records before {seq} are missing (no rotation of them "
                                   "is recorded)")
        # records without the key: only up to the record that gave the trail its key
        keyed = max((after for after, _, _ in self.keyed_after), default=0)
        for seq, where in self.unkeyed:
            if seq > keyed:
                found.doubt(where)
                found.fault(where, f"record {seq} was written without the trail's key")
            else:
                found.verified += 1
        for after, after_hash, where in self.keyed_after:
            if not self._missing(after) and \
                    self.prefix[after - self.base] != int(after_hash[:16] or "0", 16):
                found.fault(where, f"record {after}, which this names, was changed")

    def has(self, seq: int, digest: str) -> bool:
        return not self._missing(seq) and self.prefix[seq - self.base] == int(
            digest[:16] or "0", 16)

    def where_of(self, seq: int) -> str:
        if self._missing(seq):
            return ""
        return self.where(self.file[seq - self.base], self.line[seq - self.base])

    def _missing(self, seq: int) -> bool:
        return self.base is None or not self.base <= seq <= (self.top or 0) or \
            not self.seen[seq - self.base]

    def compare(self, witness: Witness) -> None:
        """Every view of the witness against the chain: a head it saw that the chain has
        not, or has with another hash, means the trail was rewritten after it saw it."""
        found = self.found
        if not witness.views:
            found.witness_error = f"the witness {witness.source} has no view of this trail"
            return
        found.witness = witness
        found.witnessed_last = max(t for t, _, _ in witness.views)
        top = self.top or 0
        agree: list[int] = []
        differ: list[tuple[int, float]] = []
        removed: tuple[int, float] | None = None
        for t, seq, value in witness.views:
            if seq > top or (self.base is not None and seq >= self.base and
                             self._missing(seq)):
                removed = max(removed or (0, 0.0), (seq, t))
            elif self.base is None or seq < self.base:
                self._rotated_view(t, seq)
            elif self.prefix[seq - self.base] >> (64 - WITNESS_BITS) != value:
                differ.append((seq, t))
            else:
                agree.append(seq)
        for t, seq in witness.peaks:
            if seq > top:
                removed = max(removed or (0, 0.0), (seq, t))
        if differ:
            seq, t = min(differ)
            i = seq - self.base
            found.fault(self.where(self.file[i], self.line[i]),
                        f"the witness saw record {seq} with another hash at {_clock(t)}: "
                        "the trail was rewritten at or before it")
            # what a view before the rewrite holds is confirmed; nothing after it is
            found.untrusted_above = max((s for s in agree if s < seq), default=0)
        if removed is not None:
            seq, t = removed
            found.fault("", f"the witness saw record {seq} at {_clock(t)}; the trail "
                            f"{'ends at ' + str(top) if seq > top else 'lacks it'}: records "
                            "were removed")
        found.unwitnessed = max(0, top - max(seq for _, seq, _ in witness.views))

    def _rotated_view(self, t: float, seq: int) -> None:
        """A head the witness saw in a month since rotated: the rotation is genuine only
        if it came the retention after that month's last record, which was written after
        the view (the head moved on from `seq` within the month)."""
        rotations = sorted(r for r in self.rotated if r[0] > seq)
        if rotations and t > rotations[0][1] - self.retention + SLACK:
            _, at, _, where = rotations[0]
            self.found.fault(where, f"the witness saw record {seq} at {_clock(t)}, yet this "
                                    f"rotation at {_clock(at)} removed it as older than "
                                    "the retention: the rotation is not genuine")


def _parse(line: bytes) -> tuple[int, str, str, str, str, bytes | dict] | None:
    """(seq, prev, at, event, hash, what the hash is of) of a line: the bytes before
    `,"hash"` in this format, the record (a dict) in the one before; None when the line
    is no record."""
    if line.startswith(b'{"seq":') and line.endswith(b'"}\n') and \
            line[-TAIL:-TAIL + len(HASH_AT)] == HASH_AT:
        i = line.find(b',"prev":"', 7, 40)
        if i > 7 and line[7:i].isdigit() and line[i + 73:i + 81] == b'","at":"':
            j = line.find(b'","event":"', i + 81)
            k = line.find(b'"', j + 11) if j > 0 else -1
            if k > 0:
                try:
                    return (int(line[7:i]), line[i + 9:i + 73].decode(),
                            line[i + 81:j].decode(), line[j + 11:k].decode(),
                            line[-TAIL + len(HASH_AT):-3].decode(), line[:-TAIL])
                except UnicodeDecodeError:
                    return None
    record = _record(line)
    if record is None or not isinstance(record.get("prev"), str) or \
            not all(k in record for k in LEGACY_FIELDS):
        return None
    return record["seq"], record["prev"], record["at"], record["event"], record["hash"], record


def _record(line: bytes) -> dict | None:
    """A line as a record (its fields checked), or None."""
    try:
        record = json.loads(line)
        if not isinstance(record, dict) or not isinstance(record.get("hash"), str) or \
                not isinstance(record.get("event"), str) or \
                type(record.get("seq")) is not int:
            return None
        datetime.fromisoformat(record["at"])
    except (ValueError, KeyError, TypeError):
        return None
    return record


def _last_line(path: Path) -> bytes | None:
    """The file's last line, reading only its end."""
    try:
        with path.open("rb") as data:
            end = data.seek(0, os.SEEK_END)
            chunk = 65536
            while True:
                start = max(0, end - chunk)
                data.seek(start)
                tail = data.read(end - start)
                cut = tail.rstrip(b"\n").rfind(b"\n")
                if cut >= 0 or start == 0:
                    line = tail[cut + 1:]
                    return line if line.strip() else None
                chunk *= 4
    except FileNotFoundError:
        return None


def inert(value: object) -> object:
    """A text a spreadsheet shows as text: one starting like a formula (=, +, -, @) gets
    an apostrophe, so the bureau's Excel never runs what a name or a comment says."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") and \
            len(value) > 1:
        return "'" + value
    return value


def file_digest(path: str | Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def who() -> str:
    """The person at the keyboard as the environment says (the sudo caller when there is
    one): a claim; the trail's writer asks the kernel (monitor/audit_socket.py)."""
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or str(os.getuid())
