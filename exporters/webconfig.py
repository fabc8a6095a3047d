"""Access control for /metrics and the status page: TLS and HTTP basic auth, configured
by a web-config file in the Prometheus exporter-toolkit's format, so a Prometheus scrape
config written for node_exporter works unchanged:

    tls_server_config:
      cert_file: /etc/insmon/tls.crt
      key_file: /etc/insmon/tls.key
      client_auth_type: RequireAndVerifyClientCert   # optional: mutual TLS
      client_ca_file: /etc/insmon/prometheus-ca.crt
    basic_auth_users:
      prometheus: $2b$12$...   # bcrypt hash, e.g. `htpasswd -nBC 12 "" | tr -d ':\\n'`

/healthz stays open (liveness probes carry no credentials); everything else needs auth
when users are configured. An unknown user costs the same bcrypt check as a known one (no
telling which users exist by timing); after FAILURES failed attempts in a minute from one
client or for one user, further attempts are refused at once (429) until the minute is
over, so a brute force cannot burn the CPU. Failures are logged once a minute per client,
with the user name, never the password.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import ssl
import threading
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Literal

import bcrypt
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

log = logging.getLogger("insmon.http")

# exporter-toolkit's names; the two that accept a certificate without verifying it are
# left out on purpose: an unverified client certificate proves nothing.
CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
               "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}


class TlsServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cert_file: Path
    key_file: Path
    client_auth_type: Literal["NoClientCert", "VerifyClientCertIfGiven",
                              "RequireAndVerifyClientCert"] = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: Literal["TLS12", "TLS13"] = "TLS12"

    @model_validator(mode="after")
    def _ca_for_client_certs(self) -> TlsServerConfig:
        if self.client_auth_type != "NoClientCert" and self.client_ca_file is None:
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file")
        return self


class WebConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tls_server_config: TlsServerConfig | None = None
    basic_auth_users: dict[str, str] = {}

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt(cls, users: dict[str, str]) -> dict[str, str]:
        for user, hashed in users.items():
            if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
                raise ValueError(f"the password of {user!r} must be a bcrypt hash ($2b$...)")
            try:
                bcrypt.checkpw(b"", hashed.encode())
            except ValueError:
                raise ValueError(f"the password of {user!r} is not a valid bcrypt hash "
                                 "(e.g. htpasswd -nBC 12 \"\" | tr -d ':\\n')") from None
        return users


def tls_context(tls: TlsServerConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = (ssl.TLSVersion.TLSv1_3 if tls.min_version == "TLS13"
                               else ssl.TLSVersion.TLSv1_2)
    for name, path in (("cert_file", tls.cert_file), ("key_file", tls.key_file),
                       ("client_ca_file", tls.client_ca_file)):
        if path is not None and not path.is_file():
            raise OSError(f"tls_server_config.{name}: no such file {path}")
    context.load_cert_chain(tls.cert_file, tls.key_file)
    context.verify_mode = CLIENT_AUTH[tls.client_auth_type]
    if tls.client_ca_file:
        context.load_verify_locations(tls.client_ca_file)
    return context


FAILURES = 5      # failed attempts a minute, per client and per user, before a 429
WINDOW = 60.0


class BasicAuth:
    """Checks Authorization headers against bcrypt hashes. bcrypt is slow on purpose
    (~50 ms at cost 10): a verified user:password pair is remembered by its SHA-256, so
    a scrape every few seconds does not pay it each time."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = {u: h.encode() for u, h in users.items()}
        self._good: set[bytes] = set()
        self._lock = threading.Lock()
        # what an unknown user is checked against: the same cost as the real hashes
        cost = max((int(h.split(b"$")[2]) for h in self._users.values()), default=10)
        self._dummy = bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=cost))
        self._failed: dict[str, deque[float]] = defaultdict(deque)  # client or user
        self._logged: dict[str, float] = {}  # client -> when its failure was last logged

    def check(self, header: str | None, client: str) -> str:
        """"ok", "denied" (401) or "throttled" (429: too many failures this minute)."""
        user, password = _credentials(header)
        if user is None:
            return "denied"
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        who = (f"client {client}", f"user {user}")
        with self._lock:
            if any(hmac.compare_digest(key, good) for good in self._good):
                return "ok"
            if any(self._throttled(w) for w in who):
                return "throttled"
            # counted as a failure before the check, so that attempts arriving together
            # cannot all pass the threshold and all cost a bcrypt check
            attempt = time.monotonic()
            for w in who:
                self._failed[w].append(attempt)
        hashed = self._users.get(user)
        matches = bcrypt.checkpw(password.encode(), hashed or self._dummy)
        if hashed is not None and matches:
            with self._lock:
                self._good.add(key)
                for w in who:
                    with contextlib.suppress(ValueError):
                        self._failed[w].remove(attempt)
            return "ok"
        now = time.monotonic()
        with self._lock:
            if now - self._logged.get(client, -WINDOW) >= WINDOW:
                self._logged[client] = now
                log.warning("rejected basic auth for user %r from %s (%d failure(s) from it "
                            "in the last minute; logged once a minute)", user, client,
                            len(self._failed[f"client {client}"]))
        return "denied"

    def allows(self, header: str | None, client: str) -> bool:
        return self.check(header, client) == "ok"

    def _throttled(self, who: str) -> bool:
        failed = self._failed.get(who)
        if not failed:
            return False
        while failed and failed[0] < time.monotonic() - WINDOW:
            failed.popleft()
        return len(failed) >= FAILURES


def _credentials(header: str | None) -> tuple[str | None, str]:
    if not header or not header.startswith("Basic "):
        return None, ""
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, ""
    return user, password
