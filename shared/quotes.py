"""Quotes: what a send would cost, checked and priced by the send's own code, written nowhere."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.messaging import Priced, price_send
from shared.models import User


@dataclass(frozen=True)
class Quote:
    """A priced send, and whether the balance covers it now."""

    priced: Priced
    balance: Decimal

    @property
    def affordable(self) -> bool:
        return self.balance >= self.priced.total_cost


def quote(
    session: Session, *, user_id: int, phone_number_id: int | None, to: str, body: str
) -> Quote:
    """Check and price a send exactly as `accept_message` would; raise its `Rejected`.

    A balance too low is not a refusal here: the quote says `affordable: false`.
    """
    priced = price_send(session, user_id=user_id, phone_number_id=phone_number_id, to=to, body=body)
    balance = session.scalar(select(User.balance).where(User.id == user_id))
    return Quote(priced=priced, balance=balance or Decimal(0))
