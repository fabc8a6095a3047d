"""docker-compose.yml and the Dockerfile, checked without Docker (it cannot run on the
build machine): the services, mounts, volumes and health checks are what the stack
needs; every file it mounts exists; the configs, laid out as the containers see them,
pass the real promtool and amtool; the image installs insmon with the README's step.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def binds(service: str) -> dict[str, str]:
    """container path -> repository path of the service's bind mounts."""
    found = {}
    for volume in SERVICES[service].get("volumes", []):
        volume = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", volume)  # ${VAR:-default}: default
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = source
    return found


def test_the_stack_has_its_services_with_health_checks_and_named_volumes() -> None:
    assert set(SERVICES) == {"insmon", "prometheus", "alertmanager-1", "alertmanager-2",
                             "insmon-pager", "insmon-pager-standby", "grafana"}
    for name, service in SERVICES.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
        assert service["restart"] == "unless-stopped", name
    named = {v.split(":")[0] for s in SERVICES.values() for v in s.get("volumes", [])
             if not v.startswith(("./", "$"))}
    assert named == set(COMPOSE["volumes"]) == {
        "insmon-state", "prometheus-data", "alertmanager-1-data", "alertmanager-2-data",
        "grafana-data", "pager-data", "pager-standby-data"}


def test_every_mounted_file_exists() -> None:
    for name in SERVICES:
        for target, source in binds(name).items():
            assert (ROOT / source).exists(), f"{name}: {source} -> {target}"
    assert binds("insmon") == {"/etc/insmon/insmon.yaml": "./examples/hospital.yaml"}


def test_insmon_runs_unprivileged_with_only_net_raw() -> None:
    insmon = SERVICES["insmon"]
    assert insmon["build"] == "."
    assert insmon["cap_drop"] == ["ALL"] and insmon["cap_add"] == ["NET_RAW"]
    assert insmon["network_mode"] == "host"  # it must see the host's tunnel interfaces
    assert insmon["command"] == ["run", "-c", "/etc/insmon/insmon.yaml"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users == ["insmon"]
    assert "setcap cap_net_raw+ep" in dockerfile
    # no-new-privileges would drop the interpreter's file capability
    assert "no-new-privileges:true" not in str(insmon.get("security_opt", []))


def test_the_image_installs_insmon_with_the_readme_step() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^run: \$\(VENV\)/\.runtime$", makefile, re.M)
    assert "make run    # installs insmon into .venv" in readme
    [install] = re.findall(r"^RUN make (\S+)$", dockerfile, re.M)
    assert install == ".venv/.runtime"  # what `make run` builds before `insmon run`
    copied = set()
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path
            copied.add(path.rstrip("/"))
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]
    assert {package.split(".")[0] for package in packages} <= copied  # the image has them all


