"""The offline bundle (`make bundle`), as an air-gapped hospital host gets it: its wheels
install and run with no network, the arm64 one holds only what an aarch64 Debian 12
Python takes, and install.sh on a fresh Debian 12 with no network installs a site whose
services, started as their units say, serve and page; a second run changes nothing;
--upgrade keeps the configs, the pager's incidents and the metric history; --uninstall
keeps the data."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename

from tests.conftest import ROOT
from tests.debian_root import CACHE, Machine, debian12_root
from tests.test_doctor import site_calendar

pytestmark = [pytest.mark.root, pytest.mark.xdist_group("bundle")]
VERSION = "0.1.0"
NEWER = "0.1.1"
SERVICES = ("insmon", "insmon-pager", "insmon-prometheus", "insmon-alertmanager")
# /etc/gammu-smsdrc as a site writes it, with gammu's dummy phone for the modem
SMSDRC = """[gammu]
device = /var/lib/phone/
model = dummy
connection = none
[smsd]
service = files
inboxpath = /var/spool/gammu/inbox/
outboxpath = /var/spool/gammu/outbox/
sentsmspath = /var/spool/gammu/sent/
errorsmspath = /var/spool/gammu/error/
logfile = /var/log/gammu-smsd.log
loopsleep = 1
checksecurity = 0
"""


def build(source: Path, out: Path, arch: str) -> Path:
    subprocess.run([sys.executable, str(source / "bundle" / "build.py"), "--arch", arch,
                    "--out", str(out), "--cache", str(CACHE), "--source", str(source)],
                   check=True, capture_output=True, timeout=1500)
    [bundle] = out.glob(f"insmon-*-{arch}-offline.tar.gz")
    return bundle


def tree_copy(dest: Path, version: str) -> Path:
    """The tree's files as a clone has them, at `version`."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=ROOT, capture_output=True,
                           check=True, timeout=30).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    pyproject = dest / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(f'version = "{VERSION}"',
                                                       f'version = "{version}"', 1))
    return dest


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    return {arch: build(ROOT, out, arch) for arch in ("amd64", "arm64")}


def unpacked(bundle: Path, dest: Path) -> Path:
    with tarfile.open(bundle) as tar:
        tar.extractall(dest, filter="data")
    [top] = dest.iterdir()
    return top


def test_the_arm64_bundle_holds_only_what_an_aarch64_debian12_python_takes(
        bundles: dict[str, Path], tmp_path: Path) -> None:
    top = unpacked(bundles["arm64"], tmp_path)
    assert top.name == f"insmon-{VERSION}-arm64-offline"
    # Debian 12: CPython 3.11, glibc 2.36
    platforms = [f"manylinux_2_{m}_aarch64" for m in range(36, 16, -1)]
    platforms += ["manylinux2014_aarch64", "linux_aarch64"]
    accepted = {*cpython_tags((3, 11), platforms=platforms),
                *compatible_tags((3, 11), "cp311", platforms=platforms)}
    wheels = sorted(top.glob("wheels/*.whl"))
    names = {parse_wheel_filename(w.name)[0] for w in wheels}
    assert {"insmon", "pydantic-core", "psutil", "pysnmp", "cryptography"} - names <= {
        "psutil"}, names  # psutil is a test dependency, not the runtime's
    for wheel in wheels:
        tags = parse_wheel_filename(wheel.name)[3]
        assert tags & accepted, f"{wheel.name}: no tag an aarch64 Debian 12 Python takes"
    assert any("aarch64" in str(t) for w in wheels for t in parse_wheel_filename(w.name)[3])
    packages = (top / "debs" / "Packages").read_text().split("\n\n")
    arches = {line.split(": ")[1] for p in packages for line in p.splitlines()
              if line.startswith("Architecture: ")}
    assert arches == {"arm64", "all"}, arches
    names = {line.split(": ")[1] for p in packages for line in p.splitlines()
             if line.startswith("Package: ")}
    assert {"prometheus", "prometheus-alertmanager", "gammu-smsd", "python3-venv"} <= names


