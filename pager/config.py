"""The pager's config file (examples/pager.yaml): channels, people, teams and their rota,
escalation by grade, the watchdog and the reporting deadlines.

Errors are reported like insmon's own config: file, line, key path, what is wrong.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from exporters.webconfig import TlsServerConfig
from monitor.config import ConfigError, parse, read, split_listen
from pager.channels import CHANNELS, Channel
from vocabulary import Duration

# Alertmanager's receivers that are not teams (alert_rules/alertmanager.yml)
WATCHDOG, DRILL, UNROUTED = "watchdog", "drill", "unrouted"
ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------ people and teams

class Person(_Model):
    name: str
    mobile: str | None = Field(default=None, pattern=r"^\+?[0-9]{5,20}$")
    email: str | None = None
    wecom: str | None = None      # WeCom user id, for @ in the group
    dingtalk: str | None = None   # DingTalk user id (mobile is used when absent)
    feishu: str | None = None     # Feishu open_id, for @ in the group
    channels: list[str] = Field(min_length=1)  # in order: the next when one fails

    def reaches(self, channel: Channel) -> bool:
        """Whether the channel has an address for them (a group robot @s anyone in it)."""
        return channel.reaches(self)


class Override(_Model):
    """A swapped shift: `person` is on call from `start` to `end` (Beijing time)."""
    start: dt.datetime
    end: dt.datetime
    person: str


class Rotation(_Model):
    """People take turns: each is on call for a day or a week, handing over at `handover`
    (Beijing time), counting from `since` with order[0]."""
    every: Literal["day", "week"] = "day"
    handover: dt.time = dt.time(8, 30)
    since: dt.date
    order: list[str] = Field(min_length=1)


class Team(_Model):
    name: str                            # 网络组, 服务器运维组, ...
    rotation: Rotation | None = None
    shifts_file: Path | None = None      # a spreadsheet of shifts (CSV or XLSX), see rota.py
    overrides: list[Override] = []
    backup: str | None = None
    lead: str


# ------------------------------------------------------------------ policies

Target = Literal["oncall", "backup", "lead"]


def _channel_types(value: list[str]) -> list[str]:
    """A step's or the Watchdog's `channels` are types tried first: a misspelt one would
    quietly leave the person's usual order (no SMS first for a Level I)."""
    unknown = [v for v in value if v not in CHANNELS]
    if unknown:
        raise ValueError(f"unknown channel type {', '.join(map(repr, unknown))} (the types "
                         f"are {', '.join(CHANNELS)}; a channel's name goes in people's "
                         "channels)")
    return value


class Step(_Model):
    """`after` the page while nobody acknowledged: page `notify` (the paged teams' on-call,
    backup or lead; or a team's on-call by its id) on these channel types first."""
    after: Duration
    notify: list[str] = Field(min_length=1)
    channels: list[str] = []  # channel types tried first, e.g. [sms, http]

    _types = field_validator("channels")(_channel_types)


DEFAULT_ESCALATION = {
    "I": [Step(after=300, notify=["backup", "lead"], channels=["sms"]),
          Step(after=600, notify=["leadership"], channels=["http", "sms"])],
    "II": [Step(after=600, notify=["backup"])],
    "III": [],
    "IV": [],
}


class Watchdog(_Model):
    timeout: Duration = 180.0  # no Watchdog notification for this long: page
    notify: list[str] = ["network", "server_ops"]
    channels: list[str] = ["sms"]  # tried first: the alert path may be what is down

    _types = field_validator("channels")(_channel_types)


class Reports(_Model):
    """The plans: a written report within 1 h of a Level I/II event, 2 h otherwise."""
    major: Duration = 3600.0
    other: Duration = 7200.0
    remind_before: Duration = 900.0


class Drill(_Model):
    """`insmon drill` pages (label drill="true"): marked 【演练】, to these people only."""
    people: list[str] = []


