"""The per-process resources of the worker: database engine, sessions, hand-off batch, provider.

They are built on first use, so the prefork parent never opens a connection,
and dropped after a fork, so no child shares its parent's sockets.
"""

from __future__ import annotations

import threading

import redis
from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shared.db import make_engine, make_session_factory
from shared.handoff_batch import HandoffBatch
from shared.providers import Provider
from shared.providers.twilio import TwilioProvider
from shared.settings import Settings
from worker.metrics import HANDOFF_BATCH
from worker.send_queue import SendQueue, make_send_queue

_attach_lock = threading.Lock()
# Connections are held for one short statement at a time, never across a
# Twilio call, so a few serve a hundred threads; threads beyond them wait for
# one. No overflow: an overflow connection is closed as soon as it is given
# back, so a busy worker would open and close one (a backend each, forked and
# authenticated) every few messages, which cost more CPU than the hand-off's
# statements.
POOL_SIZE = 30
POOL_OVERFLOW = 0


class WorkerContext:
    """Builds the engine, the session factory and the provider once per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._session_factory: sessionmaker[Session] | None = None
        self._handoff_batch: HandoffBatch | None = None
        self._provider: Provider | None = None
        self._send_queue: SendQueue | None = None

    @property
    def session_factory(self) -> sessionmaker[Session]:
        """Return the session factory, creating the engine on first use."""
        if self._session_factory is not None:  # every task after the first: no lock
            return self._session_factory
        with self._lock:
            if self._session_factory is None:
                # No ping per checkout: a round trip and ~1 ms of CPU per hand-off.
                # After a database restart the first statement on each old
                # connection fails instead, and the pool then replaces all of
                # them; the hand-off runs that statement once more (shared.handoff).
                self._engine = make_engine(
                    self.settings.database_url,
                    pool_pre_ping=False,
                    pool_size=POOL_SIZE,
                    max_overflow=POOL_OVERFLOW,
                )
                self._session_factory = make_session_factory(self._engine)
            return self._session_factory

    @property
    def handoff_batch(self) -> HandoffBatch:
        """Return the batch the threads of this process share their claims and SID stores in."""
        if self._handoff_batch is not None:
            return self._handoff_batch
        session_factory = self.session_factory
        with self._lock:
            if self._handoff_batch is None:
                self._handoff_batch = HandoffBatch(session_factory, observe=HANDOFF_BATCH.observe)
            return self._handoff_batch

    @property
    def provider(self) -> Provider:
        """Return the provider; its HTTP session keeps connections alive between tasks."""
        if self._provider is not None:
            return self._provider
        with self._lock:
            if self._provider is None:
                self._provider = TwilioProvider(self.settings)
            return self._provider

    @property
    def send_queue(self) -> SendQueue:
        """Return the queue `send_message` tasks are put on in one round trip, as the API does."""
        if self._send_queue is not None:
            return self._send_queue
        with self._lock:
            if self._send_queue is None:
                client = redis.Redis.from_url(
                    self.settings.redis_url, socket_timeout=5, socket_connect_timeout=2
                )
                self._send_queue = make_send_queue(self.settings, client)
            return self._send_queue

    def after_fork(self) -> None:
        """Forget the parent's pool, HTTP session and broker connection, without closing them."""
        self._lock = threading.Lock()
        if self._engine is not None:
            self._engine.dispose(close=False)
        # Forgotten, not closed: its lock and connection are the parent's.
        self._handoff_batch = None
        self._provider = self._send_queue = None

    def close(self) -> None:
        """Close the pooled database connections."""
        with self._lock:
            if self._handoff_batch is not None:
                self._handoff_batch.close()
            if self._engine is not None:
                self._engine.dispose()
            self._engine = self._session_factory = self._provider = None
            self._handoff_batch = None


def context_for(app: Celery) -> WorkerContext:
    """Return the context of a Celery app made by `make_celery`, attaching it on first use."""
    with _attach_lock:
        context = getattr(app, "gateway_context", None)
        if context is None:
            context = WorkerContext(app.gateway_settings)  # type: ignore[attr-defined]
            app.gateway_context = context  # type: ignore[attr-defined]
        return context
