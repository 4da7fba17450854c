"""Users, their API tokens and phone numbers, per-country prices and opt-outs."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, Money, utcnow


class User(Base):
    """An account with a prepaid balance in USD."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    balance: Mapped[Money] = mapped_column(default=Decimal("0"))
    webhook_secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A bearer token; only its SHA-256 hash is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # `live`, or `test`: a test token's sends are checked and priced but never charged or sent.
    mode: Mapped[str] = mapped_column(String(4), default="live", server_default="live")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # To the minute: written at most once a minute, in the statement that looks the token up.
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


class AdminToken(Base):
    """A bearer token of the operator API; only its SHA-256 hash is stored.

    Separate from users' tokens in every way: its own table, its own routes.
    """

    __tablename__ = "admin_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


class OperatorRequest(Base):
    """The first answer of an operator API request with an Idempotency-Key.

    One namespace for every admin token: a key names the operator's own
    operation (an invoice, say), whichever of its systems repeats it.
    """

    __tablename__ = "operator_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PhoneNumber(Base):
    """A number a user rents, in E.164, with its sending rate in messages per second."""

    __tablename__ = "phone_numbers"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    number: Mapped[str] = mapped_column(String(20))
    sms_capable: Mapped[bool] = mapped_column(Boolean, default=True)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    mps: Mapped[int] = mapped_column(Integer, default=1)
    # Where incoming messages to this number are forwarded, signed, as JSON.
    inbound_url: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # A removed number sends and receives nothing more; its messages stay readable.
    removed_at: Mapped[datetime | None] = mapped_column(default=None)


class Price(Base):
    """The price of one segment to a destination country (ISO 3166 alpha-2)."""

    __tablename__ = "prices"

    country: Mapped[str] = mapped_column(String(2), primary_key=True)
    price: Mapped[Money]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OptOut(Base):
    """A recipient who texted STOP to one of a user's numbers."""

    __tablename__ = "opt_outs"
    __table_args__ = (UniqueConstraint("user_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
