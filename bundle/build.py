"""`make bundle`: the offline install bundle of one site host, per architecture.

    python bundle/build.py [--arch amd64] [--arch arm64] [--out dist] [--cache DIR]

writes dist/insmon-<version>-<arch>-offline.tar.gz: the insmon wheel and a wheel of every
dependency for CPython 3.11 on that architecture (Debian 12's Python), the Debian 12
packages the site needs beside insmon (Python's venv, Prometheus, Alertmanager,
gammu-smsd, and with --node-exporter node_exporter) with their dependencies and a
Packages index (apt installs from the folder, taking only what the host lacks), the
shipped rules, dashboards and examples, the systemd units, the site's Prometheus and
Alertmanager configs for one host, install.sh, and SHA256SUMS (every other file's digest).

It runs on Debian (apt-get, dpkg-deb) with the internet (the Python package index and the
Debian mirror) and needs nothing from the target; the Debian downloads are kept in --cache
(default ~/.cache/insmon-bundle) and pip's in its own cache.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# What a site host needs beside insmon, from Debian 12: the venv insmon lives in, the
# site's Prometheus and Alertmanager, the modem's daemon (SMS without the internet), kill
# (procps: the units' ExecReload; a minimal Debian has none), and a CJK font for the
# monthly report's charts.
DEBIANS = ["python3", "python3-venv", "prometheus", "prometheus-alertmanager", "gammu-smsd",
           "procps", "fonts-wqy-microhei"]
ARCHES = {"amd64": "x86_64", "arm64": "aarch64"}
# Debian 12: CPython 3.11 on glibc 2.36; manylinux wheels up to 2_36 run there.
PYTHON = "3.11"
GLIBC_MINOR = 36
APT_LISTS_FRESH = 24 * 3600  # the mirror's indexes are read again once a day


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", choices=sorted(ARCHES))
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--cache", type=Path, default=Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "insmon-bundle")
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="the insmon tree to bundle (default: this one)")
    parser.add_argument("--node-exporter", action="store_true",
                        help="add Debian's prometheus-node-exporter")
    args = parser.parse_args(argv)
    for arch in args.arch or sorted(ARCHES):
        started = time.monotonic()
        path = build(arch, args.source.resolve(), args.out.resolve(), args.cache.resolve(),
                     node_exporter=args.node_exporter)
        print(f"{path}  {path.stat().st_size / 1e6:.1f} MB  "
              f"({time.monotonic() - started:.0f} s)", flush=True)
    return 0


def build(arch: str, source: Path, out: Path, cache: Path, *,
          node_exporter: bool = False) -> Path:
    version = tomllib.loads((source / "pyproject.toml").read_text())["project"]["version"]
    name = f"insmon-{version}-{arch}-offline"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="insmon-bundle-") as tmp:
        top = Path(tmp) / name
        wheels(source, arch, top / "wheels")
        wanted = DEBIANS + ["prometheus-node-exporter"] * node_exporter
        debians(arch, wanted, top / "debs", cache / f"apt-{arch}")
        share(source, top / "share")
        site_configs(source, top / "site")
        shutil.copytree(source / "bundle" / "systemd", top / "systemd")
        shutil.copy2(source / "bundle" / "install.sh", top / "install.sh")
        (top / "install.sh").chmod(0o755)
        (top / "BUNDLE").write_text(f"version={version}\narch={arch}\n"
                                    f"debians=\"{' '.join(wanted)}\"\n")
        manifest(top)
        target = out / f"{name}.tar.gz"
        partial = target.with_suffix(".partial")
        with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
            tar.add(top, arcname=name, filter=_owned_by_root)
        partial.replace(target)
    return target


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def wheels(source: Path, arch: str, dest: Path) -> None:
    """insmon's wheel, and every dependency's as pip would pick it on Debian 12's Python
    of `arch` (binary wheels only: nothing is compiled on the hospital's host). pip's own
    cache keeps a second build from downloading them again."""
    dest.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="insmon-src-") as tmp:
        # from a copy: building in the tree would leave build/ and egg-info behind
        shutil.copytree(source, Path(tmp) / "src", ignore=shutil.ignore_patterns(
            ".git", ".venv", "dist", "build", "*.egg-info", "__pycache__", ".*_cache"))
        run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
             "--no-build-isolation", "-w", str(dest), str(Path(tmp) / "src")])
    machine = ARCHES[arch]
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC_MINOR, 16, -1)]
    platforms += [f"manylinux2014_{machine}", f"linux_{machine}"]
    dependencies = tomllib.loads((source / "pyproject.toml").read_text())["project"][
        "dependencies"]
    run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(dest),
         "--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp",
         "--abi", "cp311", "--abi", "abi3", "--abi", "none",
         *[f"--platform={p}" for p in platforms], *dependencies])


def debians(arch: str, packages: list[str], dest: Path, cache: Path) -> None:
    """The packages and every dependency as apt resolves them for an empty Debian 12
    system of `arch` (packages every system has, the Essential ones, are left out), and
    the Packages index that lets apt on the host install from the folder."""
    cache.mkdir(parents=True, exist_ok=True)
    # two builds at once on one cache take turns (apt's own locks are off: Debug::NoLocking)
    with open(cache / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        config = _apt_config(arch, cache)
        env = {**os.environ, "APT_CONFIG": str(config), "DEBIAN_FRONTEND": "noninteractive"}
        lists = cache / "lists"
        fresh = [p for p in lists.glob("*_Packages*")
                 if time.time() - p.stat().st_mtime < APT_LISTS_FRESH]
        if not fresh:
            run(["apt-get", "update", "-q"], env=env)
        simulated = run(["apt-get", "install", "-s", "-q", *packages], env=env)
        chosen = re.findall(r"^Inst (\S+) \((\S+) ", simulated, re.M)
        if not chosen:
            raise SystemExit(f"apt chose nothing for {packages}:\n{simulated}")
        archives = cache / "archives"
        run(["apt-get", "download", "-q", *[f"{p}={v}" for p, v in chosen]], env=env,
            cwd=archives)
    dest.mkdir(parents=True)
    for package, version in chosen:
        [deb] = archives.glob(f"{package}_{version.replace(':', '%3a')}_*.deb")
        shutil.copy2(deb, dest / deb.name)
    _packages_index(dest)


def _apt_config(arch: str, cache: Path) -> Path:
    """apt of its own for `arch` in `cache`: the host's apt state is not touched."""
    for folder in ("lists/partial", "archives/partial", "etc/preferences.d",
                   "etc/sources.list.d", "etc/apt.conf.d", "etc/trusted.gpg.d"):
        (cache / folder).mkdir(parents=True, exist_ok=True)
    if not (cache / "status").exists():  # (a newer one would make apt rebuild its cache)
        (cache / "status").touch()
    sources = "".join(
        f"deb [arch={arch} signed-by={KEYRING}] {url} {suite} main\n"
        for url, suite in ((MIRROR, "bookworm"), (MIRROR, "bookworm-updates"),
                           (SECURITY, "bookworm-security")))
    _write_if_changed(cache / "etc/sources.list", sources)
    config = cache / "apt.conf"
    _write_if_changed(config, "\n".join([
        f'APT::Architecture "{arch}";',
        f'APT::Architectures {{ "{arch}"; }};',
        f'Dir::State "{cache}";',
        f'Dir::State::Lists "{cache}/lists";',
        f'Dir::State::status "{cache}/status";',
        f'Dir::Cache "{cache}";',
        f'Dir::Cache::Archives "{cache}/archives";',
        f'Dir::Etc "{cache}/etc";',
        'Dir::Etc::Parts "apt.conf.d";',
        # an empty system that does not ask for every Essential package: those are on
        # every Debian host, and Debian packages do not list them as dependencies
        'pkgCacheGen::Essential "none";',
        'APT::Install-Recommends "false";',
        'Debug::NoLocking "true";', ""]))
    return config


def _write_if_changed(path: Path, text: str) -> None:
    """Written only if it changed: apt rebuilds its package cache for a newer sources.list."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _packages_index(folder: Path) -> None:
    """A Packages file for a flat repository (`deb [trusted=yes] file:FOLDER ./`): the
    control fields of every .deb with its file name, size and SHA-256."""
    entries = []
    for deb in sorted(folder.glob("*.deb")):
        control = run(["dpkg-deb", "-f", str(deb)]).rstrip("\n")
        digest = hashlib.sha256(deb.read_bytes()).hexdigest()
        entries.append(f"{control}\nFilename: ./{deb.name}\nSize: {deb.stat().st_size}\n"
                       f"SHA256: {digest}\n")
    (folder / "Packages").write_text("\n".join(entries))


def share(source: Path, dest: Path) -> None:
    """What the site's services read from the code: rules, templates, runbooks,
    dashboards, the example configs (upgraded with the code; the site's own copies are
    in /etc/insmon)."""
    keep = shutil.ignore_patterns("__pycache__", "*.py", "tests")
    shutil.copytree(source / "alert_rules", dest / "alert_rules", ignore=keep)
    shutil.copytree(source / "grafana" / "dashboards", dest / "grafana" / "dashboards")
    shutil.copytree(source / "grafana" / "provisioning", dest / "grafana" / "provisioning")
    shutil.copytree(source / "examples", dest / "examples")


# The site's configs, from the compose stack's: every service on this one host.
SHARE = "/opt/insmon/share"
HOSTS = {"localhost:9090": "127.0.0.1:9090", "insmon:9829": "127.0.0.1:9829",
         "insmon-pager:9095": "127.0.0.1:9095", "alertmanager-1:9093": "127.0.0.1:9093"}
ELSEWHERE = ("insmon-pager-standby:9095", "alertmanager-2:9093")  # a second host's
HEADER = """\
# The site's {what} for one host, installed by the offline bundle's install.sh
# where none was: every service of the stack on this host. Made from the shipped
# {SHARE}/alert_rules/{name} (its comments explain the timings).
# An upgrade keeps this file. A standby pager or a second Alertmanager on another host:
# add its address here.
"""


# What the installed hospital.yaml checks from day one: this host alone. The example's
# other checks name a site's addresses, which are not this site's until it writes them.
HOST_KINDS = ("calendar", "cpu", "disk_io")
# What the installed pager.yaml keeps: where it listens, its token, its store. The rest
# (channels, people, teams, the pair, ...) is written out but commented: it pages nobody.
PAGER_KEEPS = ("listen", "auth", "database")
STARTING_POINT = """\
# This site's {name}, written by insmon's install.sh as a starting point that pages
# nobody: {what}
# Below is the example (/opt/insmon/share/examples/{name}) with what names a site's
# addresses, people or secrets commented out (`# ` before each line of it): uncomment
# each once it is this site's. `insmon doctor` names the example's values still in place.
# ---- the example, as shipped ----
"""


def site_configs(source: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    hospital = (source / "examples/hospital.yaml").read_text()
    head, checks = hospital.split("\nchecks:\n", 1)
    (dest / "hospital.yaml").write_text(STARTING_POINT.format(
        name="hospital.yaml", what="it checks this host alone (the working calendar, the "
        "CPU and the disks)\n# until the site's private network, front-end and storage "
        "are written in; then\n# `insmon validate /etc/insmon/hospital.yaml && systemctl "
        "reload insmon`.") + head + "\nchecks:\n" + _commented(
        checks, 2, lambda item: re.search(r"kind: *(\w+)", item).group(1) in HOST_KINDS))
    pager = (source / "examples/pager.yaml").read_text()
    (dest / "pager.yaml").write_text(STARTING_POINT.format(
        name="pager.yaml", what="it keeps every page and sends none (insmon_pager_configured "
        "0) until its\n# channels, people and teams are written in; then `insmon pager "
        "validate\n# /etc/insmon/pager.yaml && systemctl restart insmon-pager`. One pager "
        "has no `pair`\n# (README: adding the standby pager).") + _commented(
        pager, 0, lambda item: item.split(":", 1)[0] in PAGER_KEEPS))
    prometheus = yaml.safe_load((source / "alert_rules/prometheus.yml").read_text())
    prometheus["rule_files"] = [f"{SHARE}/alert_rules/{f}" for f in prometheus["rule_files"]]
    for section in (*prometheus["alerting"]["alertmanagers"],
                    *prometheus["scrape_configs"]):
        for static in section["static_configs"]:
            static["targets"] = _here(static["targets"])
    _write(dest / "prometheus.yml", prometheus, "Prometheus config", "prometheus.yml")

    alertmanager = yaml.safe_load((source / "alert_rules/alertmanager.yml").read_text())
    alertmanager["templates"] = [f"{SHARE}/alert_rules/{t}"
                                 for t in alertmanager["templates"]]
    for receiver in alertmanager["receivers"]:
        hooks = []
        for hook in receiver.get("webhook_configs", []):
            host = hook["url"].split("/")[2]
            if host in ELSEWHERE:
                continue
            hook["url"] = hook["url"].replace(host, HOSTS[host])
            hook["http_config"]["authorization"]["credentials_file"] = (
                "/etc/insmon/pager-token")
            hooks.append(hook)
        if "webhook_configs" in receiver:
            receiver["webhook_configs"] = hooks
    _write(dest / "alertmanager.yml", alertmanager, "Alertmanager config", "alertmanager.yml")


def _commented(text: str, indent: int, keep) -> str:
    """`text` with each YAML item at `indent` columns (a key, or a `- ` list entry) and
    its deeper lines commented out (`# ` at that column) unless `keep(the item's text)`."""
    out: list[str] = []
    item: list[str] = []

    def flush() -> None:
        if item:
            out.extend(item if keep("\n".join(item)) else
                       [f"{line[:indent]}# {line[indent:]}" if line.strip() else line
                        for line in item])
        item.clear()

    for line in text.splitlines():
        depth = len(line) - len(line.lstrip(" "))
        if line.strip() and not line.lstrip().startswith("#") and depth == indent:
            flush()
            item.append(line)
        elif item and line.strip() and depth > indent:
            item.append(line)
        else:
            flush()
            out.append(line)
    flush()
    return "\n".join(out) + "\n"


def _here(targets: list[str]) -> list[str]:
    return [HOSTS.get(t, t) for t in targets if t not in ELSEWHERE]


def _write(path: Path, data: dict, what: str, name: str) -> None:
    class NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data):  # each receiver written out whole
            return True

    text = yaml.dump(data, Dumper=NoAliases, sort_keys=False, allow_unicode=True,
                     width=100)
    path.write_text(HEADER.format(what=what, SHARE=SHARE, name=name) + text)


def manifest(top: Path) -> None:
    """SHA256SUMS in `sha256sum -c` form: every file of the bundle but itself."""
    lines = []
    for path in sorted(p for p in top.rglob("*") if p.is_file()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(top)}\n")
    (top / "SHA256SUMS").write_text("".join(lines))


def run(argv: list[str], **kwargs) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=1800, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed ({result.returncode}):\n"
                         f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result.stdout


if __name__ == "__main__":
    sys.exit(main())
