"""Logs: one line per event, as JSON or for a person, with the ids in scope.

`json` (the default: gunicorn, workers, beat, compose) writes one object per
line; `console` (`smsgw dev`) writes `time level process message key=value...`,
in colour only on a terminal. The ids live in context variables, set by the
API for each request and by the worker for each task, so every line logged
meanwhile carries them without being passed around. Fields that could hold a
secret or a message body are dropped from every line in either format,
whatever the level, and terminal colour codes (werkzeug's) never reach a line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

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
# Libraries that log request details (headers, bodies) at INFO; werkzeug's request
# lines (`flask run`, `smsgw dev`) repeat the app's own access line (api.metrics).
QUIET_LOGGERS = ("twilio.http_client", "urllib3", "werkzeug")
FORMATS = ("json", "console")
# Dates, dataclasses and subclasses are written as `str()` writes them (`default=str`).
_AS_STR = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_NON_STR_KEYS
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_LEVEL_COLOURS = {"DEBUG": "2", "INFO": "32", "WARNING": "33", "ERROR": "31", "CRITICAL": "1;31"}


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """Return a record's message, the ids in scope and its extras, secrets dropped."""
    line: dict[str, Any] = {"msg": _ANSI.sub("", record.getMessage())}
    for name, var in CONTEXT.items():
        value = getattr(record, name, None) or var.get()
        if value is not None:
            line[name] = value
    for key, value in vars(record).items():
        if key not in _STANDARD and key not in line and key.lower() not in SECRET_FIELDS:
            line[key] = value
    return line


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, message, ids and extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            **fields(record),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(line, default=str, option=_AS_STR).decode()
        except TypeError:  # what orjson cannot write (an integer beyond 64 bits)
            return json.dumps(line, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """Format a record as one line for a person: time, level, process, message, key=value."""

    def __init__(self, *, process: str, colour: bool) -> None:
        super().__init__()
        self.process = process
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        line = fields(record)
        message = line.pop("msg")
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        level = f"{record.levelname:<7}"
        if self.colour:
            level = f"\x1b[{_LEVEL_COLOURS.get(record.levelname, '0')}m{level}\x1b[0m"
        context = " ".join(f"{key}={_plain(value)}" for key, value in line.items())
        text = f"{when} {level} {self.process:<8} {message}"
        if context:
            text += f"  {context}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _plain(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if not text or " " in text else text


# The format this process chose first (from its settings); Celery's own call to
# configure, at the worker's start, keeps it.
_chosen = {"fmt": "json", "process": ""}


def configure(
    level: str | int = "INFO", fmt: str | None = None, *, process: str | None = None
) -> None:
    """Send every log line of this process to stderr in `fmt`; configuring again replaces it.

    Without `fmt` (or `process`) the one given before is kept.
    """
    fmt = _chosen["fmt"] = fmt or _chosen["fmt"]
    process = _chosen["process"] = process if process is not None else _chosen["process"]
    root = logging.getLogger()
    root.setLevel(level)
    for handler in [h for h in root.handlers if getattr(h, "smsgw", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.smsgw = True  # type: ignore[attr-defined]
    if fmt == "console":
        name = process or os.path.basename(sys.argv[0] or "smsgw")
        handler.setFormatter(ConsoleFormatter(process=name, colour=sys.stderr.isatty()))
    else:
        handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


# Beat's INFO line for each periodic task it sends: "Scheduler: Sending due task ...".
BEAT_LOGGER = "celery.beat"


def _below_info(record: logging.LogRecord) -> bool:
    """Keep beat's "sending due task" lines only when DEBUG is on."""
    if record.levelno == logging.INFO and str(record.msg).startswith("Scheduler: Sending due"):
        return logging.getLogger().isEnabledFor(logging.DEBUG)
    return True


def periodic_chatter_at_debug() -> None:
    """Show beat's per-task lines only at DEBUG (`smsgw dev`: one every second otherwise)."""
    beat = logging.getLogger(BEAT_LOGGER)
    if _below_info not in beat.filters:
        beat.addFilter(_below_info)
