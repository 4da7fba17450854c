"""Group commit: each API process accepts the sends waiting at one moment in one statement.

A request thread hands its send to the process's committer and waits. The
committer's single thread takes every send then waiting (up to `MAX_BATCH`),
counts them against their tokens' rate limits in one Redis round trip, accepts
them in one PostgreSQL statement (`accept_many`: tokens, numbers, prices,
opt-outs, charges, messages and ledger rows) and queues the hand-offs of those
accepted with one LPUSH. When sends arrive one at a time each is a batch of
one; under load many share the statement and the round trips, so the database
and the broker do a fraction of the work per send.

Money is safe whatever the batch holds: the statement locks each payer and
charges only what the balance covers; a send it does not accept is decided
again, alone, by the request (`accept_message`), with the contract's message.
"""

from __future__ import annotations

import logging
import queue
import select
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, Row

from api.send_queue import SendQueue
from shared.messaging import Send, accept_many
from shared.ratelimit import RateLimiter

log = logging.getLogger(__name__)

MAX_BATCH = 64
# The thread ends after this long without a send, and starts again with the next.
IDLE_SECONDS = 10.0


@dataclass(frozen=True)
class Outcome:
    """What became of one send: accepted (and queued, unless `queue_error`), limited, or neither."""

    message: Row | None = None
    retry_after: int | None = None
    queue_error: Exception | None = None


@dataclass(frozen=True)
class _Waiting:
    send: Send
    rate_key: str
    request_id: str | None
    future: Future[Outcome]


class Committer:
    """Accepts the sends of one API process in batches, on a thread of its own."""

    def __init__(self, engine: Engine, send_queue: SendQueue, limiter: RateLimiter) -> None:
        self._engine = engine
        self._send_queue = send_queue
        self._limiter = limiter
        self._waiting: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()  # None: stop
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._connection: Connection | None = None  # the thread's own

    def submit(self, send: Send, *, rate_key: str, request_id: str | None = None) -> Outcome:
        """Have the send counted under `rate_key`, accepted and queued with the others waiting.

        Waits for its outcome; raises what the statement raised if the database
        failed the batch.
        """
        waiting = _Waiting(send, rate_key, request_id, Future())
        self._waiting.put(waiting)
        with self._lock:
            # A thread that ended, or one that did not survive a fork, is replaced.
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="committer", daemon=True)
                self._thread.start()
        return waiting.future.result()

    def close(self) -> None:
        """End the thread once the sends already waiting are done, and close its connection."""
        with self._lock:
            thread = self._thread
        if thread is not None and thread.is_alive():
            self._waiting.put(None)
            thread.join(timeout=30)
        self._engine.dispose()

    def _run(self) -> None:
        while True:
            try:
                first = self._waiting.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                first = None
            if first is None:
                with self._lock:
                    if self._waiting.empty():  # a send put after this check starts a new thread
                        self._thread = None
                        self._disconnect()
                        return
                continue
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    more = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._waiting.put(None)  # stop once this batch is done
                    break
                batch.append(more)
            try:
                outcomes = self._commit(batch)
            except Exception as error:  # noqa: BLE001 - each request raises it as its own
                self._disconnect()
                for waiting in batch:
                    waiting.future.set_exception(error)
                continue
            for waiting, outcome in zip(batch, outcomes, strict=True):
                waiting.future.set_result(outcome)

    def _connect(self) -> Connection:
        """Return the thread's connection, replaced if the server has closed it.

        An idle connection has nothing to read unless the server ended it (a
        restart sends a termination notice, or the socket closes): checking
        costs no round trip. A statement that fails later is never run again,
        as it may have committed: its requests get the error.
        """
        connection = self._connection
        if connection is not None:
            socket = connection.connection.dbapi_connection.fileno()  # type: ignore[union-attr]
            if select.select([socket], [], [], 0)[0]:
                self._disconnect()
                connection = None
        if connection is None:
            connection = self._connection = self._engine.connect()
        return connection

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.invalidate()
            self._connection.close()
            self._connection = None

    def _commit(self, batch: Sequence[_Waiting]) -> list[Outcome]:
        limits = self._limiter.retry_after_many([waiting.rate_key for waiting in batch])
        allowed = [waiting for waiting, wait in zip(batch, limits, strict=True) if wait is None]
        accepted: dict[int, Row] = {}
        if allowed:
            rows = accept_many(self._connect(), [waiting.send for waiting in allowed])
            accepted = {id(w): row for w, row in zip(allowed, rows, strict=True) if row is not None}
        queue_error = None
        if accepted:
            try:
                self._send_queue.push_many(
                    [(accepted[id(w)].id, w.request_id) for w in batch if id(w) in accepted]
                )
            except Exception as error:  # noqa: BLE001 - the requests undo their charges
                queue_error = error
        return [
            Outcome(
                message=accepted.get(id(waiting)),
                retry_after=wait,
                queue_error=queue_error if id(waiting) in accepted else None,
            )
            for waiting, wait in zip(batch, limits, strict=True)
        ]
