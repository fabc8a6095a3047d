"""The shipped alerting, as package data: Prometheus recording and alert rules, the
Alertmanager routing and templates, runbooks, and their promtool tests. The drill and
the process stack read them from here, so they work from an installed wheel too."""

from pathlib import Path

DIR = Path(__file__).resolve().parent

# The alerts that are no fault and page nobody: the alert path's heartbeat (a dead man's
# switch) and the calendar's "outside business hours", which holds back grade IV.
NOT_FAULTS = frozenset({"Watchdog", "OutsideBusinessHours"})
