"""`insmon doctor` against endpoints that answer wrongly: each is one FAIL line with what
to do, never a traceback, and an unknown is never called well. (The doctor on a real
installed host: tests/test_bundle.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ops.stack import free_port
from tests.conftest import INSMON, ROOT, calendar_file
from tests.debian_root import site_configs
from tests.pager_rig import PagerProcess
from vocabulary import SHANGHAI


def serve(answers: dict[str, tuple[int, str]]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code, body = answers.get(self.path.split("?")[0], (404, "not found"))
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    for name in ("hospital.yaml", "pager.yaml", "web.yml"):
        (tmp_path / name).write_text((ROOT / "examples" / name).read_text())
    (tmp_path / "pager-token").write_text("t0ken-of-the-test-host\n")
    site_calendar(tmp_path)
    return tmp_path


def site_calendar(etc: Path, seen_as: Path | None = None) -> None:
    """The site's calendar file, known for a year past the test's own clock, as a site
    keeps it, named in hospital.yaml (by `seen_as`, the folder as insmon sees it): the
    doctor's calendar line is then OK whatever the day."""
    calendar_file(etc / "calendar.yaml", datetime.now(SHANGHAI).date() + timedelta(days=400))
    hospital = etc / "hospital.yaml"
    hospital.write_text(hospital.read_text().replace(
        "    kind: calendar\n",
        f"    kind: calendar\n    file: {(seen_as or etc) / 'calendar.yaml'}\n", 1))


@pytest.fixture
def odd() -> Iterator[str]:
    """A server that answers HTML, JSON of the wrong shape, and an Alertmanager config
    whose receivers are odd."""
    status = {"config": {"original": "receivers:\n- name: x\n  webhook_configs:\n"
                                     "  - url_file: /etc/secret-url\n- name: y\n"}}
    server = serve({"/api/v1/rules": (200, "<html>a login page</html>"),
                    "/api/v1/targets": (200, json.dumps({"status": "success"})),
                    "/api/v2/status": (200, json.dumps(status))})
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def doctor(etc: Path, prometheus: str, alertmanager: str) -> subprocess.CompletedProcess:
    return subprocess.run([INSMON, "doctor", "--etc", str(etc), "--prometheus", prometheus,
                           "--alertmanager", alertmanager], capture_output=True, text=True,
                          timeout=60)


def test_wrong_answers_are_failures_that_say_what_to_do(etc: Path, odd: str) -> None:
    done = doctor(etc, odd, odd)
    assert "Traceback" not in done.stderr, done.stderr
    assert f"FAIL  {odd} does not answer as Prometheus does\n      → systemctl status " \
           "insmon-prometheus" in done.stdout, done.stdout
    assert f"OK    Alertmanager at {odd}: up, 0 pager address(es)" in done.stdout
    assert done.returncode == 1


def test_a_pager_refusing_alertmanagers_token_is_a_failure(etc: Path, tmp_path: Path) -> None:
    """The pager answers /healthz but refuses the token Alertmanager sends: every page
    would be lost, however healthy both look."""
    token = tmp_path / "alertmanager-token"
    token.write_text("not-the-pagers\n")
    pager = serve({"/healthz": (200, "ok"), "/api/incidents": (401, "")})
    config = ("receivers:\n- name: network\n  webhook_configs:\n  - url: "
              f"http://127.0.0.1:{pager.server_port}/network\n    http_config:\n"
              f"      authorization: {{credentials_file: {token}}}\n")
    manager = serve({"/api/v2/status": (200, json.dumps({"config": {"original": config}}))})
    try:
        done = doctor(etc, "http://127.0.0.1:9", f"http://127.0.0.1:{manager.server_port}")
    finally:
        pager.shutdown()
        manager.shutdown()
    assert f"FAIL  Alertmanager's pager http://127.0.0.1:{pager.server_port} refuses " \
           f"Alertmanager's token ({token}): every page is lost" in done.stdout, done.stdout
    assert done.returncode == 1


