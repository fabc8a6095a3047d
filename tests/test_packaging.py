"""The wheel, as a new user gets it: built, installed into a fresh virtualenv outside the
checkout, and run from another directory. Nothing may come from the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the tree's files (as a clone has them), so the
    build leaves nothing in the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=ROOT, capture_output=True,
                           check=True, timeout=30).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (tmp / "src" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tmp / "src" / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--disable-pip-version-check", "-w",
                    str(tmp / "dist"), str(tmp / "src")], check=True, timeout=300,
                   cwd=tmp, capture_output=True)
    [built] = (tmp / "dist").glob("insmon-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a new virtualenv holding the wheel. The dependencies come from
    the test environment's site-packages (a plain path, so its editable insmon is not
    seen); insmon itself only from the wheel."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "--quiet", "--no-deps", "--disable-pip-version-check",
                    str(wheel)], check=True, timeout=300, capture_output=True)
    # Only now: had pip seen the test environment, it would have "upgraded" (removed)
    # the editable insmon there.
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv),
                                                    "platbase": str(venv)}))
    (site / "test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    (venv / "elsewhere").mkdir()
    return venv / "bin"


def run(bin_dir: Path, *argv: str, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(bin_dir / argv[0]), *argv[1:]], capture_output=True,
                          text=True, timeout=120, cwd=bin_dir.parent / "elsewhere",
                          env=env, **kwargs)


def test_the_wheel_holds_every_package_and_the_data_the_commands_read(wheel: Path) -> None:
    packages = {str(p.parent.relative_to(ROOT)) for p in ROOT.glob("*/**/__init__.py")
                if p.relative_to(ROOT).parts[0] not in ("tests", "bench", ".venv", "build")}
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in packages:
        assert f"{package}/__init__.py" in names, package
    for data in ("monitor/default.yaml", "alert_rules/alerts.yml",
                 "alert_rules/recording.yml", "alert_rules/alertmanager.yml",
                 "alert_rules/prometheus.yml", "alert_rules/templates/insmon.tmpl",
                 "alert_rules/runbooks/SettlementPathDown.md", "ops/lab/frontend.py",
                 "ops/lab/impair.py"):
        assert data in names, data


def test_the_installed_commands_run_outside_the_checkout(installed: Path) -> None:
    version = run(installed, "insmon", "--version")
    assert version.returncode == 0 and version.stdout.startswith("insmon 0."), version.stderr

    once = run(installed, "insmon", "once")  # the embedded default config: this host
    assert "CHECK" in once.stdout and "host-cpu" in once.stdout, once.stderr
    assert once.returncode in (0, 1) and "Traceback" not in once.stderr

    example = installed.parent / "elsewhere" / "hospital.yaml"
    example.write_text((ROOT / "examples" / "hospital.yaml").read_text())
    valid = run(installed, "insmon", "validate", str(example))
    assert valid.returncode == 0 and ": ok, " in valid.stdout, valid.stderr

    pager = installed.parent / "elsewhere" / "pager.yaml"
    pager.write_text((ROOT / "examples" / "pager.yaml").read_text())
    valid = run(installed, "insmon", "pager", "validate", str(pager))
    assert valid.returncode == 0 and ": OK (" in valid.stdout, valid.stderr

    for command in ("drill", "review", "run", "maintenance", "pager"):
        helped = run(installed, "insmon", command, "--help")
        assert helped.returncode == 0 and "usage: insmon " + command in helped.stdout, (
            helped.stderr)
    scenarios = run(installed, "insmon", "drill", "--list")
    assert scenarios.returncode == 0 and "reference" in scenarios.stdout, scenarios.stderr


def test_the_installed_package_reads_its_data_from_the_install(installed: Path) -> None:
    where = run(installed, "python", "-c",
                "import alert_rules, monitor, ops.stack; "
                "print(alert_rules.DIR); print(monitor.__file__); print(ops.stack.RULES)")
    assert where.returncode == 0, where.stderr
    for line in where.stdout.splitlines():
        assert str(installed.parent) in line and str(ROOT) not in line, line
