"""md RAID from /proc/mdstat fixtures: one case per state, each with its exposition."""

from __future__ import annotations

from pathlib import Path

import pytest

from probes import raid
from tests.conftest import FIXTURES, assert_expected, render

CASES = sorted(p for p in (FIXTURES / "raid" / "md").iterdir() if p.is_dir())


def md_check(root: Path) -> raid.Config:
    return raid.Config(name="md", kind="raid", source={"type": "md", "root": root})


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
async def test_md_case_matches_its_expected_exposition(case: Path) -> None:
    status, series = await render(md_check(case), "insmon_raid_")
    assert_expected(case, status + series)


def states(series: str) -> dict[str, str]:
    """array -> its state, from the one-hot insmon_raid_array_state lines."""
    return {line.split('array="')[1].split('"')[0]: line.split('state="')[1].split('"')[0]
            for line in series.splitlines()
            if line.startswith("insmon_raid_array_state") and line.endswith(" 1.0")}


# An array is judged by the members it has against those it should have, whatever sync
# runs; an external-metadata container is no array, its volumes are.
BY_MEMBERS = [
    ("resyncing", "md2 resyncing, resync 38.4% (160 min left)", {"md2": "resyncing"}),
    ("resyncing-degraded", "md2 degraded (0 failed, 1 missing), resync 38.4% (160 min left)",
     {"md2": "degraded", "md12": "active"}),  # md12: resync=DELAYED, both members in sync
    ("resync-delayed", "md8 degraded (0 failed, 1 missing), md9 recovering (0 failed, "
     "1 missing), recovery 0.4% (32 min left)", {"md8": "degraded", "md9": "recovering"}),
    ("checking", "md1 checking, check 5.0% (86 min left)", {"md1": "checking"}),
    ("checking-degraded", "md1 degraded (0 failed, 1 missing), check 5.0% (86 min left)",
     {"md1": "degraded"}),
    ("reshaping", "md3 reshaping, reshape 22.5% (52 min left)", {"md3": "reshaping"}),
    ("reshaping-degraded", "md3 degraded (1 failed, 1 missing), reshape 12.5% (98 min left), "
     "md4 degraded (1 failed, 1 missing), reshape 22.5% (52 min left), md5 failed "
     "(2 failed, 2 missing), reshape 8.1% (140 min left)",
     {"md3": "degraded", "md4": "degraded", "md5": "failed"}),
    ("recovering", "md0 recovering (1 failed, 1 missing), recovery 12.6% (95 min left)",
     {"md0": "recovering"}),
    ("recovering-replace", "md0 resyncing, recovery 27.4% (79 min left)", {"md0": "resyncing"}),
    ("imsm", "md125 active, md126 active", {"md125": "active", "md126": "active"}),
    ("imsm-degraded", "md125 degraded (0 failed, 1 missing), md126 recovering (0 failed, "
     "1 missing), recovery 12.5% (95 min left)", {"md125": "degraded", "md126": "recovering"}),
    ("ddf", "md126 degraded (0 failed, 1 missing)", {"md126": "degraded"}),
    ("inactive", "md4 inactive (1 failed, 0 missing)", {"md4": "inactive"}),
]


@pytest.mark.parametrize(("case", "detail", "expected"), BY_MEMBERS,
                         ids=[case for case, _, _ in BY_MEMBERS])
async def test_arrays_are_judged_by_their_members_whatever_sync_runs(
        case: str, detail: str, expected: dict[str, str]) -> None:
    status, series = await render(md_check(FIXTURES / "raid" / "md" / case), "insmon_raid_")
    healthy = all(state in ("clean", "active", "checking") for state in expected.values())
    assert status == f"# {'ok' if healthy else 'failed'}: {detail}\n"
    assert states(series) == expected
    arrays = {line.split('array="')[1].split('"')[0] for line in series.splitlines()}
    assert arrays == set(expected)  # a container has no series at all


async def test_missing_mdstat_is_a_failed_probe(tmp_path: Path) -> None:
    status, series = await render(md_check(tmp_path), "insmon_raid_")
    assert status == f"# failed: no {tmp_path}/proc/mdstat: the md driver is not loaded\n"
    assert series == ""


