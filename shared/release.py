"""Scheduled messages coming due, validity periods running out, and cancels.

`release_due` moves due `scheduled` single sends to `queued` in bounded batches
(a campaign's dispatcher releases its own, paced: `shared.campaign_dispatch`),
each one statement that locks only the rows it moves (`SKIP LOCKED`), so two
runs at once share the work and a send never waits for them; the caller
enqueues the hand-offs after each batch commits. `expire_overdue` fails and
refunds the messages whose validity period ended before a worker took them.
`cancel_message` cancels a message no worker has taken yet. All three write
the user's status callback event with the change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from shared import billing, user_callbacks
from shared.db import utcnow
from shared.messaging import fail
from shared.models import Message

log = logging.getLogger(__name__)
EXPIRED = "Validity period expired"
# Waiting for a worker: not handed over yet, so canceling or expiring it sends nothing.
WAITING = ("scheduled", "queued")


@dataclass(frozen=True)
class Released:
    """One batch of released single sends: their ids, to enqueue."""

    singles: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.singles)


def release_due(
    session_factory: sessionmaker[Session], *, limit: int, now: datetime | None = None
) -> Released:
    """Move up to `limit` due scheduled messages to `queued`, oldest due first, and commit."""
    now = now or utcnow()
    with session_factory() as session:
        due = (
            select(Message.id)
            # Single sends: a campaign's dispatcher releases its own at its number's rate.
            .where(
                Message.status == "scheduled",
                Message.campaign_id.is_(None),
                Message.send_at <= now,
            )
            .order_by(Message.send_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        rows = session.execute(
            update(Message)
            .where(Message.id.in_(due), Message.status == "scheduled")
            .values(status="queued", updated_at=now)
            .returning(Message.id, Message.status_callback)
            .execution_options(synchronize_session=False)
        ).all()
        with_callbacks = [row.id for row in rows if row.status_callback]
        for message in session.scalars(select(Message).where(Message.id.in_(with_callbacks))):
            user_callbacks.emit(session, message=message, enqueue=False)
        session.commit()
    return Released(singles=[row.id for row in rows])


def expire_overdue(
    session_factory: sessionmaker[Session], *, limit: int, now: datetime | None = None
) -> int:
    """Fail and refund up to `limit` waiting messages whose validity ended; return how many."""
    now = now or utcnow()
    with session_factory() as session:
        overdue = session.scalars(
            select(Message)
            .where(
                Message.valid_until <= now,
                Message.status.in_(WAITING),
                Message.handoff == "pending",
            )
            .order_by(Message.valid_until)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        for message in overdue:
            expire(session, message=message)
        session.commit()
    if overdue:
        log.info("expired %d messages past their validity period", len(overdue))
    return len(overdue)


def expire(session: Session, *, message: Message) -> None:
    """Fail and refund one message, locked, whose validity period ended before its hand-off."""
    fail(session, message=message, error_code=None, error_message=EXPIRED)
    user_callbacks.emit(session, message=message, enqueue=False)


class NotCancelable(Exception):
    """The message was taken by a worker already, or is final."""


def cancel_message(
    session: Session, *, user_id: int, message_id: int, mode: str = "live"
) -> Message | None:
    """Cancel and refund one of the user's messages no worker has taken; None if not theirs.

    Raises NotCancelable when it is past that. The row is locked, so a worker's
    claim (which takes only `queued` messages with a `pending` hand-off) and the
    cancel cannot both win; a task already in the queue then finds it canceled.
    """
    message = session.scalar(
        select(Message)
        .where(Message.id == message_id, Message.user_id == user_id, Message.mode == mode)
        .with_for_update()
    )
    if message is None:
        return None
    if message.status not in WAITING or message.handoff != "pending":
        raise NotCancelable(message.status)
    message.status = "canceled"
    message.handoff = "done"
    message.updated_at = utcnow()
    session.flush()
    billing.refund(session, message=message, note="canceled")
    user_callbacks.emit(session, message=message, enqueue=False)
    return message
