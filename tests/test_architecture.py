"""The shape of the tree (docs/architecture.md): imports run one way, `probes/` lists the
kinds, the docs point only at files in the repo, and every series the tools read or the
probes declare is real."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import get_args

import pytest
import yaml

from exporters import prometheus
from probes import PROBES
from tests.conftest import ROOT

# What each package may import (docs/architecture.md's table): a whole package by its
# name, or one module of another ("monitor.config"), which allows that file and no other.
ALLOWED = {
    "vocabulary": set(),
    "probes": {"probes", "vocabulary"},
    "exporters": {"exporters", "probes", "vocabulary"},
    "monitor": {"monitor", "probes", "exporters", "vocabulary"},
    "ops": {"ops", "monitor", "probes", "exporters", "alert_rules", "vocabulary"},
    "alert_rules": set(),
    "pager": {"pager", "vocabulary", "monitor.config", "monitor.audit", "exporters.webconfig"},
}
OURS = {*ALLOWED, "tests", "grafana", "bench"}
LAZY_OPS = ROOT / "monitor" / "cli.py"  # starts ops and the pager, importing them on use


def imports(path: Path, ours: bool = True) -> set[str]:
    """The top-level names of every module the file imports, wherever the import is."""
    return {name.split(".")[0] for name in modules_imported(path, ours)}


def modules_imported(path: Path, ours: bool = True) -> set[str]:
    """The dotted name of every module the file imports, wherever the import is: `from
    monitor import audit` is monitor.audit, `from monitor import __version__` monitor."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            folder = ROOT.joinpath(*node.module.split("."))
            for alias in node.names:
                submodule = (folder / f"{alias.name}.py").exists() or \
                    (folder / alias.name / "__init__.py").exists()
                found.add(f"{node.module}.{alias.name}" if submodule else node.module)
    return {name for name in found if name.split(".")[0] in OURS} if ours else found


def wrong_imports(package: str, path: Path) -> list[str]:
    """The file's imports that docs/architecture.md's table does not allow its package."""
    allowed = ALLOWED[package] | ({"ops", "pager"} if path == LAZY_OPS else set())
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return [f"{where} imports {name}"
            for name in sorted(modules_imported(path))
            if not any(".".join(name.split(".")[:n]) in allowed
                       for n in range(1, name.count(".") + 2))]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_run_one_way(package: str) -> None:
    wrong = [line for path in sorted((ROOT / package).rglob("*.py"))
             for line in wrong_imports(package, path)]
    assert not wrong


def test_a_file_allowed_is_not_its_package(tmp_path: Path) -> None:
    """The pager may import monitor/config.py and monitor/audit.py, not the rest of
    monitor/: the check names the file that imports more."""
    assert not wrong_imports("pager", ROOT / "pager" / "config.py")
    wrong = tmp_path / "wrong.py"
    wrong.write_text("from monitor.config import ConfigError\n"
                     "from monitor import service, __version__\n"
                     "from monitor.store import Results\n")
    found = {line.split(" imports ")[1] for line in wrong_imports("pager", wrong)}
    assert found == {"monitor", "monitor.service", "monitor.store"}


# The pager's SQL: only its store (connection, schema, migrations, transactions) and its
# records (every query) speak it; the engine, delivery, pair, server, audit and the tests
# call records' named queries.
SQL_HOMES = {ROOT / "pager" / "store.py", ROOT / "pager" / "records.py"}
SQL = re.compile(r"\bSELECT\b[\s\S]*\bFROM\b|\bINSERT\s+(?:OR\s+\w+\s+)?INTO\b|"
                 r"\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b|\b(?:CREATE|DROP|ALTER)\s+"
                 r"(?:UNIQUE\s+)?(?:TABLE|INDEX)\b|\bPRAGMA\s+\w+")
EXECUTE = {"execute", "executemany", "executescript"}


