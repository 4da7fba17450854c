"""Accepting a message for sending, and the status state machine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

import phonenumbers
import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import Connection, Row, select
from sqlalchemy.orm import Session

from shared import billing, user_callbacks
from shared.accounts import USE_RESOLUTION
from shared.db import utcnow
from shared.errors import Rejected
from shared.models import Message, MessageEvent, OptOut, PhoneNumber, Price
from shared.money import cost
from shared.scheduling import Schedule, timing
from shared.segments import count_segments

__all__ = ["Rejected"]  # the domain's refusal, raised by every check here

MAX_BODY_CHARS = 300

# Every status a message can have, as lists and filters name them.
STATUSES = (
    "scheduled",
    "queued",
    "sending",
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "canceled",
)
# Statuses in the order a message moves through them; finals never change.
RANK = {
    "scheduled": -1,
    "queued": 0,
    "sending": 1,
    "sent": 2,
    "delivered": 3,
    "undelivered": 3,
    "failed": 3,
}
FINAL = frozenset({"delivered", "undelivered", "failed", "canceled"})


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
    return parse_to(to)[0]


def parse_to(to: str) -> tuple[str, str]:
    """Return (`to` in E.164, its ISO region), or reject it as an invalid number."""
    try:
        number = phonenumbers.parse(to.strip(), None)
    except phonenumbers.NumberParseException:
        raise Rejected("Invalid to phone number") from None
    # `is_valid_number`, with the region it finds kept: finding it is most of the cost.
    region = phonenumbers.region_code_for_number(number)
    if region is None or not phonenumbers.is_valid_number_for_region(number, region):
        raise Rejected("Invalid to phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), region


def sender_number(
    session: Session, *, user_id: int, phone_number_id: int, now: datetime
) -> PhoneNumber:
    """Return the user's own SMS-capable, unexpired number, or reject the send."""
    number = session.scalar(
        select(PhoneNumber).where(
            PhoneNumber.id == phone_number_id,
            PhoneNumber.user_id == user_id,
            PhoneNumber.removed_at.is_(None),
        )
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


@dataclass(frozen=True)
class Priced:
    """A send checked and priced: what a quote shows, and what `accept_message` writes."""

    number: PhoneNumber | None  # None when a quote names no sender
    to: str  # E.164
    country: str
    segments: int
    encoding: str
    segment_price: Decimal
    total_cost: Decimal


def price_send(
    session: Session, *, user_id: int, phone_number_id: int | None, to: str, body: str
) -> Priced:
    """Check a send and price it, in the order its 400s are decided; write nothing.

    The one path of every check and price of a message: `accept_message` and
    the quote (`shared.quotes`) both run it, so a quote and the send after it
    agree. The sender is checked when there is one (a quote may name none).
    """
    number = None
    if phone_number_id is not None:
        number = sender_number(
            session, user_id=user_id, phone_number_id=phone_number_id, now=utcnow()
        )
    recipient, region = parse_to(to)
    price = segment_price(session, region=region)
    if is_opted_out(session, user_id=user_id, to=recipient):
        raise Rejected("Recipient has opted out")
    count = count_segments(body)
    return Priced(
        number=number,
        to=recipient,
        country=region,
        segments=count.segments,
        encoding=count.encoding,
        segment_price=price,
        total_cost=cost(segment_price=price, segments=count.segments),
    )


def accept_message(
    session: Session,
    *,
    user_id: int,
    phone_number_id: int,
    to: str,
    body: str,
    status_callback: str | None = None,
    schedule: Schedule | None = None,
    reference: str | None = None,
    mode: str = "live",
) -> Message:
    """Check, price and charge one message, and write it as `queued`, or `scheduled`.

    Only flushes: the caller commits the message and its ledger row together
    and enqueues the hand-off after the commit (a `scheduled` one is released
    when it is due: `shared.release`). A scheduled message with a status
    callback has its `scheduled` event written with it. A `test` message is
    checked against the balance like a live one, and charged nothing.
    """
    now = utcnow()
    priced = price_send(session, user_id=user_id, phone_number_id=phone_number_id, to=to, body=body)
    assert priced.number is not None
    message = Message(
        user_id=user_id,
        phone_number_id=priced.number.id,
        from_number=priced.number.number,
        to=priced.to,
        body=body,
        segments=priced.segments,
        encoding=priced.encoding,
        segment_price=priced.segment_price,
        total_cost=priced.total_cost,
        status_callback=status_callback,
        reference=reference,
        mode=mode,
        created_at=now,
        updated_at=now,
    )
    if schedule is not None:
        when = timing(schedule, to=priced.to, now=now)
        message.status = "scheduled" if when.send_at is not None else "queued"
        message.send_at = when.send_at
        message.validity_period = schedule.validity_period
        message.valid_until = when.valid_until
    if mode == "test" and not billing.covers(session, user_id=user_id, amount=priced.total_cost):
        raise Rejected("Insufficient balance")
    session.add(message)
    session.flush()
    if mode == "live":
        try:
            billing.charge(
                session, user_id=user_id, amount=message.total_cost, message_id=message.id
            )
        except billing.InsufficientBalance:
            raise Rejected("Insufficient balance") from None
    if message.status == "scheduled":
        user_callbacks.emit(session, message=message, enqueue=False)
    return message


@dataclass(frozen=True)
class Send:
    """One send, checked and counted in Python, ready for `accept_many`."""

    token_hash: str
    phone_number_id: int
    to: str  # E.164
    country: str | None
    body: str
    segments: int
    encoding: str
    status_callback: str | None
    reference: str | None


def prepare_send(
    *,
    token_hash: str,
    phone_number_id: int,
    to: str,
    body: str,
    status_callback: str | None,
    reference: str | None = None,
) -> Send | None:
    """Return the send with its recipient in E.164 and its segments; None if `to` is invalid.

    On None, `accept_message` says which check fails first.
    """
    try:
        recipient, region = parse_to(to)
    except Rejected:
        return None
    count = count_segments(body)
    return Send(
        token_hash=token_hash,
        phone_number_id=phone_number_id,
        to=recipient,
        country=region,
        body=body,
        segments=count.segments,
        encoding=count.encoding,
        status_callback=status_callback,
        reference=reference,
    )


# Every check of `accept_message` and its writes, for many sends in one PostgreSQL
# statement; each send's token says whose it is, and its mode. A send is written
# only when the token is known, the number is its user's, SMS-capable, unexpired
# and not removed, the country has a price, the recipient has not opted out and
# the user's balance, locked and read at its latest, covers this send's cost plus
# that of the user's earlier sends of the same mode in the list. Live sends are
# charged, with a ledger row each; test sends only have to be covered. Payers
# are locked in id order, so two statements never deadlock. A send after one
# its user cannot afford is written only if the sum still fits: `accept_message`
# then decides it alone. Sent as is (psycopg's parameter style): SQLAlchemy's
# handling of a `text()` costs more CPU than the statement. It names the
# columns it returns: a prepared `RETURNING *` fails once a migration adds a
# column to `messages` under a running API. It notes each token's use, to the
# minute, as `shared.accounts.caller_for_token` does. The `queued` event of each
# message is written by the table's insert trigger (migration 0008).
_ACCEPT_MANY = """
    WITH input AS (
        SELECT * FROM unnest(
            %(token_hash)s::text[], %(phone_number_id)s::bigint[], %(to)s::text[],
            %(country)s::text[],
            %(body)s::text[], %(segments)s::int[], %(encoding)s::text[],
            %(status_callback)s::text[], %(reference)s::text[]
        ) WITH ORDINALITY AS i(token_hash, number_id, "to", country, body, segments, encoding,
            status_callback, reference, ord)
    ), priced AS (
        SELECT i.ord, t.user_id, t.mode, n.id AS number_id, n.number, i."to", i.body,
            i.segments, i.encoding, i.status_callback, i.reference, p.price,
            CAST(p.price * i.segments AS NUMERIC(14, 4)) AS total
        FROM input i
        JOIN api_tokens t ON t.token_hash = i.token_hash
        JOIN phone_numbers n ON n.id = i.number_id AND n.user_id = t.user_id
        JOIN prices p ON p.country = i.country
        WHERE n.sms_capable AND (n.expires_at IS NULL OR n.expires_at > %(now)s)
          AND n.removed_at IS NULL
          AND NOT EXISTS (
              SELECT 1 FROM opt_outs o WHERE o.user_id = t.user_id AND o.number = i."to"
          )
    ), used AS (  -- each token's last use, to the minute (`shared.accounts`)
        UPDATE api_tokens t SET last_used_at = %(now)s
        WHERE t.token_hash IN (SELECT token_hash FROM input)
          AND (t.last_used_at IS NULL OR t.last_used_at < %(stale)s)
    ), payer AS (
        SELECT u.id, u.balance FROM users u WHERE u.id IN (SELECT user_id FROM priced)
        ORDER BY u.id FOR UPDATE
    ), accepted AS (
        SELECT s.*, nextval(pg_get_serial_sequence('messages', 'id')) AS id
        FROM (
            SELECT p.*, sum(p.total) OVER (PARTITION BY p.user_id, p.mode ORDER BY p.ord)
                AS running
            FROM priced p
        ) s JOIN payer ON payer.id = s.user_id
        WHERE s.running <= payer.balance
        ORDER BY s.ord  -- ids in the order the sends came
    ), charged AS (
        UPDATE users u SET balance = u.balance - a.spent
        FROM (
            SELECT user_id, sum(total) AS spent FROM accepted WHERE mode = 'live'
            GROUP BY user_id
        ) a
        WHERE u.id = a.user_id
    ), message AS (
        INSERT INTO messages (id, user_id, phone_number_id, from_number, "to", body, segments,
            encoding, segment_price, total_cost, status, handoff, attempts, status_callback,
            reference, mode, created_at, updated_at)
        SELECT a.id, a.user_id, a.number_id, a.number, a."to", a.body, a.segments, a.encoding,
            a.price, a.total, 'queued', 'pending', 0, a.status_callback, a.reference, a.mode,
            %(now)s, %(now)s
        FROM accepted a ORDER BY a.ord
        RETURNING id, user_id, phone_number_id, from_number, "to", body, segments, encoding,
            segment_price, total_cost, status, handoff, attempts, sms_sid, error_code,
            error_message, status_callback, handoff_at, campaign_id, send_at, validity_period,
            reference, mode, created_at, updated_at
    ), ledger AS (
        INSERT INTO ledger_entries (user_id, amount, kind, message_id, created_at)
        SELECT m.user_id, -m.total_cost, 'charge', m.id, %(now)s FROM message m
        WHERE m.mode = 'live' ORDER BY m.id
    )
    SELECT a.ord, m.* FROM message m JOIN accepted a ON a.id = m.id
"""


def accept_many(connection: Connection, sends: Sequence[Send]) -> list[Row | None]:
    """Do what `accept_message` does for many sends in one statement; None where it did not.

    The statement cannot say which check failed: for a None, `accept_message`
    runs the checks one by one and rejects with the right message (or, if the
    state changed meanwhile, accepts). It runs in the connection's transaction.
    """
    rows = connection.exec_driver_sql(_ACCEPT_MANY, _accept_params(sends)).all()
    return _line_up(rows, len(sends))


def accept_many_autocommit(
    connection: psycopg.Connection, sends: Sequence[Send]
) -> list[Any | None]:
    """Do what `accept_many` does on a psycopg connection in autocommit: one round trip.

    The statement is its own transaction; it is prepared on the connection,
    and its rows are named tuples with the columns of a `Message`. Going
    around SQLAlchemy here saves most of the CPU a group's statement costs
    in Python (its result set-up alone is 0.1 ms).
    """
    with connection.cursor(row_factory=namedtuple_row) as cursor:
        cursor.execute(_ACCEPT_MANY, _accept_params(sends), prepare=True)
        return _line_up(cursor.fetchall(), len(sends))


def _accept_params(sends: Sequence[Send]) -> dict[str, Any]:
    columns = {name: [getattr(send, name) for send in sends] for name in _COLUMNS}
    now = utcnow()
    return {**columns, "now": now, "stale": now - USE_RESOLUTION}


def _line_up(rows: Sequence[Any], count: int) -> list[Any | None]:
    """Return each send's row in its place (`ord` counts from 1), None where none was written."""
    accepted: list[Any | None] = [None] * count
    for row in rows:
        accepted[row.ord - 1] = row
    return accepted


_COLUMNS = tuple(field.name for field in fields(Send))  # each passed as an array


def message_events(session: Session, *, message_id: int) -> Sequence[MessageEvent]:
    """Return every status the message took, oldest first (written by triggers: migration 0008)."""
    return session.scalars(
        select(MessageEvent).where(MessageEvent.message_id == message_id).order_by(MessageEvent.id)
    ).all()


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