def test_an_unknown_is_not_called_well(etc: Path) -> None:
    """Both targets not scraped yet, systemd not running here: nothing failed, but the
    doctor does not say all is well."""
    import yaml

    pager = yaml.safe_load((etc / "pager.yaml").read_text())  # no modem at this site
    del pager["channels"]["sms"]
    for person in pager["people"].values():
        person["channels"] = [c for c in person["channels"] if c != "sms"] or [
            "it-dingtalk"]
    for steps in pager.get("escalation", {}).values():
        for step in steps:
            step.pop("channels", None)
    (etc / "pager.yaml").write_text(yaml.safe_dump(pager, allow_unicode=True))
    targets = {"status": "success", "data": {"activeTargets": [
        {"labels": {"job": job}, "health": "unknown", "scrapeUrl": f"http://x/{job}"}
        for job in ("insmon", "insmon-pager")]}}
    rules = {"status": "success", "data": {"groups": [{"rules": [{}]}]}}
    prometheus = serve({"/api/v1/rules": (200, json.dumps(rules)),
                        "/api/v1/targets": (200, json.dumps(targets))})
    manager = serve({"/api/v2/status": (200, json.dumps({"config": {"original": "{}"}}))})
    try:
        done = doctor(etc, f"http://127.0.0.1:{prometheus.server_port}",
                      f"http://127.0.0.1:{manager.server_port}")
    finally:
        prometheus.shutdown()
        manager.shutdown()
    assert "?     Prometheus scrapes insmon at http://x/insmon: unknown" in done.stdout
    assert "OK    working calendar: dates known until " in done.stdout  # the site's file
    assert "all is well" not in done.stdout and "FAIL" not in done.stdout, done.stdout
    assert done.returncode == 2


# ------------------------------------------------------------------ the first day

def doctor_at(etc: Path, *more: str) -> subprocess.CompletedProcess:
    """The doctor of a host whose Prometheus and Alertmanager are not there, the bundle's
    share being this tree (its examples/ and alert_rules/)."""
    return subprocess.run([INSMON, "doctor", "--etc", str(etc), "--prometheus",
                           "http://127.0.0.1:9", "--alertmanager", "http://127.0.0.1:9",
                           "--share", str(ROOT), *more], capture_output=True, text=True,
                          timeout=60)


TOKEN = "t0ken-of-the-installed-host"
PAIR_KEY = "pa1r-key-of-the-installed-hosts"


def installed(tmp_path: Path) -> Path:
    """/etc/insmon as install.sh writes it."""
    etc = site_configs(tmp_path / "etc")
    (etc / "web.yml").write_text((ROOT / "examples" / "web.yml").read_text())
    (etc / "pager-token").write_text(f"{TOKEN}\n")
    for path in etc.glob("*.yaml"):  # the token where this test keeps it
        path.write_text(path.read_text().replace("/etc/insmon/pager-token",
                                                 str(etc / "pager-token")))
    return etc


def test_the_installed_configs_are_named_for_what_to_fill_in(tmp_path: Path) -> None:
    etc = installed(tmp_path)
    done = doctor_at(etc)
    assert done.returncode == 1
    for line in (f"FAIL  {etc}/pager.yaml is valid but pages nobody: no channels, people or "
                 "teams yet (install.sh's starting point)\n      → write them in (the "
                 "example's are in it, commented out), then insmon pager validate "
                 f"{etc}/pager.yaml && systemctl restart insmon-pager",
                 f"FAIL  {etc}/prometheus.yml still holds the example's: "
                 "global.external_labels.site, scrape_configs[0].static_configs[0].labels."
                 "site",
                 "OK    none of the example's addresses, people or secrets in hospital.yaml, "
                 "pager.yaml",
                 "OK    one pager, no standby (no pair in pager.yaml"):
        assert line in done.stdout, done.stdout
    assert "the modem" not in done.stdout  # no SMS channel: gammu-smsd is not the pager's


def test_a_token_the_pager_refuses_is_a_failure(tmp_path: Path) -> None:
    """A token the site wrote itself, too short: the pager refuses it and does not start;
    the doctor's mend, run as it says, makes one it takes."""
    etc = installed(tmp_path)
    token = etc / "pager-token"
    token.write_text("secret\n")
    done = doctor_at(etc)
    assert f"FAIL  {token} holds 6 characters: the pager takes no token under 16 and does " \
           f"not start\n      → openssl rand -hex 24 > {token}; systemctl restart " \
           "insmon-pager" in done.stdout, done.stdout
    [mend] = [line.split("→ ", 1)[1].split(";")[0] for line in done.stdout.splitlines()
              if "→ openssl" in line]
    subprocess.run(["sh", "-c", mend], check=True, timeout=30)
    assert f"OK    {token} holds the token" in doctor_at(etc).stdout


def test_a_copied_example_is_named_key_by_key(etc: Path) -> None:
    done = doctor_at(etc)
    assert f"FAIL  {etc}/hospital.yaml still holds the example's: checks[insurance-private-" \
           "network].front_end, checks[insurance-private-network].links[private-line]." \
           "gateway" in done.stdout, done.stdout
    assert f"FAIL  {etc}/pager.yaml still holds the example's: public_url, " \
           "pair.active.url" in done.stdout
    assert done.returncode == 1


