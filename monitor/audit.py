"""The audit trail (审计记录): what was paged, delivered, acknowledged and escalated, each
maintenance window, each config change and each refused login, kept at least 180 days
and protected against change.

A trail is a folder of JSON Lines files, one per month of Beijing time
(`audit-2026-11.jsonl`). Every record carries its sequence number, Beijing time, who,
the event type, the outcome, and `prev` and `hash`: the SHA-256 (an HMAC with the site's
key when one is given) of the record together with the previous record's hash. So a
changed line breaks its own hash, a removed line breaks the next one's `prev`, and a
removed tail is caught by `HEAD` (the last sequence number and hash, rewritten with each
record). Several processes append to one trail in turn (a lock file); each line is
written with one write() and fsync'd before the call returns.

Rotation: a month's file is removed once its last record is older than the retention
(190 days by default: over the six months the law asks for), and a `rotated` record
naming the file and its last hash is appended first, so the chain still verifies from
the first file kept.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from probes.base import SHANGHAI

RETENTION = timedelta(days=190)
FILE = re.compile(r"^audit-(\d{4})-(\d{2})\.jsonl$")
GENESIS = "0" * 64
FIELDS = ("seq", "at", "who", "event", "outcome", "detail")


class AuditError(Exception):
    pass


@dataclass(frozen=True)
class Fault:
    where: str   # file:line
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


class Trail:
    def __init__(self, folder: str | Path, key: bytes | None = None,
                 retention: timedelta = RETENTION) -> None:
        self.folder = Path(folder)
        self.key = key
        self.retention = retention

    # ------------------------------------------------------------------ writing

    def append(self, event: str, who: str, outcome: str, detail: dict | str | None = None,
               at: datetime | None = None) -> dict:
        """One record, chained to the last, on disk (fsync'd) when this returns."""
        at = (at or datetime.now(SHANGHAI)).astimezone(SHANGHAI)
        if not self.folder.is_dir():
            # shared by the service's user and the operators' `insmon maintenance`:
            # writable by the group, which new files inherit (setgid)
            self.folder.mkdir(parents=True, exist_ok=True)
            self.folder.chmod(0o2770)
        with self._locked():
            seq, prev = self._head()
            self._rotate(at, seq, prev)
            seq, prev = self._head()
            return self._write(seq + 1, prev, at, who, event, outcome, detail)

    def _write(self, seq: int, prev: str, at: datetime, who: str, event: str, outcome: str,
               detail: dict | str | None) -> dict:
        record = {"seq": seq, "at": at.isoformat(timespec="milliseconds"), "who": who,
                  "event": event, "outcome": outcome, "detail": detail, "prev": prev}
        record["hash"] = self._digest(record)
        path = self.folder / f"audit-{at:%Y-%m}.jsonl"
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o660)
        try:
            if os.fstat(fd).st_size == 0:
                os.fchmod(fd, 0o660)  # whatever the umask: the group appends too
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        head = self.folder / "HEAD"
        partial = self.folder / f"HEAD.{os.getpid()}"
        partial.write_text(f"{seq} {record['hash']} {self._seal(seq, record['hash'])}\n")
        partial.chmod(0o660)
        os.replace(partial, head)
        return record

    def _digest(self, record: dict) -> str:
        body = json.dumps({k: record[k] for k in (*FIELDS, "prev")}, ensure_ascii=False,
                          sort_keys=True, separators=(",", ":")).encode()
        if self.key:
            return hmac.new(self.key, body, hashlib.sha256).hexdigest()
        return hashlib.sha256(body).hexdigest()

    def _seal(self, seq: int, digest: str) -> str:
        """HEAD's own check: with a key, only its holder can move HEAD back (a removed
        tail); without one, it tells a careless edit, not a deliberate one."""
        body = f"{seq} {digest}".encode()
        if self.key:
            return hmac.new(self.key, body, hashlib.sha256).hexdigest()
        return hashlib.sha256(body).hexdigest()

    def _head(self) -> tuple[int, str]:
        try:
            seq, digest, seal = (self.folder / "HEAD").read_text().split()
        except FileNotFoundError:
            return 0, GENESIS
        except (ValueError, UnicodeDecodeError) as exc:
            raise AuditError(f"{self.folder / 'HEAD'} is damaged: {exc}") from None
        if not seq.isdigit() or not hmac.compare_digest(seal, self._seal(int(seq), digest)):
            raise AuditError(f"{self.folder / 'HEAD'} does not match its seal: it was "
                             "changed (insmon audit --verify)")
        return int(seq), digest

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released as the file closes
            yield

    def _rotate(self, now: datetime, seq: int, prev: str) -> None:
        for path in self.files()[:-1]:  # never the file being written
            last = _last_record(path)
            if last is None:
                continue  # no record in it: verify names it
            if now - datetime.fromisoformat(last["at"]) <= self.retention:
                break
            self._write(seq + 1, prev, now, "insmon", "rotated", "ok",
                        {"file": path.name, "last_seq": last["seq"], "last_hash": last["hash"]})
            seq, prev = self._head()
            path.unlink()

    # ------------------------------------------------------------------ reading

    def files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if FILE.search(p.name))

    def _read(self) -> Iterator[tuple[str, dict | None]]:
        """(file:line, the record or None when the line is none) of every line, in the
        order of the records' sequence (a record is filed by its own time, which can be
        a moment older than the one before it)."""
        found = []
        for path in self.files():
            with path.open(encoding="utf-8", errors="replace") as lines:
                for number, line in enumerate(lines, 1):
                    try:
                        record = json.loads(line)
                        datetime.fromisoformat(record["at"])
                        order = int(record["seq"])
                    except (ValueError, KeyError, TypeError):
                        record, order = None, -1
                    if record is not None and not isinstance(record.get("hash"), str):
                        record, order = None, -1
                    found.append((order, f"{path.name}:{number}", record))
        found.sort(key=lambda item: item[0])
        for _, where, record in found:
            yield where, record

    def records(self, start: datetime | None = None, end: datetime | None = None
                ) -> Iterator[dict]:
        for _, record in self._read():
            if record is None:
                continue  # verify() names it
            at = datetime.fromisoformat(record["at"])
            if (start is None or at >= start) and (end is None or at < end):
                yield record

    def last_config(self, file: str) -> str | None:
        """The digest the last `config` record of `file` saw (None: never recorded)."""
        last = None
        for record in self.records():
            detail = record.get("detail")
            if record["event"] == "config" and isinstance(detail, dict) and \
                    detail.get("file") == file and detail.get("after"):
                last = detail["after"]
        return last

    def verify(self) -> list[Fault]:
        """Every break in the chain: a changed record, a missing one, a missing tail."""
        faults: list[Fault] = []
        prev, seq = None, 0
        first: tuple[str, int, str] | None = None
        rotated: set[str] = set()
        for where, record in self._read():
            if record is None:
                faults.append(Fault(where, "not a record of the trail"))
                continue
            stated = record["hash"]
            if not hmac.compare_digest(self._digest(record), stated):
                faults.append(Fault(where, f"record {record['seq']} was changed (its hash "
                                           "does not match it)"))
            if first is None:
                # the first record kept follows the genesis or a rotated file (checked at
                # the end, against the rotations recorded)
                first = (where, record["seq"], record["prev"])
                seq = record["seq"] - 1
            elif record["prev"] != prev:
                faults.append(Fault(where, f"the record before {record['seq']} is missing "
                                           "or was changed"))
            if record["seq"] != seq + 1:
                faults.append(Fault(where, f"records {seq + 1} to {record['seq'] - 1} are "
                                           "missing"))
            if record["event"] == "rotated" and isinstance(record["detail"], dict):
                rotated.add(str(record["detail"].get("last_hash", "")))
            prev, seq = stated, record["seq"]
        if first is not None:
            where, first_seq, first_prev = first
            if not ((first_seq == 1 and first_prev == GENESIS) or first_prev in rotated):
                faults.append(Fault(where, f"records before {first_seq} are missing (no "
                                           "rotation of them is recorded)"))
        try:
            head_seq, head_hash = self._head()
        except AuditError as exc:
            faults.append(Fault(str(self.folder / "HEAD"), str(exc)))
        else:
            if (head_seq, head_hash) != (seq, prev or GENESIS):
                faults.append(Fault(str(self.folder / "HEAD"),
                                    f"the trail ends at record {seq}, HEAD says {head_seq}: "
                                    "its last records were removed or changed"))
        return faults

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


def inert(value: object) -> object:
    """A text a spreadsheet shows as text: one starting like a formula (=, +, -, @) gets
    an apostrophe, so the bureau's Excel never runs what a name or a comment says."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") and \
            len(value) > 1:
        return "'" + value
    return value


def _last_record(path: Path) -> dict | None:
    last = None
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                last = json.loads(line)
            except ValueError:
                continue
    return last


def file_digest(path: str | Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def who() -> str:
    """The person at the keyboard: the sudo caller when there is one."""
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or str(os.getuid())
