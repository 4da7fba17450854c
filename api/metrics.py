"""`GET /metrics` in Prometheus text, and the per-request hooks that feed it.

Under `smsgw api` (api/server.py) or gunicorn (`gunicorn.conf.py`) the server
sets `PROMETHEUS_MULTIPROC_DIR` before the app is imported, so each worker
process counts in files and a scrape of any one of them returns the sum of all.
Queue depths are read from Redis (`LLEN`) at scrape time. The same hooks give
each request its id (the `X-Request-Id` header if it is sane, else a new one),
for the logs and the answer, and write its access line (logger `api.access`),
whichever server runs the app.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, g, request
from kombu import Connection
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from api.openapi import document
from shared import logs
from worker import metrics as worker_metrics

bp = Blueprint("metrics", __name__)
log = logging.getLogger(__name__)
ACCESS = logging.getLogger("api.access")
FINAL_STATUSES = ("delivered", "undelivered", "failed")
_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

REQUESTS = Counter(
    "smsgw_http_requests_total",
    "HTTP requests by route, method and status",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "smsgw_http_request_duration_seconds", "Time to answer an HTTP request", ["route"]
)
WEBHOOKS = Counter(
    "smsgw_webhooks_total", "Twilio webhook calls by endpoint and outcome", ["endpoint", "outcome"]
)
SEND_GROUP = Histogram(
    "smsgw_send_group_size",
    "Sends checked, charged and queued together in one statement (api/committer.py)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
ACCEPTED = worker_metrics.ACCEPTED
FINISHED = worker_metrics.FINISHED


class QueueDepth:
    """A collector that reads the length of each Celery queue from the broker when scraped.

    Redis: `LLEN` of each list. RabbitMQ: the ready count of a passive declare
    (tasks held by a worker for a countdown are not counted).
    """

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self):  # type: ignore[no-untyped-def]
        gw = self.app.extensions["smsgw"]
        family = GaugeMetricFamily(
            "smsgw_queue_depth", "Tasks waiting in a queue", labels=["queue"]
        )
        if gw.settings.broker_is_amqp:
            try:
                with Connection(gw.settings.broker, connect_timeout=1) as connection:
                    channel = connection.channel()
                    for name in queue_names(gw.celery.conf):
                        depth = channel.queue_declare(name, passive=True).message_count
                        family.add_metric([name], depth)
            except Exception as error:  # noqa: BLE001 - a scrape must answer without the broker
                log.warning("queue depth unavailable: %s", error)
            yield family
            return
        try:
            client = self.app.extensions.get("smsgw_metrics_redis")
            if client is None:
                client = redis.Redis.from_url(
                    gw.settings.broker, socket_timeout=1, socket_connect_timeout=1
                )
                self.app.extensions["smsgw_metrics_redis"] = client
            for name in queue_names(gw.celery.conf):
                family.add_metric([name], client.llen(name))
        except redis.RedisError as error:
            log.warning("queue depth unavailable: %s", error)
        yield family


def queue_names(conf: Any) -> list[str]:
    """Return every queue the Celery configuration names."""
    names = {conf.task_default_queue}
    for route in (conf.task_routes or {}).values() if isinstance(conf.task_routes, dict) else ():
        if isinstance(route, dict) and route.get("queue"):
            names.add(route["queue"])
    names.update(q.name for q in conf.task_queues or () if q.name)
    return sorted(names)


class _Collected:
    """The metrics of another registry (all processes', or this process's)."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self):  # type: ignore[no-untyped-def]
        return self.source.collect()


@bp.get("/metrics")
@document("Prometheus metrics", responses={200: "Prometheus text format"}, tag="operations")
def metrics() -> Response:
    """Answer every metric in Prometheus text."""
    registry = CollectorRegistry()
    registry.register(_Collected(worker_metrics.registry()))
    registry.register(QueueDepth(current_app))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def request_id_for(incoming: str) -> str:
    """Return the request's id: the client's `X-Request-Id` if it is sane, else a new one."""
    return incoming if _SANE_ID.match(incoming) else uuid.uuid4().hex


def _begin() -> None:
    g.metrics_started = time.perf_counter()
    g.request_id = request_id_for(request.headers.get("X-Request-Id", ""))
    g.request_id_token = logs.request_id.set(g.request_id)


def _finish(response: Response) -> Response:
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    status = response.status_code
    started = g.get("metrics_started")
    elapsed = time.perf_counter() - started if started is not None else 0.0
    observe(route, request.method, status, elapsed if started is not None else None)
    if route.startswith("/webhooks/"):
        outcome = "ok" if status < 300 else "forbidden" if status == 403 else f"error_{status}"
        WEBHOOKS.labels(route, outcome).inc()
        reported = request.form.get("MessageStatus", "")
        if route == "/webhooks/twilio/status" and status < 300 and reported in FINAL_STATUSES:
            FINISHED.labels(reported).inc()
    if "request_id" in g:
        response.headers["X-Request-Id"] = g.request_id
    access(
        method=request.method,
        path=request.path,
        status=status,
        size=response.content_length,
        elapsed=elapsed,
        remote=request.remote_addr,
        user_agent=request.user_agent.string,
        message_id=g.get("message_id"),
    )
    return response


def observe(route: str, method: str, status: int, elapsed: float | None) -> None:
    """Count a request under its route, and its time unless it is unknown."""
    REQUESTS.labels(route, method, str(status)).inc()
    if elapsed is not None:
        REQUEST_SECONDS.labels(route).observe(elapsed)


def access(
    *,
    method: str,
    path: str,
    status: int,
    size: int | None,
    elapsed: float,
    remote: str | None,
    user_agent: str,
    message_id: int | None = None,
) -> None:
    """Write a request's access line: whichever server runs the app, it has the request id.

    A send's line also has the id of the message it accepted: its one line.
    """
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    ACCESS.info(
        "%s %s %s",
        method,
        path,
        status,
        extra={
            "remote": remote,
            "method": method,
            "path": path,
            "status": status,
            "bytes": size,
            "duration_ms": round(elapsed * 1000, 3),
            "user_agent": user_agent,
            "pid": os.getpid(),  # which worker answered
            "message_id": message_id,  # the message a send accepted
        },
    )


def _end(_: BaseException | None) -> None:
    token = g.pop("request_id_token", None)
    if token is not None:
        try:
            logs.request_id.reset(token)
        except ValueError:
            logs.request_id.set(None)


def init_app(app: Flask) -> None:
    """Install the request hooks and the `/metrics` route."""
    app.before_request(_begin)
    app.after_request(_finish)
    app.teardown_request(_end)
    app.register_blueprint(bp)