class Auth(_Model):
    """Who may post notifications and read the incident API: Alertmanager's
    `http_config` sends the token as `Authorization: Bearer` (credentials_file) or as a
    basic-auth password (password_file). Closed by default: a pager with no token refuses
    to start unless `open: true` says, knowingly, that anyone on the network may page."""
    token_file: Path | None = None
    open: bool = False


class Member(_Model):
    """One pager of the pair: `url` is where the other pager reaches its API, `public_url`
    where phones open its ack pages (default: url)."""
    url: str
    public_url: str | None = None


class Pair(_Model):
    """A hot-standby pair (双机热备): the same file on both hosts, each started with
    `--role active` or `--role standby` (the one at `active.url` acts as the active
    whatever its --role says). Both take every notification; the standby sends a page
    only after `grace`, and only when the active says it did not (or does not answer
    within `timeout`). `notify` hears PagerPeerDown when the other pager has not answered
    for `down_after`. `key_file`: the pair's own secret (pager/keys.py), the same file on
    both pager hosts and nowhere else, not Alertmanager's token (the default is where the
    offline bundle's install.sh writes one)."""
    active: Member
    standby: Member
    key_file: Path = Path("/etc/insmon/pager-pair-key")
    grace: Duration = 15.0
    timeout: Duration = 3.0
    down_after: Duration = 120.0
    notify: list[str] = ["server_ops"]


class Audit(_Model):
    """The audit trail (monitor/audit.py): `folder` default: audit/ beside the database;
    `key_file`: the secret that makes the chain an HMAC (only who holds it can rewrite),
    by default audit.key beside the folder, made by the pager the first time."""
    folder: Path | None = None
    key_file: Path | None = None


class PagerConfig(_Model):
    listen: str = "0.0.0.0:9095"
    auth: Auth = Auth()
    # HTTPS for the webhooks, the API and the ack pages (the exporter's tls_server_config:
    # cert_file, key_file, optional client certificates); public_url then says https://
    tls: TlsServerConfig | None = None
    public_url: str = "http://127.0.0.1:9095"  # how phones reach the ack pages
    database: Path = Path("/var/lib/insmon-pager/pager.db")
    audit: Audit = Audit()
    runbook_url: str | None = None   # base of the runbooks' links (runbooks/X.md)
    max_body: int = Field(default=64 << 20, ge=1)  # a group of 5,000 alerts is 2.2 MB
    # Alertmanager's repeat (repeat_interval) of an unacknowledged incident pages again
    repeat_unacknowledged: bool = True
    # none of them: the starting point install.sh writes, which pages nobody (configured)
    channels: dict[str, Channel] = {}
    people: dict[str, Person] = {}
    teams: dict[str, Team] = {}
    fallback_team: str = "server_ops"  # an unknown team's pages go here, logged
    escalation: dict[Literal["I", "II", "III", "IV"], list[Step]] = DEFAULT_ESCALATION
    watchdog: Watchdog = Watchdog()
    reports: Reports = Reports()
    drill: Drill = Drill()
    pair: Pair | None = None
    settlement_stopped: list[str] = ["SettlementChainCollapsed", "SettlementPathDown",
                                     "FrontEndUnreachable"]

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        split_listen(value)
        return value

    @field_validator("channels", "people", "teams")
    @classmethod
    def _ids(cls, value: dict) -> dict:
        for key in value:
            if not re.match(ID, key):
                raise ValueError(f"{key!r}: ids hold letters, digits and _ . - only")
        return value

    @model_validator(mode="after")
    def _references(self) -> PagerConfig:
        if "escalation" not in self.model_fields_set:  # the plans' defaults, for the teams
            self.escalation = {grade: [s for s in steps if all(  # this pager has
                t in (*Target.__args__, *self.teams) for t in s.notify)]
                for grade, steps in DEFAULT_ESCALATION.items()}
        problems = []
        for pid, person in self.people.items():
            problems += [f"people.{pid}.channels: unknown channel {c!r}"
                         for c in person.channels if c not in self.channels]
        for tid, team in self.teams.items():
            names = [team.lead, team.backup, *(o.person for o in team.overrides),
                     *(team.rotation.order if team.rotation else [])]
            problems += [f"teams.{tid}: unknown person {p!r}"
                         for p in names if p is not None and p not in self.people]
            if team.rotation is None and team.shifts_file is None:
                problems.append(f"teams.{tid}: needs a rotation or a shifts_file")
        if self.configured and self.fallback_team not in self.teams:
            problems.append(f"fallback_team: unknown team {self.fallback_team!r}")
        for grade, steps in self.escalation.items():
            for i, step in enumerate(steps):
                problems += [f"escalation.{grade}[{i}].notify: {t!r} is neither "
                             f"oncall/backup/lead nor a team"
                             for t in step.notify if t not in (*Target.__args__, *self.teams)]
        if self.configured:  # the teams it pages are the config's
            problems += [f"watchdog.notify: unknown team {t!r}"
                         for t in self.watchdog.notify if t not in self.teams]
            problems += [f"pair.notify: unknown team {t!r}"
                         for t in (self.pair.notify if self.pair else []) if t not in self.teams]
        if self.pair is not None and \
                self.pair.active.url.rstrip("/") == self.pair.standby.url.rstrip("/"):
            problems.append("pair: the active and the standby have the same url (each "
                            "would ask itself)")
        problems += [f"drill.people: unknown person {p!r}"
                     for p in self.drill.people if p not in self.people]
        if self.auth.token_file is None and not self.auth.open:
            problems.append("auth.token_file: needed (the token Alertmanager sends); "
                            "`auth: {open: true}` lets anyone on the network page")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def configured(self) -> bool:
        """Whether it pages anyone. With no teams (the starting point install.sh writes)
        the pager takes and keeps every notification and pages nobody."""
        return bool(self.teams)

    @property
    def unreachable(self) -> list[str]:
        """The people none of whose channels has their address: a page to them goes to
        nobody (validate warns, the doctor fails)."""
        return [pid for pid, person in self.people.items()
                if not any(person.reaches(self.channels[c]) for c in person.channels
                           if c in self.channels)]

    def members(self, team_id: str) -> set[str]:
        """Everyone who may stand for the team: rotation, overrides, backup, lead (the
        shifts file's people are checked by the rota)."""
        team = self.teams[team_id]
        return {team.lead, *([team.backup] if team.backup else []),
                *(o.person for o in team.overrides),
                *(team.rotation.order if team.rotation else [])}


def load(path: str | Path) -> PagerConfig:
    """Read and validate the pager's config; relative paths in it are from its folder."""
    config = parse(read(path), str(path), PagerConfig)
    base = Path(path).resolve().parent
    for team in config.teams.values():
        if team.shifts_file is not None and not team.shifts_file.is_absolute():
            team.shifts_file = base / team.shifts_file
    if not config.database.is_absolute():
        config.database = base / config.database
    if config.audit.folder is None:
        config.audit.folder = config.database.parent / "audit"
    for name in ("folder", "key_file"):
        path = getattr(config.audit, name)
        if path is not None and not path.is_absolute():
            setattr(config.audit, name, base / path)
    if config.auth.token_file is not None and not config.auth.token_file.is_absolute():
        config.auth.token_file = base / config.auth.token_file
    if config.pair is not None and not config.pair.key_file.is_absolute():
        config.pair.key_file = base / config.pair.key_file
    if config.tls is not None:
        for name in ("cert_file", "key_file", "client_ca_file"):
            path = getattr(config.tls, name)
            if path is not None and not path.is_absolute():
                setattr(config.tls, name, base / path)
    return config


__all__ = ["ConfigError", "PagerConfig", "load"]
