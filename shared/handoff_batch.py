"""Group commit of hand-offs: the claims and SID stores waiting at one moment share a statement.

The worker's twin of `api.committer`. In a worker process each `send_message`
task, in its own thread, claims its message, calls Twilio and stores the SID.
A task that needs a claim or a store and finds no batch running leads one: it
takes every claim and store then waiting (its own first, up to `MAX_BATCH`),
runs them as one PostgreSQL statement (one round trip, one transaction) and
wakes each task with its row; the first task still waiting leads the next
batch. A task alone is a batch of one, run by its own thread; under load the
round trip, the commit and the statement's set-up are shared. Twilio is still
called by each task from its own thread, so calls stay concurrent, and each
task acknowledges its own Celery message.

Nothing is weaker than one statement per message. A claim is still one
conditional update of a `pending`, claimable message, committed before its
task calls Twilio; a message is claimed at most once in a batch (a second
request for it is answered None at once), so among any number of tasks and
workers one holder at most gets its row. A batch whose outcome is unknown (the
connection broke) runs once more on a new connection: a repeated claim finds
its messages taken and its tasks make no call (the reconciler hands them on
when their leases pass), a repeated store writes the same SID. A batch that
fails for one of its requests (a SID another message holds) is undone whole
and each request runs again alone, so only that request's task sees the error.

On PostgreSQL a batch is one statement on arrays, on the batch's own
connection (used by one leader at a time), prepared once with its generic
plan. Elsewhere (SQLite, under `smsgw dev`) the same requests run as
single-row statements in one transaction (`_run_portable`): the statement's
meaning, and its test oracle.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, bindparam, or_, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shared.db import utcnow
from shared.models import Message

log = logging.getLogger(__name__)
MAX_BATCH = 64

# One time for the whole batch (`now`); each claim's lease is its own length from it.
# Only the primary key may drive either update: the conditions on `status` and `sms_sid`
# are written so that no index serves them (a CASE, a COALESCE). On a table whose
# statistics were stale, a plan read every queued message through the status index and
# joined each with the claims.
_BATCH_SQL = """
WITH stored AS (
    UPDATE messages AS m
    SET sms_sid = s.sid, handoff = 'done', updated_at = %(now)s
    FROM unnest(%(store_ids)s::bigint[], %(store_sids)s::text[]) AS s(id, sid)
    WHERE m.id = s.id AND coalesce(m.sms_sid, s.sid) = s.sid
    RETURNING m.id, m.status
), claimed AS (
    UPDATE messages AS m
    SET handoff = 'in_flight', status = 'sending', attempts = m.attempts + 1,
        updated_at = %(now)s, handoff_at = %(now)s,
        lease_until = %(now)s + c.lease * interval '1 second'
    FROM unnest(%(claim_ids)s::bigint[], %(claim_leases)s::float8[]) AS c(id, lease)
    WHERE m.id = c.id
      AND m.handoff = 'pending'
      AND CASE m.status
            WHEN 'sending' THEN true
            WHEN 'queued' THEN m.status_callback IS NULL
            ELSE false
          END
      AND coalesce(m.valid_until > %(now)s, true)
    RETURNING m.id, m.user_id, m."to", m.from_number, m.body, m.valid_until, m.mode,
              m.lease_until
)
SELECT false, id, status, NULL::bigint, NULL, NULL, NULL, NULL::timestamp, NULL,
       NULL::timestamp
