"""Request and answer schemas of the operator API (`/api/admin/...`), and its value checks.

Bodies are parsed by `api.schemas.parse` for their shape (`The <field> field
is required`, `... must be a string`); money, times and ranges are checked here
with a message naming the field. Money arrives as a JSON number read as a
`Decimal` (never a float: 0.1 + 0.2 is 0.3 here) or as a decimal string.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from api.errors import ApiError
from api.paging import CursorQuery, PageMeta
from api.schemas import PhoneNumberOut, Timestamp
from shared.accounts import E164_MAX_CHARS, MAX_MPS, MAX_PRICE
from shared.db import MAX_ID
from shared.messaging import is_unicode_text
from shared.money import InvalidAmount, to_money

# One top-up, adjustment or opening balance: a balance must stay within Numeric(14, 4).
MAX_AMOUNT = Decimal(1_000_000)
MAX_EMAIL_CHARS = 320
MAX_NOTE_CHARS = 255
_PART = r"[^@\s\x00-\x1f\x7f]+"  # no spaces, no control characters (NUL cannot be stored)
EMAIL = re.compile(rf"{_PART}@{_PART}\.{_PART}")
TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d")


def refuse(field: str, text: str) -> ApiError:
    """Return the 400 for one field, with its message under `errors` too."""
    return ApiError(400, text, {field: [text]})


def money_field(description: str, *, low: Decimal, high: Decimal, default: Any = ...) -> Any:
    """A money field: a JSON number or a decimal string, at most four places."""
    return Field(
        default=default,
        description=f"{description}: a number or a decimal string, at most 4 decimal places",
        json_schema_extra={
            "type": ["number", "string"],
            "minimum": float(low),
            "maximum": float(high),
            "pattern": r"^-?[0-9]{1,7}(\.[0-9]{1,4})?$",
            "examples": ["5.00"],
        },
    )


def check_amount(field: str, value: Any, *, low: Decimal, high: Decimal) -> Decimal:
    """Return a signed money amount in [low, high], or refuse naming the field.

    The magnitude is read by `shared.money.to_money`, as every amount is: no
    float, at most four places.
    """
    amount: Decimal | None = None
    if isinstance(value, Decimal | int | str) and not isinstance(value, bool):
        text = str(value).strip()
        negative = text.startswith("-")
        try:
            magnitude = to_money(text[1:] if negative else text)
        except InvalidAmount:
            pass
        else:
            amount = -magnitude if negative else magnitude
    if amount is None or not low <= amount <= high:
        raise refuse(
            field,
            f"The {field} field must be an amount from {low} to {high}"
            " with at most 4 decimal places",
        )
    return amount


def check_email(value: str) -> str:
    """Return an email address, or refuse it."""
    if len(value) > MAX_EMAIL_CHARS or not EMAIL.fullmatch(value) or not is_unicode_text(value):
        raise refuse("email", "The email field must be a valid email address")
    return value


def check_note(value: str | None) -> str | None:
    """Return a ledger note (None when absent or empty), or refuse it."""
    if not value:
        return None
    if len(value) > MAX_NOTE_CHARS:
        text = f"The note field must not be greater than {MAX_NOTE_CHARS} characters"
        raise refuse("note", text)
    if "\x00" in value or not is_unicode_text(value):
        raise refuse("note", "The note field must be text")
    return value


def check_number(value: str) -> str:
    """Return a phone number in E.164, or refuse it."""
    text = "The number field must be an international phone number, e.g. +15005550006"
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise refuse("number", text) from None
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if len(e164) > E164_MAX_CHARS:
        raise refuse("number", text)
    return e164


def check_expires_at(value: Any) -> datetime | None:
    """Return a number's expiry (None: never), from `YYYY-MM-DD HH:MM:SS` (UTC) or `YYYY-MM-DD`."""
    if value is None:
        return None
    if isinstance(value, str):
        for form in TIME_FORMATS:
            try:
                return datetime.strptime(value.strip(), form)
            except ValueError:
                continue
    text = "The expires_at field must be a UTC time as YYYY-MM-DD HH:MM:SS or YYYY-MM-DD, or null"
    raise refuse("expires_at", text)


def check_mps(value: int) -> int:
    """Return a number's rate in messages per second, or refuse it."""
    if not 1 <= value <= MAX_MPS:
        raise refuse("mps", f"The mps field must be an integer from 1 to {MAX_MPS}")
    return value


def check_country(value: str) -> str:
    """Return an ISO 3166 alpha-2 code that has phone numbers, upper-cased, or refuse it."""
    country = value.strip().upper()
    if country not in phonenumbers.SUPPORTED_REGIONS:
        raise refuse("country", "The country must be an ISO 3166 alpha-2 code, e.g. US")
    return country


def expires_at_field(description: str) -> Any:
    return Field(
        default=None,
        description=description,
        json_schema_extra={"type": ["string", "null"], "examples": ["2027-01-01"]},
    )


MPS = {"minimum": 1, "maximum": MAX_MPS}


# --- request bodies


class CreateUser(BaseModel):
    """The body of `POST /api/admin/users`."""

    model_config = ConfigDict(extra="ignore")

    email: StrictStr = Field(
        description="The user's email address, unique",
        json_schema_extra={"format": "email", "maxLength": MAX_EMAIL_CHARS},
    )
    balance: Any = money_field(
        "Opening balance in USD (a `topup` in the ledger)",
        low=Decimal(0),
        high=MAX_AMOUNT,
        default=0,
    )


