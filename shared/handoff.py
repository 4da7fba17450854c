"""The hand-off of one message to the provider: at most one create per message.

A message is claimed with one conditional UPDATE (`handoff` to `in_flight`)
committed before the provider is called, so among any number of workers,
retries and redeliveries only the holder of the claim may call. A call whose
outcome is unknown leaves `handoff = "unknown"`, and the next holder looks the
message up at the provider before it would send again.

A claim carries a lease (`lease_until`): TWILIO_TIMEOUT, which bounds the
whole call, plus `LEASE_MARGIN`; a lookup before the call renews it. The call
is only made while the claim is young enough for it to end inside the lease
(`CALL_WINDOW`), so once the lease has passed its holder is gone, not slow:
`shared.reconcile.take_over` then hands the message on as `unknown`, to be
looked up and sent if Twilio has no trace of it. A message released for a
retry is held until the retry is due (`hold_for_retry`), so it is never
mistaken for an abandoned one.

The common hand-off (a `pending` message without a user callback to write)
costs two statements, each its own transaction: the claim, an UPDATE ...
RETURNING of what the call needs, and the SID's UPDATE. Both go through the
process's `shared.handoff_batch.HandoffBatch`, which runs the claims and stores
of every thread waiting at that moment as one statement on its own connection
(a hand-off alone is a batch of one), and runs a batch once more on a new
connection when its connection turns out dead; both are safe to repeat, as a
repeated claim finds the message taken and a repeated store writes the same
SID. Everything else (callbacks to write, lookups, failures) goes through the
ORM.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shared import messaging, optouts, testmode, user_callbacks
from shared.db import utcnow
from shared.handoff_batch import HandoffBatch
from shared.models import Message
from shared.providers import (
    PermanentError,
    Provider,
    ProviderError,
    Sent,
    TransientError,
    UnknownOutcome,
)
from shared.release import expire
from shared.scheduling import MAX_VALIDITY
from shared.settings import DEFAULT_LEASE, LEASE_MARGIN

log = logging.getLogger(__name__)
ACTIVE = ("queued", "sending")
OPTED_OUT = optouts.OPTED_OUT_CODE
# A claim older than this (a stalled process) makes no call: what is left of its
# lease must cover a whole call and the SID's store after it.
CALL_WINDOW = LEASE_MARGIN - 5
# Twilio's clock and ours may differ; look a little before our own call.
FIND_MARGIN = timedelta(minutes=1)


@dataclass(frozen=True)
class Outcome:
    """What became of one hand-off: `sent`, `retry`, `failed` or `skipped`.

    `simulated`: a test message was handed to the simulator; `testmode.settle` moves it on.
    """

    kind: str
    sid: str | None = None
    error: ProviderError | None = None
    simulated: bool = False


@dataclass(frozen=True)
class _Claim:
    id: int
    user_id: int
    to: str
    from_: str
    body: str
    handoff_at: datetime
    previous: str
    lease_until: datetime
    valid_until: datetime | None = None
    mode: str = "live"
    # When the lease was taken (monotonic): before the claim's statement, so the call
    # window errs short.
    claimed: float = field(default_factory=time.monotonic)

    def validity_left(self) -> int | None:
        """Return the whole seconds of its validity period left, for Twilio's ValidityPeriod."""
        if self.valid_until is None:
            return None
        left = (self.valid_until - utcnow()).total_seconds()
        return max(1, min(MAX_VALIDITY, math.ceil(left)))


