"""The one-statement accept does exactly what `accept_message` does, or nothing at all."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from shared import billing, messaging
from shared.db import utcnow
from shared.models import LedgerEntry, Message, OptOut, Price, User
from tests.factories import make_number, make_user, set_price

TO = "+14155550123"
BODY = "Hello €uro"  # the € counts two septets: 11 septets, one GSM-7 segment


def _state(session, user_id: int) -> tuple:
    session.expire_all()
    return (
        session.get(User, user_id).balance,
        session.scalar(select(func.count()).select_from(Message)),
        session.scalar(select(func.count()).select_from(LedgerEntry)),
    )


@pytest.fixture
def sender(session):
    user_id, _ = make_user(session, balance="1.00")
    set_price(session, country="US", price="0.0079")
    return user_id, make_number(session, user_id=user_id)


def test_accepts_like_accept_message(session, engine, sender):
    user_id, number_id = sender
    fields = dict(user_id=user_id, phone_number_id=number_id, to=TO, body="✓" * 71)
    with engine.connect() as conn:
        quick = messaging.accept_at_once(conn, **fields, status_callback="https://x.test/cb")
        conn.commit()
    reference = messaging.accept_message(session, **fields)
    session.commit()

    assert quick is not None
    for column in ("phone_number_id", "from_number", "to", "body", "segments", "encoding"):
        assert getattr(quick, column) == getattr(reference, column), column
    assert (quick.segments, quick.encoding) == (2, "UCS-2")  # 71 UCS-2 units: two segments
    assert quick.segment_price == reference.segment_price == Decimal("0.0079")
    assert quick.total_cost == reference.total_cost == Decimal("0.0158")
    assert (quick.status, quick.handoff, quick.attempts) == ("queued", "pending", 0)
    assert quick.status_callback == "https://x.test/cb"
    charges = session.scalars(
        select(LedgerEntry).where(LedgerEntry.message_id == quick.id, LedgerEntry.kind == "charge")
    ).all()
    assert [c.amount for c in charges] == [Decimal("-0.0158")]
    balance, _, _ = _state(session, user_id)
    assert balance == Decimal("1.00") - 2 * Decimal("0.0158")
    assert billing.ledger_sum(session, user_id=user_id) == balance


def _other_users_number(session, user_id, number_id):
    other, _ = make_user(session)
    return make_number(session, user_id=other)


def _not_capable(session, user_id, number_id):
    return make_number(session, user_id=user_id, number="+15005550007", sms_capable=False)


def _expired(session, user_id, number_id):
    past = utcnow() - timedelta(seconds=1)
    return make_number(session, user_id=user_id, number="+15005550008", expires_at=past)


def _opted_out(session, user_id, number_id):
    session.add(OptOut(user_id=user_id, number=TO))
    session.commit()
    return number_id


def _no_price(session, user_id, number_id):
    session.execute(Price.__table__.delete())
    session.commit()
    return number_id


def _poor(session, user_id, number_id):
    session.execute(User.__table__.update().values(balance=Decimal("0.0078")))
    session.commit()
    return number_id


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_other_users_number, "From number not found"),
        (_not_capable, "From number is not SMS capable"),
        (_expired, "From number subscription has expired"),
        (_opted_out, "Recipient has opted out"),
        (_no_price, "Destination country is not supported"),
        (_poor, "Insufficient balance"),
    ],
)
def test_any_failed_check_writes_nothing(session, engine, sender, change, message):
    user_id, number_id = sender
    number_id = change(session, user_id, number_id)
    before = _state(session, user_id)
    fields = dict(user_id=user_id, phone_number_id=number_id, to=TO, body=BODY)
    with engine.connect() as conn:
        assert messaging.accept_at_once(conn, **fields) is None
        conn.commit()
    assert _state(session, user_id) == before
    with pytest.raises(messaging.Rejected) as rejected:
        messaging.accept_message(session, **fields)
    assert rejected.value.message == message


def test_an_invalid_recipient_is_left_to_accept_message(session, engine, sender):
    user_id, number_id = sender
    with engine.connect() as conn:
        found = messaging.accept_at_once(
            conn, user_id=user_id, phone_number_id=number_id, to="+1555", body=BODY
        )
    assert found is None
