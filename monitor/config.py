"""The config file: schema, loading, and errors a person can act on.

Every error names the file, the line, the key path and what is wrong, e.g.
    hospital.yaml:14: checks[1].timeout: must be shorter than interval (5s), got 10s
and all errors of a file are reported together, before anything starts.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from exporters.webconfig import WebConfig
from probes import PROBES
from vocabulary import MAX_DURATION, Duration

DEFAULT_LISTEN = "0.0.0.0:9829"
# Keys whose values are secrets: an error about them never repeats the value.
SECRET_KEYS = {"community", "auth_key", "priv_key", "secret", "value", "headers",
               "basic_auth_users"}
EMBEDDED = "embedded default config"

CheckConfig = Annotated[
    Union[tuple(kind.config for kind in PROBES.values())],  # noqa: UP007 (built at run time)
    Field(discriminator="kind"),
]


class Maintenance(BaseModel):
    """The recurring maintenance windows `insmon run` makes into Alertmanager silences
    ahead of time (ops/maintenance.py), each recorded in the audit trail."""
    model_config = ConfigDict(extra="forbid")
    file: Path = Path("/etc/insmon/maintenance.yaml")
    alertmanager: str = "http://127.0.0.1:9093"
    ahead: Duration = 86400.0       # silences exist this long before their window
    every: Duration = 300.0         # how often the file is read and Alertmanager asked
    calendar: Path | None = None    # the site's own holiday dates (the calendar check's)


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Where /metrics, /healthz and the status page are served: host:port, [v6]:port.
    listen: str = DEFAULT_LISTEN
    checks: list[CheckConfig] = Field(min_length=1)
    maintenance: Maintenance | None = None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_listen(value)
        return value

    def faults(self) -> list[tuple[tuple[Any, ...], str]]:
        """What no one key can tell: one site calendar file (parse() locates them)."""
        files = self._calendar_files()
        if len(set(files)) < 2:
            return []
        where = (("maintenance", "calendar") if self.maintenance and self.maintenance.calendar
                 else ("checks",))
        return [(where, f"two calendar files, {' and '.join(map(str, dict.fromkeys(files)))}: "
                        "the site keeps one (the calendar checks' file, the settlement "
                        "checks' calendar_file and maintenance.calendar name the same)")]

    def _calendar_files(self) -> list[Path]:
        files = [file for c in self.checks  # the calendar checks', the settlement checks'
                 if (file := getattr(c, "file" if c.kind == "calendar" else "calendar_file",
                                     None)) is not None]
        if self.maintenance is not None and self.maintenance.calendar is not None:
            files.append(self.maintenance.calendar)
        return files

    @property
    def calendar_file(self) -> Path | None:
        """The site's own holiday dates, over the chinesecalendar package's: for the
        calendar checks, the recurring maintenance windows and insmon's own series."""
        return next(iter(self._calendar_files()), None)


def split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port such as {DEFAULT_LISTEN}, got {value!r}")
    if not host:
        host = "0.0.0.0"
    elif host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"expected an IP address or localhost before the port, "
                             f"got {host!r}") from None
    return host, int(port)


@dataclass(frozen=True)
class ConfigError(Exception):
    """A config that cannot be used; `problems` are complete lines, one per error."""

    source: str
    problems: tuple[str, ...]

    def __str__(self) -> str:
        return "\n".join(self.problems)


@dataclass(frozen=True)
class Loaded:
    config: Config
    source: str  # the file's path, or EMBEDDED
    text: str

    @property
    def sha256(self) -> str:
        """Which config is running, for the audit log and insmon_config_info."""
        return hashlib.sha256(self.text.encode()).hexdigest()


def load(path: str | Path | None = None) -> Loaded:
    """Read and validate a config file; with no path, the embedded default."""
    if path is None:
        text = embedded_text()
        return Loaded(parse(text, EMBEDDED), EMBEDDED, text)
    text = read(path)
    return Loaded(parse(text, str(path)), str(path), text)


def read(path: str | Path) -> str:
    try:
        return Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(str(path), (f"{path}: cannot read config: {reason}",)) from None


MD_CHECK = """\
  - name: host-raid
    kind: raid
    interval: 30s
    source: {type: md}
"""


def embedded_text(mdstat: Path = Path("/proc/mdstat")) -> str:
    """The embedded default for this host: default.yaml, plus md RAID where there is md."""
    text = resources.files("monitor").joinpath("default.yaml").read_text("utf-8")
    return text + MD_CHECK if mdstat.exists() else text


