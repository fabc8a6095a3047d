"""`insmon maintenance`: declare an announced outage window (a platform cutover, 智慧医保
migration) as an Alertmanager silence of the alerts that outage is expected to raise.

Prometheus keeps recording and evaluating everything; only the expected pages are held
back, for that site and that window. Anything else that breaks (storage, RAID, CPU, the
hospital's own network) still pages.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

from monitor import SHANGHAI, parse_time  # noqa: F401 (the CLI reads times with it)

# What a cutover of the agency's platform stops: the front-end and the settlement path
# (the agency may also take its tunnel end down), and the symptoms that follow.
EXPECTED = ("SettlementPathDown|SettlementImpossible|PrimaryLineDown|FrontEndUnreachable|"
            "FrontEndHttpFailing|"
            "FrontEndCertificateExpiring|TunnelFlapping|PrivateNetworkLatencyHigh|"
            "PrivateNetworkPacketLoss")


# A cutover lasts hours, a migration a few days: a longer window is a typo that would
# silence Level I pages for months.
LONGEST = timedelta(days=14)


class MaintenanceError(Exception):
    pass


def declare(alertmanager: str, site: str, start: datetime, end: datetime, comment: str,
            created_by: str = "insmon maintenance", force: bool = False) -> str:
    """Create the silence; return its id."""
    if not site.strip():
        raise MaintenanceError("--site is empty: name the hospital's site label")
    if not comment.strip():
        raise MaintenanceError("--comment is empty: say what is announced")
    if end <= start:
        raise MaintenanceError("the window ends before it starts")
    if end - start > LONGEST and not force:
        days = (end - start).total_seconds() / 86400
        raise MaintenanceError(f"the window is {days:.1f} days long, over {LONGEST.days} days: "
                               "check the dates, or pass --force if it really is")
    if end <= datetime.now(UTC):
        raise MaintenanceError(f"the window ended already ({end.isoformat()})")
    body = {
        "matchers": [
            {"name": "site", "value": site, "isRegex": False, "isEqual": True},
            {"name": "alertname", "value": EXPECTED, "isRegex": True, "isEqual": True},
        ],
        "startsAt": start.astimezone(UTC).isoformat(),
        "endsAt": end.astimezone(UTC).isoformat(),
        "createdBy": created_by,
        "comment": comment,
    }
    request = urllib.request.Request(
        alertmanager.rstrip("/") + "/api/v2/silences", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as exc:
        raise MaintenanceError(f"Alertmanager refused the silence: {exc.code} "
                               f"{exc.read().decode(errors='replace').strip()}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise MaintenanceError(f"cannot reach Alertmanager at {alertmanager}: "
                               f"{getattr(exc, 'reason', exc)}") from None
    except ValueError:
        raise MaintenanceError(f"{alertmanager} answered with no JSON: is it "
                               "Alertmanager?") from None
    silence = answer.get("silenceID") if isinstance(answer, dict) else None
    if not isinstance(silence, str) or not silence:
        raise MaintenanceError(f"{alertmanager} answered without a silence id: "
                               "the silence may not exist; check its silences page")
    return silence
