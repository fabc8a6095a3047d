"""The words every layer of insmon shares: its version, Beijing time, durations and the
alert grades. Probes, exporters, monitor, ops and the pager import it; it imports nothing
of insmon's, so no layer depends on another for its words."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

from pydantic import BeforeValidator, Field

try:
    VERSION = version("insmon")  # the User-Agent of the http probe, the build info
except PackageNotFoundError:  # running from a source tree that was not installed
    VERSION = "0+unknown"

# ---------------------------------------------------------------- Beijing time

# The sites' clock: peak hours, business hours, report times. UTC+8, no DST.
SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")


def parse_time(text: str) -> datetime:
    """ISO 8601; without an offset, Asia/Shanghai time (the hospital's clock)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"cannot read the time {text!r}: write e.g. 2026-12-01T20:00 "
                         "(Asia/Shanghai) or 2026-12-01T12:00+00:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=SHANGHAI)


# ---------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> object:
    """Seconds as a number, or a Prometheus-style string: "500ms", "15s", "1m30s"."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 15s, 500ms or 1m, got a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        parts = _DURATION_PART.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
        raise ValueError(f"expected a duration such as 15s, 500ms or 1m, got {value!r}")
    return value  # let pydantic report the wrong type


def format_duration(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# At most a day: a longer interval is a typo, and an infinite one would never run.
MAX_DURATION = 86400.0
Duration = Annotated[float, BeforeValidator(parse_duration),
                     Field(gt=0, le=MAX_DURATION, allow_inf_nan=False)]

# ---------------------------------------------------------------- grades

GRADES = ("I", "II", "III", "IV")  # the national scale, most severe first
GRADE_ZH = {"I": "一级", "II": "二级", "III": "三级", "IV": "四级"}
# The grade's name in an incident report (事件报告): the scale's word beside the level.
GRADE_REPORT_ZH = {"I": "一级（特别重大）", "II": "二级（重大）", "III": "三级（较大）",
                   "IV": "四级（一般）"}
