"""The pager's part of the audit trail (monitor/audit.py): every event of its store
(opened, paged and delivered or failed, acknowledged by whom and how, escalated,
resolved) appended in order, its config's digest at each start, and refused requests.

The store's events table is where the pager records them first (in the transaction that
makes them true); the auditor copies them to the trail in id order, so an event is never
in the trail without having happened, and after a crash the copy goes on from the last
event id the trail holds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime
from pathlib import Path

from monitor.audit import AuditError, Trail, file_digest, witness_value
from pager import records
from vocabulary import SHANGHAI

log = logging.getLogger("insmon.pager.audit")
FAILED = {"delivery-failed", "unreachable", "rota-gap", "unknown-team", "refused"}
EVERY = 1.0  # seconds between copies


class Auditor:
    def __init__(self, store, trail: Trail) -> None:
        self.store = store
        self.trail = trail
        # (time, what) of each event the trail holds, by event id: a store restored from
        # a backup reuses ids, and is told by its events no longer matching
        self.seen: dict[int, tuple[float, str]] = {}
        for record in self.trail.records():
            detail = record.get("detail")
            if isinstance(detail, dict) and record["event"].startswith("pager-") and \
                    isinstance(detail.get("event_id"), int):
                self.seen[detail["event_id"]] = (
                    datetime.fromisoformat(record["at"]).timestamp(),
                    record["event"].removeprefix("pager-"))
        self.copied = max(self.seen, default=0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="audit", daemon=True)

    def _same_store(self) -> bool:
        """Is the last event copied still the store's? If not (a restore, a new file),
        the copy goes on from the last event both agree on, and the trail says so."""
        if not self.copied:
            return True
        row = records.event(self.store, self.copied)
        if row and _matches(self.seen[self.copied], row):
            return True
        agree = 0
        for event_id in sorted(self.seen, reverse=True):
            row = records.event(self.store, event_id)
            if row and _matches(self.seen[event_id], row):
                agree = event_id
                break
        log.warning("the pager's store is not the one the audit trail followed (restored "
                    "from a backup?): copying its events from id %d on", agree + 1)
        self.trail.append("pager-store-replaced", "insmon-pager", "noted",
                          {"trail_last_event": self.copied, "resumed_after": agree})
        self.seen = {k: v for k, v in self.seen.items() if k <= agree}
        self.copied = agree
        return False

    def config(self, path: Path) -> None:
        """The config's digest at this start, beside the one the trail saw last."""
        before = self.trail.last_config(str(path))
        after = file_digest(path)
        self.trail.append("config", "insmon-pager", "changed" if before != after else
                          "unchanged", {"file": str(path), "before": before, "after": after})

    def copy(self) -> int:
        """Events not yet in the trail, appended; how many."""
        self._same_store()
        rows = records.events(self.store, after=self.copied, limit=1000)
        for row in rows:
            what = row["what"]
            self.trail.append(
                f"pager-{what}", row["person"] or "insmon-pager",
                "failed" if what in FAILED else "ok",
                {"event_id": row["id"], "incident": row["incident"], "channel": row["channel"],
                 "detail": row["detail"]},
                at=datetime.fromtimestamp(row["at"], SHANGHAI))
            self.seen[row["id"]] = (row["at"], what)
            self.copied = row["id"]
        return len(rows)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._copy_all()

    def _loop(self) -> None:
        while not self._stop.wait(EVERY):
            self._copy_all()

    def _copy_all(self) -> None:
        try:
            for _ in range(100):  # bounded: 100,000 events a round at the most
                if self.copy() == 0:
                    break
        except (OSError, AuditError, ValueError) as exc:
            log.error("the audit trail %s cannot be written: %s", self.trail.folder, exc)
        except Exception:  # the store closing under us at shutdown: next round
            log.exception("audit copy failed")


class HeadCollector:
    """The trail's head on the pager's /metrics: the witness Prometheus keeps outside the
    folder, which `insmon audit --verify` compares with the chain."""

    def __init__(self, trail: Trail) -> None:
        self.trail = trail

    def collect(self):  # prometheus_client's collector protocol
        from prometheus_client.core import GaugeMetricFamily

        seq = GaugeMetricFamily("insmon_audit_head_sequence", "The audit trail's last "
                                "record: its sequence number", labels=["trail"])
        bits = GaugeMetricFamily("insmon_audit_head_hash", "The audit trail's last record: "
                                 "the first 52 bits of its hash, as a number", labels=["trail"])
        try:
            head = self.trail.head()
        except (AuditError, OSError):
            head = None  # the copy says why in the log
        if head is not None and head.id and head.seq:
            seq.add_metric([head.id], head.seq)
            bits.add_metric([head.id], witness_value(head.hash))
        yield seq
        yield bits


def _matches(seen: tuple[float, str], row) -> bool:
    # the trail keeps milliseconds of the time
    return abs(seen[0] - row["at"]) < 0.002 and seen[1] == row["what"]


def refused(store, client: str, why: str, when: float | None = None) -> None:
    """A refused request, as an event of the store (the auditor copies it)."""
    with store.transaction() as db:
        records.add_event(db, None, when or time.time(), "refused",
                          detail=json.dumps({"client": client, "why": why}))
