"""The worker's Prometheus metrics: hand-offs, their batches, Twilio error codes, latency.

The worker serves them itself on `WORKER_METRICS_PORT` (default 9808, 0 for
none), from its main process. Under the prefork pool the children count in
files: set `PROMETHEUS_MULTIPROC_DIR` (an empty directory) in the worker's
environment, as the Makefile and docker-compose.yml do, and the main process
serves the sum of every child's counts. Prometheus scrapes the API's
`/metrics` and this endpoint, one job each.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import current_task
from celery.signals import before_task_publish, worker_ready
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger(__name__)
ENQUEUED_AT = "smsgw_enqueued_at"

ACCEPTED = Counter(
    "smsgw_messages_accepted_total",
    "Messages accepted: single sends once charged and queued (API), campaign messages "
    "once the dispatcher releases them to the queue (worker)",
    ["kind"],
)
HANDOFFS = Counter(
    "smsgw_handoffs_total",
    "Hand-off attempts by outcome (sent, failed, retry, skipped)",
    ["outcome"],
)
FINISHED = Counter(
    "smsgw_messages_finished_total",
    "Messages that reached a final status, by status (worker: failed at hand-off; "
    "API: Twilio's final status callbacks)",
    ["status"],
)
TWILIO_ERRORS = Counter(
    "smsgw_twilio_errors_total",
    "Errors Twilio answered at hand-off, by Twilio error code",
    ["code"],
)
HANDOFF_BATCH = Histogram(
    "smsgw_handoff_batch_size",
    "Claims and SID stores a worker process ran in one statement (shared.handoff_batch)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
HANDOFF_LATENCY = Histogram(
    "smsgw_handoff_latency_seconds",
    "From the enqueue of a message to Twilio's acceptance of it",
    ["queue"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600),
)


@before_task_publish.connect
def _stamp_enqueue_time(headers: dict[str, Any] | None = None, **_: object) -> None:
    """Record when a task was first queued; a retry keeps the first time."""
    if headers is not None:
        headers.setdefault(ENQUEUED_AT, time.time())


@before_task_publish.connect
def _count_campaign_release(sender: str | None = None, **_: object) -> None:
    """Count a campaign message when the dispatcher queues it (a retry is not a release)."""
    # current_task is a proxy: test it for truth, not against None (it is never None).
    if sender == "send_message" and current_task and current_task.name == "pump_campaign":
        ACCEPTED.labels("campaign").inc()


def observe_handoff(request: Any, outcome: Any) -> None:
    """Count one hand-off outcome of a `send_message` task and, once sent, its latency."""
    HANDOFFS.labels(outcome.kind).inc()
    code = getattr(outcome.error, "code", None)
    if code is not None:
        TWILIO_ERRORS.labels(str(code)).inc()
    if outcome.kind == "failed":
        FINISHED.labels("failed").inc()
    enqueued_at = _header(request, ENQUEUED_AT)
    if outcome.kind == "sent" and enqueued_at:
        queue = (getattr(request, "delivery_info", None) or {}).get("routing_key") or "unknown"
        HANDOFF_LATENCY.labels(queue).observe(max(0.0, time.time() - float(enqueued_at)))


def _header(request: Any, name: str) -> Any:
    """Read a custom message header, wherever this Celery version puts it."""
    value = getattr(request, name, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(name)
    return value


def registry() -> CollectorRegistry:
    """Return what to serve: every process's counts in multiprocess mode, else this one's."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    collected = CollectorRegistry()
    MultiProcessCollector(collected)
    return collected


@worker_ready.connect
def _serve(sender: Any = None, **_: object) -> None:
    """Serve the metrics from the worker's main process once it is ready."""
    settings = getattr(getattr(sender, "app", None), "gateway_settings", None)
    pool = type(getattr(sender, "pool", None)).__module__
    if "prefork" in pool and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        log.warning("prefork pool without PROMETHEUS_MULTIPROC_DIR: task metrics stay in children")
    port = getattr(settings, "worker_metrics_port", 0)
    if not port:
        return
    try:
        start_http_server(port, registry=registry())
    except OSError as error:  # another worker on this host holds the port: run without
        log.warning("worker metrics not served on port %s: %s", port, error)
        return
    log.info("worker metrics on port %s", port)


def protect_flower_metrics() -> None:
    """Put Flower's own `/metrics` behind the same basic auth as its pages and API.

    Flower serves `/metrics` to anyone; its handler's `get_current_user` checks
    basic auth, so requiring a current user answers 401 without credentials.
    """
    from flower.views import monitor
    from tornado.web import authenticated

    if not getattr(monitor.Metrics.get, "smsgw_protected", False):
        monitor.Metrics.get = authenticated(monitor.Metrics.get)
        monitor.Metrics.get.smsgw_protected = True  # type: ignore[attr-defined]
