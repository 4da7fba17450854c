"""Charges, refunds and top-ups: every balance change has its ledger row.

These functions only flush; the caller's transaction commits them together
with whatever else the change belongs to (the message row, for a charge).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import CursorResult, Select, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from shared.db import utcnow
from shared.models import LedgerEntry, Message, User


class InsufficientBalance(Exception):
    """The balance does not cover the amount; nothing was charged."""


def charge(session: Session, *, user_id: int, amount: Decimal, message_id: int) -> None:
    """Take `amount` from the balance in one conditional update, never below zero."""
    _debit(session, user_id=user_id, amount=amount)
    session.add(LedgerEntry(user_id=user_id, amount=-amount, kind="charge", message_id=message_id))
    session.flush()


def covers(session: Session, *, user_id: int, amount: Decimal) -> bool:
    """Return True when the balance covers `amount`: a test send's check, charging nothing."""
    balance = session.scalar(select(User.balance).where(User.id == user_id))
    return balance is not None and balance >= amount


def refund(session: Session, *, message: Message, note: str) -> bool:
    """Give back a message's cost once; return False if it was already refunded.

    A test message was never charged: there is nothing to give back.

    The message row is locked first, so two refunds racing for the same
    message serialise and the second sees the first one's ledger row.
    """
    session.execute(select(Message.id).where(Message.id == message.id).with_for_update())
    already = session.scalar(
        select(LedgerEntry.id).where(
            LedgerEntry.message_id == message.id, LedgerEntry.kind == "refund"
        )
    )
    if already is not None or message.total_cost == 0 or message.mode == "test":
        return False
    _credit(session, user_id=message.user_id, amount=message.total_cost)
    session.add(
        LedgerEntry(
            user_id=message.user_id,
            amount=message.total_cost,
            kind="refund",
            message_id=message.id,
            campaign_id=message.campaign_id,
            note=note[:255],
        )
    )
    session.flush()
    return True


def topup(session: Session, *, user_id: int, amount: Decimal, note: str = "top-up") -> Decimal:
    """Add `amount` to the balance and return the new balance."""
    _credit(session, user_id=user_id, amount=amount)
    session.add(LedgerEntry(user_id=user_id, amount=amount, kind="topup", note=note[:255]))
    session.flush()
    return session.scalar(select(User.balance).where(User.id == user_id)) or Decimal(0)


def adjust(session: Session, *, user_id: int, amount: Decimal, note: str) -> Decimal:
    """Take a negative `amount` off the balance as an `adjustment`, never below zero.

    Returns the new balance; raises InsufficientBalance, changing nothing, if
    the balance does not cover it.
    """
    _debit(session, user_id=user_id, amount=-amount)
    session.add(LedgerEntry(user_id=user_id, amount=amount, kind="adjustment", note=note[:255]))
    session.flush()
    return session.scalar(select(User.balance).where(User.id == user_id)) or Decimal(0)


def ledger_sum(session: Session, *, user_id: int) -> Decimal:
    """Return the sum of a user's ledger, which always equals the balance."""
    total = session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(LedgerEntry.user_id == user_id)
    )
    return Decimal(total or 0)


def _debit(session: Session, *, user_id: int, amount: Decimal) -> None:
    """Take `amount` in one conditional update, so concurrent charges can never overdraw."""
    result: CursorResult = session.execute(  # type: ignore[assignment]
        update(User)
        .where(User.id == user_id, User.balance >= amount)
        .values(balance=User.balance - amount)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise InsufficientBalance()


def _credit(session: Session, *, user_id: int, amount: Decimal) -> None:
    session.execute(
        update(User)
        .where(User.id == user_id)
        .values(balance=User.balance + amount)
        .execution_options(synchronize_session=False)
    )


def charge_campaign(
    session: Session, *, user_id: int, campaign_id: int, amount: Decimal, note: str
) -> None:
    """Take a whole campaign's cost in one conditional update, with one ledger row.

    Its messages carry their own `total_cost`, so each can later be refunded
    once, by `refund` or `refund_messages`, against the unique (message_id, kind).
    """
    _debit(session, user_id=user_id, amount=amount)
    session.add(
        LedgerEntry(
            user_id=user_id, amount=-amount, kind="charge", campaign_id=campaign_id, note=note[:255]
        )
    )
    session.flush()


def refund_messages(
    session: Session, *, user_id: int, message_ids: Select[Any], note: str
) -> Decimal:
    """Refund every message of `message_ids` not refunded yet, in bulk; return the sum.

    One ledger row per message; the unique (message_id, kind) index skips any
    message refunded before or at the same moment, so none is refunded twice.
    """
    dialect = session.get_bind().dialect.name
    insert_into = sqlite_insert if dialect == "sqlite" else pg_insert
    source = select(
        Message.user_id,
        Message.total_cost,
        literal("refund"),
        Message.id,
        Message.campaign_id,
        literal(note[:255]),
        literal(utcnow()),
    ).where(
        Message.id.in_(message_ids),
        Message.user_id == user_id,
        Message.total_cost > 0,
        Message.mode == "live",  # a test message was never charged
    )
    statement = (
        insert_into(LedgerEntry)
        .from_select(
            ["user_id", "amount", "kind", "message_id", "campaign_id", "note", "created_at"],
            source,
        )
        .on_conflict_do_nothing(index_elements=["message_id", "kind"])
        .returning(LedgerEntry.amount)
    )
    total = sum(session.scalars(statement), Decimal(0))
    if total:
        _credit(session, user_id=user_id, amount=total)
    session.flush()
    return total
