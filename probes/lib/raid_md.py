"""Linux software RAID (md) from /proc/mdstat, and /sys/block/md*/md/ where present.

The format is the kernel's (drivers/md/md.c, md_seq_show and status_resync):

  md1 : active raid5 sdd1[3] sdc1[2](F) sdb1[1] sda1[0](S)
      1953259520 blocks super 1.2 level 5, 512k chunk, algorithm 2 [3/2] [UU_]
      [===>.................]  recovery = 17.3% (16910950/97662976) finish=8.1min speed=165698K/sec
      bitmap: 2/8 pages [8KB], 65536KB chunk
"""

from __future__ import annotations

import re
from pathlib import Path

from probes.lib.raid_model import Array, FormatError, Sync

_HEADER = re.compile(r"^(md[\w.-]*)\s*:\s*(active|inactive)\b(.*)$")
_MEMBER = re.compile(r"^([\w.:/-]+)\[(\d+)\]((?:\([A-Z]+\))*)$")
_STATUS = re.compile(r"\[(\d+)/(\d+)\]\s+\[([U_]+)\]")
_PROGRESS = re.compile(
    r"(resync|recovery|check|repair|reshape)\s*=\s*([\d.]+)%\s*\((\d+)/(\d+)\)"
    r"(?:\s+finish=([\d.]+)min)?(?:\s+speed=(\d+)K/sec)?")
_PENDING = re.compile(r"(resync|recovery|check|repair|reshape)\s*=\s*(DELAYED|PENDING|REMOTE)")
_LEVELS = ("linear", "multipath", "faulty")
_ACTIVITY = {"resync": "resyncing", "recovery": "recovering", "check": "checking",
             "repair": "checking", "reshape": "reshaping"}
# An external-metadata container (Intel IMSM/VROC, DDF: `super external:imsm`) only holds
# the disks, always "inactive"; its volumes are the arrays. A volume names its container:
# `super external:/md127/0`, or `-md127/0` while mdadm blocks it from mdmon (a reshape).
_CONTAINER = re.compile(r"\bsuper external:(?![/-])")
# sysfs array_state values that mean the array is in use with writes pending or possible.
_SYSFS_ACTIVE = ("active", "active-idle", "write-pending")


def parse(text: str, sysfs: Path | None = None) -> list[Array]:
    """All arrays in /proc/mdstat text. `sysfs`: the /sys/block folder, to tell clean
    from active; without it a healthy running array is reported as active."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("Personalities"):
        raise FormatError("not an mdstat file: the first line is not 'Personalities : ...'")
    arrays = []
    i = 1
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.startswith("md"):
            if line.strip() and not line.startswith(("unused devices", " ", "\t")):
                raise FormatError(f"unexpected line {i}: {line.strip()[:60]!r}")
            continue
        body = []
        while i < len(lines) and lines[i][:1] in (" ", "\t") and lines[i].strip():
            body.append(lines[i].strip())
            i += 1
        if not body:
            raise FormatError(f"array on line {i} has no status line (truncated?)")
        if not _CONTAINER.search(body[0]):
            arrays.append(_array(line, body, sysfs))
    return arrays


def _array(header: str, body: list[str], sysfs: Path | None) -> Array:
    match = _HEADER.match(header)
    if not match:
        raise FormatError(f"cannot read array line {header[:60]!r}")
    name, status, rest = match.groups()
    tokens = rest.split()
    while tokens and tokens[0].startswith("("):  # (read-only), (auto-read-only)
        tokens.pop(0)
    level = ""
    if tokens and (tokens[0].startswith("raid") or tokens[0] in _LEVELS):
        level = tokens.pop(0)
    members = [_MEMBER.match(t) for t in tokens]
    if not all(members):
        bad = next(t for t, m in zip(tokens, members, strict=True) if not m)
        raise FormatError(f"{name}: cannot read member {bad!r}")
    flags = [m.group(3) for m in members if m]
    failed = sum("(F)" in f for f in flags)
    spare = sum("(S)" in f for f in flags)

    status_line = _STATUS.search(body[0])
    if status_line:
        required, in_sync = int(status_line.group(1)), int(status_line.group(2))
        pattern = status_line.group(3)
    else:  # raid0, linear and inactive arrays have no [n/m] [UU]
        required = in_sync = len(flags) - failed - spare
        pattern = "U" * required
    disks = {"active": in_sync if status == "active" else 0, "failed": failed,
             "spare": spare, "missing": required - in_sync}

    sync = None
    action = None
    for line in body[1:]:
        progress = _PROGRESS.search(line)
        if progress:
            action, _pct, done, total, finish, speed = progress.groups()
            sync = Sync(action, int(done) / int(total) if int(total) else 0.0,
                        speed=int(speed) * 1024 if speed else None,
                        remaining=float(finish) * 60 if finish else None)
        elif not (_PENDING.search(line) or line.startswith("bitmap:")):
            raise FormatError(f"{name}: cannot read line {line[:60]!r}")

    if status == "inactive":
        state = "inactive"
    elif _lost(level, required, disks["missing"], pattern, body[0]):
        state = "failed"
    elif action and disks["missing"]:
        # redundancy is judged by the members the array has, whatever sync runs: a
        # reshape, resync or check with a member missing is degraded (a recovery is the
        # rebuild of that member, and paged as degraded too)
        state = "recovering" if action == "recovery" else "degraded"
    elif action == "recovery":
        # every member in sync: a copy onto a replacement disk (mdadm --replace),
        # redundancy intact, maintenance like a resync
        state = "resyncing"
    elif action:
        state = _ACTIVITY[action]
    elif disks["missing"]:
        state = "degraded"
    else:
        state = _clean_or_active(name, sysfs)
    return Array(name, level or "unknown", state, disks, sync)


def _lost(level: str, required: int, missing: int, pattern: str, status: str) -> bool:
    """Has the array lost more members than its level survives?"""
    if not missing:
        return False
    if level in ("raid0", "linear", ""):
        return True
    if level in ("raid1", "multipath"):
        return missing >= required
    if level in ("raid4", "raid5"):
        return missing > 1
    if level == "raid6":
        return missing > 2
    if level == "raid10":
        near = re.search(r"(\d+) near-copies", status)
        copies = int(near.group(1)) if near else 2
        # near layout: each run of `copies` slots mirrors the same data
        return any(set(pattern[i:i + copies]) == {"_"} for i in range(0, len(pattern), copies))
    return False


def _clean_or_active(name: str, sysfs: Path | None) -> str:
    if sysfs is None:
        return "active"
    try:
        value = (sysfs / name / "md" / "array_state").read_text().strip()
    except OSError:
        return "active"
    return "active" if value in _SYSFS_ACTIVE else "clean"
