"""The settlement check against the lab's platform gateway (ops/lab/gateway.py), which
checks each message, signature and URL as the platform and the provincial gateways do
and answers with the faults the test switches on: on loopback for the answers and the
dialects, and through the namespace lab's two real lines for the per-link verdict (root)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from exporters.prometheus import exposition
from monitor.runner import build_checks, run_check
from monitor.store import ResultStore
from ops.lab import HERE, Lab
from probes import settlement
from probes.lib import fsi
from tests.certs import Authority
from tests.conftest import INSMON, free_port, render, value, wait_for
from vocabulary import SHANGHAI

SECRET = "gateway-secret-8c1e"
KEY = "hospital-key-1"
LOOPBACK_LINKS = [{"name": "line-a", "role": "primary", "source": "127.0.0.2"},
                  {"name": "line-b", "role": "backup", "source": "127.0.0.3"}]


class Platform:
    """The lab's platform gateway on loopback, set up through its control file."""

    def __init__(self, control: Path, tls: tuple[Path, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.control = control
        self.setup: dict = {}
        control.write_text("{}")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "gateway.py"), "127.0.0.1",
                                      str(self.port), str(control), *map(str, tls)],
                                     stdin=subprocess.DEVNULL, env=env)  # env: a moved clock
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.url = self.base + "/fsi/api/rsfComIfsService/callService"
        self.log = Path(str(control) + ".log")
        wait_for(self._up, 15, "the platform to listen")

    def _up(self) -> bool:
        import socket

        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def set(self, **setup: object) -> None:
        self.setup |= setup
        self.control.write_text(json.dumps(self.setup))

    def received(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def infnos(self) -> list[str]:
        return [r["infno"] for r in self.received()]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """The platform, and the probe, on one Beijing day, the test's: a test begun seconds
    before midnight (make test-dates, or CI at 16:00 UTC) would cross it halfway and see
    the platform end the sign-in (what the probe then does is tested on its own)."""
    today = settlement.beijing_now()
    monkeypatch.setattr(settlement, "beijing_now", lambda: today)
    server = Platform(tmp_path / "control.json")
    server.set(today=f"{today:%Y-%m-%d}")
    yield server
    server.close()


def config(url: str, state: Path, **extra: object) -> settlement.Config:
    """A check asking at the same rate round the clock (unless `quiet_interval` says
    otherwise), whenever the test runs."""
    return settlement.Config(**{
        "name": "settle", "kind": "settlement", "url": url, "interval": 10,
        "quiet_interval": 10, "timeout": 3,
        "fixmedins_code": "H32010200001", "fixmedins_name": "某某市第一人民医院",
        "mdtrtarea_admvs": "320102", "opter": "001", "opter_name": "收费员",
        "state_file": state / "sessions.json", **extra})


def signed(dialect: str, secret: str = SECRET, key: str = KEY) -> dict:
    return {"dialect": dialect, "key": key, "secret": {"value": secret}}


def checked(cfg: settlement.Config):  # -> (Check, ResultStore)
    """The check as insmon runs it, and its store."""
    [check] = build_checks([cfg])
    store = ResultStore()
    store.configure([check], "test")
    return check, store


def failures(series: str, reason: str, link: str = "default") -> float:
    return value(series, f'insmon_settlement_failures_total{{check="settle",link="{link}",'
                         f'reason="{reason}"}}')


# ------------------------------------------------------------------ the day's session

@pytest.mark.dates
async def test_the_first_run_signs_in_and_later_runs_reuse_the_sign_no(
        platform: Platform, tmp_path: Path) -> None:
    status, series = await render(config(platform.url, tmp_path), "insmon_settlement_")
    assert status.startswith("# ok: 1901 settles: default (primary) infcode 0 in ")
    assert status.rstrip().endswith(", signed in")
    assert value(series, 'insmon_settlement_possible{check="settle"}') == 1
    assert value(series, 'insmon_settlement_sign_ins_total{check="settle",link="default"}') == 1
    # a new probe on the same state file: insmon restarted, the same day
    status, series = await render(config(platform.url, tmp_path), "insmon_settlement_")
    assert status.startswith("# ok: 1901 settles") and "signed in" not in status
    sign_in, first, second = platform.received()
    assert [sign_in["infno"], first["infno"], second["infno"]] == ["9001", "1901", "1901"]
    assert first["sign_no"] == second["sign_no"] != ""
    assert len({r["msgid"] for r in platform.received()}) == 3
    assert all(len(r["msgid"]) == 30 and r["msgid"].startswith("H32010200001")
               for r in platform.received())


async def test_a_damaged_state_file_costs_one_sign_in(platform: Platform,
                                                      tmp_path: Path) -> None:
    (tmp_path / "sessions.json").write_text('{"links": {"default": [1, 2')  # torn write
    status, _ = await render(config(platform.url, tmp_path), "insmon_settlement_")
    assert status.startswith("# ok: 1901 settles") and status.rstrip().endswith(", signed in")
    assert (tmp_path / "sessions.json").stat().st_mode & 0o077 == 0  # insmon's only
    status, _ = await render(config(platform.url, tmp_path), "insmon_settlement_")
    assert platform.infnos() == ["9001", "1901", "1901"]


@pytest.mark.root
def test_root_writing_the_sign_ins_leaves_them_insmons(tmp_path: Path) -> None:
    """`insmon settlement try` run by root beside the running check (user insmon): the
    sign-ins file it rewrites stays the check's, or the check could keep no sign-in."""
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)  # the service user's directory (here: nobody's)
    sessions = settlement.Sessions(state / "sessions.json")
    session = settlement.Session(sign_no="1001", day=datetime.now(SHANGHAI).date().isoformat(),
                                 fixmedins_code="H32010200001")
    sessions.put("001", session)  # a new file: the directory's owner
    assert (state / "sessions.json").stat().st_uid == 65534
    os.chown(state / "sessions.json", 1234, 1234)  # as the running check left it
    sessions.put("002", session)
    saved = (state / "sessions.json").stat()
    assert (saved.st_uid, saved.st_gid, saved.st_mode & 0o777) == (1234, 1234, 0o600)
    sessions.put("003", session)
    assert set(json.loads((state / "sessions.json").read_text())["operators"]) == {
        "001", "002", "003"}