def hand_off(
    session_factory: sessionmaker[Session],
    provider: Provider,
    *,
    message_id: int,
    status_callback_base: str,
    lease_seconds: float = DEFAULT_LEASE,
    batch: HandoffBatch | None = None,
) -> Outcome:
    """Hand one message to the provider once, whatever retries, redeliveries and deaths happen.

    `batch`: the process's batch of claims and stores, shared by its threads;
    without it the hand-off is a batch of its own.
    """
    if batch is None:
        with HandoffBatch(session_factory) as own:
            return hand_off(
                session_factory,
                provider,
                message_id=message_id,
                status_callback_base=status_callback_base,
                lease_seconds=lease_seconds,
                batch=own,
            )
    claim = _claim(session_factory, batch, message_id, ("pending", "unknown"), lease_seconds)
    if claim is None:
        return Outcome("skipped")
    provider = testmode.provider_for(claim.mode, provider)
    if claim.previous == "unknown":
        try:
            found = _look_up(session_factory, provider, claim)
        except Exception as error:
            # Even a 4xx here says nothing about the message: keep looking before sending.
            return _release(session_factory, message_id, "unknown", _as_provider_error(error))
        if found is not None:
            return _store_sid(session_factory, batch, claim, found)
        # The lookup took part of the lease: take a new one, unless it was taken over.
        renewed = _renew(session_factory, claim, lease_seconds)
        if renewed is None:
            log.info("message %s: its lease ran out during the lookup; taken over", message_id)
            return Outcome("skipped")
        claim = renewed
    if time.monotonic() - claim.claimed > CALL_WINDOW:
        # Too little of the lease is left for a whole call: nothing was sent, try again.
        stalled = TransientError(
            f"claim held {time.monotonic() - claim.claimed:.0f} s before the call"
        )
        return _release(session_factory, message_id, claim.previous, stalled)
    try:
        sent = provider.send(
            to=claim.to,
            from_=claim.from_,
            body=claim.body,
            status_callback=f"{status_callback_base}?message_id={claim.id}",
            validity_period=claim.validity_left(),
        )
    except PermanentError as error:
        return _fail(session_factory, message_id, error.code, error.message, error)
    except TransientError as error:
        return _release(session_factory, message_id, "pending", error)
    except Exception as error:
        # Whatever else broke, the request may have left: treat it as an unknown outcome.
        if not isinstance(error, UnknownOutcome):
            log.exception("message %s: unexpected error during hand-off", message_id)
        return _release(session_factory, message_id, "unknown", _as_provider_error(error))
    return _store_sid(session_factory, batch, claim, sent)


def hold_for_retry(
    session_factory: sessionmaker[Session], *, message_id: int, seconds: float
) -> None:
    """Keep a released message spoken for until its retry is due, and a margin after."""
    with session_factory() as session:
        session.execute(
            update(Message)
            .where(
                Message.id == message_id,
                Message.handoff.in_(("pending", "unknown")),
                Message.sms_sid.is_(None),
            )
            .values(lease_until=utcnow() + timedelta(seconds=seconds + LEASE_MARGIN))
        )
        session.commit()


def give_up(
    session_factory: sessionmaker[Session],
    provider: Provider,
    *,
    message_id: int,
    reason: str,
    lease_seconds: float = DEFAULT_LEASE,
    batch: HandoffBatch | None = None,
) -> Outcome:
    """Fail and refund a message whose retries are exhausted, unless it reached the provider.

    A message whose last call had an unknown outcome is looked up once more;
    if even that lookup fails it stays `unknown`, for the reconciler to settle.
    """
    if batch is None:
        with HandoffBatch(session_factory) as own:
            return give_up(
                session_factory,
                provider,
                message_id=message_id,
                reason=reason,
                lease_seconds=lease_seconds,
                batch=own,
            )
    with session_factory() as session:
        message = session.get(Message, message_id, with_for_update=True)
        if message is not None and message.handoff == "pending":
            return _fail_in(session, message, None, reason)
    claim = _claim(session_factory, batch, message_id, ("unknown",), lease_seconds)
    if claim is None:
        return Outcome("skipped")
    provider = testmode.provider_for(claim.mode, provider)
    try:
        found = _look_up(session_factory, provider, claim)
    except Exception as error:
        # Left unknown; when the claim's lease runs out the reconciler hands it on.
        log.warning("message %s: last lookup failed, left unknown: %r", message_id, error)
        _release(session_factory, message_id, "unknown", _as_provider_error(error))
        return Outcome("skipped", error=_as_provider_error(error))
    if found is not None:
        return _store_sid(session_factory, batch, claim, found)
    return _fail(session_factory, message_id, None, reason)


