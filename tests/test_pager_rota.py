"""The pager's rota files and the commands around them: an edited shifts file read again
(a broken edit keeps the last good shifts), a large one parsed once, validation's
warnings, commands that do not need the rota never failing on it, and gammu-smsd's
RunOnReceive as a site writes it, with a real gammu-smsd on gammu's dummy phone."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

import pager.rota
from ops.stack import free_port, wait_for
from pager.cli import main as pager_main
from pager.config import PagerConfig, load
from pager.rota import Rota, check
from tests.conftest import INSMON, ROOT
from tests.pager_rig import PagerProcess, Phone
from vocabulary import SHANGHAI

pytestmark = pytest.mark.timeout(120)
HEADER = "开始,结束,值班人\n"
# the pager may require an intake token: these tests post with none
OPEN = {"auth": {"open": True}} if "auth" in PagerConfig.model_fields else {}


def write_config(tmp: Path, shifts: str | None = HEADER, **changes: object) -> Path:
    """A pager with network on a shifts file (lead 王五, backup 李四) and server_ops on a
    rotation; everyone by SMS."""
    port = free_port()
    people = {pid: {"name": name, "mobile": f"1380000000{i}", "channels": ["sms"]}
              for i, (pid, name) in enumerate([("zhang", "张三"), ("li", "李四"),
                                               ("wang", "王五"), ("zhao", "赵六")], 1)}
    config = {
        **OPEN, "listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}",
        "database": str(tmp / "pager.db"),
        "channels": {"sms": {"type": "sms", "gammu_config": str(tmp / "gammu" / "smsdrc"),
                             "timeout": "2s", "retries": 1}},
        "people": people,
        "teams": {"network": {"name": "网络排查组", "shifts_file": "rota.csv",
                              "backup": "li", "lead": "wang"},
                  "server_ops": {"name": "服务器运维组", "lead": "wang", "rotation": {
                      "since": "2026-01-01", "order": ["zhao"]}}},
        "escalation": {"I": [], "II": [], "III": [], "IV": []},
        "watchdog": {"timeout": "1h"},
        **changes}
    if shifts is not None:
        (tmp / "rota.csv").write_text(shifts)
    path = tmp / "pager.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


def edit(path: Path, text: str) -> None:
    """Rewrite a file as an editor does, its mtime surely moved on."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def insmon_pager(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([INSMON, "pager", *args], capture_output=True, text=True,
                          env=env, timeout=60)


NOON = dt.datetime(2026, 11, 23, 12, 0, tzinfo=SHANGHAI)
DAY = "2026-11-23 08:00,2026-11-24 08:00"


# ------------------------------------------------------------------ read again

def test_an_edited_shifts_file_takes_effect_and_a_broken_edit_keeps_the_last_good_shifts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load(write_config(tmp_path, HEADER + f"{DAY},zhang\n"))
    csv = tmp_path / "rota.csv"
    clock = [0.0]
    rota = Rota(config, clock=lambda: clock[0])
    assert rota.on_call("network", NOON) == "zhang"

    edit(csv, HEADER + f"{DAY},李四\n")
    clock[0] += 0.5
    assert rota.on_call("network", NOON) == "zhang"  # looked at once a second at most
    clock[0] += 0.6
    assert rota.on_call("network", NOON) == "li"  # what `who` says and the page do agree

    caplog.set_level(logging.INFO, logger="insmon.pager.rota")
    edit(csv, HEADER + f"tomorrow,2026-11-24 08:00,wang\n{DAY},wang\n")
    for _ in range(3):
        clock[0] += 1.1
        assert rota.on_call("network", NOON) == "li"  # the last good shifts
    assert "rota.csv, row 2: 'tomorrow' is not a time" in rota.errors["network"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].name == "insmon.pager.rota"  # once, not a second
    assert "keeps its last good shifts" in errors[0].getMessage()

    edit(csv, HEADER + f"{DAY},wang\n")
    clock[0] += 1.1
    assert rota.on_call("network", NOON) == "wang" and rota.errors == {}


