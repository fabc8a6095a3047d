"""A newcomer's path to a live pager, as the README's pager section writes it: its commands
run as written, the teams it lists are the ones the shipped routing pages, the example
gammu-smsd config works (on gammu's dummy phone, as its comments say to dry-run it), and
the systemd unit is one systemd accepts."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import types
from pathlib import Path

import pytest
import yaml

from ops.stack import wait_for
from tests.conftest import INSMON, ROOT
from tests.pager_rig import Phone
from tests.test_pager_rota import write_config

pytestmark = pytest.mark.timeout(120)
SECTION = re.search(r"^## The pager.*?(?=^## )", (ROOT / "README.md").read_text(),
                    re.S | re.M).group(0)
FLAT = " ".join(SECTION.split())  # commands wrapped over lines, joined
SMSDRC = (ROOT / "examples" / "gammu-smsdrc").read_text()
UNIT = (ROOT / "bundle" / "systemd" / "insmon-pager.service").read_text()


def commands() -> list[str]:
    """Every `insmon pager ...` the section writes, in code spans or its shell block."""
    spans = re.findall(r"`([^`]*insmon pager (?:run|validate|who|ack|sms-received)[^`]*)`",
                       FLAT)
    block = re.search(r"```sh\n(.*?)```", SECTION, re.S).group(1)
    return [s.removeprefix("RunOnReceive = ") for s in spans] + [
        line for line in block.splitlines() if "insmon pager" in line]


def test_every_command_names_its_config_and_those_on_the_example_run_as_written() -> None:
    found = commands()
    assert len(found) >= 6
    for command in found:
        if " validate " not in command:
            assert " -c " in command, command
    for command in (c for c in found if "examples/pager.yaml" in c):
        argv = shlex.split(command)
        done = subprocess.run([INSMON, *argv[1:]], capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 0, (command, done.stderr)
        assert "warning" not in done.stderr, (command, done.stderr)


def test_the_teams_listed_are_the_ones_the_shipped_routing_pages() -> None:
    routing = yaml.safe_load((ROOT / "alert_rules" / "alertmanager.yml").read_text())
    posted = {hook["url"].rsplit("/", 1)[-1] for receiver in routing["receivers"]
              for hook in receiver.get("webhook_configs", [])}
    listed = FLAT.split("The shipped routing pages these teams")[1].split("Then,")[0]
    teams = set(re.findall(r"`(\w+)`", listed)) - {"fallback_team"}
    assert teams == posted
    example = yaml.safe_load((ROOT / "examples" / "pager.yaml").read_text())
    assert posted - {"watchdog", "drill", "unrouted"} <= set(example["teams"])


def test_the_example_gammu_config_dry_runs_on_the_dummy_phone(tmp_path: Path) -> None:
    """As its comments say: the [gammu] section swapped for the dummy one; the spool in a
    folder of the test's. A page goes out; a reply nobody was paged for reaches the
    RunOnReceive line, whose complaint gammu-smsd's log shows."""
    config = write_config(tmp_path)
    lines = SMSDRC.splitlines()
    dummy = lines[lines.index("#   [gammu]"):]
    dummy = [line[4:] for line in dummy[:next(i for i, line in enumerate(dummy)
                                              if not line.startswith("#   "))]]
    smsdrc = tmp_path / "smsdrc"
    smsdrc.write_text(("\n".join(dummy) + SMSDRC[SMSDRC.index("\n[smsd]"):])
                      .replace("/var/spool/gammu", str(tmp_path))
                      .replace("logfile = syslog", f"logfile = {tmp_path}/smsd.log")
                      .replace("/opt/insmon/.venv/bin/insmon", INSMON)
                      .replace("/etc/insmon/pager.yaml", str(config)))
    parsed = configparser.ConfigParser(interpolation=None)
    parsed.read(smsdrc)
    assert parsed["gammu"]["model"] == "dummy" and parsed["smsd"]["service"] == "files"
    for sub in ("inbox", "outbox", "sent", "error", *(f"dummy/sms/{i}" for i in range(1, 6))):
        (tmp_path / sub).mkdir(parents=True)
    smsd = subprocess.Popen(["gammu-smsd", "-c", str(smsdrc)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        subprocess.run(["gammu-smsd-inject", "-c", str(smsdrc), "TEXT", "13800000001",
                        "-text", "【一级】dry run"], check=True, capture_output=True)
        wait_for(lambda: list((tmp_path / "sent").iterdir()), 30, "the SMS sent")
        # a reply put in the dummy phone, as the test rig's phone does it
        Phone.reply(types.SimpleNamespace(phone=tmp_path / "dummy", _received=0),
                    "+8613800000009", "好的")
        log = tmp_path / "smsd.log"
        wait_for(lambda: "acknowledged nothing" in log.read_text(), 30,
                 "RunOnReceive's complaint in gammu-smsd's log")
        assert "Process failed with exit status 1" in log.read_text()
        assert list((tmp_path / "inbox").glob("IN*_+8613800000009_00.txt"))
    finally:
        smsd.terminate()
        smsd.wait(10)


def test_the_systemd_unit_is_one_systemd_accepts(tmp_path: Path) -> None:
    unit = dict(line.split("=", 1) for line in UNIT.splitlines()
                if "=" in line and not line.startswith("#"))
    assert unit["User"] == "insmon" and unit["Restart"] == "always"
    assert unit["StateDirectory"] == "insmon-pager"
    database = yaml.safe_load((ROOT / "examples" / "pager.yaml").read_text())["database"]
    assert Path(database).parent == Path("/var/lib/insmon-pager")
    # the config RunOnReceive names, with insmon where the README installs it
    assert unit["ExecStart"] == ("/opt/insmon/.venv/bin/insmon pager run -c "
                                 "/etc/insmon/pager.yaml --role ${INSMON_PAGER_ROLE}")
    assert unit["Environment"] == "INSMON_PAGER_ROLE=active"  # standby: on the other host
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze")
    path = tmp_path / "insmon-pager.service"
    path.write_text(UNIT.replace("/opt/insmon/.venv/bin/insmon", INSMON))
    done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                          text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr
