"""What a request needs from the process: settings, database, broker, rate limiter."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from flask import current_app, g
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from api.committer import Committer
from shared.ratelimit import RateLimiter
from shared.settings import Settings
from worker.send_queue import SendQueue


@dataclass
class Gateway:
    """The app's long-lived objects, made once by `create_app`.

    On `autocommit` each statement is its own transaction: token lookups run
    there, on one connection per request, without a pre-ping round trip (see
    `api.auth`). On PostgreSQL, sends without an Idempotency-Key go through the
    `committer`, which accepts the sends waiting together (`api.committer`).
    """

    settings: Settings
    engine: Engine
    autocommit: Engine
    sessions: sessionmaker[Session]
    celery: Celery
    send_queue: SendQueue
    limiter: RateLimiter
    committer: Committer | None

    def connection(self) -> Connection:
        """Return this request's autocommit connection; it is closed when the request ends."""
        conn = g.get("smsgw_connection")
        if conn is None:
            conn = g.smsgw_connection = self.autocommit.connect()
        return conn

    def close_connection(self) -> None:
        """Give this request's connection back to the pool, if it took one."""
        conn = g.pop("smsgw_connection", None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Close every pooled connection, the committer's too (the app is done with)."""
        if self.committer is not None:
            self.committer.close()
        self.send_queue.close()
        self.autocommit.dispose()
        self.engine.dispose()

    def enqueue_send(self, message_id: int) -> None:
        """Queue the hand-off of a committed message; raises if the broker is down."""
        self.send_queue.push(message_id)


def gateway() -> Gateway:
    """Return the current app's gateway objects."""
    return current_app.extensions["smsgw"]
