"""insmon's daemon core: config, scheduler, runner, results store, service, CLI."""

from datetime import datetime

from probes.base import SHANGHAI, VERSION

__version__ = VERSION


def parse_time(text: str) -> datetime:
    """ISO 8601; without an offset, Asia/Shanghai time (the hospital's clock)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"cannot read the time {text!r}: write e.g. 2026-12-01T20:00 "
                         "(Asia/Shanghai) or 2026-12-01T12:00+00:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=SHANGHAI)
