"""Charges, refunds and top-ups: every balance change has its ledger row.

These functions only flush; the caller's transaction commits them together
with whatever else the change belongs to (the message row, for a charge).
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from shared.models import LedgerEntry, Message, User


class InsufficientBalance(Exception):
    """The balance does not cover the amount; nothing was charged."""


def charge(session: Session, *, user_id: int, amount: Decimal, message_id: int) -> None:
    """Take `amount` from the balance in one conditional update, never below zero."""
    result: CursorResult = session.execute(  # type: ignore[assignment]
        update(User)
        .where(User.id == user_id, User.balance >= amount)
        .values(balance=User.balance - amount)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise InsufficientBalance()
    session.add(LedgerEntry(user_id=user_id, amount=-amount, kind="charge", message_id=message_id))
    session.flush()


def refund(session: Session, *, message: Message, note: str) -> bool:
    """Give back a message's cost once; return False if it was already refunded.

    The message row is locked first, so two refunds racing for the same
    message serialise and the second sees the first one's ledger row.
    """
    session.execute(select(Message.id).where(Message.id == message.id).with_for_update())
    already = session.scalar(
        select(LedgerEntry.id).where(
            LedgerEntry.message_id == message.id, LedgerEntry.kind == "refund"
        )
    )
    if already is not None or message.total_cost == 0:
        return False
    _credit(session, user_id=message.user_id, amount=message.total_cost)
    session.add(
        LedgerEntry(
            user_id=message.user_id,
            amount=message.total_cost,
            kind="refund",
            message_id=message.id,
            note=note[:255],
        )
    )
    session.flush()
    return True


def topup(session: Session, *, user_id: int, amount: Decimal, note: str = "top-up") -> Decimal:
    """Add `amount` to the balance and return the new balance."""
    _credit(session, user_id=user_id, amount=amount)
    session.add(LedgerEntry(user_id=user_id, amount=amount, kind="topup", note=note))
    session.flush()
    return session.scalar(select(User.balance).where(User.id == user_id)) or Decimal(0)


def ledger_sum(session: Session, *, user_id: int) -> Decimal:
    """Return the sum of a user's ledger, which always equals the balance."""
    total = session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(LedgerEntry.user_id == user_id)
    )
    return Decimal(total or 0)


def _credit(session: Session, *, user_id: int, amount: Decimal) -> None:
    session.execute(
        update(User)
        .where(User.id == user_id)
        .values(balance=User.balance + amount)
        .execution_options(synchronize_session=False)
    )