async def test_a_refused_session_is_signed_in_again_within_the_run(
        platform: Platform, tmp_path: Path) -> None:
    await render(config(platform.url, tmp_path), "insmon_settlement_")
    platform.set(epoch=2)  # the platform forgot every sign-in
    status, series = await render(config(platform.url, tmp_path), "insmon_settlement_")
    assert status.startswith("# ok: 1901 settles"), status
    assert "signed in again (the platform had refused the sign-in)" in status
    assert value(series, 'insmon_settlement_sign_ins_total{check="settle",link="default"}') == 1
    assert platform.infnos() == ["9001", "1901", "1901", "9001", "1901"]
    refused = platform.received()[2]
    assert refused["refused"] is None  # the platform, not the gateway, refused it
    # and the new sign_no is the one kept
    assert json.loads((tmp_path / "sessions.json").read_text())["operators"]["001"][
        "sign_no"] == platform.received()[4]["sign_no"]


@pytest.mark.dates
async def test_a_new_day_in_beijing_signs_in_before_the_query(
        platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    await render(config(platform.url, tmp_path), "insmon_settlement_")
    tomorrow = settlement.beijing_now() + timedelta(days=1)
    monkeypatch.setattr(settlement, "beijing_now", lambda: tomorrow)
    platform.set(today=f"{tomorrow:%Y-%m-%d}")
    status, _ = await render(config(platform.url, tmp_path), "insmon_settlement_")
    assert status.startswith("# ok: 1901 settles") and status.rstrip().endswith(", signed in")
    assert platform.infnos() == ["9001", "1901", "9001", "1901"]  # no refusal needed first
    yesterday, today = platform.received()[1]["sign_no"], platform.received()[3]["sign_no"]
    assert yesterday != today


async def test_another_operator_signs_in_for_itself(platform: Platform,
                                                    tmp_path: Path) -> None:
    await render(config(platform.url, tmp_path), "insmon_settlement_")
    await render(config(platform.url, tmp_path, opter="002"), "insmon_settlement_")
    assert platform.infnos() == ["9001", "1901", "9001", "1901"]
    assert [r["opter"] for r in platform.received()] == ["001", "001", "002", "002"]


async def test_sign_out_when_insmon_stops_ends_the_session(platform: Platform,
                                                          tmp_path: Path) -> None:
    cfg = config(platform.base + "/hsa/hgs/{infno}", tmp_path, sign_out=True)
    platform.set(style="infno")
    check, store = checked(cfg)
    record = await run_check(check, store)
    assert record is not None and record.status == "ok", record
    await check.probe.close()
    sign_in, query, sign_out = platform.received()
    assert (sign_out["infno"], sign_out["path"]) == ("9002", "/hsa/hgs/9002")
    assert sign_in["sign_no"] == "" and sign_out["sign_no"] == query["sign_no"] != ""
    assert sign_out["refused"] is None
    assert json.loads((tmp_path / "sessions.json").read_text())["operators"] == {}
    assert len({r["msgid"] for r in platform.received()}) == 3


@pytest.mark.dates
async def test_msgids_are_unique_across_links_and_runs(platform: Platform,
                                                       tmp_path: Path) -> None:
    cfg = config(platform.url, tmp_path, links=LOOPBACK_LINKS, sign_out=True)
    check, store = checked(cfg)
    for _ in range(3):
        await run_check(check, store)
    await check.probe.close()
    received = platform.received()
    # one operator: one sign-in and one sign-out for both links, a query per link per run
    assert sorted(r["infno"] for r in received) == ["1901"] * 6 + ["9001", "9002"]
    assert {r["client"] for r in received} == {"127.0.0.2", "127.0.0.3"}
    assert len({r["msgid"] for r in received}) == len(received)


async def test_a_sign_in_the_state_file_cannot_keep_still_settles(
        platform: Platform, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    cfg = config(platform.url, tmp_path, state_file=blocker / "sessions.json")
    check, store = checked(cfg)
    for _ in range(2):
        record = await run_check(check, store)
        assert record is not None and record.status == "ok"
    assert platform.infnos() == ["9001", "1901", "1901"]  # kept in memory meanwhile


# ------------------------------------------------------------------ dialects and URLs

@pytest.mark.parametrize("dialect", ["none", "x-tif", "csb", "x-ca"])
async def test_each_dialect_settles_and_a_wrong_secret_is_refused_in_its_words(
        platform: Platform, tmp_path: Path, dialect: str) -> None:
    gateway = signed(dialect) if dialect != "none" else {}
    platform.set(**({"dialect": dialect, "key": KEY, "secret": SECRET} if gateway else {}))
    status, _ = await render(config(platform.url, tmp_path, gateway=gateway),
                             "insmon_settlement_")
    assert status.startswith("# ok: 1901 settles"), status
    if dialect == "none":
        return
    words = {"x-tif": "HTTP 401 code 401 签名校验失败", "csb": "HTTP 200 code 401 签名不一致!",
             "x-ca": "HTTP 400 Invalid Signature, Server StringToSign:`POST#"}[dialect]
    (tmp_path / "sessions.json").unlink()
    status, series = await render(
        config(platform.url, tmp_path, gateway=signed(dialect, secret="stolen-secret-00")),
        "insmon_settlement_")
    assert status.startswith("# failed: 1901 CANNOT settle: default (primary) sign-in "
                             f"(9001): the gateway refused the message: {words}"), status
    assert failures(series, "gateway_rejected") == 1
    assert "stolen-secret-00" not in status + series


@pytest.mark.parametrize(("client", "words"), [
    ({}, "缺少服务网关的请求头!"),
    (signed("csb", key="someone-else"), "非法用户!"),
    (signed("csb", secret="wrong"), "签名不一致!"),
])
async def test_a_csb_gateway_refusal_is_read_whatever_the_http_status(
        platform: Platform, tmp_path: Path, client: dict, words: str) -> None:
    platform.set(dialect="csb", key=KEY, secret=SECRET)
    status, series = await render(config(platform.url, tmp_path, gateway=client),
                                  "insmon_settlement_")
    assert f"the gateway refused the message: HTTP 200 code 401 {words}" in status
    assert failures(series, "gateway_rejected") == 1


def test_a_csb_timestamp_off_by_an_hour_is_refused(platform: Platform) -> None:
    platform.set(dialect="csb", key=KEY, secret=SECRET)
    gateway = fsi.Gateway(**signed("csb"))
    headers = gateway.sign(platform.url, "9001", b"{}", now=time.time() - 3600).headers
    answer = fsi.exchange(platform.url, headers, b"{}", time.monotonic() + 5)
    assert (answer.reason, answer.message) == ("gateway_rejected", "签名时间戳超时!")


def test_the_x_tif_and_csb_signatures_as_the_gateways_compute_them() -> None:
    """Fixed inputs, signatures computed by hand from the dialects' definitions."""
    import base64
    import hashlib
    import hmac

    body = b'{"infno":"1901"}'
    tif = fsi.Gateway(**signed("x-tif")).sign("http://h/fsi", "1901", body, now=1764230400.5,
                                              nonce="n1")
    assert tif.headers["x-tif-timestamp"] == "1764230400"
    assert tif.string == f"1764230400{SECRET}n11764230400"
    assert tif.headers["x-tif-signature"] == hashlib.sha256(tif.string.encode()).hexdigest()
    csb = fsi.Gateway(**signed("csb")).sign("http://h/CSB/hsa-fsi-1901", "1901", body,
                                            now=1764230400.5, nonce="n1")
    assert csb.headers["_api_name"] == "hsa-fsi-1901"
    assert csb.headers["_api_timestamp"] == "1764230400500"
    assert csb.string == (f"_api_access_key={KEY}&_api_name=hsa-fsi-1901&_api_nonce=n1&"
                          "_api_timestamp=1764230400500&_api_version=1.0.0")
    assert csb.headers["_api_signature"] == base64.b64encode(
        hmac.new(SECRET.encode(), csb.string.encode(), "sha1").digest()).decode()


def test_sm3_from_openssl_and_from_gmssl_agree() -> None:
    """SM3's standard test vector ("abc"), and HMAC-SM3 from both sources for short and
    long keys: a host without OpenSSL's SM3 signs x-ca messages alike."""
    import hashlib

    from probes.lib import dialects

    assert hashlib.new("sm3", b"abc").hexdigest() == (
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0")
    for key in (b"k", SECRET.encode(), bytes(range(100))):
        for message in (b"", b"POST\napplication/json\n", "结算".encode() * 50):
            assert dialects._sm3_gmssl(key, message) == dialects._sm3_openssl(key, message)


@pytest.mark.parametrize(("style", "url", "extra", "paths"), [
    ("body", "/fsi/api/rsfComIfsService/callService", {},
     ["/fsi/api/rsfComIfsService/callService"] * 2),
    ("infno", "/hsa/hgs/{infno}", {}, ["/hsa/hgs/9001", "/hsa/hgs/1901"]),
    ("csb", "/CSB/hsa-fsi-{infno}", {"gateway": signed("csb")},
     ["/CSB/hsa-fsi-9001", "/CSB/hsa-fsi-1901"]),
    ("services", "/unused", {"paths": {
        "9001": "/signInSignOutService/signIn", "9002": "/signInSignOutService/signOut",
        "1901": "/catalogqueryservice/queryDataDic"}},
     ["/signInSignOutService/signIn", "/catalogqueryservice/queryDataDic"]),
])
async def test_each_url_style_reaches_each_transactions_service(
        platform: Platform, tmp_path: Path, style: str, url: str, extra: dict,
        paths: list[str]) -> None:
    platform.set(style=style, **({"dialect": "csb", "key": KEY, "secret": SECRET}
                                 if style == "csb" else {}))
    cfg = config(platform.base + url, tmp_path, sign_out=True, **extra)
    check, store = checked(cfg)
    record = await run_check(check, store)
    assert record is not None and record.status == "ok", record
    await check.probe.close()
    assert [r["path"] for r in platform.received()][:2] == paths
    sign_out = platform.received()[2]
    assert sign_out["infno"] == "9002" and sign_out["refused"] is None, sign_out


async def test_a_transaction_sent_to_another_services_url_is_no_success(
        platform: Platform, tmp_path: Path) -> None:
    platform.set(style="services")
    status, series = await render(config(platform.base + "/signInSignOutService/signIn",
                                         tmp_path), "insmon_settlement_")
    assert "1901 CANNOT settle" in status
    assert "the gateway refused the message: HTTP 404 code 404 no service at" in status
    assert failures(series, "gateway_rejected") == 1


# ------------------------------------------------------------------ HTTPS

@pytest.mark.dates
async def test_https_with_the_agencys_ca_and_a_client_certificate(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    cert, key = ca.issue("gateway", ip="127.0.0.1")
    client_cert, client_key = ca.issue("hospital", client=True)
    server = Platform(tmp_path / "control.json", (cert, key, ca.file))
    try:
        tls = {"ca_file": ca.file, "cert_file": client_cert, "key_file": client_key}
        status, _ = await render(config(server.url, tmp_path, tls=tls), "insmon_settlement_")
        assert status.startswith("# ok: 1901 settles"), status
        # without the agency's CA the gateway's certificate is not trusted
        status, series = await render(config(server.url, tmp_path), "insmon_settlement_")
        assert "TLS with 127.0.0.1:" in status and failures(series, "tls") == 1
        # without the client certificate the gateway ends the handshake
        status, series = await render(config(server.url, tmp_path, tls={"ca_file": ca.file}),
                                      "insmon_settlement_")
        assert "CANNOT settle" in status
        assert failures(series, "tls") + failures(series, "other") == 1, status
    finally:
        server.close()


# ------------------------------------------------------------------ faults

@pytest.mark.parametrize(("fault", "reason", "detail"), [
    ("platform_error", "platform_error", "sign-in (9001): infcode -1: 系统繁忙，请稍后再试"),
    ("gateway_reject", "gateway_rejected",
     "sign-in (9001): the gateway refused the message: HTTP 403"),
    ("not_json", "bad_answer", "sign-in (9001): HTTP 200 without the platform's JSON"),
    ("stall", "timeout", "sign-in (9001): no answer from 127.0.0.1:"),
    # every byte within its read's timeout, the whole answer not within the check's
    ("trickle", "timeout", "sign-in (9001): no answer from 127.0.0.1:"),
])
async def test_each_fault_is_named(platform: Platform, tmp_path: Path, fault: str,
                                   reason: str, detail: str) -> None:
    platform.set(fault=fault)
    status, series = await render(config(platform.url, tmp_path), "insmon_settlement_")
    assert status.startswith("# failed: 1901 CANNOT settle: default (primary) " + detail)
    assert value(series, 'insmon_settlement_possible{check="settle"}') == 0
    assert failures(series, reason) == 1


async def test_a_closed_port_is_refused(tmp_path: Path) -> None:
    status, series = await render(config(f"http://127.0.0.1:{free_port()}/fsi", tmp_path),
                                  "insmon_settlement_")
    assert "refused the connection" in status and failures(series, "refused") == 1


async def test_repeated_platform_errors_open_the_circuit(platform: Platform,
                                                         tmp_path: Path) -> None:
    from exporters.prometheus import exposition

    platform.set(fault="platform_error")
    store = ResultStore()
    [check] = build_checks([config(platform.url, tmp_path, breaker_after=2)])
    store.configure([check], "test")
    for _ in range(4):
        await run_check(check, store)
    assert len(platform.received()) == 2  # the agency's system is left alone after two
    record = await run_check(check, store)
    assert record is not None and "paused after repeated platform errors" in record.detail
    series = exposition(store.snapshot()).decode()
    assert failures(series, "circuit_open") == 3
    assert value(series, 'insmon_settlement_circuit_open{check="settle",link="default"}') == 1


def test_a_sign_in_as_each_runs_transaction_is_refused(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="the sign-in is the check's own"):
        config("http://127.0.0.1:1/fsi", tmp_path, infno="9001")
    with pytest.raises(ValidationError, match="infno 5301 needs its `input`"):
        config("http://127.0.0.1:1/fsi", tmp_path, infno="5301")
    with pytest.raises(ValidationError, match="the csb dialect needs key and secret"):
        config("http://127.0.0.1:1/fsi", tmp_path, gateway={"dialect": "csb"})


# ------------------------------------------------------------------ a good citizen of the platform

class Clock:
    """The check's Beijing clock, set and moved by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, moment: str) -> None:
        self.set(moment)
        monkeypatch.setattr(settlement, "beijing_now", lambda: self.now)

    def set(self, moment: str) -> None:
        self.now = datetime.fromisoformat(moment).replace(tzinfo=SHANGHAI)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def test_the_rate_follows_the_working_calendar(
        platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transaction each run in business hours of working days; nights, weekends and
    holidays one per quiet_interval, the runs between saying the last result again."""
    clock = Clock(monkeypatch, "2024-10-01T10:00:00")  # National Day: a Tuesday off
    check, store = checked(config(platform.url, tmp_path, quiet_interval="5m"))

    async def run(expected_queries: int) -> str:
        record = await run_check(check, store)
        assert record is not None and record.status == "ok", record
        assert platform.infnos().count("1901") == expected_queries, record.detail
        return record.detail

    await run(1)
    clock.advance(10)
    held = await run(1)
    assert held.endswith("[measured 10:00:00; outside business hours one transaction "
                         "every 300s]"), held
    series = exposition(store.snapshot()).decode()
    assert value(series, 'insmon_settlement_sign_ins_total{check="settle",'
                         'link="default"}') == 1  # said again, not counted again
    assert value(series, 'insmon_settlement_last_transaction_timestamp_seconds'
                         '{check="settle"}') == datetime.fromisoformat(
                             "2024-10-01T10:00:00+08:00").timestamp()
    clock.advance(290)
    await run(2)
    clock.set("2024-10-08T10:00:00")  # a working Tuesday
    await run(3)
    clock.advance(10)
    await run(4)
    clock.set("2024-09-29T17:59:00")  # a Sunday made a working day (调休)
    await run(5)
    clock.advance(10)
    await run(6)
    clock.set("2024-10-08T18:00:00")  # a working day's evening
    await run(7)
    clock.advance(10)
    await run(7)
    # the site's own calendar file moves a day
    dates = tmp_path / "calendar.yaml"
    dates.write_text("holidays: [2024-10-09]\nknown_until: 2024-12-31\n")
    check, store = checked(config(platform.url, tmp_path, quiet_interval="5m",
                                  calendar_file=dates))
    clock.set("2024-10-09T10:00:00")
    await run(8)
    clock.advance(10)
    await run(8)


async def test_a_run_abandoned_at_its_deadline_leaves_no_older_result_to_repeat(
        platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Evidence before claims: outside business hours a run says the last result again
    only while no later transaction was tried. One the runner abandoned at its deadline
    (a stalled gateway, a hung DNS lookup) is newer than that result: the next run asks."""
    import asyncio

    clock = Clock(monkeypatch, "2024-10-08T17:58:00")  # a working Tuesday, near evening
    probe = settlement.Probe(config(platform.url, tmp_path, quiet_interval="5m"))
    assert (await probe.run()).status == "ok"
    platform.set(fault="stall")
    clock.advance(60)  # 17:59, business hours: a transaction, which stalls
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(probe.run(), 0.5)  # the runner's deadline
    platform.set(fault="platform_error")
    clock.advance(60)  # 18:00: outside business hours, 2 minutes after the last success
    result = await probe.run()
    assert (result.status, "[measured" in result.detail) == ("failed", False), result.detail


def test_the_quiet_rate_is_bounded_and_comes_on_a_run(tmp_path: Path) -> None:
    """Never quiet while blind: a night between transactions that says 'ok' for longer
    than 15 minutes is refused; and the transactions come on the check's runs, so a
    quiet_interval that is no whole number of intervals would not be the rate validate
    prints (2m and 5m: every 4 minutes)."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"quiet_interval \(3600s\) is over 15 minutes"):
        config("http://127.0.0.1:1/fsi", tmp_path, interval="60s", quiet_interval="1h")
    with pytest.raises(ValidationError, match=r"quiet_interval \(300s\) is no whole number "
                                              r"of intervals \(120s\)"):
        config("http://127.0.0.1:1/fsi", tmp_path, interval="2m", quiet_interval="5m")
    assert config("http://127.0.0.1:1/fsi", tmp_path, interval="45s",
                  quiet_interval="15m").quiet_interval == 900


def test_validate_prints_the_requests_per_link_per_day(tmp_path: Path) -> None:
    import yaml

    check = {"name": "settle", "kind": "settlement", "url": "http://10.88.1.20:7001/fsi",
             "fixmedins_code": "H32010200001", "fixmedins_name": "实验医院",
             "mdtrtarea_admvs": "320102", "opter": "001", "opter_name": "收费员",
             "links": [{"name": "private-line", "role": "primary", "interface": "wg0"},
                       {"name": "4g-backup", "role": "backup", "interface": "wwan0"}]}
    config_file = tmp_path / "insmon.yaml"
    config_file.write_text(yaml.safe_dump({"checks": [check]}, allow_unicode=True))
    done = subprocess.run([INSMON, "validate", str(config_file)], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    # 10 h of a working day at 60 s, the other 14 h at 5 min; a day off at 5 min
    assert done.stdout.splitlines()[1] == (
        "  settle: per link 768 requests (1901) on a working day (600 every 60s in business "
        "hours 08:00-18:00, 168 every 300s outside), 288 on a day off; a sign-in (9001) a "
        "day per operator (1); with 2 links: 1,537 requests on a working day")
    cfg = config("http://127.0.0.1:1/fsi", tmp_path, interval="30s", quiet_interval="10m",
                 business_hours="07:30-20:00")
    assert cfg.queries_a_day(True) == (1500, 69) and cfg.queries_a_day(False) == (0, 144)


async def test_each_sign_in_names_its_links_interface_and_operator(
        platform: Platform, tmp_path: Path) -> None:
    """A link with an operator of its own signs in as it; the 9001 carries the address
    the link's traffic leaves from and a MAC of this host (loopback has none: the first
    card's), unless the config names them."""
    links = [{"name": "line-a", "role": "primary", "source": "127.0.0.2", "opter": "a01",
              "opter_name": "监测甲"},
             {"name": "line-b", "role": "backup", "source": "127.0.0.3", "opter": "b01",
              "mac": "aa:bb:cc:dd:ee:0f", "ip": "10.88.1.7"}]
    status, series = await render(config(platform.url, tmp_path, links=links),
                                  "insmon_settlement_")
    assert status.startswith("# ok: 1901 settles"), status
    received = {(r["client"], r["infno"]): r for r in platform.received()}
    line_a, line_b = received["127.0.0.2", "9001"], received["127.0.0.3", "9001"]
    macs = {p.read_text().strip() for p in Path("/sys/class/net").glob("*/address")}
    assert line_a["ip"] == "127.0.0.2" and line_a["mac"] in macs - {"00:00:00:00:00:00"}
    assert (line_b["ip"], line_b["mac"]) == ("10.88.1.7", "aa:bb:cc:dd:ee:0f")
    assert [received["127.0.0.2", "1901"]["opter"], received["127.0.0.3", "1901"]["opter"]] \
        == ["a01", "b01"]
    for link in ("line-a", "line-b"):
        assert value(series, f'insmon_settlement_sign_ins_total{{check="settle",'
                             f'link="{link}"}}') == 1


def test_a_tunnels_sign_in_names_a_card_that_is_up(tmp_path: Path) -> None:
    """A tunnel (or loopback) has no MAC: the 9001 names the host's first card that is up
    with a carrier, never a device that carries nothing (an ifb or a card unplugged,
    numbered before it), and the first with a MAC only when none is up."""
    from probes.lib import net

    def card(name: str, index: int, mac: str, flags: str, carrier: str) -> None:
        (tmp_path / name).mkdir()
        for key, text in (("ifindex", str(index)), ("address", mac), ("flags", flags),
                          ("carrier", carrier)):
            (tmp_path / name / key).write_text(text + "\n")

    card("lo", 1, "00:00:00:00:00:00", "0x9", "1")
    card("ifb0", 2, "5e:05:a4:5a:0b:ad", "0x82", "0")  # down: carries nothing
    card("eno1", 3, "3c:ec:ef:00:00:01", "0x1003", "0")  # up, its cable out
    card("eno2", 4, "3c:ec:ef:00:00:02", "0x1003", "1")
    assert net.first_mac(tmp_path) == "3c:ec:ef:00:00:02"
    (tmp_path / "eno2" / "carrier").write_text("0\n")
    assert net.first_mac(tmp_path) == "5e:05:a4:5a:0b:ad"


async def test_links_of_one_operator_never_knock_each_other_out(
        platform: Platform, tmp_path: Path) -> None:
    """A gateway that ends an operator's earlier sign-in at each new one: the two links
    share one sign-in; when another client ends it, one sign-in more, never a loop."""
    platform.set(single_session=True)
    check, store = checked(config(platform.url, tmp_path, links=LOOPBACK_LINKS))
    for _ in range(3):
        record = await run_check(check, store)
        assert record is not None and record.status == "ok", record
    assert platform.infnos().count("9001") == 1
    assert len({r["sign_no"] for r in platform.received() if r["infno"] == "1901"}) == 1
    # another client signs in as the same operator (insmon settlement try, elsewhere)
    other = settlement.Probe(config(platform.url, tmp_path / "elsewhere"))
    assert other.transact(other.cfg.links[0], time.monotonic() + 3).answer.reason is None
    for _ in range(3):
        record = await run_check(check, store)
        assert record is not None and record.status == "ok", record
    assert platform.infnos().count("9001") == 3  # ours, the other client's, ours again
    assert len({r["sign_no"] for r in platform.received()[-6:]}) == 1  # the last 3 runs


async def test_sign_ins_stop_at_max_sign_ins_when_another_client_keeps_ending_them(
        platform: Platform, tmp_path: Path) -> None:
    platform.set(single_session=True)
    check, store = checked(config(platform.url, tmp_path, max_sign_ins=2))
    the_his = settlement.Probe(config(platform.url, tmp_path / "his"))  # as operator 001 too
    details = []
    for _ in range(4):
        record = await run_check(check, store)
        assert record is not None
        details.append(record.detail)
        the_his.sessions.put("001", None)
        assert the_his.transact(the_his.cfg.links[0],
                                time.monotonic() + 3).answer.reason is None
    assert "signed in again" in details[1]
    for detail in details[2:]:
        assert "the platform ended operator 001's sign-in again after 2 sign-ins today " \
               "(max_sign_ins)" in detail and "no more sign-ins today" in detail, detail
    series = exposition(store.snapshot()).decode()
    assert value(series, 'insmon_settlement_sign_ins_total{check="settle",'
                         'link="default"}') == 2


async def test_msgids_come_from_the_sequence_the_his_leaves_clear(
        platform: Platform, tmp_path: Path) -> None:
    from pydantic import ValidationError

    await render(config(platform.url, tmp_path), "insmon_settlement_")
    assert all(9000 <= int(r["msgid"][-4:]) <= 9999 for r in platform.received())
    (tmp_path / "sessions.json").unlink()
    await render(config(platform.url, tmp_path, msgid_sequence="0100-0109"),
                 "insmon_settlement_")
    assert all(100 <= int(r["msgid"][-4:]) <= 109 for r in platform.received()[2:])
    for wrong in ("9999-9000", "9000-9004", "9000"):
        with pytest.raises(ValidationError, match="msgid_sequence"):
            config(platform.url, tmp_path, msgid_sequence=wrong)


# ------------------------------------------------------------------ real processes

def test_one_sign_in_per_operator_per_day_across_a_kill_of_insmon(platform: Platform,
                                                                  tmp_path: Path) -> None:
    """insmon runs the check through two links of one operator, is killed (-9) and
    started again: one sign-in, and every query of both processes carries its sign_no."""
    import yaml

    check = {"name": "settle", "kind": "settlement", "url": platform.url,
             "interval": "10s", "timeout": "3s", "fixmedins_code": "H32010200001",
             "fixmedins_name": "实验医院", "mdtrtarea_admvs": "320102", "opter": "001",
             "opter_name": "收费员", "state_file": str(tmp_path / "sessions.json"),
             "links": LOOPBACK_LINKS}
    config_file = tmp_path / "insmon.yaml"
    config_file.write_text(yaml.safe_dump({"listen": f"127.0.0.1:{free_port()}",
                                           "checks": [check]}, allow_unicode=True))

    def queries() -> int:
        return platform.infnos().count("1901")

    for expected in (2, 4):  # a run through both links, in each process
        proc = subprocess.Popen([INSMON, "run", "-c", str(config_file)],
                                stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda n=expected: queries() >= n, 60, f"{expected} queries")
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert platform.infnos().count("9001") == 1
    sent = [r for r in platform.received() if r["infno"] == "1901"]
    assert {r["client"] for r in sent} == {"127.0.0.2", "127.0.0.3"}
    numbers = {r["sign_no"] for r in sent}
    assert len(numbers) == 1 and numbers != {""}
    assert all(r["refused"] is None for r in platform.received())


def test_insmon_stopped_signs_out_each_operator_when_the_site_wants_it(
        platform: Platform, tmp_path: Path) -> None:
    import yaml

    check = {"name": "settle", "kind": "settlement", "url": platform.url,
             "interval": "10s", "timeout": "3s", "fixmedins_code": "H32010200001",
             "fixmedins_name": "实验医院", "mdtrtarea_admvs": "320102", "opter": "001",
             "opter_name": "收费员", "state_file": str(tmp_path / "sessions.json"),
             "links": LOOPBACK_LINKS, "sign_out": True}
    config_file = tmp_path / "insmon.yaml"
    config_file.write_text(yaml.safe_dump({"listen": f"127.0.0.1:{free_port()}",
                                           "checks": [check]}, allow_unicode=True))
    proc = subprocess.Popen([INSMON, "run", "-c", str(config_file)],
                            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: platform.infnos().count("1901") >= 2, 60, "a query per link")
        proc.terminate()
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    [sign_out] = [r for r in platform.received() if r["infno"] == "9002"]
    assert sign_out["client"] == "127.0.0.2"  # through the operator's first link
    query = next(r for r in platform.received() if r["infno"] == "1901")
    assert sign_out["sign_no"] == query["sign_no"] and sign_out["refused"] is None
    assert json.loads((tmp_path / "sessions.json").read_text())["operators"] == {}


def test_settlement_try_shows_each_exchange_with_the_secrets_starred(
        platform: Platform, tmp_path: Path) -> None:
    import yaml

    platform.set(dialect="x-tif", key=KEY, secret=SECRET)
    (tmp_path / "secret").write_text(SECRET)
    check = {"name": "settle", "kind": "settlement", "url": platform.url,
             "fixmedins_code": "H32010200001", "fixmedins_name": "实验医院",
             "mdtrtarea_admvs": "320102", "opter": "001", "opter_name": "收费员",
             "state_file": str(tmp_path / "sessions.json"), "links": LOOPBACK_LINKS,
             "gateway": {"dialect": "x-tif", "key": KEY,
                         "secret": {"file": str(tmp_path / "secret")}}}
    config_file = tmp_path / "insmon.yaml"
    config_file.write_text(yaml.safe_dump({"checks": [check]}, allow_unicode=True))
    done = subprocess.run([INSMON, "settlement", "try", "-c", str(config_file)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert SECRET not in out and "x-tif-signature: ****" in out
    assert out.count("> POST " + platform.url) == 3  # a sign-in, and a query per link
    assert out.count("< HTTP 200") == 3 and '"infno": "1901"' in out
    assert "the string signed" not in out  # only for a refused signature
    assert "== line-a: OK: infcode 0" in out and "== line-b: OK: infcode 0" in out
    assert '"inf_refmsgid"' in out
    platform.set(secret="another")  # the gateway no longer takes the hospital's signature
    done = subprocess.run([INSMON, "settlement", "try", "-c", str(config_file)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert "== line-a: FAILED: the gateway refused the message: HTTP 401 code 401 签名校验失败" \
        in done.stdout
    # what was signed, to compare with the province's document: timestamp, the token
    # (starred), the nonce, the timestamp
    assert re.search(r"the string signed \(secret starred, \\n a line feed\):\n"
                     r"  (\d{10})\*\*\*\*[0-9a-f]{32}\1\n", done.stdout), done.stdout
    assert SECRET not in done.stdout


# ------------------------------------------------------------------ through the lab's lines

@pytest.mark.root
async def test_through_the_lab_lines_only_the_backup_settles(tmp_path: Path) -> None:
    """The platform answers errors to the primary line's address only: the check says
    which line can settle, and a bill still can."""
    import yaml

    lab = Lab()
    try:
        control = tmp_path / "control.json"
        url = lab.start_platform(control)
        control.write_text(json.dumps({"fault": "primary_broken"}))
        [item] = yaml.safe_load(lab.settlement_check(url))
        cfg = settlement.Config(**item)
        status, series = await render(cfg, "insmon_settlement_")
        # (the one operator's sign-in goes through whichever line comes first)
        assert status.startswith("# failed: 1901 settles: private-line (primary) "), status
        assert "infcode -1: 系统繁忙" in status and "4g-backup (backup) infcode 0" in status
        assert value(series, 'insmon_settlement_possible{check="settle"}') == 1
        assert failures(series, "platform_error", "private-line") == 1
        received = [json.loads(line) for line in
                    Path(str(control) + ".log").read_text().splitlines()]
        assert {r["client"] for r in received} == {"198.18.1.1", "198.18.2.1"}  # each line
        # each sign-in says the MAC and address of the interface it left through
        macs = {"198.18.1.1": Path(f"/sys/class/net/{lab.primary}/address").read_text(),
                "198.18.2.1": Path(f"/sys/class/net/{lab.backup}/address").read_text()}
        sign_ins = [r for r in received if r["infno"] == "9001"]
        assert sign_ins and all((r["ip"], r["mac"]) == (r["client"], macs[r["client"]].strip())
                                for r in sign_ins), sign_ins
        # each fault of the platform, through both real lines
        for fault, reason in (("platform_error", "platform_error"),
                              ("gateway_reject", "gateway_rejected"),
                              ("not_json", "bad_answer"), ("stall", "timeout")):
            control.write_text(json.dumps({"fault": fault}))
            status, series = await render(cfg, "insmon_settlement_")
            assert status.startswith("# failed: 1901 CANNOT settle: "), status
            for link in ("private-line", "4g-backup"):
                assert failures(series, reason, link) == 1, (fault, link)
        control.write_text(json.dumps({"fault": "primary_broken"}))
        lab.cut("backup")  # the one line that settled goes dark
        status, series = await render(cfg, "insmon_settlement_")
        assert value(series, 'insmon_settlement_possible{check="settle"}') == 0
        assert value(series, 'insmon_settlement_transaction_ok{check="settle",'
                             'link="4g-backup"}') == 0
        assert failures(series, "timeout", "4g-backup") == 1  # no carrier: nothing answers
    finally:
        lab.close()
