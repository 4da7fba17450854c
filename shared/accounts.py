"""Users, tokens, phone numbers and prices: what the operator CLI manages."""

from __future__ import annotations

import csv
import hashlib
import secrets
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import phonenumbers
from sqlalchemy import Connection, select, text, update
from sqlalchemy.orm import Session

from shared import billing, listing
from shared.db import utcnow
from shared.models import ApiToken, PhoneNumber, Price, User
from shared.money import InvalidAmount, to_money


class AccountError(ValueError):
    """An operator's request that cannot be carried out; the message says why."""


class NotFound(AccountError):
    """The operator named a user, token or number that does not exist (or was removed)."""

    def __init__(self, what: str, ident: object) -> None:
        super().__init__(f"no {what} with id {ident}")
        self.what = what


def hash_token(token: str) -> str:
    """Return the stored form of a token: its SHA-256 in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


TEST_PREFIX = "test_"


def create_token(session: Session, *, user_id: int, test: bool = False) -> tuple[ApiToken, str]:
    """Create an API token for a user; return its row and its text (shown once).

    A test token (`shared.testmode`) starts with `test_`, so it is told apart at a glance.
    """
    get_user(session, user_id)
    token = (TEST_PREFIX if test else "") + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user_id, token_hash=hash_token(token), mode="test" if test else "live")
    session.add(row)
    session.flush()
    return row, token


class Caller(NamedTuple):
    """Whose a token is, and its mode (`live` or `test`)."""

    user_id: int
    mode: str


# A token's `last_used_at` is to the minute: it is written at most once a minute,
# so a token sending a thousand messages a second costs one write a minute.
USE_RESOLUTION = timedelta(minutes=1)

# Built once: every authenticated request runs it. On PostgreSQL the lookup and the
# note of its use are one statement (a round trip, as the lookup alone was); the
# update locks the token's row only when it writes, once a minute.
_CALLER_BY_HASH = text(
    """
    WITH token AS (
        SELECT id, user_id, mode, last_used_at FROM api_tokens WHERE token_hash = :token_hash
    ), used AS (
        UPDATE api_tokens t SET last_used_at = :now FROM token
        WHERE t.id = token.id AND (token.last_used_at IS NULL OR token.last_used_at < :stale)
    )
    SELECT user_id, mode FROM token
    """
)
_CALLER_BY_HASH_PLAIN = select(ApiToken.id, ApiToken.user_id, ApiToken.mode, ApiToken.last_used_at)


def caller_for_token(session: Session | Connection, token: str) -> Caller | None:
    """Return the token's user and mode, or None; note its use (to the minute).

    The lookup is by hash, so response time says nothing about how much of a
    guessed token was right. A revoked token has no row: it is unknown at once,
    in every process, as nothing caches tokens.
    """
    if not token:
        return None
    now = utcnow()
    params = {"token_hash": hash_token(token), "now": now, "stale": now - USE_RESOLUTION}
    bind = session if isinstance(session, Connection) else session.get_bind()
    if bind.dialect.name == "postgresql":
        row = session.execute(_CALLER_BY_HASH, params).first()
        return None if row is None else Caller(row.user_id, row.mode)
    row = session.execute(
        _CALLER_BY_HASH_PLAIN.where(ApiToken.token_hash == params["token_hash"])
    ).first()
    if row is None:
        return None
    if row.last_used_at is None or row.last_used_at < params["stale"]:
        session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
    return Caller(row.user_id, row.mode)


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
    return user, create_token(session, user_id=user.id)[1]


# A rate above this is no number's: campaign pacing selects up to `mps` messages a tick.
MAX_MPS = 1000
# E.164 allows 15 digits; phonenumbers parses up to 17 national digits after the country code.
E164_MAX_CHARS = 16


def _check_mps(mps: int) -> None:
    if mps < 1:
        raise AccountError("mps must be at least 1")
    if mps > MAX_MPS:
        raise AccountError(f"mps must be at most {MAX_MPS}")


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
    get_user(session, user_id)
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        raise AccountError(f"not an international number: {number}") from None
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if len(e164) > E164_MAX_CHARS:
        raise AccountError(f"not an international number: {number}")
    _check_mps(mps)
    phone = PhoneNumber(
        user_id=user_id,
        number=e164,
        sms_capable=sms_capable,
        expires_at=expires_at,
        mps=mps,
    )
    session.add(phone)
    session.flush()
    return phone


# A segment's price above this is no price: a campaign's cost must fit Numeric(14, 4)
# (100,000 recipients of up to 9 segments each).
MAX_PRICE = Decimal(1000)


def set_price(session: Session, *, country: str, price: Decimal) -> Price:
    """Set the per-segment price for destinations in an ISO country."""
    country = country.upper()
    if country not in phonenumbers.SUPPORTED_REGIONS:
        raise AccountError(f"not an ISO country code with phone numbers: {country}")
    if price > MAX_PRICE:
        raise AccountError(f"a price must be at most {MAX_PRICE}")
    row = session.get(Price, country)
    if row is None:
        row = Price(country=country, price=price)
        session.add(row)
    else:
        row.price = price
    session.flush()
    return row


# --- what the operator manages, from the CLI and the operator API alike


def get_user(session: Session, user_id: int) -> User:
    """Return the user, or refuse with `no user with id N`."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    return user


def list_users(session: Session, *, limit: int, before: int | None) -> listing.Page[User]:
    """Return one page of users, newest first."""
    return listing.page(session, select(User), [], User.id, limit=limit, before=before)


