"""Applying Twilio status events to messages: record once, move forward, bill, tell the user.

Every status change after the hand-off goes through `apply_status`, whose one
transition table (`messaging.can_move`) only moves a status forward and never
changes a final one. Callers hold the message row locked (`SELECT ... FOR
UPDATE`), so concurrent callbacks, the worker and the reconciler serialise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared import messaging, optouts, user_callbacks
from shared.db import utcnow
from shared.models import Message, TwilioEvent

log = logging.getLogger(__name__)

SID_LENGTH = 34
# Twilio's message statuses, as the gateway's statuses.
STATUS_MAP = {
    "accepted": "sending",
    "scheduled": "sending",
    "queued": "sending",
    "sending": "sending",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "canceled": "failed",
}

ERROR_MESSAGES = {
    21211: "Invalid 'To' phone number",
    21212: "Invalid 'From' phone number",
    21408: "Sending to this region is not enabled",
    21606: "The 'From' number cannot send messages",
    21610: "Recipient has opted out",
    21611: "The 'From' number's queue is full",
    21612: "The 'To' number cannot be reached by SMS",
    21614: "The 'To' number is not a mobile number",
    21617: "Message body too long",
    30001: "Queue overflow",
    30002: "Account suspended",
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered by the carrier",
    30008: "Unknown delivery error",
    30009: "Missing segment",
    30010: "Message price exceeds max price",
    30034: "Message from an unregistered 10DLC number",
}


def error_message(code: int | None, fallback: str | None = None) -> str | None:
    """Return a readable message for a Twilio error code, else Twilio's text or `Twilio error N`."""
    if code is None:
        return fallback
    return ERROR_MESSAGES.get(code) or fallback or f"Twilio error {code}"


def parse_error_code(raw: str | int | None) -> int | None:
    """Return Twilio's ErrorCode as an int; empty, zero or junk is no error."""
    try:
        code = int(str(raw).strip()) if raw not in (None, "") else None
    except ValueError:
        return None
    return code or None


@dataclass(frozen=True)
class Applied:
    """What one event did: `applied`, `stale`, `repeat`, `ignored` or `unknown`."""

    kind: str
    message_id: int | None = None
    callback_id: int | None = None


def apply_callback(
    session: Session,
    *,
    sid: str,
    status: str,
    error_code: int | None,
    token: str | None,
    message_id: int | None,
    to: str | None = None,
) -> Applied:
    """Record one Twilio status callback once and apply it; only flushes.

    The message is found by SID, or, when the worker has not stored the SID
    yet, by the message id carried in the callback URL.
    """
    message = None
    if len(sid) <= SID_LENGTH:
        message = _locked_message(session, sid=sid, message_id=message_id, to=to)
    if message is None:
        log.warning("status callback for unknown SID %s (%s) ignored", sid, status)
        return Applied("unknown")
    event = TwilioEvent(
        token=(token or "")[:128] or None,
        sid=sid,
        status=status[:24],
        error_code=error_code,
        message_id=message.id,
    )
    try:
        with session.begin_nested():
            session.add(event)
    except IntegrityError:
        log.info("message %s: repeated callback %s ignored", message.id, status)
        return Applied("repeat", message.id)
    if message.sms_sid is None:
        # Twilio has it, whatever the worker's call reports: never send it again.
        message.sms_sid, message.handoff = sid, "done"
    return apply_status(session, message=message, status=status, error_code=error_code)


def apply_status(
    session: Session,
    *,
    message: Message,
    status: str,
    error_code: int | None,
    twilio_message: str | None = None,
    enqueue: bool = True,
) -> Applied:
    """Move a locked message to Twilio's `status` if that is forward, with final billing.

    `failed` never left Twilio and is refunded; `sent`, `delivered` and
    `undelivered` keep the charge. A 21610 also records the opt-out.
    """
    new = STATUS_MAP.get(status)
    if new is None:
        log.info("message %s: Twilio status %r ignored", message.id, status)
        return Applied("ignored", message.id)
    if error_code == optouts.OPTED_OUT_CODE:
        optouts.record_opt_out(session, user_id=message.user_id, number=message.to)
    if not messaging.can_move(message.status, new):
        return Applied("stale", message.id)
    text = error_message(error_code, twilio_message)
    if new == "failed":
        messaging.fail(
            session,
            message=message,
            error_code=error_code,
            error_message=text or "Failed at Twilio",
        )
    else:
        message.status = new
        if error_code is not None:
            message.error_code, message.error_message = error_code, text
    message.updated_at = utcnow()
    session.flush()
    log.info("message %s: %s", message.id, new)
    callback_id = user_callbacks.emit(session, message=message, enqueue=enqueue)
    return Applied("applied", message.id, callback_id)


def _locked_message(
    session: Session, *, sid: str, message_id: int | None, to: str | None
) -> Message | None:
    message = session.scalar(select(Message).where(Message.sms_sid == sid).with_for_update())
    if message is not None or message_id is None:
        return message
    message = session.scalar(select(Message).where(Message.id == message_id).with_for_update())
    if message is None or message.sms_sid not in (None, sid) or (to and message.to != to):
        return None
    return message
