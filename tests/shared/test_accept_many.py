"""The one-statement accept of many sends does what `accept_message` does for each, or nothing.

Each send is checked against its own token, number, price, opt-outs and its
user's balance; a batch may mix users and failures, and its answers line up
with its sends.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text

from shared import billing, messaging
from shared.accounts import hash_token
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
    user_id, token = make_user(session, balance="1.00")
    set_price(session, country="US", price="0.0079")
    return user_id, make_number(session, user_id=user_id), token


def _send(token: str, number_id: int, *, to: str = TO, body: str = BODY, callback=None):
    send = messaging.prepare_send(
        token_hash=hash_token(token),
        phone_number_id=number_id,
        to=to,
        body=body,
        status_callback=callback,
    )
    assert send is not None
    return send


@pytest.fixture(params=["transaction", "autocommit"])
def accept(request, engine):
    """Accept through SQLAlchemy in a transaction, or as the committer does: raw, in autocommit."""

    def in_transaction(sends) -> list:
        with engine.connect() as conn:
            rows = messaging.accept_many(conn, sends)
            conn.commit()
        return rows

    def in_autocommit(sends) -> list:
        pooled = engine.raw_connection()
        try:
            pooled.driver_connection.autocommit = True
            return messaging.accept_many_autocommit(pooled.driver_connection, sends)
        finally:
            pooled.invalidate()

    return in_transaction if request.param == "transaction" else in_autocommit


def test_accepts_like_accept_message(session, accept, sender):
    user_id, number_id, token = sender
    fields = dict(user_id=user_id, phone_number_id=number_id, to=TO, body="✓" * 71)
    [quick] = accept([_send(token, number_id, body=fields["body"], callback="https://x.test/cb")])
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
def test_any_failed_check_writes_nothing(session, accept, sender, change, message):
    user_id, number_id, token = sender
    number_id = change(session, user_id, number_id)
    before = _state(session, user_id)
    fields = dict(user_id=user_id, phone_number_id=number_id, to=TO, body=BODY)
    assert accept([_send(token, number_id)]) == [None]
    assert _state(session, user_id) == before
    with pytest.raises(messaging.Rejected) as rejected:
        messaging.accept_message(session, **fields)
    assert rejected.value.message == message


def test_an_invalid_recipient_is_left_to_accept_message():
    found = messaging.prepare_send(
        token_hash="0" * 64, phone_number_id=1, to="+1555", body=BODY, status_callback=None
    )
    assert found is None


def test_an_unknown_token_writes_nothing(session, accept, sender):
    user_id, number_id, _ = sender
    before = _state(session, user_id)
    assert accept([_send("not-a-token", number_id)]) == [None]
    assert _state(session, user_id) == before


def test_a_mixed_batch_answers_each_send_in_its_place(session, accept):
    set_price(session, country="US", price="0.0079")
    user_id, token = make_user(session, balance="0.0237")  # three sends
    number_id = make_number(session, user_id=user_id)
    other_id, other_token = make_user(session, balance="1.00")
    other_number = make_number(session, user_id=other_id, number="+15005550009")
    session.add(OptOut(user_id=other_id, number="+14155550124"))
    session.commit()
    sends = [
        _send(token, number_id, body="one"),
        _send("not-a-token", number_id),
        _send(other_token, number_id),  # the first user's number
        _send(other_token, other_number, to="+14155550124"),  # opted out
        _send(token, number_id, body="two"),
        _send(other_token, other_number, body="theirs"),
        _send(token, number_id, body="three"),
        _send(token, number_id, body="four: the balance is spent"),
    ]
    rows = accept(sends)
    accepted = [(row.user_id, row.body) if row else None for row in rows]
    assert accepted == [
        (user_id, "one"),
        None,
        None,
        None,
        (user_id, "two"),
        (other_id, "theirs"),
        (user_id, "three"),
        None,
    ]
    ids = [row.id for row in rows if row is not None]
    assert ids == sorted(ids)  # written in the order they came
    session.expire_all()
    assert session.get(User, user_id).balance == Decimal("0")
    assert session.get(User, other_id).balance == Decimal("1.00") - Decimal("0.0079")
    for uid in (user_id, other_id):
        assert billing.ledger_sum(session, user_id=uid) == session.get(User, uid).balance


def test_a_dear_send_does_not_let_later_ones_overdraw(session, accept, sender):
    """Affordability is the running sum: after a send the balance cannot cover, none fit.

    The cheaper send after it would fit alone; the statement leaves it to
    `accept_message`, which the API runs for every send not accepted.
    """
    user_id, number_id, token = sender
    session.execute(User.__table__.update().values(balance=Decimal("0.0100")))
    session.commit()
    dear = _send(token, number_id, body="x" * 161)  # two segments: 0.0158
    cheap = _send(token, number_id, body="y")  # 0.0079
    assert accept([dear, cheap]) == [None, None]
    [alone] = accept([cheap])
    assert alone is not None
    session.expire_all()
    assert session.get(User, user_id).balance == Decimal("0.0021")


def test_a_prepared_statement_survives_a_column_added_meanwhile(session, engine, sender):
    """A migration may add a column to `messages` while the API runs with the statement prepared."""
    user_id, number_id, token = sender
    pooled = engine.raw_connection()
    connection = pooled.driver_connection
    connection.autocommit = True
    try:
        for _ in range(6):  # prepared from here on, whatever psycopg's threshold
            assert messaging.accept_many_autocommit(connection, [_send(token, number_id)])[0]
        with engine.begin() as ddl:
            ddl.execute(text("ALTER TABLE messages ADD COLUMN added_later integer"))
        try:
            [row] = messaging.accept_many_autocommit(connection, [_send(token, number_id)])
            assert row is not None and row.user_id == user_id
        finally:
            with engine.begin() as ddl:
                ddl.execute(text("ALTER TABLE messages DROP COLUMN added_later"))
    finally:
        pooled.invalidate()
