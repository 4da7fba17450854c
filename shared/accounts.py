"""Users, tokens, phone numbers and prices: what the operator CLI manages."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

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


TEST_PREFIX = "test_"


def create_token(session: Session, *, user_id: int, test: bool = False) -> str:
    """Create an API token for a user and return it; only its hash is kept.

    A test token (`shared.testmode`) starts with `test_`, so it is told apart at a glance.
    """
    if session.get(User, user_id) is None:
        raise AccountError(f"no user with id {user_id}")
    token = (TEST_PREFIX if test else "") + secrets.token_urlsafe(32)
    mode = "test" if test else "live"
    session.add(ApiToken(user_id=user_id, token_hash=hash_token(token), mode=mode))
    session.flush()
    return token


class Caller(NamedTuple):
    """Whose a token is, and its mode (`live` or `test`)."""

    user_id: int
    mode: str


# Built once: every authenticated request runs it.
_CALLER_BY_HASH = select(ApiToken.user_id, ApiToken.mode).where(
    ApiToken.token_hash == bindparam("token_hash")
)


def caller_for_token(session: Session | Connection, token: str) -> Caller | None:
    """Return the token's user and mode, or None.

    The lookup is by hash, so response time says nothing about how much of a
    guessed token was right.
    """
    if not token:
        return None
    row = session.execute(_CALLER_BY_HASH, {"token_hash": hash_token(token)}).first()
    return None if row is None else Caller(row.user_id, row.mode)


def user_for_token(session: Session | Connection, token: str) -> int | None:
    """Return the id of the token's user, or None."""
    caller = caller_for_token(session, token)
    return None if caller is None else caller.user_id


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
