"""The pager's secrets, one for each purpose, so that holding one opens nothing else:

- the intake token (`auth.token_file`): Alertmanager's. It posts pages and reads the
  incident API; it acknowledges nothing and the other pager does not take it. Its file is
  read again when a token does not match and the file changed (Alertmanager reads it at
  each send, and does not send again what was refused with 401), and the token before is
  taken for ROTATION seconds more.
- the pair's key (`pair.key_file`): the two pagers' alone. Each question one pager asks
  the other and each answer is signed with it (HMAC-SHA256): the question over its
  method, path, body, time, nonce and sender; the answer over the question's nonce, the
  answerer, its status and body. A question more than SKEW seconds off this host's clock
  or with a nonce seen before is refused (replay); an answer is bound to the question's
  nonce, so an answer seen on the wire is no answer to the next question.
- the ack-link key: derived from the pair's key, so both pagers give a person's page the
  same link (a single pager's links are random and need no key).

Why signatures and not TLS with pinned certificates: the pair's API shares the port of
the webhooks and the phones' ack pages (plain HTTP, or the site's own TLS for the
phones), pinned certificates run out (a pair that stops trusting itself on a date
nobody remembers, or is renewed by hand on both hosts at once), and what the standby
needs is proof that the active itself answered this question now, which an answer
signed over the question's nonce is. Secrecy is not sought: what the two pagers tell
each other is what their pages say. The key file may hold several keys, one a line: the
first signs, each verifies (rotation without a moment apart).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

SKEW = 120.0  # seconds a question's time may be off this host's clock
ROTATION = 600.0  # seconds the intake token before a new one is still taken
NONCES = 200_000  # questions remembered within the window at the most
TIME, NONCE, SENDER, SIGNATURE = ("X-Insmon-Time", "X-Insmon-Nonce", "X-Insmon-From",
                                  "X-Insmon-Signature")


class Untrusted(Exception):
    """A question or an answer that is not the pair's: `why` is a metric's label value
    (unsigned, signature, clock, replay, reflected, person, refused)."""

    def __init__(self, why: str, detail: str) -> None:
        super().__init__(detail)
        self.why = why


def read(path: Path, what: str) -> list[str]:
    """The secrets of a file, one a line (blank lines and # comments left out);
    ValueError saying what is wrong."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{what}: cannot read {path}: {exc.strerror}") from None
    found = [line.strip() for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    if not found:
        raise ValueError(f"{what}: {path} is empty (openssl rand -hex 32 > {path})")
    for secret in found:
        if len(secret) < 16:
            raise ValueError(f"{what}: {path} holds a secret of {len(secret)} characters; "
                             "it needs 16 or more (openssl rand -hex 32)")
    return found


@dataclass
class Secrets:
    """What the pager holds: one object, its fields set anew when the files are read
    again (SIGHUP, or the intake token's file changed), so every part of the pager sees
    the new secrets at once."""
    intake: str | None = None  # None: auth.open
    pair: list[bytes] = field(default_factory=list)  # the first signs, each verifies
    intake_file: Path | None = None
    _file_as_read: tuple | None = None  # the intake file's stamp when it was read
    _before: tuple[str, float] | None = None  # the token before it, taken until then

    @classmethod
    def load(cls, config) -> Secrets:  # config: pager.config.PagerConfig
        """From the config's files; ValueError naming the key and what is wrong."""
        intake, path, stamp = None, config.auth.token_file, None
        if path is not None:
            stamp = _stamp(path)
            intake = read(path, "auth.token_file")[0]
        pair: list[bytes] = []
        if config.pair is not None:
            pair = [k.encode() for k in read(config.pair.key_file, "pair.key_file")]
            if intake is not None and intake.encode() in pair:
                raise ValueError(f"pair.key_file: {config.pair.key_file} holds the token of "
                                 "auth.token_file: whoever holds Alertmanager's token could "
                                 "speak for a pager; give the pair a key of its own")
        return cls(intake, pair, path, stamp)

    def update(self, fresh: Secrets, now: float) -> None:
        """The secrets read again: an intake token replaced is still taken for ROTATION
        seconds (an Alertmanager not yet given the new one)."""
        if self.intake is not None and fresh.intake != self.intake:
            self._before = (self.intake, now + ROTATION)
        self.intake, self.pair = fresh.intake, fresh.pair
        self._file_as_read = fresh._file_as_read

    def takes(self, given: str, now: float) -> bool:
        """Whether `given` is Alertmanager's token: the file's (read again when a token
        does not match and the file changed: a new token works as soon as Alertmanager
        sends it), or the one before it for ROTATION seconds after it changed."""
        if self.intake is None:
            return True
        if hmac.compare_digest(given.encode(), self.intake.encode()) or (
                self._before is not None and now < self._before[1]
                and hmac.compare_digest(given.encode(), self._before[0].encode())):
            return True
        stamp = _stamp(self.intake_file) if self.intake_file is not None else None
        if stamp is None or stamp == self._file_as_read:
            return False
        try:
            token = read(self.intake_file, "auth.token_file")[0]
        except ValueError:
            return False  # being written, or broken: the token in use stays
        if token.encode() in self.pair:
            return False  # the pair's key is no intake token
        self.update(Secrets(token, self.pair, self.intake_file, stamp), now)
        return hmac.compare_digest(given.encode(), token.encode())

    @property
    def ack_links(self) -> bytes | None:
        """The key a pair's ack links are derived from (None: a single pager's are
        random)."""
        return _derive(self.pair[0], "ack-links") if self.pair else None


def _stamp(path: Path) -> tuple | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns, found.st_size


@functools.lru_cache(maxsize=16)
def _derive(key: bytes, purpose: str) -> bytes:
    return hmac.new(key, f"insmon pager {purpose}".encode(), hashlib.sha256).digest()


def _mac(key: bytes, *parts: str) -> str:
    return hmac.new(_derive(key, "peer"), "\n".join(parts).encode(),
                    hashlib.sha256).hexdigest()


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def sign_question(keys: list[bytes], sender: str, method: str, target: str, body: bytes,
                  now: float) -> dict[str, str]:
    """The headers of a question from `sender` (this pager's id) to the other pager."""
    nonce, at = secrets.token_hex(16), f"{now:.3f}"
    return {TIME: at, NONCE: nonce, SENDER: sender, SIGNATURE: _mac(
        keys[0], "question", method, target, _digest(body), at, nonce, sender)}


def sign_answer(keys: list[bytes], answerer: str, nonce: str, status: int,
                body: bytes) -> dict[str, str]:
    return {SENDER: answerer, SIGNATURE: _mac(keys[0], "answer", nonce, answerer,
                                              str(status), _digest(body))}


def _verify(keys: list[bytes], signature: str, *parts: str) -> bool:
    return any(hmac.compare_digest(signature, _mac(key, *parts)) for key in keys)


class Nonces:
    """The questions seen within the clock's window: each is answered once."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._pruned = float("-inf")

    def first(self, nonce: str, now: float) -> bool:
        with self._lock:
            if len(self._seen) >= NONCES or now - self._pruned > SKEW:
                self._pruned = now
                self._seen = {n: at for n, at in self._seen.items() if now - at <= 2 * SKEW}
                if len(self._seen) >= NONCES:  # only questions with the key get here
                    self._seen.pop(next(iter(self._seen)))
            if nonce in self._seen:
                return False
            self._seen[nonce] = now
            return True


def check_question(keys: list[bytes], headers: Mapping[str, str], method: str,
                   target: str, body: bytes, now: float, nonces: Nonces) -> str:
    """The sender of a question signed with the pair's key, or Untrusted saying why."""
    at, nonce, sender, signature = (headers.get(h) or "" for h in (TIME, NONCE, SENDER,
                                                                    SIGNATURE))
    if not (at and nonce and sender and signature):
        raise Untrusted("unsigned", "no signature of the pair's key")
    if not _verify(keys, signature, "question", method, target, _digest(body), at, nonce,
                   sender):
        raise Untrusted("signature", "signed with another key than the pair's")
    try:
        off = float(at) - now
    except ValueError:
        raise Untrusted("signature", f"a time that is no number: {at!r}") from None
    if not abs(off) <= SKEW:  # (NaN too)
        raise Untrusted("clock", f"its time is {off:+.0f} s from this host's (more than "
                                 f"{SKEW:.0f} s: set both hosts' clocks by NTP)")
    if not nonces.first(nonce, now):
        raise Untrusted("replay", "a question answered before, sent again")
    return sender


def check_answer(keys: list[bytes], question: Mapping[str, str], status: int,
                 headers: Mapping[str, str], body: bytes) -> str:
    """The answerer of an answer to `question` (its headers) signed with the pair's key,
    or Untrusted saying why."""
    answerer, signature = headers.get(SENDER) or "", headers.get(SIGNATURE) or ""
    if not (answerer and signature):
        raise Untrusted("refused" if status == 401 else "unsigned",
                        "the other pager refused the question (does it hold this key?)"
                        if status == 401 else "an answer with no signature")
    if not _verify(keys, signature, "answer", question[NONCE], answerer, str(status),
                   _digest(body)):
        raise Untrusted("signature", "an answer signed with another key than the pair's, "
                                     "or not to this question")
    return answerer
