"""What a request needs from the process: settings, database sessions, the broker."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from flask import current_app
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shared.ratelimit import RateLimiter
from shared.settings import Settings


@dataclass
class Gateway:
    """The app's long-lived objects, made once by `create_app`."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    celery: Celery
    limiter: RateLimiter

    def enqueue_send(self, message_id: int) -> None:
        """Queue the hand-off of a committed message; raises if the broker is down."""
        self.celery.send_task("send_message", args=[message_id], queue="sms")


def gateway() -> Gateway:
    """Return the current app's gateway objects."""
    return current_app.extensions["smsgw"]