def test_a_shifts_file_broken_at_start_leaves_the_team_to_its_lead_and_fails_validate(
        tmp_path: Path) -> None:
    path = write_config(tmp_path, HEADER + f"{DAY},nobody-we-know\n")
    rota = Rota(load(path))  # the pager still starts
    assert "row 2: unknown person 'nobody-we-know'" in rota.errors["network"]
    assert rota.on_call("network", NOON) is None  # a gap: the lead is paged
    assert rota.role("network", "lead", NOON) == "wang"

    done = insmon_pager("validate", str(path))
    assert done.returncode == 2 and "row 2: unknown person" in done.stderr


def test_a_rotation_from_a_day_no_calendar_has_is_named_with_its_line(
        tmp_path: Path) -> None:
    """29 February of a common year: YAML reads a date, Python refuses it (ValueError):
    validate names it where it is, as any fault of the config, never a traceback."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("since: '2026-01-01'", "since: 2027-02-29"))
    assert "since: 2027-02-29" in path.read_text()
    done = insmon_pager("validate", str(path))
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert re.search(rf"{path}:\d+:\d+: .*2027-02-29 is no date \(day is out of range for "
                     r"month\)", done.stderr), done.stderr


def test_commands_that_need_no_rota_never_fail_on_a_broken_shifts_file(
        tmp_path: Path) -> None:
    path = write_config(tmp_path, HEADER + "garbage\n")
    who = insmon_pager("who", "-c", str(path), "--team", "network", "--at", "2026-11-23 12:00")
    assert who.returncode == 0, who.stderr
    assert "无人值班" in who.stdout and "shifts file broken" in who.stdout
    assert "李四 (li)" in who.stdout and "王五 (wang)" in who.stdout  # backup, lead
    other = insmon_pager("who", "-c", str(path), "--team", "server_ops")
    assert other.returncode == 0 and "赵六" in other.stdout, other.stderr

    ack = insmon_pager("ack", "999", "--by", "wang", "-c", str(path))
    assert ack.returncode == 1 and "no incident 999" in ack.stderr
    sms = insmon_pager("sms-received", "-c", str(path),
                       "IN20261127_101500_00_+8613800000009_00.txt",  # gammu-smsd appends it
                       env={**os.environ, "SMS_MESSAGES": "1", "SMS_1_NUMBER": "+8613800000009",
                            "SMS_1_TEXT": "好的"})
    assert sms.returncode == 1 and "acknowledged nothing" in sms.stderr  # logged
    assert "rota.csv" not in sms.stderr


# ------------------------------------------------------------------ size and speed

def test_a_large_shifts_file_is_parsed_once_and_not_for_an_sms_reply(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    people = ["zhang", "li", "wang"]
    start = dt.datetime(2026, 1, 1, 8, 0)
    rows = [f"{start + dt.timedelta(hours=i):%Y-%m-%d %H:%M},"
            f"{start + dt.timedelta(hours=i + 1):%Y-%m-%d %H:%M},{people[i % 3]}\n"
            for i in range(60_000)]  # ~2.5 MB, seven years of hourly shifts
    rows.reverse()  # the file's order is not the time order
    path = write_config(tmp_path, HEADER + "".join(rows))
    parses = []
    read_shifts = pager.rota.read_shifts
    monkeypatch.setattr(pager.rota, "read_shifts",
                        lambda *a: parses.append(a) or read_shifts(*a))

    clock = [0.0]
    rota = Rota(load(path), clock=lambda: clock[0])
    for hour in range(0, 60_000, 7):
        clock[0] += 0.7  # the file is looked at again and again: unchanged, not parsed
        at = (start + dt.timedelta(hours=hour, minutes=30)).replace(tzinfo=SHANGHAI)
        assert rota.on_call("network", at) == people[hour % 3]
    assert len(parses) == 1

    # an SMS reply reads no shifts file (it was read, twice, for every reply)
    parses.clear()
    monkeypatch.setenv("SMS_MESSAGES", "1")
    monkeypatch.setenv("SMS_1_NUMBER", "+8613800000001")
    monkeypatch.setenv("SMS_1_TEXT", "1")
    assert pager_main(["sms-received", "-c", str(path)]) == 1  # nothing paged to ack
    assert parses == []
    assert pager_main(["who", "-c", str(path), "--team", "network"]) == 0
    assert len(parses) == 1


def test_a_shifts_file_over_ten_megabytes_is_an_error_naming_the_file_and_the_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    row = f"{DAY},zhang\n"
    path = write_config(tmp_path, HEADER + row * ((10 << 20) // len(row.encode()) + 1))
    parsed = []
    monkeypatch.setattr(pager.rota, "_shifts", lambda *a: parsed.append(1) or [])
    rota = Rota(load(path))
    assert rota.errors["network"] == (f"{tmp_path / 'rota.csv'}: 10.0 MB, over the limit "
                                      "of 10 MB for a shifts file")
    assert parsed == [] and rota.on_call("network", NOON) is None


# ------------------------------------------------------------------ validation

@pytest.mark.dates
def test_validate_warns_of_gaps_overlaps_shared_names_and_teams_the_routing_expects(
        tmp_path: Path) -> None:
    now = dt.datetime.now(SHANGHAI).replace(minute=0, second=0, microsecond=0)
    at = lambda hours: f"{now + dt.timedelta(hours=hours):%Y-%m-%d %H:%M}"  # noqa: E731
    shifts = HEADER + "".join(f"{at(a)},{at(b)},{who}\n" for a, b, who in [
        (-1, 24, "zhang"), (20, 48, "li"),  # rows 2 and 3 overlap
        (72, 24 * 15, "wang")])             # nobody from +48 h to +72 h
    path = write_config(tmp_path, shifts)
    config = yaml.safe_load(path.read_text())
    config["people"]["zhang2"] = {"name": "张三", "channels": ["sms"]}
    path.write_text(yaml.safe_dump(config, allow_unicode=True))

    done = insmon_pager("validate", str(path))
    assert done.returncode == 0, done.stderr
    warnings = done.stderr
    assert "rows 2 and 3 overlap" in warnings
    assert f"team network: nobody on call from {at(48)} to {at(72)}" in warnings
    assert "team server_ops" not in warnings  # its rotation covers every hour
    assert "people zhang and zhang2 share the name '张三'" in warnings
    for team in ("database", "insurance_agency", "vendor", "settlement_center",
                 "leadership"):
        assert (f"alertmanager.yml routes to team {team!r}, which this config lacks: its "
                "pages go to fallback_team") in warnings
    assert not re.search(r"team '(network|server_ops|watchdog|drill|unrouted)'", warnings)

    # a shifts file naming 张三 is ambiguous now: an error naming both
    (tmp_path / "rota.csv").write_text(HEADER + f"{at(0)},{at(24)},张三\n")
    done = insmon_pager("validate", str(path))
    assert done.returncode == 2
    assert "row 2: '张三' is the name of zhang and zhang2: write the person's id" in done.stderr


@pytest.mark.dates
def test_a_rota_with_no_gap_and_no_overlap_has_no_warnings(tmp_path: Path) -> None:
    now = dt.datetime.now(SHANGHAI)
    day = lambda d: f"{(now + dt.timedelta(days=d)):%Y-%m-%d} 08:00"  # noqa: E731
    shifts = HEADER + "".join(f"{day(d)},{day(d + 1)},{['zhang', 'li'][d % 2]}\n"
                              for d in range(-1, 20))
    config = load(write_config(tmp_path, shifts))
    assert check(config, Rota(config), now) == []


# ------------------------------------------------------------------ gammu-smsd

def level_one() -> dict:
    began = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    labels = {"alertname": "SettlementPathDown", "grade": "I", "team": "network",
              "site": "一院"}
    group = {k: labels[k] for k in ("site", "alertname", "grade")}
    return {"version": "4", "groupKey": f"{{}}:{group}", "truncatedAlerts": 0,
            "status": "firing", "receiver": "network", "groupLabels": group,
            "commonLabels": labels, "commonAnnotations": {"summary_zh": "一院：医保专网中断"},
            "externalURL": "http://alertmanager:9093",
            "alerts": [{"status": "firing", "labels": labels, "annotations": {},
                        "startsAt": f"{began:%Y-%m-%dT%H:%M:%SZ}", "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "", "fingerprint": "f1"}]}


def network_on(tmp: Path, person: str) -> Path:
    """The config with `person` on call for network now."""
    now = dt.datetime.now(SHANGHAI)
    return write_config(tmp, HEADER + f"{now - dt.timedelta(hours=1):%Y-%m-%d %H:%M},"
                        f"{now + dt.timedelta(hours=2):%Y-%m-%d %H:%M},{person}\n",
                        fallback_team="network")


def acked_by(pager_process: PagerProcess) -> str | None:
    incidents = pager_process.incidents()
    return incidents[0]["acked_by"] if incidents else None


def test_an_sms_reply_through_run_on_receive_as_the_readme_writes_it_acknowledges(
        tmp_path: Path) -> None:
    path = network_on(tmp_path, "zhang")
    line = next(line for line in (ROOT / "examples" / "gammu-smsdrc").read_text().splitlines()
                if line.startswith("RunOnReceive = "))
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert line in readme.replace("`", "")  # the README and the example say the same
    command = line.removeprefix("RunOnReceive = ").replace(
        "/opt/insmon/.venv/bin/insmon", INSMON).replace("/etc/insmon/pager.yaml", str(path))
    phone = Phone(tmp_path / "gammu", command, wrap=False)
    process = PagerProcess(path)
    try:
        assert process.post("/network", level_one())[0] == 200
        wait_for(lambda: phone.to("13800000001"), 30, "the SMS to 张三")
        phone.reply("+8613800000001", "1")
        wait_for(lambda: acked_by(process) == "zhang", 30,
                 f"the reply to acknowledge (gammu-smsd's log: {phone.dir / 'smsd.log'})")
        wait_for(lambda: "Process finished successfully" in (phone.dir / "smsd.log").read_text(),
                 10, "gammu-smsd to log that RunOnReceive succeeded")
    finally:
        process.stop()
        phone.close()


def test_sms_received_reads_the_inbox_files_when_the_variables_are_absent(
        tmp_path: Path) -> None:
    path = network_on(tmp_path, "li")
    inbox, outbox = tmp_path / "gammu" / "inbox", tmp_path / "gammu" / "outbox"
    inbox.mkdir(parents=True)
    outbox.mkdir()
    (tmp_path / "gammu" / "smsdrc").write_text(
        f"[gammu]\nmodel = dummy\n\n[smsd]\nservice = files\ninboxpath = {inbox}/\n"
        f"outboxpath = {outbox}/\n")
    process = PagerProcess(path)
    try:
        status, body = process.post("/network", level_one())
        assert status == 200, body
        incident = json.loads(body)["incident"]
        name = "IN20261127_101500_00_+8613800000002_00.txt"
        (inbox / name).write_bytes(f"ACK {incident}".encode("utf-16"))  # InboxFormat unicode
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMS_")}
        done = insmon_pager("sms-received", "-c", str(path), name, env=env)
        assert done.returncode == 0, done.stderr
        assert acked_by(process) == "li"
    finally:
        process.stop()


# ------------------------------------------------------------------ issue 31

def xlsx(path: Path, header: list[str], rows: list[list[object]],
         merge: str | None = None) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    book.active.append(header)
    for row in rows:
        book.active.append(row)
    if merge:
        book.active.merge_cells(merge)
    book.save(path)


def test_rota_times_are_beijing_time_unless_the_file_says_otherwise(tmp_path: Path) -> None:
    """An XLSX written in UTC (its header says so) paged 李四 in 张三's shift: its times
    were read as Beijing time."""
    path = write_config(tmp_path, None)
    config = yaml.safe_load(path.read_text())
    config["teams"]["network"]["shifts_file"] = "rota.xlsx"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    utc = [[dt.datetime(2026, 11, 23, 0, 30), dt.datetime(2026, 11, 24, 0, 30), "zhang"],
           [dt.datetime(2026, 11, 24, 0, 30), dt.datetime(2026, 11, 25, 0, 30), "li"]]
    xlsx(tmp_path / "rota.xlsx", ["开始 (UTC)", "结束 (UTC)", "值班人"], utc)
    who = insmon_pager("who", "-c", str(path), "--team", "network", "--at", "2026-11-24 07:00")
    assert who.returncode == 0, who.stderr
    assert "张三" in who.stdout  # 07:00 Beijing is 23:00 UTC: 张三's shift until 08:30
    rota = Rota(load(path))
    at = lambda text: dt.datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)  # noqa: E731
    assert rota.on_call("network", at("2026-11-24 08:29")) == "zhang"
    assert rota.on_call("network", at("2026-11-24 08:30")) == "li"
    # the same times with no zone are Beijing time; a zone nobody knows is an error
    xlsx(tmp_path / "rota.xlsx", ["start", "end (Asia/Shanghai)", "person"], utc)
    rota = Rota(load(path))
    assert rota.on_call("network", at("2026-11-24 07:00")) == "li"
    xlsx(tmp_path / "rota.xlsx", ["开始 (火星时间)", "结束", "值班人"], utc)
    assert "row 1, column '开始 (火星时间)': '火星时间' is no time zone" in Rota(
        load(path)).errors["network"]
    # a CSV whose times carry their offset
    (tmp_path / "rota.csv").write_text(HEADER + "2026-11-23T00:30:00Z,2026-11-24T00:30+00:00,"
                                       "zhang\n")
    config["teams"]["network"]["shifts_file"] = "rota.csv"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    assert Rota(load(path)).on_call("network", at("2026-11-24 08:00")) == "zhang"


def test_a_merged_name_cell_is_the_person_of_every_row_it_spans(tmp_path: Path) -> None:
    """张三's name merged over his two shifts rejected the whole file (the second row's
    cell reads empty)."""
    path = write_config(tmp_path, None)
    config = yaml.safe_load(path.read_text())
    config["teams"]["network"]["shifts_file"] = "rota.xlsx"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    xlsx(tmp_path / "rota.xlsx", ["开始", "结束", "值班人"],
         [["2026-11-23 08:30", "2026-11-23 20:30", "张三"],
          ["2026-11-23 20:30", "2026-11-24 08:30", None],
          ["2026-11-24 08:30", "2026-11-25 08:30", "李四"]], merge="C2:C3")
    rota = Rota(load(path))
    assert rota.errors == {}
    at = lambda text: dt.datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)  # noqa: E731
    assert rota.on_call("network", at("2026-11-24 02:00")) == "zhang"
    assert rota.on_call("network", at("2026-11-24 09:00")) == "li"


def test_validate_fails_for_a_person_of_a_rota_no_channel_reaches_and_shows_the_week(
        tmp_path: Path) -> None:
    """张三 on call with SMS only and no mobile number: validate said OK, and his pages
    reached nobody."""
    now = dt.datetime.now(SHANGHAI).replace(second=0, microsecond=0)
    at = lambda hours: f"{now + dt.timedelta(hours=hours):%Y-%m-%d %H:%M}"  # noqa: E731
    path = write_config(tmp_path, HEADER + f"{at(-1)},{at(30)},zhang\n{at(30)},{at(24 * 9)},"
                        "li\n")
    config = yaml.safe_load(path.read_text())
    del config["people"]["zhang"]["mobile"]
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    done = insmon_pager("validate", str(path))
    assert done.returncode == 2
    assert ("teams.network: 张三 (zhang), on call, has no channel that can reach them "
            "(people.zhang.channels: sms;") in done.stderr

    config["people"]["zhang"]["mobile"] = "13800000001"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    done = insmon_pager("validate", str(path))
    assert done.returncode == 0, done.stderr
    # the next 7 days' on-call, at each change, so that a shifted rota shows
    week = done.stdout.split("值班 on call, the next 7 days", 1)[1]
    moment = lambda hours: f"{now + dt.timedelta(hours=hours):%m-%d %H:%M}"  # noqa: E731
    first = r"\d\d-\d\d \d\d:\d\d"  # validate's own now
    assert re.search(rf"network 网络排查组: {first} 张三 \(zhang\); {moment(30)} 李四 \(li\)\n",
                     week), week
    assert re.search(rf"server_ops 服务器运维组: {first} 赵六 \(zhao\)\n", week), week