class TopUp(BaseModel):
    """The body of `POST /api/admin/users/{user_id}/topups`."""

    model_config = ConfigDict(extra="ignore")

    amount: Any = money_field(
        "Signed amount in USD, not zero: positive a `topup`, negative an `adjustment`",
        low=-MAX_AMOUNT,
        high=MAX_AMOUNT,
    )
    note: StrictStr | None = Field(
        default=None,
        description="Shown in the user's transactions",
        json_schema_extra={"maxLength": MAX_NOTE_CHARS},
    )


class CreateToken(BaseModel):
    """The body of `POST /api/admin/users/{user_id}/tokens` (may be empty)."""

    model_config = ConfigDict(extra="ignore")

    test: StrictBool = Field(
        default=False, description="A test token: sends are checked, never charged or sent"
    )


class AddNumber(BaseModel):
    """The body of `POST /api/admin/users/{user_id}/phone-numbers`."""

    model_config = ConfigDict(extra="ignore")

    number: StrictStr = Field(
        description="International format, stored in E.164 (spaces and dashes are ignored)",
        json_schema_extra={"pattern": r"^\+[1-9][0-9]{6,14}$", "examples": ["+15005550006"]},
    )
    sms_capable: StrictBool = True
    expires_at: Any = expires_at_field(
        "End of its subscription: `YYYY-MM-DD HH:MM:SS` (UTC) or `YYYY-MM-DD`; null: never"
    )
    mps: StrictInt = Field(
        default=1, description="Campaign messages per second", json_schema_extra=MPS
    )


class UpdateNumber(BaseModel):
    """The body of `PATCH /api/admin/phone-numbers/{number_id}`: a field left out stays."""

    model_config = ConfigDict(extra="ignore")

    sms_capable: StrictBool | None = None
    expires_at: Any = expires_at_field(
        "`YYYY-MM-DD HH:MM:SS` (UTC) or `YYYY-MM-DD`; null: never expires"
    )
    mps: StrictInt | None = Field(
        default=None, description="Campaign messages per second", json_schema_extra=MPS
    )


class SetPrice(BaseModel):
    """The body of `PUT /api/admin/prices/{country}`."""

    model_config = ConfigDict(extra="ignore")

    price: Any = money_field("Price of one segment in USD", low=Decimal(0), high=MAX_PRICE)


class NumbersQuery(CursorQuery):
    """Filter and cursor of `GET /api/admin/phone-numbers`."""

    user_id: int | None = Field(default=None, ge=1, le=MAX_ID, description="Only this user's")


# --- answers


class UserOut(BaseModel):
    id: int
    email: str
    balance: float
    created_at: str = Timestamp


class UsersPage(BaseModel):
    """A page of users, newest first; `meta.next` is the path of the next page."""

    data: list[UserOut]
    meta: PageMeta


class UserCreated(BaseModel):
    id: int
    email: str
    balance: float
    token: str | None = Field(
        description="The user's first token, shown once: null on a repeat under the same"
        " Idempotency-Key (only its hash is stored)"
    )


class UserCreatedOut(BaseModel):
    """The user, with its first token."""

    data: UserCreated


class TokenOut(BaseModel):
    id: int
    mode: Literal["live", "test"]
    created_at: str = Timestamp
    last_used_at: str | None = Field(description="UTC, to the minute")


class OperatorNumberOut(PhoneNumberOut):
    user_id: int


class UserDetail(UserOut):
    numbers: list[PhoneNumberOut] = Field(description="Its numbers in use, oldest first")
    tokens: list[TokenOut] = Field(description="Its tokens, newest first (never their text)")


class UserOne(BaseModel):
    """One user, with its numbers and tokens."""

    data: UserDetail


class BalanceChange(BaseModel):
    id: int = Field(description="The user's id")
    balance: float = Field(description="The balance after the change")


class BalanceChangeOut(BaseModel):
    """The balance changed: one ledger row."""

    data: BalanceChange


class TokenCreated(BaseModel):
    id: int
    token: str | None = Field(
        description="Shown once: null on a repeat under the same Idempotency-Key"
    )
    mode: Literal["live", "test"]


class TokenCreatedOut(BaseModel):
    """The new token."""

    data: TokenCreated


class TokensPage(BaseModel):
    """A page of the user's tokens, newest first; never their text."""

    data: list[TokenOut]
    meta: PageMeta


class NumberOne(BaseModel):
    """One phone number, with its user."""

    data: OperatorNumberOut


class NumbersPage(BaseModel):
    """A page of phone numbers in use, newest first."""

    data: list[OperatorNumberOut]
    meta: PageMeta


class PriceOut(BaseModel):
    country: str = Field(description="ISO 3166 alpha-2")
    price: float = Field(description="Per segment, in USD")
    updated_at: str = Timestamp


class PriceOne(BaseModel):
    """The country's price."""

    data: PriceOut


class PricesPage(BaseModel):
    """Every price, by country, in one page: `meta.next` is null, `meta.limit` their count."""

    data: list[PriceOut]
    meta: PageMeta


class Imported(BaseModel):
    imported: int = Field(description="How many countries were priced")


class ImportedOut(BaseModel):
    """Every row was loaded."""

    data: Imported
