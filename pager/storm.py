"""A storm is a digest, not a flood: per person and channel, the first few pages go as
they come; once FEW went within WINDOW, what comes next waits and goes as one digest
(pager/messages.py: `digest`), naming or counting all of it, with one link to the whole
list: the first FIRST seconds after the last message (a burst of a few more is not held
a minute), then at most every EVERY seconds; nothing waits longer than EVERY since it was
decided (across channels and restarts). A Level I page is never folded into a digest nor
held behind one: it goes at once as a message of its own, with its alert, its site and
its acknowledge line (an SMS digest only counts by grade, and a reply acknowledges one
incident). A digest interval that passes with nothing waiting ends the storm.

A post to a robot's group counts its pages for each person it names. A drill's pages
flow apart from real ones (never in one digest). What is counted lives in memory: after a
restart a person may get FEW single pages again before the digests.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field

from pager.records import PAGES

FEW = 3                # pages a person gets on a channel one by one within WINDOW
WINDOW = 60.0          # seconds
FIRST = 10.0           # seconds from the last message to a storm's first digest
EVERY = 60.0           # seconds between two digests to a person on a channel


@dataclass
class Flow:
    times: collections.deque[float] = field(default_factory=collections.deque)
    storm: bool = False
    digests: int = 0  # of this storm
    last: float = float("-inf")  # the last message's dispatch


def urgent(row: dict) -> bool:
    """A Level I page: never folded away behind lower grades."""
    return row.get("grade") == "I" and row["kind"] in PAGES


class Flows:
    def __init__(self) -> None:
        self._flows: dict[tuple[str, str, bool], Flow] = {}
        self._lock = threading.Lock()

    def plan(self, channel: str, person: str, rows: list[dict], now: float,
             drill: bool = False) -> tuple[list[dict], list[dict]]:
        """Of a person's due rows on a channel (each with its incident's `grade`): those
        that go one by one now (every Level I page among them), and those that go together
        as a digest now; the others wait. A retry (a row that failed before) is never
        held back."""
        rows = sorted(rows, key=lambda r: r["id"])
        with self._lock:
            flow = self._flows.setdefault((channel, person, drill), Flow())
            while flow.times and flow.times[0] <= now - WINDOW:
                flow.times.popleft()
            if flow.storm and min(r["due"] for r in rows) > flow.last + EVERY:
                flow.storm = False  # a whole interval with nothing waiting: it is over
            first = [r for r in rows if urgent(r)]  # each its own message, at once
            rows = [r for r in rows if not urgent(r)]
            retries = [r for r in rows if r["attempts"] > 0]
            if not flow.storm:
                room = max(0, FEW - len(flow.times) - len(first))
                rest = rows[room:]
                flow.storm, flow.digests = bool(rest), 0
                if any(r["attempts"] > 0 for r in rest):  # not held back, yet one message
                    # (a storm's retries after a restart forgot the storm: not one each)
                    flow.digests = 1
                    return _alone(first + rows[:room], rest)
                return first + rows[:room], []
            every = EVERY if flow.digests else FIRST
            oldest = min((r["due"] if r["born"] is None else r["born"] for r in rows),
                         default=now)
            if rows and (retries or now - flow.last >= every or now - oldest >= EVERY):
                flow.digests += 1
                return _alone(first, rows)
            return first, []

    def went(self, channel: str, pages: dict[str, int], at: float, drill: bool = False
             ) -> None:
        """A message left on the channel at `at` with this many pages for each person it
        names (a robot's post may carry several: each counts among the first FEW)."""
        with self._lock:
            for person, count in pages.items():
                flow = self._flows.setdefault((channel, person, drill), Flow())
                flow.times.extend([at] * count)
                flow.last = max(flow.last, at)


def _alone(single: list[dict], together: list[dict]) -> tuple[list[dict], list[dict]]:
    """A digest of one is that page itself, with its own acknowledge line."""
    return (single + together, []) if len(together) == 1 else (single, together)
