"""The offline bundle (`make bundle`), as an air-gapped hospital host gets it: its wheels
install and run with no network, the arm64 one holds only what an aarch64 Debian 12
Python takes, and install.sh on a fresh Debian 12 booted under systemd with no network
installs a site whose units run with their hardening, page nobody until the site fills
in its pager, then page once; a second run changes nothing; a reboot brings it all back;
--upgrade keeps the configs, the pager's incidents and the metric history; --uninstall
leaves the units enabled and running as they were before, and keeps the data; a host
without systemd is refused."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename

from tests.conftest import INSMON, ROOT
from tests.debian_root import CACHE, Booted, Machine, debian12_root, site_configs
from tests.pager_rig import Phone
from tests.test_doctor import site_calendar

pytestmark = pytest.mark.root
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


class Bundles:
    """This tree's bundle of each architecture, built when a test first asks for it and
    once per test run, whichever pytest-xdist worker asks: in the run's own temporary
    folder (never an earlier run's), under a lock the other workers wait on. So the
    tests need not share a worker, and one needing only amd64 does not wait for arm64."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __getitem__(self, arch: str) -> Path:
        out = self.folder / arch
        out.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"{arch}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            built = list(out.glob(f"insmon-*-{arch}-offline.tar.gz"))
            return built[0] if built else build(ROOT, out, arch)


@pytest.fixture
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    run = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run = run.parent  # the run's folder, shared by its workers
    return Bundles(run / "bundles")


@pytest.fixture
def newer_bundle(tmp_path: Path) -> Iterator[Future[Path]]:
    """The tree's amd64 bundle at version NEWER (for --upgrade), built in the background
    while the test installs the first one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(lambda: build(tree_copy(tmp_path / "src", NEWER),
                                        tmp_path / "dist", "amd64"))


def unpacked(bundle: Path, dest: Path) -> Path:
    with tarfile.open(bundle) as tar:
        tar.extractall(dest, filter="data")
    [top] = dest.iterdir()
    return top


@pytest.mark.timeout(900)  # its bundle built first, here or by another worker
def test_the_arm64_bundle_holds_only_what_an_aarch64_debian12_python_takes(
        bundles: Bundles, tmp_path: Path) -> None:
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


@pytest.mark.timeout(900)  # its bundle built first, here or by another worker
def test_the_manifest_names_every_file_with_its_digest(bundles: Bundles,
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


@pytest.mark.timeout(900)  # its bundle built first, here or by another worker
def test_the_wheels_install_and_run_with_no_network(bundles: Bundles,
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


def test_the_installed_configs_watch_this_host_and_page_nobody(tmp_path: Path) -> None:
    """install.sh's hospital.yaml and pager.yaml: the examples with what names a site's
    addresses, people or secrets commented out, line for line; what is left checks this
    host alone and pages nobody."""
    from pager.config import load

    site = site_configs(tmp_path / "site")
    done = subprocess.run([INSMON, "validate", str(site / "hospital.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    checks = yaml.safe_load((site / "hospital.yaml").read_text())["checks"]
    assert {c["kind"] for c in checks} == {"calendar", "cpu", "disk_io"}, checks
    pager = load(site / "pager.yaml")
    assert not pager.configured and pager.pair is None and not pager.channels
    for name, indent in (("hospital.yaml", 2), ("pager.yaml", 0)):
        example = (ROOT / "examples" / name).read_text().splitlines()
        written = (site / name).read_text().split("# ---- the example, as shipped ----\n",
                                                  1)[1].splitlines()
        assert len(written) == len(example), name
        commented = 0
        for mine, theirs in zip(written, example, strict=True):
            if mine != theirs:
                assert mine == f"{theirs[:indent]}# {theirs[indent:]}", (name, mine)
                commented += 1
        assert commented > 10, name


@pytest.mark.timeout(900)  # its bundle built first, here or by another worker
def test_install_sh_refuses_a_host_without_systemd(bundles: Bundles) -> None:
    host = Machine(debian12_root())
    try:
        shutil.copy2(bundles["amd64"], host.root / "root")
        name = f"insmon-{VERSION}-amd64-offline"
        status = host.sh("cat /var/lib/dpkg/status").stdout
        for argv in ("", "--uninstall --purge"):
            done = host.sh(f"cd /root && tar xzf {name}.tar.gz && {name}/install.sh {argv}")
            assert done.returncode == 1, done
            assert "systemd is not running on this host (no /run/systemd/system)" in \
                done.stderr and "nothing was changed" in done.stderr, done.stderr
        assert host.sh("cat /var/lib/dpkg/status").stdout == status
        assert host.sh("getent passwd insmon").returncode == 2
        assert not (host.root / "opt/insmon").exists()
        assert not (host.root / "etc/insmon").exists()
    finally:
        host.close()


@pytest.fixture
def booted() -> Iterator[Booted]:
    host = Booted(debian12_root())
    yield host
    host.close()


def digest(host: Booted, *paths: str) -> str:
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


def get(host: Booted, url: str, token: str | None = None) -> object:
    argv = ["curl", "-s", "--max-time", "5", "--noproxy", "*"]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    done = host.outside(*argv, url)
    try:
        return json.loads(done.stdout) if done.returncode == 0 else None
    except json.JSONDecodeError:
        return done.stdout


def post_alert(host: Booted, name: str) -> None:
    alert = [{"labels": {"alertname": name, "grade": "II", "team": "server_ops",
                         "site": "hospital-1"},
              "annotations": {"summary": f"{name}: a page through the installed chain"}}]
    posted = host.outside("curl", "-s", "--noproxy", "*", "-o", "/dev/null", "-w",
                          "%{http_code}", "-H", "Content-Type: application/json", "-d",
                          json.dumps(alert), "http://127.0.0.1:9093/api/v2/alerts")
    assert posted.stdout == "200", posted


def query(host: Booted, promql: str, at: float | None = None) -> list[dict] | None:
    answer = get(host, "http://127.0.0.1:9090/api/v1/query?query="
                 + urllib.parse.quote(promql) + (f"&time={at:.3f}" if at else ""))
    return answer["data"]["result"] if isinstance(answer, dict) else None


def units(host: Booted) -> tuple[set[str], set[str]]:
    """The unit files enabled, and the services, sockets, timers and paths running."""
    enabled = host.sh("systemctl list-unit-files --state=enabled --no-legend --plain")
    active = host.sh("systemctl list-units --state=active --no-legend --plain "
                     "--type=service,socket,timer,path")
    return ({line.split()[0] for line in enabled.stdout.splitlines()},
            {line.split()[0] for line in active.stdout.splitlines()})


def serving(host: Booted) -> bool:
    """Every unit running, and Prometheus scraping insmon and the pager."""
    if host.sh("systemctl is-active " + " ".join(SERVICES)).returncode != 0:
        return False
    answer = get(host, "http://127.0.0.1:9090/api/v1/targets?state=active")
    if not isinstance(answer, dict):
        return False
    health = {t["labels"]["job"]: t["health"] for t in answer["data"]["activeTargets"]}
    return health.get("insmon") == "up" and health.get("insmon-pager") == "up"


def wait_serving(host: Booted, timeout: float = 180) -> None:
    try:
        wait_for("every unit running and Prometheus scraping insmon and the pager",
                 lambda: serving(host), timeout)
    except AssertionError as exc:
        logs = host.sh("systemctl status --no-pager " + " ".join(SERVICES)
                       + "; journalctl --no-pager -n 80").stdout
        raise AssertionError(f"{exc}\n{logs}") from None


def hardening(host: Booted, service: str) -> dict[str, str]:
    """What the kernel holds for the service's running process: no new privileges, the
    seccomp filter, the capability bounding set; and whether /usr is writable to it."""
    pid = host.sh(f"systemctl show -p MainPID --value {service}").stdout.strip()
    status = dict(line.split(":\t", 1) for line in host.sh(f"cat /proc/{pid}/status")
                  .stdout.splitlines() if ":\t" in line)
    probe = host.sh(f"nsenter -t {pid} -m touch /usr/insmon-probe")
    return {"NoNewPrivs": status["NoNewPrivs"].strip(), "Seccomp": status["Seccomp"].strip(),
            "CapBnd": status["CapBnd"].strip(),
            "/usr": "read-only" if "Read-only file system" in probe.stderr else probe.stderr}


def dry_run_smsdrc() -> str:
    """examples/gammu-smsdrc with its [gammu] swapped for the dummy one, as its comments
    say."""
    smsdrc = (ROOT / "examples" / "gammu-smsdrc").read_text()
    lines = smsdrc.splitlines()
    dummy = lines[lines.index("#   [gammu]"):]
    dummy = [line[4:] for line in dummy[:next(i for i, line in enumerate(dummy)
                                              if not line.startswith("#   "))]]
    return "\n".join(dummy) + smsdrc[smsdrc.index("\n[smsd]"):]


def dry_run_phone() -> str:
    """The command examples/gammu-smsdrc gives for the dummy phone's folder."""
    smsdrc = (ROOT / "examples" / "gammu-smsdrc").read_text()
    [command] = re.findall(r"^#   (install -d .*/var/spool/gammu/dummy)$", smsdrc, re.M)
    return command


# root's PATH at a login (Debian's /etc/profile), where an engineer types the doctor's mends
LOGIN = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def mends(doctor: str) -> dict[str, str]:
    """The command after "then" of each FAIL the doctor says about a file of /etc/insmon."""
    return dict(re.findall(r"^FAIL  (/etc/insmon/\S+) .*\n +→ .*?, then (.*)$", doctor,
                            re.M))


# The site's pager once filled in: one person, by SMS through the modem (a dry run)
PAGER = """\
listen: "0.0.0.0:9095"
auth: {token_file: /etc/insmon/pager-token}
public_url: "http://192.0.2.10:9095"
database: /var/lib/insmon-pager/pager.db
channels:
  sms: {type: sms, gammu_config: /etc/gammu-smsdrc}
people:
  oncall: {name: 值班员, mobile: "13912340001", channels: [sms]}
teams:
  network: {name: 网络组, rotation: {since: 2020-01-01, order: [oncall]}, lead: oncall}
  server_ops: {name: 运维组, rotation: {since: 2020-01-01, order: [oncall]}, lead: oncall}
"""


@pytest.mark.timeout(1500)
def test_install_sh_on_a_fresh_debian12_booted_with_systemd_and_no_network(
        bundles: Bundles, newer_bundle: Future[Path], booted: Booted) -> None:
    host = booted
    before = units(host)
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
    # and onto a disk too full for its configs (/etc/insmon, 12 KiB): what it wrote there
    # is whole or not there (the next run keeps a site's file as it finds it); the disk
    # freed, the next run completes the install
    host.sh("mkdir /etc/insmon && mount -t tmpfs -o size=12k,mode=0755 tmpfs /etc/insmon")
    started = time.monotonic()
    full = host.sh(f"umask 027 && '/root/usb stick/{name}/install.sh'")
    assert full.returncode == 1, full
    kept = host.sh("ls -A /etc/insmon").stdout.split()  # (the mount is the host's own)
    assert kept and "pager-token" not in kept, kept
    for written in kept:
        shipped = f"site/{written}" if written != "web.yml" else "share/examples/web.yml"
        same = host.sh(f"cmp /etc/insmon/{written} '/root/usb stick/{name}/{shipped}'")
        assert same.returncode == 0, same
    assert "(is the disk full?)" in full.stderr, full.stderr
    freed = host.sh("cp -a /etc/insmon /root/written && umount /etc/insmon && "
                    "cp -a /root/written/. /etc/insmon/ && rm -r /root/written")
    assert freed.returncode == 0, freed
    first = host.sh(f"umask 027 && '/root/usb stick/{name}/install.sh'")
    took = time.monotonic() - started
    assert first.returncode == 0, first.stdout + first.stderr
    wait_serving(host)
    print(f"install.sh on a fresh Debian 12 under systemd, no network: {took:.1f} s (two "
          f"runs: the disk full, then freed); serving {time.monotonic() - started:.1f} s "
          "after it began")
    assert "removed /usr/sbin/policy-rc.d left by an interrupted install.sh" in full.stdout
    assert not (host.root / "usr/sbin/policy-rc.d").exists()
    assert "installed the Debian packages" in full.stdout
    assert f"installed insmon {VERSION}" in full.stdout
    assert "wrote /etc/insmon/pager-token" in first.stdout
    host.sh(f"mv '/root/usb stick/{name}' /root/")
    # the commands the doctor and the configs name are on root's PATH
    assert host.sh(f"PATH={LOGIN} insmon --version").stdout.strip() == f"insmon {VERSION}"
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

    unit_files = " ".join(f"/usr/local/lib/systemd/system/{s}.service" for s in SERVICES)
    verify = host.sh(f"systemd-analyze verify --man=no {unit_files} gammu-smsd.service")
    assert verify.returncode == 0 and not verify.stdout.strip() and not verify.stderr.strip(), \
        verify.stdout + verify.stderr
    # what the bundle installed runs only as the site says: Debian's prometheus and
    # alertmanager never (ours take their ports), gammu-smsd once its modem is set up
    enabled = host.sh("systemctl is-enabled " + " ".join(SERVICES)
                      + " prometheus prometheus-alertmanager gammu-smsd")
    assert enabled.stdout.split() == ["enabled"] * 4 + ["disabled"] * 3, enabled.stdout
    # the units run with their hardening in force
    for service in SERVICES:
        held = hardening(host, service)
        bounding = "0000000000002000" if service == "insmon" else "0000000000000000"
        assert held == {"NoNewPrivs": "1", "Seccomp": "2", "CapBnd": bounding,
                        "/usr": "read-only"}, (service, held)
        exposure = host.sh(f"systemd-analyze security {service} --no-pager | tail -1")
        print(f"{service}: {exposure.stdout.strip()}")

    # a fresh install pages nobody: once Prometheus evaluated the rules on a run of every
    # check, no fault is pending or firing (but grade IV's calendar notice, the date's,
    # and the CPU's, which is this machine's, busy with the other tests), and the pager,
    # with nobody to page, sends nothing
    checks = {c["name"] for c in yaml.safe_load(
        (host.root / "etc/insmon/hospital.yaml").read_text())["checks"]}
    ran = wait_for("a run of every check in Prometheus", lambda: (
        lambda found: found if found and {r["metric"]["check"] for r in found} == checks
        else None)(query(host, "insmon_probe_last_run_timestamp_seconds")), 120)
    seen = max(float(r["value"][1]) for r in ran)
    wait_for("a rule evaluation after it", lambda: all(
        g["lastEvaluation"] > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seen + 1))
        for g in get(host, "http://127.0.0.1:9090/api/v1/rules")["data"]["groups"]), 60)
    faults = query(host, 'ALERTS{grade=~"I|II|III", alertname!~"CpuHigh|CpuSaturated"}')
    assert faults == [], faults
    token = (host.root / "etc/insmon/pager-token").read_text().strip()
    post_alert(host, "BeforeConfigured")
    [kept] = wait_for("the pager keeps the page Alertmanager sent", lambda: [
        i for i in (get(host, "http://127.0.0.1:9095/api/incidents", token) or [])
        if i["alertname"] == "BeforeConfigured"], 60)
    assert kept["deliveries"] == [] and kept["pages"] == [], kept
    metrics = host.outside("curl", "-s", "http://127.0.0.1:9095/metrics").stdout
    assert "insmon_pager_configured 0.0" in metrics
    # and its doctor names what to configure
    doctor = host.sh("/opt/insmon/.venv/bin/insmon doctor")
    print(doctor.stdout)
    assert doctor.returncode == 1
    for line in ("FAIL  /etc/insmon/pager.yaml is valid but pages nobody: no channels, "
                 "people or teams yet",
                 "FAIL  /etc/insmon/prometheus.yml still holds the example's: "
                 "global.external_labels.site",
                 "OK    none of the example's addresses, people or secrets in hospital.yaml, "
                 "pager.yaml",
                 "OK    one pager, no standby", "OK    insmon-pager: running, starts at boot",
                 "OK    Prometheus scrapes insmon:", "OK    Alertmanager's pager "
                 "http://127.0.0.1:9095 answers and takes Alertmanager's token",
                 "(it pages nobody)"):
        assert line in doctor.stdout, line
    mend = mends(doctor.stdout)

    watched = ("/etc", "/opt/insmon", "/usr/local/lib/systemd", "/var/lib/dpkg/status")
    configured = digest(host, *watched)
    second = host.sh(f"/root/{name}/install.sh")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "nothing to change" in second.stdout, second.stdout
    assert digest(host, *watched) == configured

    # the site fills in its pager, its name and its modem (a dry run on gammu's dummy
    # phone, as examples/gammu-smsdrc writes it): the doctor finds nothing to mend. (And
    # the CPU check goes: its CPU is this machine's, which other tests load.)
    (host.root / "etc/insmon/pager.yaml").write_text(PAGER)
    hospital = host.root / "etc/insmon/hospital.yaml"
    hospital.write_text(re.sub(r"\n  - name: settlement-server-cpu\n(    .*\n)+", "\n",
                               hospital.read_text()))
    (host.root / "etc/gammu-smsdrc").write_text(dry_run_smsdrc())
    # the site's calendar file, known a year past the test's own clock (as a site keeps
    # it when the chinesecalendar package runs out): the doctor's calendar line is OK
    site_calendar(host.root / "etc/insmon", seen_as=Path("/etc/insmon"))
    # with the mends the doctor gave, as it gave them
    site = host.sh(f"export PATH={LOGIN} && {mend['/etc/insmon/pager.yaml']} && "
                   "sed -i 's/hospital-1/hospital-9/' /etc/insmon/prometheus.yml && "
                   f"{mend['/etc/insmon/prometheus.yml']} && "
                   f"{dry_run_phone()} && systemctl enable --now gammu-smsd && "
                   "systemctl reload insmon")
    assert site.returncode == 0, site.stdout + site.stderr
    wait_serving(host)
    assert host.sh("ps -o user= -C gammu-smsd").stdout.split() == ["insmon"]
    doctor = wait_for("the doctor finds nothing to mend", lambda: (
        lambda done: done if done.returncode == 0 else print(done.stdout))(
        host.sh("/opt/insmon/.venv/bin/insmon doctor")), 60)
    print(doctor.stdout)
    for line in ("OK    /etc/insmon/pager.yaml is valid: pages 2 teams, 1 people",
                 "OK    none of the example's addresses, people or secrets in hospital.yaml, "
                 "pager.yaml, prometheus.yml",
                 "OK    the modem (/etc/gammu-smsdrc) answers: IMEI 999999999999999, signal",
                 "all is well"):
        assert line in doctor.stdout, line
    # the audit trails at the site: root's window (refused: too long) handed to insmon's
    # service over its socket; folder, key and socket the service's; both trails verify
    # against the installed Prometheus, which keeps their heads
    start = datetime.now().date() + timedelta(days=1)
    declared = host.sh("/opt/insmon/.venv/bin/insmon maintenance --site hospital-9 --from "
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

    # a page goes out once, and nothing kept from before
    post_alert(host, "AfterConfigured")
    phone = SimpleNamespace(dir=host.root / "var/spool/gammu")  # what the modem sent

    def sms(about: str) -> list[tuple[str, str]]:
        return [(number, text) for number, text in Phone.sent(phone) if about in text]

    wait_for("the SMS in gammu-smsd's sent folder", lambda: sms("AfterConfigured"), 60)
    [paged] = wait_for("the pager's delivery, sent", lambda: [
        i for i in (get(host, "http://127.0.0.1:9095/api/incidents", token) or [])
        if i["alertname"] == "AfterConfigured" and i["deliveries"]
        and all(d["status"] == "sent" for d in i["deliveries"])], 60)
    assert [d["person"] for d in paged["deliveries"]] == ["oncall"], paged
    outbox = host.root / "var/spool/gammu/outbox"
    wait_for("gammu-smsd's outbox empty", lambda: not list(outbox.iterdir()), 60)
    assert [number for number, _ in sms("AfterConfigured")] == ["13912340001"]
    assert sms("BeforeConfigured") == []
    [kept] = [i for i in get(host, "http://127.0.0.1:9095/api/incidents", token)
              if i["alertname"] == "BeforeConfigured"]
    assert kept["deliveries"] == [], kept
    # the on-call answers the SMS as it asks (ACK <id>): gammu-smsd hands it to the pager
    dummy = SimpleNamespace(phone=host.root / "var/spool/gammu/dummy", _received=0)
    Phone.reply(dummy, "+8613912340001", f"ACK {paged['id']}")
    wait_for("the incident acknowledged by the on-call's SMS", lambda: [
        i for i in get(host, "http://127.0.0.1:9095/api/incidents", token) or []
        if i["id"] == paged["id"] and i["acked_by"] == "oncall"], 60)

    # power off and boot: everything comes back by itself
    host.poweroff()
    boot = host.boot()
    started = time.monotonic()
    wait_serving(host)
    print(f"boot: systemd up in {boot:.1f} s, every unit serving "
          f"{boot + time.monotonic() - started:.1f} s after the boot began")
    assert host.sh("systemctl is-active gammu-smsd").stdout.strip() == "active"
    assert [i["id"] for i in get(host, "http://127.0.0.1:9095/api/incidents", token)
            if i["alertname"] == "AfterConfigured"] == [paged["id"]]
    seen_at = time.time()  # Prometheus has scraped insmon up by now

    # gammu-smsd as an older install.sh's drop-in ran it (the group gammu): it cannot read
    # the pager's config, so a reply acknowledges nothing; the doctor says so, and the
    # upgrade below restarts it as the new drop-in says
    dropin = host.root / "usr/local/lib/systemd/system/gammu-smsd.service.d/insmon.conf"
    dropin.write_text(dropin.read_text().replace("--group=insmon", "--group=gammu"))
    older = host.sh("systemctl daemon-reload && systemctl restart gammu-smsd && "
                    "/opt/insmon/.venv/bin/insmon doctor")
    assert "FAIL  gammu-smsd cannot read /etc/insmon/pager.yaml (group insmon, not one of " \
           "its groups)" in older.stdout, older.stdout

    # --upgrade with a newer bundle keeps the configs, the incidents and the history
    shutil.copy2(newer_bundle.result(), host.root / "root")
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
    assert host.sh("systemctl is-active insmon-pager").stdout.strip() == "active"
    upgraded = host.sh(f"/root/{newname}/install.sh --upgrade")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert f"installed insmon {NEWER} in /opt/insmon/.venv (was {VERSION})" in upgraded.stdout
    assert "restarted gammu-smsd as the drop-in says" in upgraded.stdout, upgraded.stdout
    groups = host.sh("grep ^Groups: /proc/$(systemctl show -p MainPID --value gammu-smsd)"
                     "/status; getent group insmon | cut -d: -f3")
    assert groups.stdout.split()[-1] in groups.stdout.split()[1:-1], groups.stdout
    assert host.sh("/opt/insmon/.venv/bin/insmon --version").stdout.strip() == \
        f"insmon {NEWER}"
    assert digest(host, "/etc/insmon") == configs
    assert (host.root / f"var/lib/insmon-pager/pager.db.before-{NEWER}").exists()
    wait_serving(host)
    kept = get(host, "http://127.0.0.1:9095/api/incidents", token)
    assert [i["id"] for i in kept if i["alertname"] == "AfterConfigured"] == [paged["id"]]
    # what the first Prometheus scraped before the upgrade
    history = query(host, 'up{job="insmon"}', seen_at)
    assert [r["value"][1] for r in history] == ["1"], history
    again = host.sh(f"/root/{newname}/install.sh --upgrade")
    assert "nothing to change" in again.stdout, again.stdout
    # back to the older bundle: refused, the newer pager may have migrated its store
    older = host.sh(f"/root/{name}/install.sh --upgrade")
    assert older.returncode == 1 and f"newer than this bundle's {VERSION}" in older.stderr
    assert host.sh("/opt/insmon/.venv/bin/insmon --version").stdout.strip() == \
        f"insmon {NEWER}"

    # --uninstall gives the host back: the units enabled and running are those of before
    removed = host.sh(f"/root/{newname}/install.sh --uninstall")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    print(removed.stdout)
    assert not (host.root / "opt/insmon").exists()
    assert not list((host.root / "usr/local/lib/systemd/system").glob("insmon*"))
    assert not (host.root / "usr/local/lib/systemd/system/gammu-smsd.service.d").exists()
    assert not (host.root / "usr/local/bin/insmon").is_symlink()
    assert (host.root / "etc/insmon/pager.yaml").exists()
    assert (host.root / "var/lib/insmon-pager/pager.db").exists()
    assert units(host) == before

    # --purge while a process of the user still runs removes nothing
    host.sh("systemd-run --unit=leftover --uid=insmon sleep 300")
    wait_for("the leftover process", lambda: host.sh("pgrep -u insmon").returncode == 0, 30)
    purge = host.sh(f"/root/{newname}/install.sh --uninstall --purge")
    assert purge.returncode == 1 and "pgrep -u insmon" in purge.stderr, purge
    assert (host.root / "var/lib/insmon-pager/pager.db").exists()
    host.sh("systemctl stop leftover")
    purge = host.sh(f"/root/{newname}/install.sh --uninstall --purge")
    assert purge.returncode == 0, purge.stdout + purge.stderr
    print(purge.stdout)
    assert not (host.root / "etc/insmon").exists()
    assert host.sh("getent passwd insmon").returncode == 2
    assert host.sh("getent group insmon insmon-token").returncode == 2
    # nothing left to a removed user's number, gammu-smsd not failing for it
    assert host.sh("find /var/spool/gammu -nouser -o -nogroup").stdout == ""
    assert host.sh("systemctl is-failed gammu-smsd").stdout.strip() == "inactive"
    assert units(host) == before
