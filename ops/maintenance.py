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
from datetime import UTC, datetime

from monitor import SHANGHAI, parse_time  # noqa: F401 (the CLI reads times with it)

# What a cutover of the agency's platform stops: the front-end and the settlement path
# (the agency may also take its tunnel end down), and the symptoms that follow.
EXPECTED = ("SettlementPathDown|PrimaryLineDown|FrontEndUnreachable|FrontEndHttpFailing|"
            "FrontEndCertificateExpiring|TunnelFlapping|PrivateNetworkLatencyHigh|"
            "PrivateNetworkPacketLoss")


class MaintenanceError(Exception):
    pass


def declare(alertmanager: str, site: str, start: datetime, end: datetime, comment: str,
            created_by: str = "insmon maintenance") -> str:
    """Create the silence; return its id."""
    if end <= start:
        raise MaintenanceError("the window ends before it starts")
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
            return json.load(response)["silenceID"]
    except urllib.error.HTTPError as exc:
        raise MaintenanceError(f"Alertmanager refused the silence: {exc.code} "
                               f"{exc.read().decode(errors='replace').strip()}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise MaintenanceError(f"cannot reach Alertmanager at {alertmanager}: "
                               f"{getattr(exc, 'reason', exc)}") from None