async def test_an_expected_array_that_vanishes_fails_the_check() -> None:
    """The host must have md0, md1 and md9; mdstat lists md0 and md1 (md9 was stopped):
    the check fails and says so, md0 and md1 are reported as they are."""
    config = raid.Config(name="md", kind="raid", source={"type": "md",
                         "root": FIXTURES / "raid" / "md" / "clean"},
                         expected=["md0", "md1", "md9"])
    status, series = await render(config, "insmon_raid_array_")
    present = {line.split('array="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
               for line in series.splitlines() if line.startswith("insmon_raid_array_present")}
    assert status == "# failed: expected array md9 is missing\n"
    assert present == {"md0": 1.0, "md1": 1.0, "md9": 0.0}
    assert 'insmon_raid_array_state{array="md1",' in series  # still reported as it is


async def test_no_arrays_at_all_with_arrays_expected_fails(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "mdstat").write_text(
        "Personalities : [raid1]\nunused devices: <none>\n")
    config = raid.Config(name="md", kind="raid", source={"type": "md", "root": tmp_path},
                         expected=["md0"])
    status, series = await render(config, "insmon_raid_array_present")
    assert status == "# failed: expected array md0 is missing\n"
    assert series == 'insmon_raid_array_present{array="md0",check="md",source="md"} 0.0\n'


# ------------------------------------------------------------ differential: node_exporter

# node_md_state's states for insmon's (node_exporter 1.5 knows no degraded, failed or
# reshape: an array in those states is "active" there).
NODE_STATE = {"clean": "active", "active": "active", "degraded": "active",
              "failed": "active", "reshaping": "active", "inactive": "inactive",
              "recovering": "recovering", "resyncing": "resync", "checking": "check"}

# Where the two disagree, and why insmon is right. The test checks that these
# disagreements really exist, so this list stays true.
DISAGREE = {
    ("resync-delayed", "md8", "state"):
        "resync=DELAYED: the resync waits for another array on the same disks and is not "
        "running; node_exporter reports state resync with 0 blocks synced, insmon reports "
        "the array degraded (one of two disks missing) with no sync under way",
    ("resync-delayed", "md8", "progress"): "as above",
    ("levels", "md15", "state"):
        "resync=PENDING on an auto-read-only array: no resync runs until the first write; "
        "node_exporter reports state resync with 0 blocks synced, insmon reports the "
        "array healthy (active) with no sync under way",
    ("levels", "md15", "progress"): "as above",
    ("reshaping", "md3", "progress"):
        "node_exporter 1.5 does not read 'reshape =' lines: it shows the array active and "
        "fully synced; insmon shows reshaping at 22.5 %",
    ("resyncing-degraded", "md2", "state"):
        "a RAID 6 resyncing with a member missing: node_exporter reports state resync, "
        "insmon reports it degraded (judged by its members, whatever sync runs)",
    ("resyncing-degraded", "md12", "state"): "resync=DELAYED, as md8 of resync-delayed",
    ("resyncing-degraded", "md12", "progress"): "as above",
    ("checking-degraded", "md1", "state"):
        "a RAID 6 checked with a member missing: node_exporter reports state check, insmon "
        "reports it degraded",
    ("recovering-replace", "md0", "state"):
        "a recovery with both members in sync (mdadm --replace onto sdc1, marked (R)): "
        "node_exporter reports state recovering, insmon resyncing (redundancy intact)",
    ("inactive", "md126", "container"):
        "an IMSM container (super external:imsm) holds disks, it is no array: node_exporter "
        "reports it inactive, insmon not at all (its volumes are the arrays)",
    ("imsm", "md127", "container"): "as above",
    ("imsm-degraded", "md127", "container"): "as above",
    ("ddf", "md127", "container"): "as above, a DDF container (super external:ddf)",
    ("imsm-degraded", "md125", "state"): "resync=DELAYED, as md8 of resync-delayed",
}
# node_md_blocks_synced / node_md_blocks is the kernel's own progress only where the
# per-device sync size equals the array size (raid1); for raid4/5/6/10 node_md_blocks
# is the array size, so that ratio is wrong and insmon uses the kernel's (done/total).
PROGRESS_COMPARABLE_LEVELS = ("raid1",)


def node_exporter_md(case: Path) -> dict[str, dict[str, float]]:
    """Run Debian's prometheus-node-exporter on the fixture's proc and scrape node_md_*."""
    import subprocess

    import requests
    from prometheus_client.parser import text_string_to_metric_families

    from tests.conftest import free_port, wait_for

    port = free_port()
    proc = subprocess.Popen(
        ["prometheus-node-exporter", f"--path.procfs={case / 'proc'}",
         f"--path.sysfs={case / 'sys'}", "--collector.disable-defaults", "--collector.mdadm",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        text = wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/metrics",
                                             timeout=2).text, 15, "node_exporter")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    arrays: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            device = s.labels.get("device")
            if not s.name.startswith("node_md_") or device is None:
                continue
            key = s.name + (f":{s.labels['state']}" if "state" in s.labels else "")
            arrays.setdefault(device, {})[key] = s.value
    return arrays


COMPARABLE = [c for c in CASES if not c.name.startswith("broken") and c.name != "no-arrays"]


@pytest.mark.parametrize("case", COMPARABLE, ids=lambda p: p.name)
def test_md_agrees_with_node_exporter(case: Path) -> None:
    arrays = raid.read_md(case)
    node = node_exporter_md(case)
    ours = {a.name for a in arrays}
    assert ours <= set(node)
    disagreements = {(case.name, name, "container") for name in set(node) - ours}
    for array in arrays:
        theirs = node[array.name]
        expected_state = NODE_STATE[array.state]
        if theirs[f"node_md_state:{expected_state}"] != 1:
            disagreements.add((case.name, array.name, "state"))
        for state in ("active", "failed", "spare"):
            assert theirs[f"node_md_disks:{state}"] == array.disks[state], (array.name, state)
        if array.state != "inactive":
            required = array.disks["active"] + array.disks["missing"]
            assert theirs["node_md_disks_required"] == required, array.name
        if array.level in PROGRESS_COMPARABLE_LEVELS or (case.name, array.name,
                                                         "progress") in DISAGREE:
            ours = array.sync.progress if array.sync else 1.0
            node_ratio = theirs["node_md_blocks_synced"] / theirs["node_md_blocks"]
            if abs(ours - node_ratio) > 1e-6:
                disagreements.add((case.name, array.name, "progress"))
    assert disagreements == {k for k in DISAGREE if k[0] == case.name}
