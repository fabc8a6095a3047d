"""Device data from a broken or hostile source: every parser ends in a result or in
FormatError (a `failed` run with a reason), never another exception (status `error` is
for insmon's own bugs). Seeded mutations of the real fixtures and random bytes; bounded
in count."""

from __future__ import annotations

import contextlib
import random

import pytest

from probes.disk_io import parse_diskstats
from probes.lib import raid_md, raid_storcli
from probes.lib.raid_model import FormatError
from tests.conftest import FIXTURES

ROUNDS = 400


def mutations(text: str, seed: int) -> list[str]:
    """The text broken in the ways files break: flipped and inserted bytes (decoded the
    lenient way the probes read them), cut short, lines repeated or dropped, digits
    swapped for other digits Python also calls digits."""
    rng = random.Random(seed)
    out = []
    for _ in range(ROUNDS):
        data = bytearray(text.encode())
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(data) or 1)
            choice = rng.random()
            if choice < 0.3 and data:
                data[at] = rng.randrange(256)
            elif choice < 0.5:
                data[at:at] = rng.choice([b"\xff\xfe", "²".encode(), b"\x00", b"\n",
                                          b"-1", b"99999999999999999999", b"[", b"{"])
            elif choice < 0.7:
                del data[at:]
            else:
                lines = data.split(b"\n")
                i = rng.randrange(len(lines))
                lines[i:i] = [lines[i]] * rng.randint(0, 3)
                data = bytearray(b"\n".join(lines))
        out.append(data.decode("utf-8", "replace"))
    out += ["", "\x00" * 10, "".join(chr(rng.randrange(1, 0x3000)) for _ in range(2000))]
    return out


MD = sorted(p.read_text() for p in (FIXTURES / "raid" / "md").glob("*/proc/mdstat"))


@pytest.mark.parametrize("seed", range(len(MD)))
def test_mdstat(seed: int) -> None:
    for text in mutations(MD[seed], seed):
        with contextlib.suppress(FormatError):
            raid_md.parse(text)


def test_diskstats() -> None:
    original = (FIXTURES / "disk_io" / "incident" / "before" / "proc" / "diskstats").read_text()
    for text in mutations(original, 7):
        for counters in parse_diskstats(text).values():
            assert all(isinstance(v, int) for v in counters)


@pytest.mark.parametrize("case", ["optimal", "rebuilding", "degraded"])
def test_storcli_json(case: str) -> None:
    folder = FIXTURES / "raid" / "storcli" / case
    vall, pds = (folder / "vall.json").read_text(), (folder / "pds.json").read_text()
    rebuild = (folder / "rebuild.json").read_text() if (folder / "rebuild.json").exists() \
        else None
    for i, text in enumerate(mutations(vall, 11)):
        with contextlib.suppress(FormatError):
            raid_storcli.parse(text, pds, rebuild)
        broken = mutations(pds, i)[i % ROUNDS]
        with contextlib.suppress(FormatError):
            raid_storcli.parse(vall, broken, rebuild)


def retyped(text: str, seed: int) -> list[str]:
    """Valid JSON with values of the wrong type or shape here and there: what a different
    storcli version or a lying controller might answer."""
    import json

    rng = random.Random(seed)
    out = []
    for _ in range(ROUNDS):
        data = json.loads(text)
        nodes = [data]
        for node in nodes:  # every container, breadth first
            children = node.values() if isinstance(node, dict) else node
            nodes += [c for c in children if isinstance(c, dict | list)]
        for _ in range(rng.randint(1, 4)):
            node = rng.choice(nodes)
            if not node:
                continue
            key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
            node[key] = rng.choice([None, "x", -1, 1e308, [], {}, "²", "Onln", "100%"])
        out.append(json.dumps(data))
    return out


@pytest.mark.parametrize("case", ["optimal", "rebuilding", "degraded", "offline"])
def test_storcli_answers_of_the_wrong_shape(case: str) -> None:
    folder = FIXTURES / "raid" / "storcli" / case
    vall, pds = (folder / "vall.json").read_text(), (folder / "pds.json").read_text()
    rebuild = (folder / "rebuild.json").read_text() if (folder / "rebuild.json").exists() \
        else None
    for text in retyped(vall, 3):
        with contextlib.suppress(FormatError):
            raid_storcli.parse(text, pds, rebuild)
    for text in retyped(pds, 5):
        with contextlib.suppress(FormatError):
            raid_storcli.parse(vall, text, rebuild)
    for text in retyped(rebuild, 9) if rebuild else []:
        with contextlib.suppress(FormatError):
            raid_storcli.parse(vall, pds, text)
