"""Reconciliation: settle messages the callbacks and the worker left unfinished.

Two cases, each in bounded batches, with rows locked `SKIP LOCKED` so a busy
worker or callback is never waited for. Each looks along
`ix_messages_status_updated_at`, so it reads the few unsettled messages,
never the table:

- `sending` without a SID whose lease has run out (`take_over`): the worker
  that claimed it died, or its retry was lost. It is handed on at once: a
  claim `in_flight` becomes `unknown` (the call may have reached Twilio), so
  the next hand-off looks it up, adopts what it finds and sends only if
  Twilio has no trace of it; `pending` and `unknown` are enqueued as they
  are. Nothing is failed for a death, and nothing is sent twice.
- a SID and no final status for too long: fetched from Twilio and updated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared import delivery, testmode
from shared.db import utcnow
from shared.models import Message
from shared.providers import PermanentError, Provider, ProviderError

log = logging.getLogger(__name__)
# After this long without a final status, a message is no longer fetched.
STOP_FETCHING_AFTER = timedelta(days=3)
UNSETTLED = ("pending", "in_flight", "unknown")


@dataclass
class Report:
    """What one run did; `callbacks`, `resend` and `resend_campaign` are for the caller to enqueue.

    Campaign messages are resent on the campaign queue, so they never delay single sends.
    """

    updated: list[int] = field(default_factory=list)
    resend: list[int] = field(default_factory=list)
    resend_campaign: list[int] = field(default_factory=list)
    callbacks: list[int] = field(default_factory=list)


def take_over(session_factory: sessionmaker[Session], *, hold_seconds: float, limit: int) -> Report:
    """Hand on the `sending` messages without a SID whose lease ran out; return them to enqueue.

    Each is held for `hold_seconds` more (its new task's time in the queue),
    so the next run does not enqueue it again meanwhile.
    """
    report = Report()
    now = utcnow()
    with session_factory() as session:
        rows = session.execute(
            select(Message.id, Message.campaign_id, Message.handoff)
            .where(
                Message.status == "sending",
                Message.sms_sid.is_(None),
                Message.handoff.in_(UNSETTLED),
                Message.lease_until < now,
            )
            .order_by(Message.lease_until)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if rows:
            session.execute(
                update(Message)
                .where(Message.id.in_([row.id for row in rows]))
                .values(
                    handoff=case(
                        (Message.handoff == "in_flight", "unknown"), else_=Message.handoff
                    ),
                    lease_until=now + timedelta(seconds=hold_seconds),
                    updated_at=now,
                )
            )
        session.commit()
    for row in rows:
        (report.resend if row.campaign_id is None else report.resend_campaign).append(row.id)
        log.info(
            "reconcile: message %s taken over from a lapsed %s hand-off",
            row.id,
            row.handoff,
            extra={"message_id": row.id},
        )
    return report


def reconcile_unfinished(
    session_factory: sessionmaker[Session],
    provider: Provider,
    *,
    older_than_seconds: int,
    limit: int,
) -> Report:
    """Fetch from Twilio the messages with a SID and no final status after a while."""
    report = Report()
    now = utcnow()
    cutoff = now - timedelta(seconds=older_than_seconds)
    with session_factory() as session:
        ids = list(
            session.scalars(
                select(Message.id)
                .where(
                    Message.sms_sid.is_not(None),
                    Message.status.in_(("sending", "sent")),
                    Message.updated_at < cutoff,
                    # Implied by the next line (a change comes after the creation), but
                    # it bounds the index range: long-finished messages are never read.
                    Message.updated_at >= now - STOP_FETCHING_AFTER,
                    Message.created_at >= now - STOP_FETCHING_AFTER,
                )
                .order_by(Message.updated_at)
                .limit(limit)
            )
        )
    for message_id in ids:
        try:
            _settle_unfinished(session_factory, provider, message_id, cutoff, report)
        except PermanentError as error:
            log.warning("reconcile: fetch of message %s refused: %s", message_id, error)
        except ProviderError as error:
            log.warning("reconcile: fetch of message %s failed: %s", message_id, error)
            break
    return report


def _settle_unfinished(
    session_factory: sessionmaker[Session],
    provider: Provider,
    message_id: int,
    cutoff: datetime,
    report: Report,
) -> None:
    with session_factory() as session:
        message = session.scalar(
            select(Message)
            .where(
                Message.id == message_id,
                Message.status.in_(("sending", "sent")),
                Message.updated_at < cutoff,
            )
            .with_for_update(skip_locked=True)
        )
        if message is None or message.sms_sid is None:
            return
        # Touched first, so a message Twilio keeps unfinished is fetched once per period.
        message.updated_at = utcnow()
        try:
            fetched = testmode.provider_for(message.mode, provider).fetch(message.sms_sid)
        finally:
            session.commit()
        message = session.get(Message, message_id, with_for_update=True)
        if message is None:
            return
        applied = delivery.apply_status(
            session,
            message=message,
            status=fetched.status,
            error_code=fetched.error_code,
            twilio_message=fetched.error_message,
        )
        session.commit()
    if applied.kind == "applied":
        report.updated.append(message_id)
        log.info("reconcile: message %s is %s at Twilio", message_id, message.status)
    if applied.callback_id is not None:
        report.callbacks.append(applied.callback_id)