def test_prometheus_keeps_190_days_and_loads_the_project_rules(tmp_path: Path) -> None:
    prometheus = SERVICES["prometheus"]
    assert "--storage.tsdb.retention.time=190d" in prometheus["command"]
    assert "insmon:host-gateway" in prometheus["extra_hosts"]
    etc = tmp_path / "etc" / "prometheus"  # the container's layout
    etc.mkdir(parents=True)
    for target, source in binds("prometheus").items():
        shutil.copy(ROOT / source, etc / Path(target).name)
    config = yaml.safe_load((etc / "prometheus.yml").read_text())
    assert sorted(config["rule_files"]) == ["alerts.yml", "recording.yml"]
    result = subprocess.run(["promtool", "check", "config", str(etc / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout


def test_the_alertmanagers_are_a_clustered_pair_prometheus_sends_to() -> None:
    first, second = SERVICES["alertmanager-1"], SERVICES["alertmanager-2"]
    assert "--cluster.peer=alertmanager-2:9094" in first["command"]
    assert "--cluster.peer=alertmanager-1:9094" in second["command"]
    assert binds("alertmanager-1") == binds("alertmanager-2")  # one routing for both
    prometheus = yaml.safe_load((ROOT / "alert_rules/prometheus.yml").read_text())
    [targets] = [c["targets"] for a in prometheus["alerting"]["alertmanagers"]
                 for c in a["static_configs"]]
    assert targets == ["alertmanager-1:9093", "alertmanager-2:9093"]


@pytest.mark.parametrize("service", ["alertmanager-1", "alertmanager-2"])
def test_alertmanager_config_as_mounted(tmp_path: Path, service: str) -> None:
    etc = tmp_path / "etc" / "alertmanager"
    for target, source in binds(service).items():
        destination = etc / Path(target).relative_to("/etc/alertmanager")
        destination.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, destination)
        else:
            shutil.copy(ROOT / source, destination)
    assert (etc / "templates" / "insmon.tmpl").exists()  # amtool passes an empty glob too
    result = subprocess.run(["amtool", "check-config", str(etc / "alertmanager.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " - 1 templates\n  SUCCESS" in result.stdout  # templates/*.tmpl found, parsed


def test_every_receiver_posts_to_both_pagers_of_the_stack() -> None:
    """The shipped receivers reach services that exist: the pair's two pagers, each at the
    port, role and store its config names, and every receiver posts to both."""
    config = yaml.safe_load((ROOT / binds("insmon-pager")["/etc/insmon/pager.yaml"]).read_text())
    assert config["listen"].endswith(":9095")
    for service, role, volume in (("insmon-pager", "active", "pager-data"),
                                  ("insmon-pager-standby", "standby", "pager-standby-data")):
        pager = SERVICES[service]
        assert pager["command"] == ["pager", "run", "-c", "/etc/insmon/pager.yaml",
                                    "--role", role]
        assert binds(service)["/etc/insmon/pager.yaml"] == binds("insmon-pager")[
            "/etc/insmon/pager.yaml"]  # one config for both
        assert config["pair"][role]["url"] == f"http://{service}:9095"
        assert any(v.startswith(f"{volume}:" + str(Path(config["database"]).parent))
                   for v in pager["volumes"])
    routing = yaml.safe_load((ROOT / "alert_rules/alertmanager.yml").read_text())
    for receiver in (r for r in routing["receivers"] if r.get("webhook_configs")):
        urls = [hook["url"] for hook in receiver["webhook_configs"]]
        assert urls == [f"http://insmon-pager:9095/{receiver['name']}",
                        f"http://insmon-pager-standby:9095/{receiver['name']}"]
    teams = {r["name"] for r in routing["receivers"] if r.get("webhook_configs")} - {
        "watchdog", "drill", "unrouted"}
    assert teams == set(config["teams"])  # every team routed to has a rota in the example
    prometheus = yaml.safe_load((ROOT / "alert_rules/prometheus.yml").read_text())
    [job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "insmon-pager"]
    assert job["static_configs"][0]["targets"] == ["insmon-pager:9095",
                                                   "insmon-pager-standby:9095"]


def test_grafana_is_provisioned_with_the_dashboards() -> None:
    grafana = SERVICES["grafana"]
    mounts = binds("grafana")
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    [provider] = yaml.safe_load(
        (ROOT / "grafana/provisioning/dashboards/insmon.yml").read_text())["providers"]
    dashboards_dir = provider["options"]["path"]
    assert mounts[dashboards_dir] == "./grafana/dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards_dir + "/")
    assert (ROOT / "grafana/dashboards" / Path(home).name).exists()
    [source] = yaml.safe_load(
        (ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090"  # the service's name in the stack
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_every_variable_the_stack_reads_is_in_env_example() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    example = {line.split("=")[0] for line in (ROOT / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert used <= example
    config = (ROOT / "examples/hospital.yaml").read_text()
    assert set(re.findall(r"\{env: (\w+)\}", config)) <= example  # the config's secrets


def test_the_pair_key_reaches_the_pagers_alone_and_alertmanagers_token_opens_no_more() -> None:
    """Alertmanager's token and the pagers' pair key are two files: the Alertmanagers
    mount the token only, both pagers mount both, where examples/pager.yaml reads them."""
    config = yaml.safe_load((ROOT / "examples/pager.yaml").read_text())

    def mounted(service: str) -> dict[str, str]:
        return {re.sub(r"\$\{[^}]*\}", "", v).split(":")[1]: re.match(r"\$\{(\w+)", v)[1]
                for v in SERVICES[service]["volumes"] if v.startswith("${")}

    for pager in ("insmon-pager", "insmon-pager-standby"):
        assert mounted(pager)[config["auth"]["token_file"]] == "INSMON_PAGER_TOKEN_FILE"
        assert mounted(pager)[config["pair"]["key_file"]] == "INSMON_PAGER_PAIR_KEY_FILE"
    for manager in ("alertmanager-1", "alertmanager-2"):
        assert set(mounted(manager).values()) == {"INSMON_PAGER_TOKEN_FILE"}
