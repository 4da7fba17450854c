"""JSON logs: one object per line, with the request, message and campaign ids in scope.

The ids live in context variables, set by the API for each request and by the
worker for each task, so every line logged meanwhile carries them without
being passed around. Fields that could hold a secret or a message body are
dropped from every line, whatever the level.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
message_id: ContextVar[int | None] = ContextVar("message_id", default=None)
campaign_id: ContextVar[int | None] = ContextVar("campaign_id", default=None)
CONTEXT: dict[str, ContextVar[Any]] = {
    "request_id": request_id,
    "message_id": message_id,
    "campaign_id": campaign_id,
}

# Never written, even when passed as `extra`.
SECRET_FIELDS = frozenset(
    {"body", "token", "auth_token", "authorization", "password", "secret", "webhook_secret"}
)
# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
# Libraries that log request details (headers, bodies) at INFO.
QUIET_LOGGERS = ("twilio.http_client", "urllib3")


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, message, ids and extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, var in CONTEXT.items():
            value = getattr(record, name, None) or var.get()
            if value is not None:
                line[name] = value
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line and key.lower() not in SECRET_FIELDS:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure(level: str | int = "INFO") -> None:
    """Send every log line of this process to stderr as JSON, once per process."""
    root = logging.getLogger()
    root.setLevel(level)
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
