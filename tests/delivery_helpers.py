"""Helpers for the delivery tests: messages as the worker leaves them after a hand-off."""

from __future__ import annotations

import secrets
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select, update

from shared import billing, messaging
from shared.db import utcnow
from shared.models import LedgerEntry, Message, Price, User
from tests.factories import make_number, make_user, set_price

TO, FROM = "+14155550123", "+15005550006"


def new_sid() -> str:
    return "SM" + secrets.token_hex(16)


def handed_off(
    session_factory,
    *,
    sid: str | None = "new",
    handoff: str = "done",
    to: str = TO,
    status_callback: str | None = None,
    balance: str = "1.00",
) -> Message:
    """Write a charged message in `sending`, with a SID unless `sid` is None."""
    with session_factory() as session:
        user_id, _ = make_user(session, balance=balance)
        if session.get(Price, "US") is None:
            set_price(session)
        number_id = make_number(session, user_id=user_id, number=FROM)
        message = messaging.accept_message(
            session,
            user_id=user_id,
            phone_number_id=number_id,
            to=to,
            body="Hello",
            status_callback=status_callback,
        )
        message.status, message.handoff = "sending", handoff
        message.sms_sid = new_sid() if sid == "new" else sid
        session.commit()
        return message


def load(session_factory, message_id: int) -> Message:
    with session_factory() as session:
        return session.get(Message, message_id)


def balance(session_factory, user_id: int) -> Decimal:
    with session_factory() as session:
        amount = session.scalar(select(User.balance).where(User.id == user_id))
        assert amount == billing.ledger_sum(session, user_id=user_id)
        return amount


def refunds(session_factory, message_id: int) -> int:
    with session_factory() as session:
        return len(
            session.scalars(
                select(LedgerEntry.id).where(
                    LedgerEntry.message_id == message_id, LedgerEntry.kind == "refund"
                )
            ).all()
        )


def age(session_factory, message_id: int, seconds: int) -> None:
    """Make a message look untouched for `seconds`."""
    past = utcnow() - timedelta(seconds=seconds)
    with session_factory.begin() as session:
        session.execute(
            update(Message).where(Message.id == message_id).values(updated_at=past, handoff_at=past)
        )
