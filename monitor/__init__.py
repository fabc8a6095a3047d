"""insmon: health monitor for a hospital's medical-insurance settlement chain."""

from datetime import datetime, timedelta, timezone
from importlib.metadata import PackageNotFoundError, version

# The sites' clock: peak hours, business hours, report times. UTC+8, no DST.
SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")

try:
    __version__ = version("insmon")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"


def parse_time(text: str) -> datetime:
    """ISO 8601; without an offset, Asia/Shanghai time (the hospital's clock)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"cannot read the time {text!r}: write e.g. 2026-12-01T20:00 "
                         "(Asia/Shanghai) or 2026-12-01T12:00+00:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=SHANGHAI)