def user_tokens(session: Session, *, user_id: int) -> Sequence[ApiToken]:
    """Return the user's tokens, newest first (a user has a handful)."""
    get_user(session, user_id)
    return session.scalars(
        select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id.desc())
    ).all()


def list_tokens(
    session: Session, *, user_id: int, limit: int, before: int | None
) -> listing.Page[ApiToken]:
    """Return one page of the user's tokens, newest first."""
    get_user(session, user_id)
    key = [(ApiToken.user_id, user_id)]
    return listing.page(session, select(ApiToken), key, ApiToken.id, limit=limit, before=before)


def user_numbers(session: Session, *, user_id: int) -> Sequence[PhoneNumber]:
    """Return the user's numbers in use, oldest first."""
    return session.scalars(
        select(PhoneNumber)
        .where(PhoneNumber.user_id == user_id, PhoneNumber.removed_at.is_(None))
        .order_by(PhoneNumber.id)
    ).all()


def adjust_balance(
    session: Session, *, user_id: int, amount: Decimal, note: str | None = None
) -> Decimal:
    """Add a signed amount to the balance, one ledger row; return the new balance.

    A positive amount is a `topup`, a negative one an `adjustment`, refused
    with `Insufficient balance` if it would take the balance below zero.
    """
    get_user(session, user_id)
    if amount == 0:
        raise AccountError("the amount must not be zero")
    if amount > 0:
        return billing.topup(session, user_id=user_id, amount=amount, note=note or "top-up")
    try:
        return billing.adjust(session, user_id=user_id, amount=amount, note=note or "adjustment")
    except billing.InsufficientBalance:
        raise AccountError("Insufficient balance") from None


def revoke_token(session: Session, *, token_id: int) -> None:
    """Delete a user's token: the next request with it is a 401, in every process."""
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound("token", token_id)
    session.delete(token)
    session.flush()


def get_number(session: Session, number_id: int) -> PhoneNumber:
    """Return a number in use, or refuse with `no phone number with id N`."""
    number = session.get(PhoneNumber, number_id)
    if number is None or number.removed_at is not None:
        raise NotFound("phone number", number_id)
    return number


def list_numbers(
    session: Session, *, user_id: int | None, limit: int, before: int | None
) -> listing.Page[PhoneNumber]:
    """Return one page of the numbers in use, newest first, of one user or of all."""
    query = select(PhoneNumber).where(PhoneNumber.removed_at.is_(None))
    if user_id is not None:
        get_user(session, user_id)
        query = query.where(PhoneNumber.user_id == user_id)
    return listing.page(session, query, [], PhoneNumber.id, limit=limit, before=before)


NOT_GIVEN: Any = object()  # an update leaves a field it was not given as it is


def update_number(
    session: Session,
    *,
    number_id: int,
    sms_capable: bool | None = None,
    expires_at: datetime | None = NOT_GIVEN,
    mps: int | None = None,
) -> PhoneNumber:
    """Change a number's SMS capability, expiry (None: never) or rate; flush only."""
    number = get_number(session, number_id)
    if mps is not None:
        _check_mps(mps)
    if sms_capable is not None:
        number.sms_capable = sms_capable
    if expires_at is not NOT_GIVEN:
        number.expires_at = expires_at
    if mps is not None:
        number.mps = mps
    session.flush()
    return number


def remove_number(session: Session, *, number_id: int) -> PhoneNumber:
    """Take a number from its user: sends from it are `From number not found` from now on.

    The row stays, marked removed: the messages, campaigns and inbound messages
    that name it stay readable to their owner.
    """
    number = get_number(session, number_id)
    number.removed_at = utcnow()
    session.flush()
    return number


def list_prices(session: Session) -> Sequence[Price]:
    """Return every price, by country (one per ISO region: a few hundred at most)."""
    return session.scalars(select(Price).order_by(Price.country)).all()


def import_prices(session: Session, lines: Iterable[str]) -> int:
    """Set the prices of a CSV with header `country,price`, all or none; return how many.

    Every row is checked before anything is written; the first bad one is
    refused naming its line (the header is line 1), and nothing is loaded. The
    caller commits, so the whole file is one transaction.
    """
    reader = csv.reader(lines)
    rows = _rows(reader)
    header = [cell.strip().lower() for cell in next(rows, [])]
    if header != ["country", "price"]:
        raise AccountError("line 1: the header must be country,price")
    prices: dict[str, Decimal] = {}
    for row in rows:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise AccountError(f"line {line}: expected country,price")
        country, raw = row[0].strip().upper(), row[1].strip()
        if country not in phonenumbers.SUPPORTED_REGIONS:
            raise AccountError(f"line {line}: not an ISO country code with phone numbers: {row[0]}")
        if country in prices:
            raise AccountError(f"line {line}: {country} is priced twice")
        prices[country] = parse_price(raw, where=f"line {line}: ")
    for country, price in prices.items():
        set_price(session, country=country, price=price)
    return len(prices)


def _rows(reader: Any) -> Iterator[list[str]]:
    """Yield the CSV's rows; a line csv cannot read (a field over its size limit) is refused."""
    try:
        yield from reader
    except csv.Error as error:
        raise AccountError(f"line {reader.line_num}: {error}") from None


def parse_price(raw: str, *, where: str = "") -> Decimal:
    """Return a per-segment price: a decimal number, zero to `MAX_PRICE`, with at most 4 places."""
    try:
        price = to_money(raw.strip())
    except InvalidAmount as error:
        raise AccountError(f"{where}{error}") from None
    if price > MAX_PRICE:
        raise AccountError(f"{where}a price must be at most {MAX_PRICE}: {raw!r}")
    return price
