"""`smsgw api`: the API served by granian, a Rust HTTP server, in worker processes of threads.

Why granian: on the send path (`bench/api_send.py`) the same app accepted
1.35-1.6x what gunicorn's threaded workers did on the same machine, and its
own share of a request's CPU is a fraction of gunicorn's; HTTP parsing and
the connections live in Rust, and only the WSGI call holds the GIL.

Environment: `API_BIND` (default 0.0.0.0:8000), `WEB_CONCURRENCY` (worker
processes, default one per CPU), `API_THREADS` (each worker's request threads,
default 16), `PROMETHEUS_MULTIPROC_DIR` (default a fresh temporary directory).
One process per CPU with 16 threads served 32 connections best on 2 cores
(3 x 12, 4 x 8, 2 x 8, 2 x 24, 2 x 32 and 1 x 32 measured beside it): fewer
processes make bigger groups of sends per statement (api/committer.py).
Every log line is JSON (or console, per `LOG_FORMAT`); the access log is
written by the app itself (`api.metrics`), one line per request with its id.

Graceful restarts: SIGHUP starts new workers, then stops the old ones once
their requests are answered (within `API_GRACEFUL_TIMEOUT`, 30 s); SIGTERM
and SIGINT stop the same way. A worker that dies is replaced.
`gunicorn -c gunicorn.conf.py "api.app:create_app()"` serves the same app.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

import click
from flask import Flask

WORKER_LIFETIME = 24 * 3600  # a worker is replaced daily, so a slow leak never grows for long
# On a restart each new worker gets this long to load the app before its old one stops:
# granian does not wait for it to be ready, and under load the app took up to 5 s to load.
RESPAWN_INTERVAL = 10.0


def create_app() -> Flask:
    """Build the app in a worker, then move it out of the garbage collector's sight.

    The app's modules, models and clients live as long as the worker: left in
    the collected generations, each full collection walks them all, a pause
    every request then in flight waits out.
    """
    from api.app import create_app as build

    app = build()
    gc.collect()
    gc.freeze()
    return app


def _bind(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "0.0.0.0", int(port)


def serve(*, bind: str, workers: int, threads: int, graceful_timeout: int = 30) -> None:
    """Serve the API until stopped; counts of an earlier run never leak into the metrics."""
    from granian import Granian
    from granian.constants import Interfaces

    owned = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if owned:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="smsgw-metrics-")
    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    host, port = _bind(bind)
    server = Granian(
        "api.server:create_app",
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        factory=True,
        workers=workers,
        blocking_threads=threads,
        log_enabled=True,
        log_access=False,  # the app writes it, with the request's id (api.metrics)
        log_dictconfig=_log_config(),
        respawn_failed_workers=True,
        respawn_interval=RESPAWN_INTERVAL,
        workers_lifetime=WORKER_LIFETIME,
        workers_kill_timeout=graceful_timeout,
    )
    try:
        server.serve()
    finally:
        if owned:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _log_config() -> dict:
    """Granian's own lines (start, stop, respawns) in the gateway's JSON format, on stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "shared.logs.JsonFormatter"}},
        "handlers": {
            "console": {
                "formatter": "json",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {"_granian": {"handlers": ["console"], "level": "INFO", "propagate": False}},
    }


@click.command("api")
@click.option(
    "--bind",
    default=lambda: os.environ.get("API_BIND", "0.0.0.0:8000"),
    show_default="API_BIND or 0.0.0.0:8000",
    help="host:port to listen on.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=lambda: int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count())),
    show_default="WEB_CONCURRENCY or one per CPU",
    help="Worker processes.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=lambda: int(os.environ.get("API_THREADS", "16")),
    show_default="API_THREADS or 16",
    help="Request threads in each worker.",
)
@click.option(
    "--graceful-timeout",
    type=click.IntRange(min=1),
    default=lambda: int(os.environ.get("API_GRACEFUL_TIMEOUT", "30")),
    show_default="API_GRACEFUL_TIMEOUT or 30",
    help="Seconds a stopping worker has to answer its requests.",
)
def api_command(bind: str, workers: int, threads: int, graceful_timeout: int) -> None:
    """Serve the API (granian): worker processes of request threads, JSON logs."""
    serve(bind=bind, workers=workers, threads=threads, graceful_timeout=graceful_timeout)
