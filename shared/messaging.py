"""Accepting a message for sending, and the status state machine."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import phonenumbers
from sqlalchemy import Connection, Row, select
from sqlalchemy.orm import Session

from shared import billing
from shared.db import utcnow
from shared.models import Message, OptOut, PhoneNumber, Price
from shared.money import cost
from shared.segments import count_segments

MAX_BODY_CHARS = 300

# Statuses in the order a message moves through them; finals never change.
RANK = {"queued": 0, "sending": 1, "sent": 2, "delivered": 3, "undelivered": 3, "failed": 3}
FINAL = frozenset({"delivered", "undelivered", "failed", "canceled"})


class Rejected(Exception):
    """A send refused for a reason the user can fix; `message` is the contract's text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def is_unicode_text(text: str) -> bool:
    """Return False for a string holding a lone surrogate (JSON can escape one): not storable."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def can_move(current: str, new: str) -> bool:
    """Return True when `new` is later than `current`: status never moves backwards."""
    if current in FINAL or current not in RANK or new not in RANK:
        return False
    return RANK[new] > RANK[current]


def parse_recipient(to: str) -> str:
    """Return `to` in E.164, or reject it as an invalid international number."""
    return _recipient(to)[0]


def _recipient(to: str) -> tuple[str, str | None]:
    """Return `to` in E.164 and its ISO region, or reject it."""
    try:
        number = phonenumbers.parse(to.strip(), None)
    except phonenumbers.NumberParseException:
        raise Rejected("Invalid to phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise Rejected("Invalid to phone number")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164, phonenumbers.region_code_for_number(number)


def sender_number(
    session: Session, *, user_id: int, phone_number_id: int, now: datetime
) -> PhoneNumber:
    """Return the user's own SMS-capable, unexpired number, or reject the send."""
    number = session.scalar(
        select(PhoneNumber).where(PhoneNumber.id == phone_number_id, PhoneNumber.user_id == user_id)
    )
    if number is None:
        raise Rejected("From number not found")
    if not number.sms_capable:
        raise Rejected("From number is not SMS capable")
    if number.expires_at is not None and number.expires_at <= now:
        raise Rejected("From number subscription has expired")
    return number


def segment_price(session: Session, *, region: str | None) -> Decimal:
    """Return the per-segment price of the recipient's country, or reject the send."""
    price = session.scalar(select(Price.price).where(Price.country == region))
    if price is None:
        raise Rejected("Destination country is not supported")
    return price


def is_opted_out(session: Session, *, user_id: int, to: str) -> bool:
    """Return True when the recipient texted STOP to one of the user's numbers."""
    found = session.scalar(select(OptOut.id).where(OptOut.user_id == user_id, OptOut.number == to))
    return found is not None


def accept_message(
    session: Session,
    *,
    user_id: int,
    phone_number_id: int,
    to: str,
    body: str,
    status_callback: str | None = None,
) -> Message:
    """Check, price and charge one message, and write it as `queued`.

    Only flushes: the caller commits the message and its ledger row together
    and enqueues the hand-off after the commit.
    """
    now = utcnow()
    number = sender_number(session, user_id=user_id, phone_number_id=phone_number_id, now=now)
    recipient, region = _recipient(to)
    price = segment_price(session, region=region)
    if is_opted_out(session, user_id=user_id, to=recipient):
        raise Rejected("Recipient has opted out")
    count = count_segments(body)
    message = Message(
        user_id=user_id,
        phone_number_id=number.id,
        from_number=number.number,
        to=recipient,
        body=body,
        segments=count.segments,
        encoding=count.encoding,
        segment_price=price,
        total_cost=cost(segment_price=price, segments=count.segments),
        status_callback=status_callback,
        created_at=now,
        updated_at=now,
    )
    session.add(message)
    session.flush()
    try:
        billing.charge(session, user_id=user_id, amount=message.total_cost, message_id=message.id)
    except billing.InsufficientBalance:
        raise Rejected("Insufficient balance") from None
    return message


# Every check of `accept_message` and its writes, in one PostgreSQL statement. It
# writes nothing unless the number is the user's, SMS-capable and unexpired, the
# country has a price, the recipient has not opted out and the balance covers
# the cost; the conditional UPDATE is re-checked on the latest row version, so
# concurrent sends can never overdraw. It is sent as is (psycopg's parameter
# style): SQLAlchemy's handling of a `text()` with nine parameters costs more
# CPU than the statement itself.
_ACCEPT = """
    WITH sender AS (
        SELECT n.id, n.number, p.price, CAST(p.price * %(segments)s AS NUMERIC(14, 4)) AS total
        FROM phone_numbers n JOIN prices p ON p.country = %(country)s
        WHERE n.id = %(number_id)s AND n.user_id = %(user_id)s AND n.sms_capable
          AND (n.expires_at IS NULL OR n.expires_at > %(now)s)
          AND NOT EXISTS (
              SELECT 1 FROM opt_outs o WHERE o.user_id = %(user_id)s AND o.number = %(to)s
          )
    ), charged AS (
        UPDATE users u SET balance = u.balance - s.total
        FROM sender s WHERE u.id = %(user_id)s AND u.balance >= s.total
        RETURNING s.id, s.number, s.price, s.total
    ), message AS (
        INSERT INTO messages (user_id, phone_number_id, from_number, "to", body, segments,
            encoding, segment_price, total_cost, status, handoff, attempts, status_callback,
            created_at, updated_at)
        SELECT %(user_id)s, c.id, c.number, %(to)s, %(body)s, %(segments)s, %(encoding)s,
            c.price, c.total, 'queued', 'pending', 0, %(status_callback)s, %(now)s, %(now)s
        FROM charged c
        RETURNING *
    ), ledger AS (
        INSERT INTO ledger_entries (user_id, amount, kind, message_id, created_at)
        SELECT m.user_id, -m.total_cost, 'charge', m.id, %(now)s FROM message m
    )
    SELECT * FROM message
"""


def accept_at_once(
    connection: Connection,
    *,
    user_id: int,
    phone_number_id: int,
    to: str,
    body: str,
    status_callback: str | None = None,
) -> Row | None:
    """Do what `accept_message` does in one PostgreSQL statement; None if any check fails.

    The statement cannot say which check failed: on None, `accept_message`
    runs the checks one by one and rejects with the right message (or, if the
    state changed meanwhile, accepts). Run outside a transaction, the statement
    is its own transaction: one round trip charges and writes the message.
    """
    try:
        recipient, region = _recipient(to)
    except Rejected:
        return None  # which rejection comes first is for `accept_message` to say
    count = count_segments(body)
    return connection.exec_driver_sql(
        _ACCEPT,
        {
            "user_id": user_id,
            "number_id": phone_number_id,
            "to": recipient,
            "country": region,
            "body": body,
            "segments": count.segments,
            "encoding": count.encoding,
            "status_callback": status_callback,
            "now": utcnow(),
        },
    ).first()


def fail(session: Session, *, message: Message, error_code: int | None, error_message: str) -> bool:
    """Fail a message that never left Twilio and refund it; False if it was already final."""
    if message.status in FINAL:
        return False
    message.status = "failed"
    message.handoff = "done"
    message.error_code = error_code
    message.error_message = error_message
    session.flush()
    billing.refund(session, message=message, note=f"failed: {error_code or error_message}")
    return True