def test_the_modem_lines_name_what_mends_them(tmp_path: Path) -> None:
    """Debian's own gammu-smsdrc names no modem; a dry run whose phone folder gammu-smsd's
    user cannot write loops on DEVICENOPERMISSION; an SMS waiting long in the outbox goes
    out whenever the modem works, however old."""
    from monitor.doctor import _smsd

    spool = tmp_path / "spool"
    for name in ("inbox", "outbox", "sent", "error"):
        (spool / name).mkdir(parents=True)
        shutil.chown(spool / name, "nobody")
    paths = "".join(f"{name}path = {spool}/{name}/\n" for name in ("inbox", "outbox"))
    paths += f"sentsmspath = {spool}/sent/\nerrorsmspath = {spool}/error/\n"
    debian = tmp_path / "debian-smsdrc"
    debian.write_text("[gammu]\n# Please configure this!\nport = /dev/null\nconnection = at\n"
                      f"[smsd]\nservice = files\n{paths}")
    [line] = _smsd(debian, "nobody")
    assert str(line) == (f"FAIL  the modem: {debian} names no modem (port = /dev/null)\n"
                         f"      → port = the modem's device in {debian} (ls -l "
                         "/dev/serial/by-id/; /opt/insmon/share/examples/gammu-smsdrc), then "
                         "systemctl restart gammu-smsd")

    phone = tmp_path / "dummy"
    phone.mkdir()  # root's, as `install -d` made the parents of the old dry run's folders
    dry = tmp_path / "dry-smsdrc"
    receive = "RunOnReceive = /opt/insmon/.venv/bin/insmon pager sms-received -c /p.yaml\n"
    dry.write_text(f"[gammu]\nport = {phone}/\nmodel = dummy\nconnection = none\n"
                   f"[smsd]\nservice = files\n{paths}{receive}")
    waiting = spool / "outbox" / "OUTC20261127_101500_00_13900000001_sms0.smsbackup"
    waiting.write_text("")
    os.utime(waiting, (time.time() - 600, time.time() - 600))
    lines = [str(line) for line in _smsd(dry, "nobody")]
    assert lines[0] == (f"FAIL  the modem: the dummy phone's folder {phone}/: nobody cannot "
                        "write it (owned by root:root, mode 0755)\n      → install -d -o "
                        f"nobody -g gammu -m 0750 {phone}/; chown -R nobody:gammu {phone}/; "
                        "systemctl restart gammu-smsd"), lines
    assert lines[1].startswith(f"FAIL  the modem: 1 SMS wait in {spool}/outbox (the oldest "
                               "since "), lines
    assert "gammu-smsd is not sending them\n      → they go out once it does, however old" \
        in lines[1]
    shutil.chown(phone, "nobody")
    waiting.unlink()
    assert [str(line) for line in _smsd(dry, "nobody")] == [
        "?     gammu-smsd: systemd is not running here, its state is unknown"]
    # Debian's own file with a port: the pages go out, a reply stays in the inbox
    dry.write_text(dry.read_text().replace(receive, ""))
    [line, unknown] = [str(line) for line in _smsd(dry, "nobody", pager=Path("/p.yaml"))]
    assert line == (f"FAIL  the modem: {dry} hands the SMS it receives to no pager "
                    "(RunOnReceive not set): a reply acknowledges nothing\n      → "
                    "RunOnReceive = /opt/insmon/.venv/bin/insmon pager sms-received -c /p.yaml "
                    f"in [smsd] of {dry} (as /opt/insmon/share/examples/gammu-smsdrc has it), "
                    "then systemctl restart gammu-smsd"), line
    assert unknown.startswith("?     gammu-smsd: systemd is not running")
    # a gammu-smsd the pager sends nothing through needs no RunOnReceive of the pager's
    assert [str(line) for line in _smsd(dry, "nobody", pager=None)] == [unknown]