def is_calendar_file(path: Path) -> bool:
    """The site's calendar file (holidays, workdays, known_until) rather than a config."""
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError, ValueError):
        return False  # the config's loader says what is wrong
    return (isinstance(data, dict) and "checks" not in data
            and bool(data.keys() & {"holidays", "workdays", "known_until"}))


def load_site_dates(path: Path):  # -> probes.calendar.SiteDates
    """The site's calendar file, checked; ConfigError saying where it is wrong."""
    from probes.calendar import SiteDates

    return parse(read(path), str(path), SiteDates)


def load_web_config(path: str | Path) -> WebConfig:
    """The endpoint's TLS and basic auth (`--web-config`), with errors like the config's."""
    return parse(read(path), str(path), WebConfig)


M = TypeVar("M", bound=BaseModel)


def parse(text: str, source: str, model: type[M] = Config) -> M:  # type: ignore[assignment]
    """Validate YAML text against `model` (the insmon config, or another file's schema
    such as the web config), with every error located in the file."""
    try:
        try:
            root, data = _read_yaml(text, source, FastLoader, _StrictLoader)
        except yaml.YAMLError:  # again with PyYAML's own parser: its messages read better
            root, data = _read_yaml(text, source, yaml.SafeLoader, _SlowStrictLoader)
    except RecursionError:
        raise ConfigError(source, (f"{source}: the YAML nests too deeply to be a config",)
                          ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError(source, (f"{where}: YAML syntax error: {what}",)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, (f"{source}: YAML syntax error: {exc}",)) from None
    if data is None:
        raise ConfigError(source, (f"{source}: the config is empty",))
    if not isinstance(data, dict):
        raise ConfigError(source, (f"{source}:1: expected a mapping at the top, got a "
                                   f"{type(data).__name__}",))

    problems: list[tuple[tuple[Any, ...], str]] = []
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        config = None
        for err in exc.errors():
            loc = err["loc"]
            if err["type"].startswith("union_tag_"):  # the fault is in the kind key itself
                loc = (*loc, "kind")
            problems.append((loc, _message(err, data, model)))
    problems += _duplicate_names(data)
    if config is not None and hasattr(config, "faults"):  # what one field cannot tell
        problems += config.faults()
    if problems:
        located = []
        for loc, message in problems:
            path, node = _resolve(loc, data, root)
            line = node.start_mark.line + 1 if node is not None else 0
            where = f"{source}:{line}" if line else source
            located.append((line, f"{where}: {path or '(top)'}: {message}"))
        raise ConfigError(source, tuple(text for _, text in sorted(located)))
    assert config is not None
    return config


MAX_DEPTH = 64
OPENS = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken,
         yaml.FlowMappingStartToken, yaml.FlowSequenceStartToken)
CLOSES = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)
# libyaml's parser when PyYAML has it (10,000 checks: 0.5 s rather than 5 s)
FastLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(text: str, source: str, loader: type, strict: type) -> tuple[Any, Any]:
    """(the node tree, the data) of a YAML text that holds no tag."""
    depth = 0
    for token in yaml.scan(text, Loader=loader):
        mark = token.start_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}"
        # A tag (!!int, !!binary, !!python/...) turns a value into something else, and its
        # failure would repeat the value (a secret) in a traceback: none in a config.
        if isinstance(token, yaml.TagToken):
            raise ConfigError(source, (f"{where}: YAML tags such as !!int are not allowed "
                                       "in a config: write the plain value",))
        if isinstance(token, OPENS):
            depth += 1
            if depth > MAX_DEPTH:  # deeper would only exhaust the parsers' stacks
                raise ConfigError(source, (f"{where}: the YAML nests deeper than "
                                           f"{MAX_DEPTH} levels",))
        elif isinstance(token, CLOSES):
            depth -= 1
    root = yaml.compose(text, Loader=loader)
    return root, strict("").construct_document(root) if root is not None else None


class _Strict:
    """A loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool | None):
                raise yaml.constructor.ConstructorError(
                    None, None, f"keys must be plain words or numbers, got a "
                    f"{type(key).__name__}", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice in one mapping",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> object:
        """A date YAML reads and Python refuses (2027-02-29) named at its line, not a
        ValueError's traceback."""
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value} is no date ({exc})", node.start_mark) from None


class _StrictLoader(_Strict, FastLoader):
    pass


class _SlowStrictLoader(_Strict, yaml.SafeLoader):
    pass


for _loader in (_StrictLoader, _SlowStrictLoader):
    _loader.add_constructor("tag:yaml.org,2002:timestamp", _Strict.construct_yaml_timestamp)



def _duplicate_names(data: dict) -> list[tuple[tuple[Any, ...], str]]:
    checks = data.get("checks")
    if not isinstance(checks, list):
        return []
    first: dict[object, int] = {}
    problems = []
    for i, check in enumerate(checks):
        name = check.get("name") if isinstance(check, dict) else None
        if not isinstance(name, str):
            continue
        if name in first:
            problems.append((("checks", i, "name"),
                             f"check name {name!r} is already used by checks[{first[name]}]; "
                             "names must be unique"))
        else:
            first[name] = i
    return problems


def _message(err: dict, data: dict, model: type[BaseModel]) -> str:
    kind, ctx = err["type"], err.get("ctx", {})
    if kind == "extra_forbidden":
        allowed = ", ".join(_model_at(err["loc"], data, model).model_fields)
        return f"unknown key; allowed here: {allowed}"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        return f"unknown kind {ctx.get('tag')!r}; known kinds: {', '.join(PROBES)}"
    if kind == "union_tag_not_found":
        return f"required key 'kind' is missing (one of: {', '.join(PROBES)})"
    message = err["msg"].removeprefix("Value error, ")
    if kind == "less_than_equal" and ctx.get("le") == MAX_DURATION:
        message = "must be at most a day (24h)"
    if kind == "finite_number" or (isinstance(err.get("input"), float)
                                   and err["input"] != err["input"]):  # NaN
        message = "must be a finite number"
    if kind == "string_pattern_mismatch" and err["loc"][-1] == "name":
        message = ("must start with a letter or digit and hold only letters, digits and "
                   "_ . : - (at most 64 characters)")
    secret = any(seg in SECRET_KEYS for seg in err["loc"])  # never echo a secret's value
    if ("input" in err and not isinstance(err["input"], dict | list) and "got" not in message
            and not secret):
        message += f", got {err['input']!r}"
    return message


def _model_at(loc: tuple[Any, ...], data: dict, model: type[BaseModel]) -> type[BaseModel]:
    """The model that owns the mapping where an unknown key was found, by following the
    error's location through the raw data and the models' field annotations."""
    annotation: Any = None
    node: Any = data
    for seg in loc[:-1]:
        if isinstance(node, dict) and seg not in node and seg in (node.get("kind"),
                                                                  node.get("type")):
            continue  # a union's tag, not a key
        if isinstance(seg, str):
            field = model.model_fields.get(seg)
            annotation = field.annotation if field else None
        node = node[seg] if isinstance(node, dict | list) else None
        if isinstance(node, dict):
            model = _member(annotation, node) or model
    return model


def _member(annotation: Any, node: dict) -> type[BaseModel] | None:
    """The model in a (possibly nested, tagged-union) annotation that fits `node`."""
    stack, found = [annotation], []
    while stack:
        item = stack.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            found.append(item)
        else:
            stack.extend(get_args(item))
    for model in found:
        tag = next((t for t in ("kind", "type") if t in model.model_fields), None)
        if tag is None or get_args(model.model_fields[tag].annotation) == (node.get(tag),):
            return model
    return None


def _resolve(loc: tuple[Any, ...], data: Any, node: yaml.Node | None
             ) -> tuple[str, yaml.Node | None]:
    """Turn pydantic's error location into a key path and the YAML node it points at.

    pydantic puts a union's tag in the location (checks, 0, 'cpu', 'timeout'); the file
    has no such key, so a segment that is the mapping's own kind (or type) is skipped. The node is
    the deepest one that exists (a missing key points at its mapping).
    """
    path = ""
    for seg in loc:
        if isinstance(data, dict) and seg not in data and seg in (data.get("kind"),
                                                                   data.get("type")):
            continue
        path += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if path else str(seg))
        data, node = _child(data, node, seg)
    return path, node


def _child(data: Any, node: yaml.Node | None, seg: Any) -> tuple[Any, yaml.Node | None]:
    if isinstance(data, list) and isinstance(seg, int) and 0 <= seg < len(data):
        child = node.value[seg] if isinstance(node, yaml.SequenceNode) else None
        return data[seg], child
    if isinstance(data, dict) and seg in data:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == str(seg)), None)
        return data[seg], child
    return None, node  # a missing key: stay on the mapping that lacks it
