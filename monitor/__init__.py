"""insmon: health monitor for a hospital's medical-insurance settlement chain."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("insmon")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
