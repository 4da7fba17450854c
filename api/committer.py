"""Group commit: each API process accepts the sends waiting at one moment in one statement.

A request thread that finds no batch running leads one: it takes every send
then waiting, its own first (up to `MAX_BATCH`), counts them against their
tokens' rate limits (in one Redis round trip at most: `shared.ratelimit`),
accepts them in one PostgreSQL statement (`accept_many_autocommit`: tokens,
numbers, prices, opt-outs, charges, messages and ledger rows) and queues the
hand-offs of those accepted with one LPUSH.
Sends that arrive meanwhile wait; when the batch is done its leader wakes
each of its sends with its outcome and makes the first send still waiting the
next leader. When sends arrive one at a time each is a batch of one, run by
its own request thread; under load many share the statement and the round
trips, so the database and the broker do a fraction of the work per send.

Money is safe whatever the batch holds: the statement locks each payer and
charges only what the balance covers; a send it does not accept is decided
again, alone, by the request (`accept_message`), with the contract's message.
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Engine
from sqlalchemy.pool import PoolProxiedConnection

from api.metrics import SEND_GROUP
from shared.messaging import Send, accept_many_autocommit
from shared.ratelimit import RateLimiter
from worker.send_queue import SendQueue

log = logging.getLogger(__name__)

MAX_BATCH = 64


@dataclass(frozen=True)
class Outcome:
    """What became of one send: accepted (and queued, unless `queue_error`), limited, or neither."""

    message: Any = None  # the message's row
    retry_after: int | None = None
    queue_error: Exception | None = None


@dataclass
class _Waiting:
    """A send waiting for its batch; `woken` is released when it has an outcome or must lead."""

    send: Send
    rate_key: str
    request_id: str | None
    outcome: Outcome | None = None
    error: BaseException | None = None
    woken: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.woken.acquire()


class Committer:
    """Accepts the sends of one API process in batches, each run by one of their requests."""

    def __init__(self, engine: Engine, send_queue: SendQueue, limiter: RateLimiter) -> None:
        self._engine = engine
        self._send_queue = send_queue
        self._limiter = limiter
        self._lock = threading.Lock()
        self._pending: list[_Waiting] = []
        self._leading = False  # a batch is running
        self._connection: PoolProxiedConnection | None = None  # used by one leader at a time

    def submit(self, send: Send, *, rate_key: str, request_id: str | None = None) -> Outcome:
        """Have the send counted under `rate_key`, accepted and queued with the others waiting.

        Returns its outcome; raises what the statement raised if the database
        failed the batch.
        """
        waiting = _Waiting(send, rate_key, request_id)
        with self._lock:
            self._pending.append(waiting)
            lead, self._leading = not self._leading, True
        if not lead:
            waiting.woken.acquire()  # an outcome, or the turn to lead
        if waiting.outcome is None and waiting.error is None:
            self._lead()
        if waiting.error is not None:
            raise waiting.error
        assert waiting.outcome is not None
        return waiting.outcome

    def close(self) -> None:
        """Close the connection batches run on (the app is done with)."""
        with self._lock:
            self._disconnect()
        self._engine.dispose()

    def _lead(self) -> None:
        """Run one batch, wake its sends, and hand the lead to the next send waiting."""
        with self._lock:
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
        try:
            SEND_GROUP.observe(len(batch))
            outcomes = self._commit(batch)
        except BaseException as error:  # noqa: BLE001 - each request raises it as its own
            for waiting in batch:
                waiting.error = error
            self._disconnect()
        else:
            for waiting, outcome in zip(batch, outcomes, strict=True):
                waiting.outcome = outcome
        finally:
            self._pass_on(batch)

    def _pass_on(self, batch: Sequence[_Waiting]) -> None:
        """Wake the batch's other sends and hand the lead to the first send still waiting."""
        with self._lock:
            following = self._pending[0] if self._pending else None
            self._leading = following is not None
        for waiting in batch[1:]:
            waiting.woken.release()
        if following is not None:
            following.woken.release()  # it has no outcome yet: it leads the next batch

    def _connect(self) -> psycopg.Connection:
        """Return the committer's psycopg connection (autocommit), replaced if the server closed it.

        An idle connection has nothing to read unless the server ended it (a
        restart sends a termination notice, or the socket closes): checking
        costs no round trip. A statement that fails later is never run again,
        as it may have committed: its requests get the error.
        """
        pooled = self._connection
        if pooled is not None and select.select([pooled.driver_connection.fileno()], [], [], 0)[0]:
            self._disconnect()
            pooled = None
        if pooled is None:
            pooled = self._connection = self._engine.raw_connection()
            pooled.driver_connection.autocommit = True
        return pooled.driver_connection

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.invalidate()
            self._connection.close()
            self._connection = None

    def _commit(self, batch: Sequence[_Waiting]) -> list[Outcome]:
        limits = self._limiter.retry_after_many([waiting.rate_key for waiting in batch])
        rows: list[Any] = [None] * len(batch)
        allowed = [i for i, wait in enumerate(limits) if wait is None]
        if allowed:
            accepted = accept_many_autocommit(self._connect(), [batch[i].send for i in allowed])
            for i, row in zip(allowed, accepted, strict=True):
                rows[i] = row
        queued = [(row.id, w.request_id) for w, row in zip(batch, rows, strict=True) if row]
        queue_error = None
        if queued:
            try:
                self._send_queue.push_many(queued)
            except Exception as error:  # noqa: BLE001 - the requests undo their charges
                queue_error = error
        return [
            Outcome(message=row, retry_after=wait, queue_error=queue_error if row else None)
            for row, wait in zip(rows, limits, strict=True)
        ]
