"""The insmon command as an engineer runs it: real subprocesses, signals, HTTP."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FIXTURES, INSMON, ROOT, free_port, wait_for


def insmon(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INSMON, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_version() -> None:
    result = insmon("--version")
    assert result.returncode == 0 and result.stdout.startswith("insmon ")


def test_validate_accepts_the_example() -> None:
    result = insmon("validate", str(ROOT / "examples" / "hospital.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{ROOT / 'examples' / 'hospital.yaml'}: ok, 12 checks: "
                                    "working-calendar (calendar), settlement-server-cpu (cpu), "
                                    "insurance-private-network (vpn), private-line-ping (icmp), "
                                    "front-end-http (http)")


def test_validate_prints_every_error_of_every_file() -> None:
    bad = FIXTURES / "config" / "invalid"
    result = insmon("validate", str(bad / "every-error.yaml"), str(bad / "missing-name.yaml"),
                    str(ROOT / "examples" / "hospital.yaml"))
    assert result.returncode == 1
    errors = result.stderr.splitlines()
    assert len(errors) == 4  # three in the first file, one in the second
    assert errors[0].startswith(f"{bad / 'every-error.yaml'}:8: checks[0].interval:")
    assert errors[3] == f"{bad / 'missing-name.yaml'}:3: checks[0].name: required key is missing"
    assert "hospital.yaml: ok" in result.stdout  # the good file is still checked


def test_once_prints_a_table(tmp_path: Path) -> None:
    config = tmp_path / "site.yaml"
    config.write_text("checks:\n- {name: settlement-cpu, kind: cpu, per_core: true}\n")
    result = insmon("once", "-c", str(config))
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split() == ["CHECK", "KIND", "STATUS", "DURATION", "DETAIL"]
    assert row.split()[:3] == ["settlement-cpu", "cpu", "ok"]
    assert "usage " in row and " on " in row


def test_once_with_a_bad_config_says_why() -> None:
    result = insmon("once", "-c", "/nonexistent.yaml")
    assert result.returncode == 1
    assert result.stderr == "/nonexistent.yaml: cannot read config: No such file or directory\n"


class Running:
    """`insmon run` as a subprocess on a loopback port."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [INSMON, "run", "--listen", f"127.0.0.1:{self.port}", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = requests.get(self.url + "/metrics", timeout=5).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            pytest.fail(f"insmon did not stop within 10 s of SIGTERM:\n{err}")
        return self.proc.returncode, err


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Running, Path]]:
    config = tmp_path / "site.yaml"
    config.write_text("checks:\n- {name: core-cpu, kind: cpu, interval: 500ms}\n")
    monitor = Running("-c", str(config))
    yield monitor, config
    if monitor.proc.poll() is None:
        monitor.proc.kill()
        monitor.proc.wait()


def ok_runs(monitor: Running, check: str) -> float:
    return monitor.value("insmon_probe_runs_total", check=check, kind="cpu", status="ok") or 0


def test_run_serves_and_stops_cleanly_on_sigterm(running: tuple[Running, Path]) -> None:
    monitor, _ = running
    wait_for(lambda: ok_runs(monitor, "core-cpu") >= 2, 15, "two ok runs of core-cpu")
    assert 0 <= monitor.value("insmon_cpu_usage_ratio", check="core-cpu") <= 1
    assert requests.get(monitor.url + "/healthz", timeout=5).text == "ok\n"
    code, err = monitor.stop()
    assert code == 0, err
    assert "started with the config file" in err and "stopping" in err
    assert "Traceback" not in err


def test_sighup_with_a_broken_config_keeps_the_old_one(running: tuple[Running, Path]) -> None:
    monitor, config = running
    wait_for(lambda: ok_runs(monitor, "core-cpu") >= 1, 15, "core-cpu to run")
    assert monitor.value("insmon_config_last_reload_successful") == 1
    first_sha = hashlib.sha256(config.read_bytes()).hexdigest()
    assert monitor.value("insmon_config_info", source=str(config), sha256=first_sha) == 1

    good = config.read_text()
    config.write_text(good + "- {name: core-cpu, kind: cpu}\n")  # a duplicate name
    monitor.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: monitor.value("insmon_config_last_reload_successful") == 0, 10,
             "the reload to be rejected")
    before = ok_runs(monitor, "core-cpu")
    wait_for(lambda: ok_runs(monitor, "core-cpu") >= before + 2, 10,
             "the old config's check to keep running")

    config.write_text(good + "- {name: second-cpu, kind: cpu, interval: 500ms}\n")
    monitor.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: ok_runs(monitor, "second-cpu") >= 1, 15, "the new check to run")
    assert monitor.value("insmon_config_last_reload_successful") == 1
    assert ok_runs(monitor, "core-cpu") >= before + 2  # kept its counters: no reset

    new_sha = hashlib.sha256(config.read_bytes()).hexdigest()
    assert monitor.value("insmon_config_info", source=str(config), sha256=new_sha) == 1

    code, err = monitor.stop()
    assert code == 0
    assert "config reload rejected, still running the previous config" in err
    assert "checks[1].name: check name 'core-cpu' is already used by checks[0]" in err
    # the audit trail: every load, its result and the config's hash
    audit = [line.split("insmon.audit: ")[1] for line in err.splitlines()
             if "insmon.audit: " in line]
    uid = os.getuid()
    assert audit == [f"config loaded source={config} sha256={first_sha} uid={uid} checks=1",
                     f"config rejected source={config} sha256=- uid={uid} errors=1",
                     f"config reloaded source={config} sha256={new_sha} uid={uid} checks=2"]


