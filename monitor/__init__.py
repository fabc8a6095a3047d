"""insmon: health monitor for a hospital's medical-insurance settlement chain."""

from datetime import timedelta, timezone
from importlib.metadata import PackageNotFoundError, version

# The sites' clock: peak hours, business hours, report times. UTC+8, no DST.
SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")

try:
    __version__ = version("insmon")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
