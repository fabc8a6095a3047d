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

from monitor.audit import AuditError, Trail, file_digest
from probes.base import SHANGHAI

log = logging.getLogger("insmon.pager.audit")
FAILED = {"delivery-failed", "unreachable", "rota-gap", "unknown-team", "refused"}
EVERY = 1.0  # seconds between copies


class Auditor:
    def __init__(self, store, trail: Trail) -> None:
        self.store = store
        self.trail = trail
        self.copied = self._last_copied()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="audit", daemon=True)
        self.errors = 0

    def _last_copied(self) -> int:
        last = 0
        for record in self.trail.records():
            detail = record.get("detail")
            if isinstance(detail, dict) and record["event"].startswith("pager-"):
                last = max(last, int(detail.get("event_id", 0)))
        return last

    def config(self, path: Path) -> None:
        """The config's digest at this start, beside the one the trail saw last."""
        before = self.trail.last_config(str(path))
        after = file_digest(path)
        self.trail.append("config", "insmon-pager", "changed" if before != after else
                          "unchanged", {"file": str(path), "before": before, "after": after})

    def copy(self) -> int:
        """Events not yet in the trail, appended; how many."""
        rows = self.store.query("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT 1000",
                                (self.copied,))
        for row in rows:
            what = row["what"]
            self.trail.append(
                f"pager-{what}", row["person"] or "insmon-pager",
                "failed" if what in FAILED else "ok",
                {"event_id": row["id"], "incident": row["incident"], "channel": row["channel"],
                 "detail": row["detail"]},
                at=datetime.fromtimestamp(row["at"], SHANGHAI))
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
            self.errors += 1
            log.error("the audit trail %s cannot be written: %s", self.trail.folder, exc)
        except Exception:  # the store closing under us at shutdown: next round
            log.exception("audit copy failed")


def refused(store, client: str, why: str, when: float | None = None) -> None:
    """A refused request, as an event of the store (the auditor copies it)."""
    with store.transaction() as db:
        db.execute("INSERT INTO events (incident, at, what, person, channel, detail) "
                   "VALUES (NULL, ?, 'refused', NULL, NULL, ?)",
                   (when or time.time(), json.dumps({"client": client, "why": why})))