def test_run_on_the_embedded_default() -> None:
    monitor = Running()
    try:
        wait_for(lambda: monitor.value("insmon_cpu_usage_ratio", check="host-cpu")
                 is not None, 15, "the default config's CPU series")
        assert monitor.value("insmon_cpu_core_usage_ratio", check="host-cpu",
                             core="0") is not None
        wait_for(lambda: monitor.value("insmon_probe_success", check="host-storage-latency",
                                       kind="storage_latency") == 1, 15, "storage latency")
    finally:
        code, err = monitor.stop()
    assert code == 0
    assert "started with the embedded default config (" in err
    assert f"metrics at http://127.0.0.1:{monitor.port}/metrics" in err


def test_run_reports_a_busy_port() -> None:
    first = Running()
    try:
        wait_for(lambda: requests.get(first.url + "/healthz", timeout=2).ok, 15, "first up")
        result = insmon("run", "--listen", f"127.0.0.1:{first.port}", timeout=30)
        assert result.returncode == 1
        assert f"cannot listen on 127.0.0.1:{first.port}: Address already in use" in result.stderr
    finally:
        first.stop()


def test_a_reload_through_every_kind_of_bad_file_and_back_keeps_every_check_running(
        running: tuple[Running, Path]) -> None:
    monitor, config = running
    wait_for(lambda: ok_runs(monitor, "core-cpu") >= 1, 15, "core-cpu to run")
    good = config.read_text() + "- {name: second-cpu, kind: cpu, interval: 500ms}\n"
    config.write_text(good)
    monitor.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: ok_runs(monitor, "second-cpu") >= 1, 15, "the second check to run")
    bad_files = [
        good + "- {name: forever, kind: cpu, interval: .inf}\n",
        good + '- {name: forever, kind: cpu, interval: "99999999h"}\n',
        good + "- {name: forever, kind: cpu, interval: 99999999999999999999999}\n",
        good + "- {? [1, 2] : x}\n",
        good + "- {name: tagged, kind: cpu, interval: !!python/name:os.system 1}\n",
        "checks: " + "[" * 3000 + "]" * 3000 + "\n",
    ]
    for bad in bad_files:
        config.write_text(bad)
        monitor.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: monitor.value("insmon_config_last_reload_successful") == 0, 10,
                 "the reload to be rejected")
        config.write_text(good)
        monitor.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: monitor.value("insmon_config_last_reload_successful") == 1, 10,
                 "the good file to load again")
        for check in ("core-cpu", "second-cpu"):
            before = ok_runs(monitor, check)
            wait_for(lambda c=check, n=before: ok_runs(monitor, c) > n, 10, f"{check} to run")
    code, err = monitor.stop()
    assert code == 0 and "Traceback" not in err


def test_runs_missed_while_stopped_are_counted_and_a_stop_mid_run_is_clean(
        tmp_path: Path) -> None:
    import socket
    import time

    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    config = tmp_path / "site.yaml"
    config.write_text(
        "checks:\n- {name: core-cpu, kind: cpu, interval: 500ms}\n"
        f"- {{name: slow-web, kind: http, url: 'http://127.0.0.1:{silent.getsockname()[1]}/',"
        " interval: 60s, timeout: 30s}\n")
    monitor = Running("-c", str(config))
    try:
        wait_for(lambda: ok_runs(monitor, "core-cpu") >= 2, 15, "core-cpu to run")
        monitor.proc.send_signal(signal.SIGSTOP)
        time.sleep(3)
        monitor.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: (monitor.value("insmon_probe_runs_skipped_total", check="core-cpu",
                                        kind="cpu") or 0) >= 4, 10,
                 "the runs missed while stopped to be counted")
        time.sleep(1)  # slow-web is in the middle of its 30 s run now
        started = time.monotonic()
        code, err = monitor.stop()
        # not held up by the run's 20 s and more still to go, even on a busy host
        assert time.monotonic() - started < 10
    finally:
        silent.close()
    assert code == 0
    assert "run(s) missed since" in err and "counted as skipped" in err
    assert "check slow-web: run abandoned, insmon is stopping" in err
    assert "Traceback" not in err and "CancelledError" not in err


def test_validate_of_ten_thousand_checks_says_how_many_in_one_short_line(
        tmp_path: Path) -> None:
    config = tmp_path / "many.yaml"
    config.write_text("checks:\n" + "".join(f"  - {{name: c{i}, kind: cpu}}\n"
                                            for i in range(10_000)))
    result = insmon("validate", str(config))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) < 1000 and result.stdout.endswith(" and 9970 more\n")
