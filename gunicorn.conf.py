"""gunicorn, the API's alternative server: `gunicorn -c gunicorn.conf.py "api.app:create_app()"`.

`smsgw api` (api/server.py, granian) is the API's server; this serves the same app.

Environment: `GUNICORN_BIND` (default 0.0.0.0:8000), `WEB_CONCURRENCY` (default
CPUs + 1), `GUNICORN_THREADS` (default 12), `GUNICORN_TIMEOUT` (30 s),
`PROMETHEUS_MULTIPROC_DIR` (default a fresh temporary directory). Logs, the access
log included (the app writes it), are JSON lines on stderr.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

from gunicorn.glogging import Logger

from shared.logs import JsonFormatter

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
# A send mostly waits: on PostgreSQL and Redis, and for the group it is accepted
# in (api/committer.py). Threads let a group grow to every send a worker holds;
# 12 served 32 connections faster than 4 or 8 on 2 cores (bench/api_send.py).
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() + 1))
threads = int(os.environ.get("GUNICORN_THREADS", "12"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 30
keepalive = 5
# A worker is replaced now and then, so a slow leak never grows for long.
max_requests = 100_000
max_requests_jitter = 10_000
# The control socket has one fixed path per user: two servers on a host would share it.
control_socket_disable = True
accesslog = None  # the app writes the access line, with the request id (api.metrics)
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
if Path("/dev/shm").is_dir():
    worker_tmp_dir = "/dev/shm"  # heartbeat files off the container's overlay disk

# prometheus_client reads this before the app is imported (in the workers,
# after the fork): every worker then counts in files that /metrics sums.
_owned = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _owned:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="smsgw-metrics-")
metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]


class JsonLogger(Logger):
    """Gunicorn's logger, writing its error log and access log as JSON lines."""

    def setup(self, cfg) -> None:  # type: ignore[no-untyped-def]
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter())


logger_class = JsonLogger


def on_starting(server) -> None:  # type: ignore[no-untyped-def]
    """Start with an empty metrics directory: counts of an earlier run must not leak in."""
    path = Path(metrics_dir)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def child_exit(server, worker) -> None:  # type: ignore[no-untyped-def]
    """Drop the live gauges of a worker that exited; its counters stay in the sum."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:  # type: ignore[no-untyped-def]
    """Remove the metrics directory if this config made it."""
    if _owned:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def post_worker_init(worker) -> None:  # type: ignore[no-untyped-def]
    """Move everything loaded so far out of the garbage collector's sight.

    The app's modules, models and clients live as long as the worker: left in
    the collected generations, each full collection walks them all, a pause
    every request then in flight waits out. Frozen, p99 at 32 connections
    went from 62-159 ms to 43-58 ms in alternating runs (bench/api_send.py).
    """
    gc.freeze()
