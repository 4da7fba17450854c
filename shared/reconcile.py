"""Reconciliation: settle messages the callbacks and the worker left unfinished.

Three cases, each in bounded batches and one message per transaction, with
the row locked (`SKIP LOCKED`) so a busy worker or callback is never waited for.
Each looks along `ix_messages_status_updated_at`, oldest first, so it reads
the few unsettled messages, never the table:

- `sending` without a SID and a hand-off `in_flight` or `unknown` for too long:
  the call may have reached Twilio, so the message is looked up by To, From,
  body and date; adopted if found, otherwise failed and refunded. Never resent.
- `sending` with a hand-off `pending` for too long: its retry was never
  published. Nothing reached Twilio, so it is safe to enqueue `send_message` again.
- a SID and no final status for too long: fetched from Twilio and updated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shared import delivery, messaging, user_callbacks
from shared.db import utcnow
from shared.models import Message
from shared.providers import PermanentError, Provider, ProviderError

log = logging.getLogger(__name__)
# Twilio's clock and ours may differ; look a little before our own call.
FIND_MARGIN = timedelta(minutes=1)
# After this long without a final status, a message is no longer fetched.
STOP_FETCHING_AFTER = timedelta(days=3)
NOT_FOUND = "Not found at Twilio after an interrupted hand-off"


@dataclass
class Report:
    """What one run did; `callbacks`, `resend` and `resend_campaign` are for the caller to enqueue.

    Campaign messages are resent on the campaign queue, so they never delay single sends.
    """

    adopted: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    resend: list[int] = field(default_factory=list)
    resend_campaign: list[int] = field(default_factory=list)
    callbacks: list[int] = field(default_factory=list)


def reconcile_unsent(
    session_factory: sessionmaker[Session],
    provider: Provider,
    *,
    older_than_seconds: int,
    limit: int,
) -> Report:
    """Settle `sending` messages without a SID whose hand-off stopped long ago."""
    report = Report()
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    stuck = (Message.status == "sending", Message.sms_sid.is_(None), Message.updated_at < cutoff)
    with session_factory() as session:
        rows = session.execute(
            select(Message.id, Message.campaign_id)
            .where(*stuck, Message.handoff == "pending")
            .order_by(Message.updated_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        report.resend = [row.id for row in rows if row.campaign_id is None]
        report.resend_campaign = [row.id for row in rows if row.campaign_id is not None]
        if rows:
            # Touched, so the next run does not enqueue them again while they wait.
            session.execute(
                update(Message)
                .where(Message.id.in_([row.id for row in rows]))
                .values(updated_at=utcnow())
            )
        session.commit()
        ids = list(
            session.scalars(
                select(Message.id)
                .where(*stuck, Message.handoff.in_(("in_flight", "unknown")))
                .order_by(Message.updated_at)
                .limit(limit)
            )
        )
    for message_id in ids:
        try:
            _settle_unsent(session_factory, provider, message_id, cutoff, report)
        except ProviderError as error:
            # Twilio cannot answer now: nothing is decided, the next run tries again.
            log.warning("reconcile: lookup of message %s failed: %s", message_id, error)
            break
    return report


def _settle_unsent(
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
                Message.status == "sending",
                Message.sms_sid.is_(None),
                Message.handoff.in_(("in_flight", "unknown")),
                Message.updated_at < cutoff,
            )
            .with_for_update(skip_locked=True)
        )
        if message is None:
            return
        since = (message.handoff_at or message.created_at) - FIND_MARGIN
        taken = set(
            session.scalars(
                # A SID held by another message of the user's belongs to that message
                # (`user_id` first: the lookup reads the user's recipient index).
                select(Message.sms_sid).where(
                    Message.user_id == message.user_id,
                    Message.to == message.to,
                    Message.from_number == message.from_number,
                    Message.sms_sid.is_not(None),
                    Message.updated_at >= since,
                )
            )
        )
        found = provider.find(
            to=message.to,
            from_=message.from_number,
            body=message.body,
            since=since,
            exclude={sid for sid in taken if sid},
        )
        if found is None:
            messaging.fail(session, message=message, error_code=None, error_message=NOT_FOUND)
            callback = user_callbacks.emit(session, message=message)
            report.failed.append(message_id)
            log.info("reconcile: message %s not found at Twilio, failed and refunded", message_id)
        else:
            message.sms_sid, message.handoff = found.sid, "done"
            try:
                session.flush()
            except IntegrityError:
                log.error(
                    "reconcile: SID %s of message %s is on another message", found.sid, message_id
                )
                return
            applied = delivery.apply_status(
                session, message=message, status=found.status, error_code=None
            )
            callback = applied.callback_id
            report.adopted.append(message_id)
            log.info("reconcile: message %s adopted %s", message_id, found.sid)
        session.commit()
    if callback is not None:
        report.callbacks.append(callback)


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
            fetched = provider.fetch(message.sms_sid)
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
