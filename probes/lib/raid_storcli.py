"""Broadcom/LSI MegaRAID controllers through storcli's JSON (perccli prints the same).

Three commands, each with `J` for JSON:
    storcli64 /call/vall show J              virtual drives: "DG/VD", "TYPE", "State"
    storcli64 /call/eall/sall show J         physical drives: "EID:Slt", "State", "DG"
    storcli64 /call/eall/sall show rebuild J rebuild progress (only run while one rebuilds)
"""

from __future__ import annotations

import json
import re
from typing import Any

from probes.lib.raid_model import Array, FormatError, Sync

# Virtual drive states (the legend storcli prints beside the table).
VD_STATES = {"Optl": "clean", "Dgrd": "degraded", "Pdgd": "degraded", "OfLn": "failed",
             "Rbld": "recovering", "Rec": "recovering"}
# Physical drive states; None: not a member of any array (unconfigured, JBOD).
PD_STATES = {"Onln": "active", "Cpybck": "active", "Rbld": "missing", "Msng": "missing",
             "Offln": "failed", "Failed": "failed", "UBad": "failed", "GHS": "spare",
             "DHS": "spare", "UGood": None, "JBOD": None}

VALL = ["/call/vall", "show", "J"]
PDS = ["/call/eall/sall", "show", "J"]
REBUILD = ["/call/eall/sall", "show", "rebuild", "J"]


def controllers(text: str, command: str) -> list[tuple[int, Any]]:
    """(controller number, "Response Data") for each controller in one command's JSON."""
    try:
        data = json.loads(text)
        entries = data["Controllers"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise FormatError(f"malformed JSON from `{command}`: {exc}") from None
    out = []
    for entry in entries:
        try:
            status = entry["Command Status"]
            number = int(status["Controller"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"`{command}`: no command status: {exc}") from None
        if status.get("Status") != "Success":
            raise FormatError(f"`{command}` failed on controller {number}: "
                              f"{status.get('Description', 'no description')}")
        out.append((number, entry.get("Response Data")))
    return out


# What a JSON answer of the wrong shape raises when read as storcli's: a value of another
# type, a list where a mapping belongs, a number too big. All of it is a format error.
SHAPE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError)


def parse(vall: str, pds: str, rebuild: str | None = None) -> list[Array]:
    try:
        return _parse(vall, pds, rebuild)
    except SHAPE_ERRORS as exc:
        raise FormatError(f"storcli answered JSON of an unexpected shape: "
                          f"{type(exc).__name__}: {str(exc)[:80]}") from None


def _parse(vall: str, pds: str, rebuild: str | None) -> list[Array]:
    drives = _physical_drives(pds)
    progress = _rebuild_progress(rebuild) if rebuild else {}
    arrays = []
    for ctl, data in controllers(vall, "show vall"):
        try:
            vds = data["Virtual Drives"]
        except (KeyError, TypeError):
            vds = []  # a controller with no virtual drive
        for vd in vds:
            try:
                dg, number = (int(x) for x in str(vd["DG/VD"]).split("/"))
                raw_state, level = vd["State"], str(vd["TYPE"]).lower()
            except SHAPE_ERRORS as exc:
                raise FormatError(f"controller {ctl}: cannot read virtual drive {vd!r:.80}: "
                                  f"{exc}") from None
            members = [d for d in drives.get(ctl, []) if d["dg"] in (dg, None)]
            disks = dict.fromkeys(("active", "failed", "spare", "missing"), 0)
            for drive in members:
                state = PD_STATES.get(drive["state"], "failed")  # unknown: assume the worst
                if state is not None and (drive["dg"] == dg or state == "spare"):
                    disks[state] += 1
            state = VD_STATES.get(raw_state, "unknown")
            rebuilding = [progress[d["id"]] for d in members
                          if d["state"] == "Rbld" and d["id"] in progress]
            sync = None
            if rebuilding:
                ratio, remaining = min(rebuilding)
                sync = Sync("rebuild", ratio, remaining=remaining)
                if state == "degraded":
                    state = "recovering"
            arrays.append(Array(f"c{ctl}/v{number}", level, state, disks, sync))
    return arrays


def _physical_drives(text: str) -> dict[int, list[dict[str, Any]]]:
    drives: dict[int, list[dict[str, Any]]] = {}
    for ctl, data in controllers(text, "show eall/sall"):
        rows = (data or {}).get("Drive Information", [])
        for row in rows:
            try:
                enclosure, slot = str(row["EID:Slt"]).split(":")
                dg = row.get("DG", "-")
                drives.setdefault(ctl, []).append({
                    "id": f"/c{ctl}/e{enclosure}/s{slot}".replace("/e/", "/"),
                    "state": str(row["State"]).strip(),
                    "dg": None if dg in ("-", "", None) else int(dg),
                })
            except SHAPE_ERRORS as exc:
                raise FormatError(f"controller {ctl}: cannot read drive {row!r:.80}: "
                                  f"{exc}") from None
    return drives


def _rebuild_progress(text: str) -> dict[str, tuple[float, float | None]]:
    """Drive id -> (progress ratio, seconds left) for drives rebuilding now."""
    progress = {}
    for _ctl, data in controllers(text, "show rebuild"):
        for row in data or []:
            pct = row.get("Progress%")
            if row.get("Status") != "In progress" or not isinstance(pct, int | float):
                continue
            progress[str(row.get("Drive-ID"))] = (pct / 100,
                                                  _duration(row.get("Estimated Time Left")))
    return progress


def _duration(text: object) -> float | None:
    """ "1 Hours 2 Minutes", "25 Minutes", "30 Seconds" -> seconds; None if not given."""
    parts = re.findall(r"(\d+)\s*(Day|Hour|Minute|Second)s?", str(text or ""))
    if not parts:
        return None
    unit = {"Day": 86400, "Hour": 3600, "Minute": 60, "Second": 1}
    return float(sum(int(n) * unit[u] for n, u in parts))
