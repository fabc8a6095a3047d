"""The settlement check against the lab's platform gateway (ops/lab/gateway.py), which
checks each message as the platform does and answers with the faults the test switches
on: on loopback for the answers, and through the namespace lab's two real lines for the
per-link verdict (root)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.lab import HERE, Lab
from probes import settlement
from tests.conftest import free_port, render, value, wait_for

PAAS_TOKEN = "paas-token-8c1e"


class Platform:
    """The lab's platform gateway on loopback."""

    def __init__(self, address: str, control: Path,
                 paas: tuple[str, str] | None = None) -> None:
        self.port = free_port()
        self.control = control
        control.write_text("{}")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "gateway.py"), address,
                                      str(self.port), str(control), *(paas or ())],
                                     stdin=subprocess.DEVNULL)
        self.url = f"http://{address}:{self.port}/fsi/api/fsi/signIn"
        self.log = Path(str(control) + ".log")
        wait_for(lambda: self.log.exists() or self._up(address), 15, "the platform to listen")

    def _up(self, address: str) -> bool:
        import socket

        try:
            socket.create_connection((address, self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def fault(self, name: str | None) -> None:
        self.control.write_text(json.dumps({"fault": name}))

    def received(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    server = Platform("127.0.0.1", tmp_path / "control.json",
                      paas=("paas-hospital-1", PAAS_TOKEN))
    yield server
    server.close()


def config(url: str, token: str = PAAS_TOKEN, **extra: object) -> settlement.Config:
    return settlement.Config(
        name="settle", kind="settlement", url=url, interval=10, timeout=3,
        fixmedins_code="H32010200001", fixmedins_name="某某市第一人民医院",
        mdtrtarea_admvs="320102", opter="001", opter_name="收费员",
        paas={"id": "paas-hospital-1", "token": {"value": token}}, **extra)


def failures(series: str, reason: str, link: str = "default") -> float:
    return value(series, f'insmon_settlement_failures_total{{check="settle",link="{link}",'
                         f'reason="{reason}"}}')


async def test_a_sign_in_settles_and_the_message_is_the_platforms(platform: Platform) -> None:
    status, series = await render(config(platform.url), "insmon_settlement_")
    assert status.startswith("# ok: 9001 settles: default (primary) infcode 0 in ")
    assert value(series, 'insmon_settlement_possible{check="settle"}') == 1
    assert value(series, 'insmon_settlement_infcode{check="settle",link="default"}') == 0
    assert value(series, 'insmon_settlement_http_status{check="settle",link="default"}') == 200
    [sent] = platform.received()
    assert sent["infno"] == "9001" and len(sent["msgid"]) == 30
    assert sent["msgid"].startswith("H32010200001")


@pytest.mark.parametrize(("fault", "reason", "detail"), [
    ("platform_error", "platform_error", "infcode -1: 系统繁忙，请稍后再试"),
    ("gateway_reject", "gateway_rejected", "the gateway refused the message: HTTP 403"),
    ("not_json", "bad_answer", "HTTP 200 without the platform's JSON"),
    ("stall", "timeout", "no answer from 127.0.0.1:"),
    # every byte within its read's timeout, the whole answer not within the check's
    ("trickle", "timeout", "no answer from 127.0.0.1:"),
])
async def test_each_fault_is_named(platform: Platform, fault: str, reason: str,
                                   detail: str) -> None:
    platform.fault(fault)
    status, series = await render(config(platform.url), "insmon_settlement_")
    assert status.startswith("# failed: 9001 CANNOT settle: default (primary) " + detail)
    assert value(series, 'insmon_settlement_possible{check="settle"}') == 0
    assert failures(series, reason) == 1


async def test_a_wrong_paas_token_is_the_gateway_rejecting_it_and_never_shown(
        platform: Platform) -> None:
    status, series = await render(config(platform.url, token="stolen-token-0000"),
                                  "insmon_settlement_")
    assert "gateway refused the message: HTTP 403 网关签名校验失败" in status
    assert failures(series, "gateway_rejected") == 1
    assert "stolen-token-0000" not in status + series


async def test_a_closed_port_is_refused() -> None:
    status, series = await render(config(f"http://127.0.0.1:{free_port()}/fsi"),
                                  "insmon_settlement_")
    assert "refused the connection" in status and failures(series, "refused") == 1


async def test_repeated_platform_errors_open_the_circuit(platform: Platform) -> None:
    from monitor.runner import build_checks, run_check
    from monitor.store import ResultStore

    platform.fault("platform_error")
    store = ResultStore()
    [check] = build_checks([config(platform.url, breaker_after=2)])
    store.configure([check], "test")
    for _ in range(4):
        await run_check(check, store)
    assert len(platform.received()) == 2  # the agency's system is left alone after two
    record = await run_check(check, store)
    assert "paused after repeated platform errors" in record.detail
    from exporters.prometheus import exposition

    series = exposition(store.snapshot()).decode()
    assert failures(series, "circuit_open") == 3
    assert value(series, 'insmon_settlement_circuit_open{check="settle",link="default"}') == 1


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
        assert status.startswith("# failed: 9001 settles: private-line (primary) "
                                 "infcode -1: 系统繁忙")
        assert "4g-backup (backup) infcode 0" in status
        assert value(series, 'insmon_settlement_possible{check="settle"}') == 1
        assert failures(series, "platform_error", "private-line") == 1
        clients = {json.loads(line)["client"] for line in
                   Path(str(control) + ".log").read_text().splitlines()}
        assert clients == {"198.18.1.1", "198.18.2.1"}  # one through each line
        # each fault of the platform, through both real lines
        for fault, reason in (("platform_error", "platform_error"),
                              ("gateway_reject", "gateway_rejected"),
                              ("not_json", "bad_answer"), ("stall", "timeout")):
            control.write_text(json.dumps({"fault": fault}))
            status, series = await render(cfg, "insmon_settlement_")
            assert status.startswith("# failed: 9001 CANNOT settle: "), status
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


async def test_a_sign_in_is_signed_out_again_when_the_site_wants_it(
        platform: Platform) -> None:
    status, _ = await render(config(platform.url, sign_out=True), "insmon_settlement_")
    assert status.startswith("# ok: 9001 settles")
    sign_in, sign_out = platform.received()
    assert (sign_in["infno"], sign_out["infno"]) == ("9001", "9002")
    assert sign_in["msgid"] != sign_out["msgid"]
