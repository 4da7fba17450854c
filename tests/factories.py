"""Small factories that write real rows through the domain functions."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from shared import accounts


def make_user(
    session: Session, *, email: str | None = None, balance: str = "10.00"
) -> tuple[int, str]:
    """Create a user with a balance (through the ledger) and return (id, token)."""
    user, token = accounts.create_user(
        session,
        email=email or f"user{id(session)}-{_seq()}@example.com",
        balance=Decimal(balance),
    )
    session.commit()
    return user.id, token


def make_number(
    session: Session,
    *,
    user_id: int,
    number: str = "+15005550006",
    sms_capable: bool = True,
    expires_at: datetime | None = None,
    mps: int = 1,
) -> int:
    """Give a user a phone number and return its id."""
    phone = accounts.add_number(
        session,
        user_id=user_id,
        number=number,
        sms_capable=sms_capable,
        expires_at=expires_at,
        mps=mps,
    )
    session.commit()
    return phone.id


def set_price(session: Session, *, country: str = "US", price: str = "0.0079") -> None:
    """Set the per-segment price of a destination country."""
    accounts.set_price(session, country=country, price=Decimal(price))
    session.commit()


_counter = iter(range(1, 10**9))


def _seq() -> int:
    return next(_counter)
