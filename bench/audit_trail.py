"""What the audit trail costs at the scale of years: `insmon audit --verify` over a trail
of N records (a million by default, some 300 bytes each, as the pager writes them, over
six months), beside sha256sum reading and hashing the same files; and appends to that
trail, beside appends to a new one (an append costs the same on both when it is constant
in time), each fsync'd. Prints figures; asserts nothing.

    .venv/bin/python bench/audit_trail.py [RECORDS]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from monitor.audit import HASH_AT, Head, Trail, _mac, read_key
from vocabulary import SHANGHAI

INSMON = str(Path(sys.executable).parent / "insmon")
APPENDS = 2000


def build(folder: Path, count: int, key: bytes) -> Trail:
    """A trail of `count` records in the format Trail.append writes (its lines built here
    without an fsync each, so that a million take seconds): pager deliveries, one every
    few seconds over the six months before now."""
    folder.mkdir(parents=True)
    trail = Trail(folder, key)
    start = datetime.now(SHANGHAI) - timedelta(days=180)
    step = timedelta(days=180) / count
    prev, out, name, size = "0" * 64, None, "", 0
    for seq in range(1, count + 1):
        at = start + step * seq
        file = f"audit-{at:%Y-%m}.jsonl"
        if file != name:
            if out:
                out.close()
            out, name = open(folder / file, "ab"), file  # noqa: SIM115
        detail = {"event_id": seq, "incident": seq // 7, "channel": "wecom"}
        body = (f'{{"seq":{seq},"prev":"{prev}","at":"{at.isoformat(timespec="milliseconds")}'
                f'","event":"pager-delivered","who":"insmon-pager","outcome":"ok","detail":'
                f'{json.dumps(detail, separators=(",", ":"))}').encode()
        prev = _mac(key, body)
        out.write(body + HASH_AT + prev.encode() + b'"}\n')
    out.close()
    size = (folder / name).stat().st_size
    trail._store(Head("bench0000000000", count, prev, at.isoformat(timespec="milliseconds"),
                      name, size, None, True))
    return trail


def verify(folder: Path, key_file: Path) -> tuple[float, float, float, str]:
    """Seconds (wall and CPU) and peak RSS (MiB) of `insmon audit DIR --verify`, in a
    process of its own, and its verdict."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "d = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
             "print(time.perf_counter() - t, u.ru_utime + u.ru_stime, u.ru_maxrss); "
             "print(d.stdout.strip().splitlines()[0] if d.stdout else d.stderr[-300:])")
    done = subprocess.run([sys.executable, "-c", probe, INSMON, "audit", str(folder),
                           "--verify", "--key-file", str(key_file), "--prometheus",
                           "http://127.0.0.1:9"], capture_output=True, text=True, timeout=600)
    figures, verdict = done.stdout.split("\n", 1)
    wall, cpu, peak = figures.split()
    return float(wall), float(cpu), int(peak) / 1024, verdict.strip()


def appends(trail: Trail, count: int) -> float:
    """Appends a second, each on disk before the next."""
    began = time.perf_counter()
    for i in range(count):
        trail.append("config", "insmon (uid 0)", "unchanged", {"file": "/etc/insmon/x.yaml",
                                                             "i": i})
    return count / (time.perf_counter() - began)


def fsyncs(path: Path, count: int) -> float:
    """The disk's floor: a line written and fdatasync'd, a second."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        began = time.perf_counter()
        for _ in range(count):
            os.write(fd, b"x" * 300 + b"\n")
            os.fdatasync(fd)
        return count / (time.perf_counter() - began)
    finally:
        os.close(fd)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    tmp = Path(tempfile.mkdtemp(prefix="insmon-audit-bench-", dir="/var/tmp"))
    try:
        key = read_key(tmp / "audit.key", create=True)
        began = time.perf_counter()
        trail = build(tmp / "audit", count, key)
        size = sum(p.stat().st_size for p in trail.files())
        print(f"built {count:,} records, {size / 1e6:.0f} MB in {len(trail.files())} files, "
              f"in {time.perf_counter() - began:.1f} s")
        took, cpu, peak, verdict = verify(tmp / "audit", tmp / "audit.key")
        began = time.perf_counter()
        subprocess.run(["sha256sum", *map(str, trail.files())], check=True,
                       capture_output=True, timeout=600)
        floor = time.perf_counter() - began
        print(f"insmon audit --verify: {took:.2f} s ({cpu:.2f} s of CPU), peak RSS "
              f"{peak:.0f} MiB ({verdict}); sha256sum of the same files: {floor:.2f} s")
        empty = Trail.open(tmp / "new", create_key=True)
        rate_new = appends(empty, APPENDS)
        rate_big = appends(trail, APPENDS)
        rate_disk = fsyncs(tmp / "floor", APPENDS)
        print(f"appends (each on disk before the next): {rate_big:,.0f}/s on the "
              f"{count:,}-record trail, {rate_new:,.0f}/s on a new one; a bare write and "
              f"fdatasync of a line: {rate_disk:,.0f}/s")
        _, _, _, verdict = verify(tmp / "audit", tmp / "audit.key")
        print(f"after them: {verdict}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
