"""Incoming messages: stored once per Twilio SID, read back, forwarded to the number's URL.

A message Twilio posts to the inbound webhook belongs to the owner of the
number it was sent to (the newest row holding that number, not removed); to a
number nobody has it is not stored. The insert does nothing on a `MessageSid` already
stored, so a repeated webhook, even one racing the first, is neither stored
nor forwarded twice. With an `inbound_url` on the number, the forward is
written to the outbox of user callbacks in the same transaction, and
`shared.user_callbacks` delivers it as it delivers status callbacks: signed,
retried with backoff, given up after 24 hours, swept when its task is lost.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared import listing, optouts
from shared.callback_urls import check_callback_url
from shared.db import utcnow
from shared.errors import Rejected
from shared.models import InboundMessage, PhoneNumber, UserCallback

log = logging.getLogger(__name__)
INVALID_URL = "Invalid inbound_url URL"
# The widths of the stored columns: anything longer is not a message Twilio sends.
MAX_SID, MAX_FROM = 34, 32


@dataclass(frozen=True)
class Received:
    """What `receive` did: the stored row (None if not stored) and its forward's outbox row."""

    inbound_id: int | None = None
    callback_id: int | None = None
    repeat: bool = False


def receive(session: Session, *, sid: str, to: str, from_: str, body: str) -> Received:
    """Store one incoming message once per SID and write its forward; flush only.

    With a `callback_id` the caller enqueues `deliver_user_callback` after the
    commit (the sweeper finds it if that fails).
    """
    if not sid or len(sid) > MAX_SID or not from_ or len(from_) > MAX_FROM:
        log.warning("inbound message without a usable MessageSid or From: not stored")
        return Received()
    number = session.scalar(
        select(PhoneNumber)
        .where(PhoneNumber.number == to, PhoneNumber.removed_at.is_(None))
        .order_by(PhoneNumber.id.desc())
        .limit(1)
    )
    if number is None:
        log.info("inbound message %s to a number nobody has: not stored", sid)
        return Received()
    action = optouts.keyword(body)
    row = {
        "user_id": number.user_id,
        "phone_number_id": number.id,
        "from_number": from_,
        "to": to,
        "body": body.replace("\x00", ""),  # PostgreSQL text cannot hold NUL
        "sms_sid": sid,
        "keyword": action.upper() if action else None,
        "received_at": utcnow(),
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    inbound_id = session.scalar(
        dialect.insert(InboundMessage)
        .values(**row)
        .on_conflict_do_nothing(index_elements=["sms_sid"])
        .returning(InboundMessage.id)
    )
    if inbound_id is None:
        log.info("inbound message %s seen before: not stored again", sid)
        return Received(repeat=True)
    log.info("inbound message %s stored", sid, extra={"inbound_id": inbound_id})
    callback_id = None
    if number.inbound_url:
        callback_id = _forward(session, url=number.inbound_url, inbound_id=inbound_id, row=row)
    return Received(inbound_id, callback_id)


def _forward(session: Session, *, url: str, inbound_id: int, row: dict[str, Any]) -> int:
    """Write the outbox row that forwards a stored message; the caller enqueues it."""
    event_id = str(uuid.uuid4())
    payload = {
        "event_id": event_id,
        "type": "inbound",
        "id": inbound_id,
        "phone_number_id": row["phone_number_id"],
        "from": row["from_number"],
        "to": row["to"],
        "body": row["body"],
        "keyword": row["keyword"],
        "received_at": row["received_at"].strftime("%Y-%m-%d %H:%M:%S"),
    }
    now = row["received_at"]
    callback = UserCallback(
        event_id=event_id,
        user_id=row["user_id"],
        inbound_message_id=inbound_id,
        url=url,
        payload=payload,
        next_attempt_at=now,
        enqueued_at=now,
        created_at=now,
    )
    session.add(callback)
    session.flush()
    return callback.id


def user_number(session: Session, *, user_id: int, number_id: int) -> PhoneNumber | None:
    """Return one of the user's numbers, or None (also for another user's, or a removed one)."""
    return session.scalar(
        select(PhoneNumber).where(
            PhoneNumber.id == number_id,
            PhoneNumber.user_id == user_id,
            PhoneNumber.removed_at.is_(None),
        )
    )


def set_inbound_url(
    session: Session, *, number: PhoneNumber, inbound_url: str | None, allow_private: bool
) -> PhoneNumber:
    """Set where the number's incoming messages are forwarded, or stop it with None; flush only.

    The URL follows the rules of a `status_callback` (`shared.callback_urls`).
    """
    if inbound_url is not None:
        try:
            inbound_url.encode()  # a lone surrogate from a JSON escape cannot be stored
            inbound_url = check_callback_url(inbound_url, allow_private=allow_private)
        except (Rejected, UnicodeError):
            raise Rejected(INVALID_URL) from None
    number.inbound_url = inbound_url
    session.flush()
    return number


def inbound_query(
    *, user_id: int, phone_number_id: int | None = None, from_: str | None = None
) -> tuple[Select[Any], listing.Key]:
    """Return the user's inbound messages with the filters, and the key of the index serving them.

    A sender is the more selective filter: `(from_number, user_id, id)`; a number
    alone reads `(phone_number_id, id)`; no filter the user's `(user_id, id)`.
    With both, the number is compared through `+ 0`, which no index serves: the
    planner cannot AND in the bitmap of every message to the number, and reads
    the sender's messages to the user along the key's index alone.
    """
    filters: list[ColumnElement[bool]] = []
    user = (InboundMessage.user_id, user_id)
    key: listing.Key
    if from_ is not None:
        key = [(InboundMessage.from_number, from_), user]
        if phone_number_id is not None:
            filters.append(InboundMessage.phone_number_id + 0 == phone_number_id)
    elif phone_number_id is not None:
        key = [(InboundMessage.phone_number_id, phone_number_id)]
        filters.append(InboundMessage.user_id == user_id)
    else:
        key = [user]
    return select(InboundMessage).where(*filters), key


def list_inbound(
    session: Session, *, user_id: int, limit: int, before: int | None, **filters: Any
) -> listing.Page[InboundMessage]:
    """Return one page of the user's inbound messages, newest first (filters as `inbound_query`)."""
    query, key = inbound_query(user_id=user_id, **filters)
    return listing.page(session, query, key, InboundMessage.id, limit=limit, before=before)


def get_inbound(session: Session, *, user_id: int, inbound_id: int) -> InboundMessage | None:
    """Return one of the user's inbound messages, or None (also for another user's)."""
    return session.scalar(
        select(InboundMessage).where(
            InboundMessage.id == inbound_id, InboundMessage.user_id == user_id
        )
    )
