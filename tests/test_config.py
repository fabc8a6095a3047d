"""Config loading: valid files load, invalid ones name file, line, key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.config import EMBEDDED, ConfigError, embedded_text, load, parse, split_listen
from tests.conftest import FIXTURES, ROOT
from vocabulary import parse_duration

VALID = sorted((FIXTURES / "config" / "valid").glob("*.yaml"))
INVALID = sorted((FIXTURES / "config" / "invalid").glob("*.yaml"))


@pytest.mark.parametrize("path", [*VALID, ROOT / "examples" / "hospital.yaml"],
                         ids=lambda p: p.name)
def test_valid_files_load(path: Path) -> None:
    config = load(path).config
    assert config.checks
    for check in config.checks:
        assert 0 < check.timeout < check.interval


def test_embedded_default_monitors_this_host() -> None:
    loaded = load(None)
    assert loaded.source == EMBEDDED
    kinds = [c.kind for c in loaded.config.checks]
    assert kinds[:3] == ["cpu", "disk_io", "storage_latency"]
    assert ("raid" in kinds) == Path("/proc/mdstat").exists()


def test_embedded_default_adds_md_raid_where_there_is_md(tmp_path: Path) -> None:
    assert "kind: raid" not in embedded_text(tmp_path / "mdstat")
    (tmp_path / "mdstat").write_text("Personalities : [raid1]\nunused devices: <none>\n")
    config = parse(embedded_text(tmp_path / "mdstat"), EMBEDDED)
    assert config.checks[-1].kind == "raid" and config.checks[-1].source.type == "md"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_files_report_every_error(path: Path) -> None:
    """Each fixture lists the exact error lines it must produce, after `# expect:`."""
    expected = [line.removeprefix("# expect: ") for line in path.read_text().splitlines()
                if line.startswith("# expect: ")]
    assert expected, f"{path.name} has no '# expect:' line"
    with pytest.raises(ConfigError) as info:
        load(path)
    assert list(info.value.problems) == [str(path) + e for e in expected]


def test_missing_file_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        load("/nonexistent/hospital.yaml")
    assert str(info.value) == ("/nonexistent/hospital.yaml: cannot read config: "
                               "No such file or directory")


def test_empty_file() -> None:
    with pytest.raises(ConfigError, match=r"^site.yaml: the config is empty$"):
        parse("# nothing here\n", "site.yaml")


def test_timeout_defaults_below_interval() -> None:
    checks = parse("checks:\n- {name: a, kind: cpu, interval: 2s}\n"
                   "- {name: b, kind: cpu, interval: 1m}\n", "x.yaml").checks
    assert [c.timeout for c in checks] == [pytest.approx(1.6), 10.0]


@pytest.mark.parametrize(("text", "seconds"), [
    (15, 15.0), (0.5, 0.5), ("500ms", 0.5), ("15s", 15.0), ("1m30s", 90.0), ("2h", 7200.0),
])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "15", "1d", "s", "", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("0.0.0.0:9829", ("0.0.0.0", 9829)), (":9829", ("0.0.0.0", 9829)),
    ("[::1]:9829", ("::1", 9829)), ("localhost:80", ("localhost", 80)),
])
def test_listen(text: str, expected: tuple[str, int]) -> None:
    assert split_listen(text) == expected


@pytest.mark.parametrize("text", ["9829", "host:", "db.example:9829", "1.2.3.4:70000"])
def test_bad_listen(text: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        split_listen(text)


def test_deep_nesting_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    import subprocess

    from tests.conftest import INSMON

    path = tmp_path / "deep.yaml"
    path.write_text("checks: " + "[" * 5000 + "]" * 5000 + "\n")
    done = subprocess.run([INSMON, "validate", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(f"{path}:")
