"""Serving the sandbox with gunicorn's threaded worker, for the standalone command.

One worker process keeps all state in memory; its threads serve requests over
kept-alive connections, which measured faster than werkzeug's server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication


class _SandboxApplication(BaseApplication):  # type: ignore[misc]
    """A gunicorn application that builds the sandbox app inside its single worker."""

    def __init__(self, factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self._factory = factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        """Apply the options that this gunicorn version knows."""
        for key, value in self._options.items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self) -> Flask:
        """Build the app after the fork, so that its background threads live in the worker."""
        return self._factory()


def run_gunicorn(
    factory: Callable[[], Flask], *, host: str, port: int, threads: int, log_requests: bool
) -> None:
    """Serve the app that factory builds with one gthread worker until interrupted."""
    options = {
        "bind": f"{host}:{port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        "keepalive": 5,
        "accesslog": "-" if log_requests else None,
        # Quiet: not even gunicorn's own start and stop lines.
        "loglevel": "info" if log_requests else "warning",
        "control_socket_disable": True,
    }
    _SandboxApplication(factory, options).run()
