"""Users, tokens, phone numbers and prices: what the operator CLI manages."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from decimal import Decimal

import phonenumbers
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from shared import billing
from shared.models import ApiToken, PhoneNumber, Price, User


class AccountError(ValueError):
    """An operator's request that cannot be carried out; the message says why."""


def hash_token(token: str) -> str:
    """Return the stored form of a token: its SHA-256 in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, *, user_id: int) -> str:
    """Create an API token for a user and return it; only its hash is kept."""
    if session.get(User, user_id) is None:
        raise AccountError(f"no user with id {user_id}")
    token = secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user_id, token_hash=hash_token(token)))
    session.flush()
    return token


# Built once: every authenticated request runs it.
_USER_BY_HASH = select(ApiToken.user_id).where(ApiToken.token_hash == bindparam("token_hash"))


def user_for_token(session: Session | Connection, token: str) -> int | None:
    """Return the id of the token's user, or None.

    The lookup is by hash, so response time says nothing about how much of a
    guessed token was right.
    """
    if not token:
        return None
    return session.scalar(_USER_BY_HASH, {"token_hash": hash_token(token)})


def create_user(session: Session, *, email: str, balance: Decimal) -> tuple[User, str]:
    """Create a user with a first token; the opening balance goes through the ledger."""
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise AccountError(f"a user with email {email} exists")
    user = User(email=email, balance=Decimal(0), webhook_secret=secrets.token_hex(32))
    session.add(user)
    session.flush()
    if balance > 0:
        billing.topup(session, user_id=user.id, amount=balance, note="opening balance")
    return user, create_token(session, user_id=user.id)


def add_number(
    session: Session,
    *,
    user_id: int,
    number: str,
    sms_capable: bool = True,
    expires_at: datetime | None = None,
    mps: int = 1,
) -> PhoneNumber:
    """Give a user a phone number, stored in E.164."""
    if session.get(User, user_id) is None:
        raise AccountError(f"no user with id {user_id}")
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        raise AccountError(f"not an international number: {number}") from None
    if mps < 1:
        raise AccountError("mps must be at least 1")
    phone = PhoneNumber(
        user_id=user_id,
        number=phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164),
        sms_capable=sms_capable,
        expires_at=expires_at,
        mps=mps,
    )
    session.add(phone)
    session.flush()
    return phone


def set_price(session: Session, *, country: str, price: Decimal) -> Price:
    """Set the per-segment price for destinations in an ISO country."""
    country = country.upper()
    if country not in phonenumbers.SUPPORTED_REGIONS:
        raise AccountError(f"not an ISO country code with phone numbers: {country}")
    row = session.get(Price, country)
    if row is None:
        row = Price(country=country, price=price)
        session.add(row)
    else:
        row.price = price
    session.flush()
    return row