def test_the_manifest_names_every_file_with_its_digest(bundles: dict[str, Path],
                                                       tmp_path: Path) -> None:
    top = unpacked(bundles["amd64"], tmp_path)
    listed = {}
    for line in (top / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    files = {str(p.relative_to(top)) for p in top.rglob("*") if p.is_file()}
    assert set(listed) == files - {"SHA256SUMS"}
    for name, digest in listed.items():
        assert hashlib.sha256((top / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.timeout(600)
def test_the_wheels_install_and_run_with_no_network(bundles: dict[str, Path],
                                                    tmp_path: Path) -> None:
    top = unpacked(bundles["amd64"], tmp_path)
    venv = tmp_path / "venv"
    config = top / "share" / "examples"
    script = " && ".join([
        "ip link set lo up",
        f"{sys.executable} -m venv {venv}",
        f"PIP_CONFIG_FILE=/dev/null {venv}/bin/pip install --quiet --no-index "
        f"--find-links {top}/wheels insmon=={VERSION}",
        f"{venv}/bin/insmon --version",
        f"{venv}/bin/insmon validate {config}/hospital.yaml",
        f"{{ {venv}/bin/insmon once; echo once-exit=$?; }}",
        f"{venv}/bin/insmon pager validate {config}/pager.yaml"])
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "HOME": str(tmp_path)}
    done = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True,
                          text=True, timeout=540, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"insmon {VERSION}" in done.stdout
    assert f"{config}/hospital.yaml: ok" in done.stdout
    # `once` ran every check of the embedded config (its exit says whether all passed)
    assert "host-cpu" in done.stdout and "once-exit=" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr, done.stderr


@pytest.fixture
def machine() -> Iterator[Machine]:
    host = Machine(debian12_root())
    yield host
    host.close()


def digest(host: Machine, *paths: str) -> str:
    done = host.sh("find " + " ".join(paths) + " -xdev \\( -type f -o -type l \\) "
                   "-print0 | sort -z | xargs -0 sha256sum; "
                   "find " + " ".join(paths) + " -printf '%p %U %G %m\\n' | sort")
    assert done.returncode == 0, done.stderr
    return done.stdout


def wait_for(what: str, probe, timeout: float = 120) -> object:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


def get(host: Machine, url: str, token: str | None = None) -> object:
    argv = ["curl", "-s", "--max-time", "5", "--noproxy", "*"]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    done = host.outside(*argv, url)
    try:
        return json.loads(done.stdout) if done.returncode == 0 else None
    except json.JSONDecodeError:
        return done.stdout


def scraped(host: Machine) -> bool:
    answer = get(host, "http://127.0.0.1:9090/api/v1/targets?state=active")
    if not isinstance(answer, dict):
        return False
    health = {t["labels"]["job"]: t["health"] for t in answer["data"]["activeTargets"]}
    return health.get("insmon") == "up" and health.get("insmon-pager") == "up"


def start_all(host: Machine) -> None:
    for name in SERVICES:
        host.start(name)
    try:
        wait_for("Prometheus scrapes insmon and the pager", lambda: scraped(host), 180)
    except AssertionError as exc:
        logs = "".join(f"\n--- {name} ---\n{host.log(name)}" for name in SERVICES)
        raise AssertionError(f"{exc}{logs}") from None


@pytest.mark.timeout(1500)
def test_install_sh_on_a_fresh_debian12_host_with_no_network(
        bundles: dict[str, Path], machine: Machine, tmp_path: Path) -> None:
    host = machine
    shutil.copy2(bundles["amd64"], host.root / "root")
    name = f"insmon-{VERSION}-amd64-offline"
    assert host.sh(f"cd /root && tar xzf {name}.tar.gz").returncode == 0

    # a bundle changed on the way (a bad USB stick), or given a file its manifest does not
    # list (a newer "PyYAML" pip would prefer), installs nothing
    host.sh(f"cp -a /root/{name} /root/damaged && "
            "printf x >> /root/damaged/share/examples/hospital.yaml")
    damaged = host.sh("/root/damaged/install.sh")
    assert damaged.returncode == 1
    assert "share/examples/hospital.yaml: FAILED" in damaged.stderr, damaged.stderr
    host.sh(f"rm -rf /root/damaged && cp -a /root/{name} /root/damaged && "
            "touch /root/damaged/wheels/pyyaml-99.0-py3-none-any.whl")
    damaged = host.sh("/root/damaged/install.sh")
    assert damaged.returncode == 1
    assert "does not list: wheels/pyyaml-99.0-py3-none-any.whl" in damaged.stderr
    assert not (host.root / "opt" / "insmon").exists()

    # from a USB stick's folder with a space in its name, by a root whose umask is 027,
    # after an install.sh killed while apt ran (its policy-rc.d left behind)
    (host.root / "usr/sbin/policy-rc.d").write_text(
        "#!/bin/sh\n# insmon install.sh: no service starts while it installs packages\n"
        "exit 101\n")
    host.sh(f"mkdir '/root/usb stick' && mv /root/{name} '/root/usb stick/'")
    started = time.monotonic()
    first = host.sh(f"umask 027 && '/root/usb stick/{name}/install.sh'")
    took = time.monotonic() - started
    assert first.returncode == 0, first.stdout + first.stderr
    print(f"install.sh on a fresh Debian 12 with no network: {took:.0f} s")
    assert "removed /usr/sbin/policy-rc.d left by an interrupted install.sh" in first.stdout
    assert not (host.root / "usr/sbin/policy-rc.d").exists()
    assert "installed the Debian packages" in first.stdout
    assert f"installed insmon {VERSION}" in first.stdout
    host.sh(f"mv '/root/usb stick/{name}' /root/")
    # each service's user reaches what it needs, and Alertmanager's no more than the token
    reads = host.sh(
        "setpriv --reuid=insmon --regid=insmon --init-groups /opt/insmon/.venv/bin/insmon "
        "--version && setpriv --reuid=prometheus --regid=prometheus --init-groups "
        "head -c1 /opt/insmon/share/alert_rules/alerts.yml >/dev/null && "
        "groups=$(getent group prometheus insmon-token | cut -d: -f3 | paste -sd,) && "
        "setpriv --reuid=prometheus --regid=prometheus --groups=$groups "
        "head -c1 /etc/insmon/pager-token >/dev/null && echo token-read && "
        "setpriv --reuid=prometheus --regid=prometheus --groups=$groups "
        "cat /etc/insmon/pager.yaml")
    assert f"insmon {VERSION}" in reads.stdout and "token-read" in reads.stdout, reads
    assert reads.returncode == 1 and "Permission denied" in reads.stderr, reads

    units = " ".join(f"/usr/local/lib/systemd/system/{s}.service" for s in SERVICES)
    verify = host.sh(f"systemd-analyze verify {units}")
    assert verify.returncode == 0 and not verify.stdout.strip() and not verify.stderr.strip(), \
        verify.stdout + verify.stderr
    enabled = host.sh("systemctl is-enabled " + " ".join(SERVICES)
                      + "; systemctl is-enabled prometheus prometheus-alertmanager")
    assert enabled.stdout.split() == ["enabled"] * 4 + ["disabled"] * 2, enabled.stdout

    # before anything runs, the doctor says what is missing and what to do
    doctor = host.sh("/opt/insmon/.venv/bin/insmon doctor")
    assert doctor.returncode == 1
    assert "FAIL  Prometheus at http://127.0.0.1:9090: [Errno 111] Connection refused\n" \
           "      → systemctl status insmon-prometheus" in doctor.stdout, doctor.stdout

    watched = ("/etc", "/opt/insmon", "/usr/local/lib/systemd", "/var/lib/dpkg/status",
               "/var/lib/insmon", "/var/lib/insmon-pager")
    before = digest(host, *watched)
    second = host.sh(f"/root/{name}/install.sh")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "nothing to change" in second.stdout, second.stdout
    assert digest(host, *watched) == before

    # the services, started as their units say, serve and page
    start_all(host)
    metrics = host.outside("curl", "-s", "--max-time", "5", "http://127.0.0.1:9829/metrics")
    assert 'insmon_probe_success{check="' in metrics.stdout, metrics.stdout[-2000:]
    seen_at = time.time()  # Prometheus has scraped insmon up by now
    rules = get(host, "http://127.0.0.1:9090/api/v1/rules")
    assert sum(len(g["rules"]) for g in rules["data"]["groups"]) > 50
    token = (host.root / "etc/insmon/pager-token").read_text().strip()
    alert = [{"labels": {"alertname": "InstallCheck", "grade": "II", "team": "server_ops",
                         "site": "hospital-1"},
              "annotations": {"summary": "a page through the installed chain"}}]
    posted = host.outside("curl", "-s", "--noproxy", "*", "-o", "/dev/null", "-w",
                          "%{http_code}", "-H", "Content-Type: application/json", "-d",
                          json.dumps(alert), "http://127.0.0.1:9093/api/v2/alerts")
    assert posted.stdout == "200", posted
    incidents = wait_for("the pager has the page Alertmanager sent", lambda: [
        i for i in (get(host, "http://127.0.0.1:9095/api/incidents", token) or [])
        if "InstallCheck" in json.dumps(i, ensure_ascii=False)], 120)

    # the site's modem (here gammu's dummy phone, in the spool Debian's package made):
    # the pager's user hands it an SMS the way the pager does, and the doctor sees it
    (host.root / "etc/gammu-smsdrc").write_text(SMSDRC)
    assert host.sh("mkdir -p /var/lib/phone/sms/1 /var/lib/phone/sms/2").returncode == 0
    host.background("gammu-smsd", "gammu-smsd -c /etc/gammu-smsdrc")
    inject = host.sh("setpriv --reuid=insmon --regid=insmon --init-groups "
                     "gammu-smsd-inject -c /etc/gammu-smsdrc TEXT 13800000001 -text test")
    assert inject.returncode == 0, inject.stdout + inject.stderr
    wait_for("gammu-smsd sent the SMS", lambda: list(
        (host.root / "var/spool/gammu/sent").iterdir()), 60)
    # the site's calendar file, known a year past the test's own clock (as a site keeps
    # it when the chinesecalendar package runs out): the doctor's calendar line is OK
    site_calendar(host.root / "etc/insmon", seen_as=Path("/etc/insmon"))
    doctor = wait_for("the doctor finds nothing to mend", lambda: (
        lambda done: done if done.returncode == 2 else None)(
        host.sh("/opt/insmon/.venv/bin/insmon doctor")), 60)
    print(doctor.stdout)
    for line in ("OK    /etc/insmon/hospital.yaml is valid",
                 "OK    /etc/insmon/pager.yaml is valid", "OK    Prometheus scrapes insmon:",
                 "OK    Prometheus scrapes insmon-pager:",
                 "OK    Alertmanager's pager http://127.0.0.1:9095 answers and takes "
                 "Alertmanager's token",
                 "OK    the modem (/etc/gammu-smsdrc) answers: IMEI 999999999999999, signal",
                 # systemd is not PID 1 in the test's host: the units' state is not known
                 "nothing to mend, but 1 not known here (?)"):
        assert line in doctor.stdout, doctor.stdout
    assert " rules in " in doctor.stdout
    # the audit trails at the site: root's window (refused: too long) handed to insmon's
    # service over its socket; folder, key and socket the service's; both trails verify
    # against the installed Prometheus, which keeps their heads
    start = datetime.now().date() + timedelta(days=1)
    declared = host.sh("/opt/insmon/.venv/bin/insmon maintenance --site hospital-1 --from "
                       f"'{start} 01:00' --to '{start + timedelta(days=40)} 01:00' "
                       "--comment install-check")
    assert "over 14 days" in declared.stderr, declared
    listed = host.sh("/opt/insmon/.venv/bin/insmon audit /var/lib/insmon/audit")
    assert re.search(r" root +maintenance-declared +refused ", listed.stdout), listed.stdout
    modes = host.sh("stat -c '%a %U' /var/lib/insmon/audit /var/lib/insmon/audit.key "
                    "/var/lib/insmon/audit.sock /var/lib/insmon-pager/audit.key")
    assert modes.stdout.split() == ["750", "insmon", "400", "insmon", "660", "insmon",
                                    "400", "insmon"], modes
    wait_for("both trails verify against Prometheus", lambda: (
        lambda done: done if done.returncode == 0 else None)(
        host.sh("/opt/insmon/.venv/bin/insmon audit --verify")), 90)
    host.stop("gammu-smsd")
    for service in SERVICES:
        host.stop(service)

    # --upgrade with a newer bundle keeps the configs, the incidents and the history
    newer = build(tree_copy(tmp_path / "src", NEWER), tmp_path / "dist", "amd64")
    shutil.copy2(newer, host.root / "root")
    configs = digest(host, "/etc/insmon")
    newname = f"insmon-{NEWER}-amd64-offline"
    assert host.sh(f"cd /root && tar xzf {newname}.tar.gz").returncode == 0
    refused = host.sh(f"/root/{newname}/install.sh")
    assert refused.returncode == 1 and "--upgrade" in refused.stderr, refused.stderr
    # a newer bundle pip cannot install (a wheel missing, its manifest agreeing): the
    # code that runs stays, whole
    broken = host.sh(f"cp -a /root/{newname} /root/broken && cd /root/broken && "
                     "rm wheels/pyyaml-* && grep -v ' wheels/pyyaml-' SHA256SUMS > S && "
                     "mv S SHA256SUMS && ./install.sh --upgrade")
    assert broken.returncode == 1 and "the code is as it was" in broken.stderr, broken
    assert host.sh("/opt/insmon/.venv/bin/insmon --version").stdout.strip() == \
        f"insmon {VERSION}"
    upgraded = host.sh(f"/root/{newname}/install.sh --upgrade")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert f"installed insmon {NEWER} in /opt/insmon/.venv (was {VERSION})" in upgraded.stdout
    assert host.sh("/opt/insmon/.venv/bin/insmon --version").stdout.strip() == \
        f"insmon {NEWER}"
    assert digest(host, "/etc/insmon") == configs
    assert (host.root / f"var/lib/insmon-pager/pager.db.before-{NEWER}").exists()
    start_all(host)
    kept = get(host, "http://127.0.0.1:9095/api/incidents", token)
    assert [i["id"] for i in kept if "InstallCheck" in json.dumps(i, ensure_ascii=False)] \
        == [i["id"] for i in incidents]
    # what the first Prometheus scraped before the upgrade
    history = get(host, "http://127.0.0.1:9090/api/v1/query?query=up%7Bjob%3D%22insmon%22%7D"
                        f"&time={seen_at:.3f}")
    assert [r["value"][1] for r in history["data"]["result"]] == ["1"], history
    again = host.sh(f"/root/{newname}/install.sh --upgrade")
    assert "nothing to change" in again.stdout, again.stdout
    # back to the older bundle: refused, the newer pager may have migrated its store
    older = host.sh(f"/root/{name}/install.sh --upgrade")
    assert older.returncode == 1 and f"newer than this bundle's {VERSION}" in older.stderr
    assert host.sh("/opt/insmon/.venv/bin/insmon --version").stdout.strip() == \
        f"insmon {NEWER}"
    for service in SERVICES:
        host.stop(service)

    removed = host.sh(f"/root/{newname}/install.sh --uninstall")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not (host.root / "opt/insmon").exists()
    assert not list((host.root / "usr/local/lib/systemd/system").glob("insmon*"))
    assert (host.root / "etc/insmon/pager.yaml").exists()
    assert (host.root / "var/lib/insmon-pager/pager.db").exists()
    # Debian's own services, disabled by the install, are the site's again
    enabled = host.sh("systemctl is-enabled prometheus prometheus-alertmanager")
    assert enabled.stdout.split() == ["enabled", "enabled"], enabled.stdout

    # --purge while a process of the user still runs removes nothing
    host.background("leftover", "setpriv --reuid=insmon --regid=insmon --init-groups "
                                "sleep 300")
    wait_for("the leftover process", lambda: host.sh("pgrep -u insmon").returncode == 0, 30)
    purge = host.sh(f"/root/{newname}/install.sh --uninstall --purge")
    assert purge.returncode == 1 and "pgrep -u insmon" in purge.stderr, purge
    assert (host.root / "var/lib/insmon-pager/pager.db").exists()
    host.stop("leftover")
    purge = host.sh(f"/root/{newname}/install.sh --uninstall --purge")
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert not (host.root / "etc/insmon").exists()
    assert host.sh("getent passwd insmon").returncode == 2