def sql_in(path: Path) -> list[str]:
    """Where the file speaks SQL: a string that is a statement, a call of `.execute(`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and SQL.search(node.value):
            found.append(f"{path.name}:{node.lineno}: {node.value.strip()[:60]!r}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in EXECUTE:
            found.append(f"{path.name}:{node.lineno}: .{node.func.attr}(")
    return found


def test_sql_only_in_the_pagers_store_and_records() -> None:
    """The pager's data behind one module: no SQL in the engine, delivery, pair, server
    or audit, nor in any test or benchmark (they read through pager/records.py)."""
    files = sorted({*(ROOT / "pager").rglob("*.py"), *(ROOT / "tests").rglob("*.py"),
                    *(ROOT / "bench").rglob("*.py")} - SQL_HOMES)
    assert len(files) > 50
    found = [line for path in files for line in sql_in(path)]
    assert not found, "\n".join(found)


def test_the_sql_check_sees_a_query_and_a_call(tmp_path: Path) -> None:
    leaky = tmp_path / "leaky.py"
    leaky.write_text("\n".join([  # in pieces: this file itself holds no statement
        'ROWS = "SELECT' + ' id FROM incidents WHERE acked IS NULL"',
        'def f(db):', '    db.execute(f"UPDATE deliveries' + ' SET hop = {1}")',
        'NOTE = "select a person from the rota: update the team"']))
    assert sorted(line.split(":")[1] for line in sql_in(leaky)) == ["1", "3", "3"]
    assert not sql_in(ROOT / "pager" / "engine.py")
    assert sql_in(ROOT / "pager" / "records.py")


def test_probes_never_import_prometheus_client() -> None:
    for path in (ROOT / "probes").rglob("*.py"):
        assert "prometheus_client" not in imports(path, ours=False), path


def test_ls_probes_lists_the_kinds() -> None:
    modules = {p.stem for p in (ROOT / "probes").glob("*.py")} - {"__init__", "base"}
    assert modules == set(PROBES)
    for name, kind in PROBES.items():
        assert kind.config.__module__ == f"probes.{name}"


def test_ls_pager_channels_lists_the_channel_types() -> None:
    """Adding a channel type is one module and one entry in CHANNELS: each type's module
    is named as its `type`, each module besides the contract is registered, and the
    pager config's union is the registry's."""
    from pager.channels import CHANNELS, Channel, ChannelConfig
    from pager.config import PagerConfig

    shared = {"__init__", "base", "robot"}  # the contract, and what the robots share
    modules = {p.stem for p in (ROOT / "pager" / "channels").glob("*.py")} - shared
    assert modules == set(CHANNELS)
    for name, kind in CHANNELS.items():
        assert kind.__module__ == f"pager.channels.{name}"
        assert kind.send is not ChannelConfig.send, f"{name} does not send"
        assert issubclass(kind, ChannelConfig), name
    assert PagerConfig.model_fields["channels"].annotation == dict[str, Channel]
    union = get_args(get_args(Channel)[0])
    assert union == tuple(CHANNELS.values())


def test_the_docs_name_every_kind_and_package() -> None:
    docs = (ROOT / "docs" / "architecture.md").read_text()
    for name in PROBES:
        assert f"`{name}`" in docs, name
    for package in ALLOWED:
        assert f"`{package}/`" in docs, package


PATH = re.compile(r"(?<![\w/.-])((?:monitor|probes|exporters|ops|pager|alert_rules|grafana|tests|"
                  r"bench|examples|docs|\.ci)/[\w./<>-]*)")


@pytest.mark.parametrize("doc", ["README.md", "docs/architecture.md"])
def test_the_docs_point_only_at_files_in_the_repo(doc: str) -> None:
    text = (ROOT / doc).read_text()
    missing = []
    for path in set(PATH.findall(text)):
        if "<" in path:  # a pattern such as probes/<kind>.py
            continue
        path = path.rstrip(".")
        if not (ROOT / path).exists() and not list(ROOT.glob(path)):
            missing.append(path)
    assert not missing, f"{doc} names files that are not in the repo: {sorted(missing)}"


def test_no_file_points_outside_the_repo() -> None:
    outside = re.compile(r"\.\./shared|shared/(DOMAIN|DESIGN|MEASURED|STYLE)\.md")
    for path in [*ROOT.glob("*.md"), *ROOT.glob("docs/*.md"),
                 *(p for package in OURS for p in (ROOT / package).rglob("*.py"))]:
        assert not outside.search(path.read_text()), path


def names_read_by(path: Path) -> set[str]:
    """Series names in the file's strings (its queries), not in its identifiers."""
    strings = [node.value for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    return set(re.findall(r"\binsmon_[a-z0-9_]+[a-z0-9]", "\n".join(strings)))


def test_the_series_the_tools_read_exist() -> None:
    """The review, the drill and the history read these names from Prometheus: each is
    declared by insmon (with its histogram suffixes) or made by a recording rule."""
    declared = {spec.name for spec in prometheus.declared()}
    declared |= {f"{spec.name}_{suffix}" for spec in prometheus.declared()
                 if spec.type == "histogram" for suffix in ("bucket", "count", "sum")}
    recorded = {rule["record"].split(":")[1]
                for group in yaml.safe_load((ROOT / "alert_rules/recording.yml").read_text())
                ["groups"] for rule in group["rules"] if "record" in rule}
    for path in sorted((ROOT / "ops").glob("*.py")):
        unknown = names_read_by(path) - declared - recorded
        assert not unknown, f"{path.relative_to(ROOT)} reads undeclared series {unknown}"


def test_no_program_in_the_lab_shadows_a_standard_module() -> None:
    """The lab's programs run as scripts: their folder comes first on sys.path, so a file
    named like a standard module (platform.py) breaks every import of it there."""
    import sys

    names = {p.stem for p in (ROOT / "ops" / "lab").glob("*.py")}
    assert not names & sys.stdlib_module_names
