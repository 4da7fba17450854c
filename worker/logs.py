"""Worker logging: JSON lines carrying the task's message or campaign id and request id.

Celery's own log setup is replaced by `shared.logs.configure`. Before each
task runs, its `message_id` / `campaign_id` argument (by name, positional or
keyword) and the request id of the API request that queued it are put in
the logging context; after it, they are cleared.
"""

from __future__ import annotations

import inspect
from contextvars import Token
from typing import Any

from celery.signals import before_task_publish, setup_logging, task_postrun, task_prerun

from shared import logs

REQUEST_ID = "smsgw_request_id"
_tokens: dict[str, list[tuple[Any, Token]]] = {}


@setup_logging.connect
def _configure(loglevel: Any = None, **_: object) -> None:
    """Log JSON to stderr at the worker's --loglevel (connecting here stops Celery's setup)."""
    logs.configure(loglevel or "INFO")


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
        bound = inspect.signature(task.run).bind_partial(*(args or ()), **(kwargs or {}))
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