FROM stored
UNION ALL
SELECT true, id, NULL, user_id, "to", from_number, body, valid_until, mode, lease_until
FROM claimed
"""
# On arrays of a few ids PostgreSQL finds a custom plan cheaper than the generic one, and
# would plan the statement anew at every run: half a millisecond of its CPU, more than
# the statement itself. The generic plan is the same nested loop on the primary key.
_GENERIC_PLAN = "-c plan_cache_mode=force_generic_plan"

# The same claim and store, one message each: the portable form of the batch.
CLAIM_ONE = (
    update(Message)
    .where(
        Message.id == bindparam("message_id"),
        Message.handoff == "pending",
        # A message still `queued` with a user callback is claimed through the ORM,
        # which writes the callback's outbox row in the claim's transaction.
        or_(
            Message.status == "sending",
            and_(Message.status == "queued", Message.status_callback.is_(None)),
        ),
        # Past its validity a message is failed, never sent: the ORM path expires it.
        or_(Message.valid_until.is_(None), Message.valid_until > bindparam("now")),
    )
    .values(
        handoff="in_flight",
        status="sending",
        attempts=Message.attempts + 1,
        updated_at=bindparam("now"),
        handoff_at=bindparam("now"),
        lease_until=bindparam("lease_until"),
    )
    .returning(
        Message.user_id,
        Message.to,
        Message.from_number,
        Message.body,
        Message.valid_until,
        Message.mode,
        Message.lease_until,
    )
)
STORE_ONE = (
    update(Message)
    .where(
        Message.id == bindparam("message_id"),
        or_(Message.sms_sid.is_(None), Message.sms_sid == bindparam("sid")),
    )
    .values(sms_sid=bindparam("sid"), handoff="done", updated_at=bindparam("now"))
    .returning(Message.status)
)


@dataclass(eq=False)
class Request:
    """A claim (`lease` seconds) or a SID's store, waiting for its batch.

    `woken` opens once it has its answer: `row`, and `at` / `started`, the
    batch's time (naive UTC, as stored) and the monotonic clock just before it.
    """

    message_id: int
    lease: float = 0.0
    sid: str | None = None
    # A claim's: (user_id, to, from_number, body, valid_until, mode, lease_until);
    # a store's: (status,).
    row: Any = None
    at: datetime | None = None
    started: float = 0.0
    error: BaseException | None = None
    answered: bool = False
    woken: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.woken.acquire()


class HandoffBatch:
    """Runs the claims and SID stores of one process's threads in shared statements."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        observe: Callable[[int], object] | None = None,
    ) -> None:
        """`observe` is given the size of every batch run (a metric)."""
        self._session_factory = session_factory
        self._observe = observe
        bind = session_factory.kw.get("bind")
        self._engine = bind if isinstance(bind, Engine) else None
        self._postgresql = self._engine is not None and self._engine.dialect.driver == "psycopg"
        self._lock = threading.Lock()
        self._pending: list[Request] = []
        self._leading = False  # a batch is running
        self._connection: Any = None  # used by one leader at a time

    def __enter__(self) -> HandoffBatch:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def claim(self, message_id: int, *, lease_seconds: float) -> Request:
        """Claim a `pending` message under a lease and commit; `row` is None if not claimed."""
        return self.submit(Request(message_id, lease=lease_seconds))

    def store(self, message_id: int, *, sid: str) -> str | None:
        """Record a SID and commit; return the message's status, or None if another SID is there.

        Raises IntegrityError when another message holds this SID.
        """
        row = self.submit(Request(message_id, sid=sid)).row
        return None if row is None else row[0]

    def submit(self, request: Request) -> Request:
        """Have the request run in a batch with the others waiting; raise what failed it."""
        with self._lock:
            self._pending.append(request)
            lead, self._leading = not self._leading, True
        if not lead:
            request.woken.acquire()  # an answer, or the turn to lead
        if not request.answered:
            self._lead()
        if request.error is not None:
            raise request.error
        return request

    def close(self) -> None:
        """Close the batch's connection."""
        with self._lock:
            self._disconnect()

    def _lead(self) -> None:
        """Run one batch, wake its requests, and hand the lead to the next request waiting."""
        with self._lock:
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
        try:
            if self._observe is not None:
                self._observe(len(batch))
            self._answer(batch)
        except BaseException as error:  # noqa: BLE001 - each task raises it as its own
            for request in batch:
                request.error = error
        finally:
            for request in batch:
                request.answered = True
            self._pass_on(batch)

    def _pass_on(self, batch: Sequence[Request]) -> None:
        with self._lock:
            following = self._pending[0] if self._pending else None
            self._leading = following is not None
        for request in batch[1:]:
            request.woken.release()
        if following is not None:
            following.woken.release()  # not answered yet: it leads the next batch

    def _answer(self, batch: Sequence[Request]) -> None:
        """Answer every request of the batch; alone, each request that fails the batch."""
        claimed: set[int] = set()
        runnable = []
        for request in batch:
            if request.sid is None:
                if request.message_id in claimed:
                    continue  # claimed at most once per batch: the later request gets None
                claimed.add(request.message_id)
            runnable.append(request)
        try:
            self._run(runnable)
        except IntegrityError:
            if len(runnable) == 1:
                raise
            log.info("a hand-off batch of %d broke a constraint: each runs alone", len(runnable))
            for request in runnable:
                try:
                    self._run([request])
                except IntegrityError as error:
                    request.error = error

    def _run(self, requests: Sequence[Request]) -> None:
        """Run the requests as one transaction and set each one's row; retried once if cut off."""
        try:
            self._run_once(requests)
        except DBAPIError as error:
            if isinstance(error, IntegrityError):
                raise
            # The connection broke (the database restarted): the batch, safe to
            # repeat, runs once more on a new one.
            log.warning("hand-off batch failed, running it again: %s", error.orig)
            self._run_once(requests)

    def _run_once(self, requests: Sequence[Request]) -> None:
        started, now = time.monotonic(), utcnow()
        for request in requests:
            request.row, request.at, request.started = None, now, started
        if self._postgresql:
            self._run_postgresql(requests, now)
        else:
            self._run_portable(requests, now)

    def _run_postgresql(self, requests: Sequence[Request], now: datetime) -> None:
        # In id order, as every batch locks its rows: two workers' batches never deadlock.
        ordered = sorted(requests, key=lambda request: request.message_id)
        claims = [r for r in ordered if r.sid is None]
        stores = [r for r in ordered if r.sid is not None]
        params = {
            "now": now,
            "store_ids": [r.message_id for r in stores],
            "store_sids": [r.sid for r in stores],
            "claim_ids": [r.message_id for r in claims],
            "claim_leases": [float(r.lease) for r in claims],
        }
        try:
            with self._connect().cursor() as cursor:
                cursor.execute(_BATCH_SQL, params)
                rows = cursor.fetchall()
        except Exception as error:
            self._disconnect()  # its state is unknown
            dbapi = self._dbapi()
            if isinstance(error, dbapi.Error):
                raise DBAPIError.instance(_BATCH_SQL, params, error, dbapi.Error) from error
            raise
        found: dict[tuple[bool, int], Any] = {(row[0], row[1]): row for row in rows}
        for request in requests:
            row = found.get((request.sid is None, request.message_id))
            if row is not None:
                request.row = row[3:] if request.sid is None else row[2:3]

    def _dbapi(self) -> Any:
        assert self._engine is not None
        return self._engine.dialect.loaded_dbapi

    def _connect(self) -> Any:
        """Return the batch's autocommit connection, replaced if the server closed it.

        An idle connection has nothing to read unless the server ended it (a
        restart sends a termination notice, or the socket closes): checking
        costs no round trip.
        """
        connection = self._connection
        if connection is not None and (
            connection.closed or select.select([connection.fileno()], [], [], 0)[0]
        ):
            self._disconnect()
            connection = None
        if connection is None:
            assert self._engine is not None
            cargs, cparams = self._engine.dialect.create_connect_args(self._engine.url)
            options = f"{cparams.pop('options', '')} {_GENERIC_PLAN}".strip()
            connection = self._dbapi().connect(
                *cargs, **cparams, options=options, autocommit=True, prepare_threshold=0
            )
            self._connection = connection
        return connection

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception as error:  # noqa: BLE001 - it is being dropped anyway
                log.debug("closing a hand-off batch connection: %r", error)

    def _run_portable(self, requests: Sequence[Request], now: datetime) -> None:
        """Run each request as its single-row statement, all in one transaction."""
        with self._session_factory() as session:
            for request in requests:
                if request.sid is None:
                    params = {
                        "message_id": request.message_id,
                        "now": now,
                        "lease_until": now + timedelta(seconds=request.lease),
                    }
                    request.row = session.execute(CLAIM_ONE, params).first()
                else:
                    params = {"message_id": request.message_id, "sid": request.sid, "now": now}
                    request.row = session.execute(STORE_ONE, params).first()
            session.commit()
