"""Rendering results: Prometheus exposition, the HTTP server, the human status views."""