def test_a_running_gammu_smsd_is_looked_at_though_the_pager_sends_no_sms(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A site's modem set up before the install: the bundle's drop-in runs its
    gammu-smsd as insmon, whose dummy phone folder (or device) may be root's; the pager
    that pages nobody yet has no SMS channel, and the doctor still looks at it."""
    from monitor import doctor
    from pager.config import load

    phone = tmp_path / "phone"
    phone.mkdir()
    smsdrc = tmp_path / "gammu-smsdrc"
    smsdrc.write_text(f"[gammu]\ndevice = {phone}/\nmodel = dummy\nconnection = none\n"
                      "[smsd]\nservice = files\n")
    monkeypatch.setattr(doctor, "SMSDRC", smsdrc)
    etc = installed(tmp_path)
    pager = load(etc / "pager.yaml")
    monkeypatch.setattr(doctor, "_smsd_in_use", lambda: False)
    assert doctor._modem(pager, etc / "pager.yaml") == []
    monkeypatch.setattr(doctor, "_smsd_in_use", lambda: True)  # enabled, or running
    lines = [str(line) for line in doctor._modem(pager, etc / "pager.yaml")]
    assert lines[0].startswith(f"FAIL  the modem: the dummy phone's folder {phone}/: insmon "
                               "cannot write it (owned by root:root") or "no user insmon" in \
        lines[0], lines
    assert not any("RunOnReceive" in line for line in lines), lines


def test_the_pair_each_pager_answering_in_its_role(tmp_path: Path) -> None:
    """Two real pagers of a pair: each answers with the pair's key in the role the config
    gives its url; one started in the wrong role, or holding another key, is a failure."""
    etc = installed(tmp_path)
    ports = {"active": free_port(), "standby": free_port()}
    (etc / "pager-pair-key").write_text(f"{PAIR_KEY}\n")
    pair = ("pair:\n" + "".join(f"  {role}: {{url: \"http://127.0.0.1:{port}\"}}\n"
                                 for role, port in ports.items())
            + f"  key_file: {etc / 'pager-pair-key'}\n")
    (etc / "pager.yaml").write_text((etc / "pager.yaml").read_text() + pair)

    def pager(role: str, runs_as: str, key: str = PAIR_KEY) -> PagerProcess:
        folder = tmp_path / f"{role}-as-{runs_as}-{key[:7]}"
        folder.mkdir()
        (folder / "key").write_text(key + "\n")
        text = (etc / "pager.yaml").read_text().replace(
            str(etc / "pager-pair-key"), str(folder / "key")).replace(
            '"0.0.0.0:9095"', f'"127.0.0.1:{ports[role]}"').replace(
            "/var/lib/insmon-pager/pager.db", str(folder / "pager.db"))
        (folder / "pager.yaml").write_text(text)
        return PagerProcess(folder / "pager.yaml", role=runs_as)

    active = pager("active", "active")
    standby = pager("standby", "standby")
    try:
        done = doctor_at(etc)
        for role, port in ports.items():
            assert f"OK    the pair's {role} pager http://127.0.0.1:{port} answers with the " \
                   f"pair's key, as {role}" in done.stdout, done.stdout
        standby.stop()
        standby = pager("standby", "active")
        done = doctor_at(etc)
        assert f"FAIL  the pair's standby pager http://127.0.0.1:{ports['standby']} runs as " \
               "active (it acts as the " in done.stdout, done.stdout
        assert "→ on that host: systemctl edit insmon-pager, [Service] " \
               "Environment=INSMON_PAGER_ROLE=standby" in done.stdout, done.stdout
        standby.stop()
        standby = pager("standby", "standby", key="another-key-of-the-test")
        done = doctor_at(etc)
        assert f"FAIL  the pair's standby pager http://127.0.0.1:{ports['standby']} does " \
               "not take the pair's key (the other pager refused the question" \
               in done.stdout, done.stdout
        assert f"→ the same {etc / 'pager-pair-key'} on both pager hosts" in done.stdout
        # Alertmanager's token opens nothing of the pair's: the pager refuses it
        request = urllib.request.Request(f"http://127.0.0.1:{ports['active']}/api/peer/hello",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
    finally:
        active.stop()
        standby.stop()


def test_the_running_pager_says_whom_it_pages_and_what_it_holds(tmp_path: Path) -> None:
    """A real pager as install.sh leaves it, behind an Alertmanager config that sends it
    the token: its open incident and that it pages nobody; then its file filled in but
    the pager not restarted: it still runs the config it started with."""
    etc = installed(tmp_path)
    port = free_port()
    path = etc / "pager.yaml"
    path.write_text(path.read_text().replace('"0.0.0.0:9095"', f'"127.0.0.1:{port}"')
                    .replace("/var/lib/insmon-pager/pager.db", str(tmp_path / "pager.db")))
    pager = PagerProcess(path)
    config = ("receivers:\n- name: network\n  webhook_configs:\n  - url: "
              f"http://127.0.0.1:{port}/network\n    http_config:\n"
              f"      authorization: {{credentials_file: {etc / 'pager-token'}}}\n")
    manager = serve({"/api/v2/status": (200, json.dumps({"config": {"original": config}}))})
    alertmanager = f"http://127.0.0.1:{manager.server_port}"
    try:
        assert pager.post("/network", {"version": "4", "status": "firing", "alerts": [
            {"status": "firing", "labels": {"alertname": "X", "grade": "II"}}]})[0] == 200
        done = doctor_at(etc, "--alertmanager", alertmanager)
        assert f"OK    Alertmanager's pager http://127.0.0.1:{port} answers and takes " \
               "Alertmanager's token" in done.stdout, done.stdout
        assert f"OK    the pager http://127.0.0.1:{port}: 1 open incidents (1 not " \
               "acknowledged), 0 messages waiting to be sent (it pages nobody)" in done.stdout
        path.write_text(path.read_text() + (
            "channels: {hook: {type: webhook, url: 'http://127.0.0.1:9/x'}}\n"
            "people: {zhang: {name: 张三, channels: [hook]}}\n"
            "teams: {server_ops: {name: 运维组, rotation: {since: 2020-01-01, order: [zhang]},"
            " lead: zhang}, network: {name: 网络组, rotation: {since: 2020-01-01, order: "
            "[zhang]}, lead: zhang}}\npublic_url: http://192.0.2.10:9095\n"))
        done = doctor_at(etc, "--alertmanager", alertmanager)
        assert f"FAIL  the pager http://127.0.0.1:{port} still runs the config it started " \
               "with, which pages nobody (insmon_pager_configured 0)\n      → systemctl " \
               "restart insmon-pager" in done.stdout, done.stdout
    finally:
        pager.stop()
        manager.shutdown()


def test_a_person_no_channel_reaches_is_a_failure(tmp_path: Path) -> None:
    """A half-filled pager.yaml: the on-call's channels are SMS and e-mail, but neither
    their mobile nor their email is written in. Valid, and every page to them would go
    to nobody: `pager validate` and the doctor fail, naming them."""
    etc = installed(tmp_path)
    path = etc / "pager.yaml"
    path.write_text(path.read_text() + (
        "public_url: http://192.0.2.10:9095\n"
        "channels: {sms: {type: sms, gammu_config: /etc/gammu-smsdrc}, mail: {type: email, "
        "host: 127.0.0.1, sender: insmon@h.test}}\n"
        "people: {zhang: {name: 张三, channels: [sms, mail]}}\n"
        "teams: {server_ops: {name: 运维组, rotation: {since: 2020-01-01, order: [zhang]},"
        " lead: zhang}, network: {name: 网络组, rotation: {since: 2020-01-01, order: "
        "[zhang]}, lead: zhang}}\n"))
    validate = subprocess.run([INSMON, "pager", "validate", str(path)], capture_output=True,
                              text=True, timeout=60)
    assert validate.returncode == 2, validate.stderr
    assert "teams.server_ops: 张三 (zhang), on call and lead, has no channel that can reach " \
           "them (people.zhang.channels: sms, mail;" in validate.stderr
    done = doctor_at(etc)
    assert f"FAIL  {path}: no channel reaches zhang (an SMS or http channel needs their " \
           "mobile, e-mail their email): a page to them goes to nobody\n      → their mobile " \
           f"or email in {path} (or a channel that has it), then insmon pager validate " \
           f"{path} && systemctl restart insmon-pager" in done.stdout, done.stdout
    path.write_text(path.read_text().replace("{name: 张三,", "{name: 张三, mobile: '13912340001',"))
    done = doctor_at(etc)
    assert f"OK    {path} is valid: pages 2 teams, 1 people" in done.stdout, done.stdout


@pytest.mark.root
def test_an_audit_key_others_can_read_is_a_failure(tmp_path: Path) -> None:
    """Whoever reads a trail's key can write records that verify: a key left readable by
    others (a careless `cp`, a backup restored with 0644), or its writer's no longer, is
    named with the command that mends it; a key not made yet is the writer's to make."""
    from monitor.doctor import _audit_keys

    keys = {name: tmp_path / f"{name}.key" for name in ("open", "root", "good", "unmade")}
    for name in ("open", "root", "good"):
        keys[name].write_text("0" * 64 + "\n")
    keys["open"].chmod(0o644)
    shutil.chown(keys["open"], "nobody")
    keys["root"].chmod(0o400)  # restored by root, for root
    keys["good"].chmod(0o400)
    shutil.chown(keys["good"], "nobody")
    assert [str(line) for line in _audit_keys(list(keys.values()), "nobody")] == [
        f"FAIL  {keys['open']} is readable by others (mode 0644): whoever reads it can "
        f"write audit records that verify\n      → chmod 0400 {keys['open']}",
        f"FAIL  {keys['root']} belongs to root, not nobody: the trail's writer cannot "
        f"read it\n      → chown nobody: {keys['root']}",
        f"OK    {keys['good']} is nobody's alone",
    ]
