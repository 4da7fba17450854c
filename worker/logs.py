"""Worker logging: JSON lines carrying the task's message or campaign id and request id.

Celery's own log setup is replaced by `shared.logs.configure`, and its two
lines per task ("received", "succeeded") are kept for DEBUG: each task logs
its own outcome with its ids, and at hundreds of tasks a second those two
lines cost more CPU than the one that says something. Its other lines
(retries, failures) stay. Before each task runs, its `message_id` /
`campaign_id` argument (by name, positional or keyword) and the request id
of the API request that queued it are put in the logging context; after it,
they are cleared.
"""

from __future__ import annotations

import inspect
import logging
from contextvars import Token
from functools import lru_cache
from typing import Any

from celery.app.trace import LOG_SUCCESS
from celery.signals import before_task_publish, setup_logging, task_postrun, task_prerun

from shared import logs

REQUEST_ID = "smsgw_request_id"
# Celery logs each task's success (and retries, failures) here...
TRACE_LOGGER = "celery.app.trace"
# ...and its receipt here, its only line at INFO.
RECEIPT_LOGGER = "celery.worker.strategy"
_tokens: dict[str, list[tuple[Any, Token]]] = {}


@setup_logging.connect
def _configure(loglevel: Any = None, **_: object) -> None:
    """Log JSON to stderr at the worker's --loglevel (connecting here stops Celery's setup)."""
    logs.configure(loglevel or "INFO")
    if logging.getLogger().level > logging.DEBUG:
        # Celery asks the level once, when the worker builds its task handlers,
        # after this: above INFO, it never builds the "received" line.
        logging.getLogger(RECEIPT_LOGGER).setLevel(logging.WARNING)
        trace = logging.getLogger(TRACE_LOGGER)
        if _drop_success not in trace.filters:
            trace.addFilter(_drop_success)


def _drop_success(record: logging.LogRecord) -> bool:
    """Keep every line of Celery's tracer but the "succeeded" of each task."""
    return record.msg != LOG_SUCCESS


@before_task_publish.connect
def _pass_request_id(headers: dict[str, Any] | None = None, **_: object) -> None:
    """Carry the current request id to the task."""
    current = logs.request_id.get()
    if headers is not None and current and REQUEST_ID not in headers:
        headers[REQUEST_ID] = current


def task_ids(task: Any, args: Any, kwargs: Any) -> dict[str, Any]:
    """Return the message_id / campaign_id / request id a task call is about."""
    found: dict[str, Any] = {}
    try:
        bound = _signature(task.run).bind_partial(*(args or ()), **(kwargs or {}))
    except (TypeError, ValueError):
        bound = None
    for name in ("message_id", "campaign_id"):
        if bound is not None and name in bound.arguments:
            found[name] = bound.arguments[name]
    request = getattr(task, "request", None)
    rid = getattr(request, REQUEST_ID, None) or (getattr(request, "headers", None) or {}).get(
        REQUEST_ID
    )
    if rid:
        found["request_id"] = rid
    return found


@lru_cache(maxsize=256)
def _signature(run: Any) -> inspect.Signature:
    """Return the signature of a task's function, read once per task."""
    return inspect.signature(run)


@task_prerun.connect
def _enter(task_id: str = "", task: Any = None, args: Any = None, kwargs: Any = None, **_: object):
    """Put the task's ids in the logging context."""
    pairs = []
    for name, value in task_ids(task, args, kwargs).items():
        var = logs.CONTEXT[name]
        pairs.append((var, var.set(value)))
    _tokens[task_id] = pairs


@task_postrun.connect
def _leave(task_id: str = "", **_: object) -> None:
    """Restore the logging context as it was before the task."""
    for var, token in reversed(_tokens.pop(task_id, [])):
        try:
            var.reset(token)
        except ValueError:  # set in another context (another thread): just clear it
            var.set(None)