def requeue_stale(
    session_factory: sessionmaker[Session], *, older_than_seconds: int, limit: int
) -> list[int]:
    """Return ids of messages left `queued` and `pending` too long, touching them.

    The API may have died between its commit and its enqueue. Touching
    `updated_at` keeps the next run from enqueueing the same message again
    while its new task waits in a long queue.
    """
    now = utcnow()
    with session_factory() as session:
        ids = list(
            session.scalars(
                select(Message.id)
                .where(
                    Message.status == "queued",
                    Message.handoff == "pending",
                    # Campaign messages are released by their paced dispatcher, never here.
                    Message.campaign_id.is_(None),
                    Message.updated_at < now - timedelta(seconds=older_than_seconds),
                )
                # Oldest first, along ix_messages_queued_single_updated_at: only the queued
                # single sends are read, however many campaign messages wait their turn.
                .order_by(Message.updated_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        if ids:
            session.execute(update(Message).where(Message.id.in_(ids)).values(updated_at=now))
        session.commit()
    return ids


def _claim(
    session_factory: sessionmaker[Session],
    batch: HandoffBatch,
    message_id: int,
    allowed: tuple[str, ...],
    lease_seconds: float,
) -> _Claim | None:
    """Move the message to `in_flight` under a lease and commit; None if it is not ours to send."""
    if "pending" in allowed:
        claimed = batch.claim(message_id, lease_seconds=lease_seconds)
        if claimed.row is not None and claimed.at is not None:
            user_id, to, from_number, body, valid_until, mode, lease_until = claimed.row
            return _Claim(
                message_id,
                user_id,
                to,
                from_number,
                body,
                claimed.at,
                "pending",
                lease_until,
                valid_until,
                mode,
                claimed.started,
            )
    lease_until = utcnow() + timedelta(seconds=lease_seconds)
    return _claim_locked(session_factory, message_id, allowed, lease_until)


def _claim_locked(
    session_factory: sessionmaker[Session],
    message_id: int,
    allowed: tuple[str, ...],
    lease_until: datetime,
) -> _Claim | None:
    """Claim through the ORM with the row locked: after an unknown outcome, or with a callback."""
    with session_factory() as session:
        message = session.get(Message, message_id, with_for_update=True)
        if message is None or message.status not in ACTIVE or message.handoff not in allowed:
            state = "gone" if message is None else f"{message.status}/{message.handoff}"
            log.info("message %s: not handed off (%s)", message_id, state)
            return None
        previous, now = message.handoff, utcnow()
        if previous == "pending" and message.valid_until and message.valid_until <= now:
            expire(session, message=message)  # never called Twilio: safe to fail
            session.commit()
            log.info("message %s: validity period expired before its hand-off", message_id)
            return None
        values: dict[str, object] = {
            "handoff": "in_flight",
            "status": "sending",
            "attempts": Message.attempts + 1,
            "updated_at": now,
            "lease_until": lease_until,
        }
        if previous == "pending":
            # After an unknown outcome the earlier call's time is kept: the lookup starts there.
            values["handoff_at"] = now
        claimed = session.scalar(
            update(Message)
            .where(
                Message.id == message_id, Message.handoff == previous, Message.status.in_(ACTIVE)
            )
            .values(**values)
            .returning(Message.id)
            .execution_options(synchronize_session=False)
        )
        if claimed is not None and message.status == "queued" and message.status_callback:
            session.refresh(message)  # now `sending`: the user hears of it via the sweeper
            user_callbacks.emit(session, message=message, enqueue=False)
        session.commit()
        if claimed is None:
            log.info("message %s: claimed by another worker", message_id)
            return None
        handoff_at = now if previous == "pending" else message.handoff_at or now
        return _Claim(
            message.id,
            message.user_id,
            message.to,
            message.from_number,
            message.body,
            handoff_at,
            previous,
            lease_until,
            message.valid_until,
            message.mode,
        )


def _renew(
    session_factory: sessionmaker[Session], claim: _Claim, lease_seconds: float
) -> _Claim | None:
    """Give the claim a new lease from now, if it still holds its own; else None.

    The take-over only moves a message whose lease has passed, with the row
    locked and its condition checked again: whichever commits first wins.
    """
    lease_until = utcnow() + timedelta(seconds=lease_seconds)
    with session_factory() as session:
        renewed = session.scalar(
            update(Message)
            .where(
                Message.id == claim.id,
                Message.handoff == "in_flight",
                Message.lease_until == claim.lease_until,
            )
            .values(lease_until=lease_until)
            .returning(Message.id)
        )
        session.commit()
    if renewed is None:
        return None
    return replace(claim, lease_until=lease_until, claimed=time.monotonic())


def _look_up(
    session_factory: sessionmaker[Session], provider: Provider, claim: _Claim
) -> Sent | None:
    """Find the message at the provider after an unknown outcome, skipping SIDs we hold."""
    since = claim.handoff_at - FIND_MARGIN
    with session_factory() as session:
        taken = set(
            session.scalars(
                # A SID any message of ours holds is that message's, whoever sent it
                # (a number can change hands); `to` leads ix_messages_to_user_id_id.
                select(Message.sms_sid).where(
                    Message.to == claim.to,
                    Message.from_number == claim.from_,
                    Message.sms_sid.is_not(None),
                    Message.id != claim.id,
                    Message.updated_at >= since,
                )
            )
        )
    found = provider.find(
        to=claim.to,
        from_=claim.from_,
        body=claim.body,
        since=since,
        exclude={sid for sid in taken if sid},
    )
    log.info(
        "message %s: lookup after unknown outcome %s",
        claim.id,
        f"found {found.sid}" if found else "found nothing",
    )
    return found


def _as_provider_error(error: Exception) -> ProviderError:
    return error if isinstance(error, ProviderError) else UnknownOutcome(repr(error))


def _store_sid(
    session_factory: sessionmaker[Session], batch: HandoffBatch, claim: _Claim, sent: Sent
) -> Outcome:
    """Record the SID; the status is left alone, as a callback may already have moved it."""
    try:
        status = batch.store(claim.id, sid=sent.sid)
        if status in messaging.FINAL:
            # The reconciler gave up on this call and refunded it, yet Twilio has
            # the message: keep the SID as the truth and tell the operator.
            log.error(
                "message %s reached Twilio as %s after it was %s; its charge was refunded",
                claim.id,
                sent.sid,
                status,
            )
    except IntegrityError:
        # Another message of ours holds this SID; look again later, excluding it.
        error = UnknownOutcome(f"{sent.sid} is stored on another message")
        return _release(session_factory, claim.id, "unknown", error)
    return Outcome("sent", sid=sent.sid, simulated=claim.mode == testmode.TEST)


def _release(
    session_factory: sessionmaker[Session], message_id: int, handoff: str, error: ProviderError
) -> Outcome:
    """Give the claim back as `pending` (safe to send) or `unknown` (look up first)."""
    with session_factory() as session:
        session.execute(
            update(Message)
            .where(Message.id == message_id, Message.handoff == "in_flight")
            .values(handoff=handoff, updated_at=utcnow())
        )
        session.commit()
    return Outcome("retry", error=error)


def _fail(
    session_factory: sessionmaker[Session],
    message_id: int,
    code: int | None,
    text: str,
    error: PermanentError | None = None,
) -> Outcome:
    with session_factory() as session:
        message = session.get(Message, message_id, with_for_update=True)
        if message is None:
            return Outcome("skipped", error=error)
        return _fail_in(session, message, code, text, error)


def _fail_in(
    session: Session,
    message: Message,
    code: int | None,
    text: str,
    error: PermanentError | None = None,
) -> Outcome:
    """Fail and refund a locked message that never reached the provider, and commit."""
    if message.status not in ACTIVE or message.sms_sid is not None:
        return Outcome("skipped", error=error)
    messaging.fail(session, message=message, error_code=code, error_message=text)
    if code == OPTED_OUT and message.mode != testmode.TEST:  # a simulated refusal opts no one out
        optouts.record_opt_out(session, user_id=message.user_id, number=message.to)
    # No task is at hand to enqueue the user's callback: the beat sweeper delivers it.
    user_callbacks.emit(session, message=message, enqueue=False)
    session.commit()
    return Outcome("failed", error=error)
