"""Tools around the monitor, apart from its core: drills, the post-incident review and
its history queries, maintenance windows, the namespace lab, and the process stack
(Prometheus, Alertmanager, insmon) they run."""
