"""SNMP access for probes: credentials in config, and a walk of numeric OIDs (pysnmp 7,
asyncio). No MIB files are needed at run time; OIDs are given as numbers.

Secrets (v2c community, v3 keys) come from the config file, a file (`*_file`) or an
environment variable (`*_env`); they never appear in logs, details or metrics.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from probes.base import ProbeFailure
from probes.lib.net import host_port
from probes.lib.secret import Secret

NUMERIC_OID = r"^\.?\d+(\.\d+)+$"
SNMP_PORT = 161


class SnmpError(ProbeFailure):
    """A failed SNMP exchange; the message is safe to show (no secrets)."""


class SnmpAuth(BaseModel):
    """v2c with a community, or v3 with a user and authPriv keys."""

    model_config = ConfigDict(extra="forbid")
    version: Literal["2c", "3"] = "2c"
    community: Secret | None = None
    user: str | None = None
    auth_protocol: Literal["sha", "sha256", "sha512", "md5"] = "sha"
    auth_key: Secret | None = None
    priv_protocol: Literal["aes", "aes256", "des"] = "aes"
    priv_key: Secret | None = None

    @model_validator(mode="after")
    def _complete(self) -> SnmpAuth:
        if self.version == "2c" and self.community is None:
            raise ValueError("version 2c needs a community")
        if self.version == "3" and not (self.user and self.auth_key and self.priv_key):
            raise ValueError("version 3 needs user, auth_key and priv_key (authPriv)")
        return self


class SnmpTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str  # host or host:port (default port 161); [v6]:port for IPv6
    auth: SnmpAuth
    retries: int = Field(default=1, ge=0, le=5)

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host_port(value, SNMP_PORT)
        return value


Oid = str  # numeric, "1.3.6.1..."
# A walk's bounds: far above the interface table of the largest switch (a few thousand
# rows), far below what would hurt insmon.
MAX_ROWS = 20_000
MAX_WALK_BYTES = 8 << 20


class SnmpSession:
    """One engine per probe, reused across runs (an engine is costly to build)."""

    def __init__(self, target: SnmpTarget) -> None:
        # Imported here, when a check that uses SNMP is configured: importing pysnmp takes
        # ~0.15 s, which must not block the event loop in the middle of a run.
        from pysnmp.hlapi.v3arch import asyncio as hl

        self._hl = hl
        self.target = target
        self._engine = hl.SnmpEngine()  # ~60 ms of MIB loading: at config load, not in a run

    def _auth(self) -> object:
        hl = self._hl
        auth = self.target.auth
        if auth.version == "2c":
            assert auth.community is not None
            return hl.CommunityData(auth.community.reveal("community"), mpModel=1)
        assert auth.auth_key is not None and auth.priv_key is not None
        auth_protocols = {"md5": hl.usmHMACMD5AuthProtocol, "sha": hl.usmHMACSHAAuthProtocol,
                          "sha256": hl.usmHMAC192SHA256AuthProtocol,
                          "sha512": hl.usmHMAC384SHA512AuthProtocol}
        priv_protocols = {"des": hl.usmDESPrivProtocol, "aes": hl.usmAesCfb128Protocol,
                          "aes256": hl.usmAesCfb256Protocol}
        return hl.UsmUserData(auth.user, auth.auth_key.reveal("auth_key"),
                              auth.priv_key.reveal("priv_key"),
                              authProtocol=auth_protocols[auth.auth_protocol],
                              privProtocol=priv_protocols[auth.priv_protocol])

    async def get(self, oid: Oid, timeout: float) -> object:
        """One scalar's value (None when the agent has no such object)."""
        hl = self._hl
        auth = self._auth()
        transport = await self._transport(timeout)
        indication, status, index, binds = await hl.get_cmd(
            self._engine, auth, transport, hl.ContextData(),
            hl.ObjectType(hl.ObjectIdentity(oid.lstrip("."))), lookupMib=False)
        if indication:
            raise SnmpError(_explain(indication))
        if status:
            raise SnmpError(f"agent error {status.prettyPrint()} at index {index}")
        return _python(binds[0][1]) if binds else None

    async def _transport(self, timeout: float) -> object:
        hl = self._hl
        host, port = host_port(self.target.address, SNMP_PORT)
        transport_class = hl.Udp6TransportTarget if ":" in host else hl.UdpTransportTarget
        try:
            return await transport_class.create((host, port), timeout=timeout,
                                                retries=self.target.retries)
        except Exception as exc:  # resolution failures come as several pysnmp types
            raise SnmpError(f"cannot reach {self.target.address}: {exc}") from None

    async def walk(self, oid: Oid, timeout: float, max_rows: int = MAX_ROWS
                   ) -> dict[Oid, object]:
        """Every value under `oid`, keyed by the full numeric OID; values as Python
        int, str or bytes. Raises SnmpError with a reason on timeout or an error, and
        when the agent answers more than `max_rows` values or MAX_WALK_BYTES of them (a
        broken or hostile agent must not fill insmon's memory)."""
        hl = self._hl
        auth = self._auth()  # a missing secret fails before anything is sent
        transport = await self._transport(timeout)
        values: dict[Oid, object] = {}
        size = 0
        async for indication, status, index, binds in hl.walk_cmd(
                self._engine, auth, transport, hl.ContextData(),
                hl.ObjectType(hl.ObjectIdentity(oid.lstrip("."))),
                lexicographicMode=False, lookupMib=False):
            if indication:
                raise SnmpError(_explain(indication))
            if status:
                raise SnmpError(f"agent error {status.prettyPrint()} at index {index}")
            for name, value in binds:
                values[str(name)] = plain = _python(value)
                size += len(plain) if isinstance(plain, str | bytes) else 8
            if len(values) > max_rows:
                raise SnmpError(f"{self.target.address} answered more than {max_rows} "
                                f"values under {oid}: refused")
            if size > MAX_WALK_BYTES:
                raise SnmpError(f"{self.target.address} answered more than "
                                f"{MAX_WALK_BYTES >> 20} MiB under {oid}: refused")
        return values



def _explain(indication: object) -> str:
    text = str(indication)
    if "timeout" in text.lower() or "No SNMP response" in text:
        return "no response (agent down, unreachable, or wrong community/credentials)"
    return text


def _python(value: object) -> object:
    """pysnmp's ASN.1 value as a plain Python value; garbage raises SnmpError."""
    kind = type(value).__name__
    if kind in ("NoSuchObject", "NoSuchInstance", "EndOfMibView"):
        return None
    try:
        if kind in ("Integer", "Integer32", "Counter32", "Counter64", "Gauge32",
                    "Unsigned32", "TimeTicks"):
            return int(value)  # type: ignore[call-overload]
        if kind == "OctetString":
            raw = bytes(value)  # type: ignore[call-overload]
            try:
                return raw.decode()
            except UnicodeDecodeError:
                return raw
    except (TypeError, ValueError) as exc:
        raise SnmpError(f"cannot read a {kind} value: {exc}") from None
    return str(value)
