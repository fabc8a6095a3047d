"""insmon pager: Alertmanager's pages to the person on call (值班人), by their channels,
acknowledged or escalated; its own service, see docs/architecture.md."""
