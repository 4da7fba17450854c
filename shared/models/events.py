"""Twilio status events seen once, and the outbox of status callbacks to users."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, utcnow


class TwilioEvent(Base):
    """One status callback from Twilio, recorded before it is applied.

    Twilio repeats a callback with the same `I-Twilio-Idempotency-Token`; a
    callback without one is a repeat when its SID and status were seen. Either
    unique key makes a repeat fail to insert, so it is applied at most once.
    """

    __tablename__ = "twilio_events"
    __table_args__ = (UniqueConstraint("sid", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str | None] = mapped_column(String(128), unique=True, default=None)
    sid: Mapped[str] = mapped_column(String(34))
    status: Mapped[str] = mapped_column(String(24))
    error_code: Mapped[int | None] = mapped_column(Integer, default=None)
    message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True, default=None
    )
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class UserCallback(Base):
    """An event owed to a user's URL: the outbox row.

    A status change goes to the message's `status_callback`, an incoming
    message to its number's `inbound_url`.

    Written in the transaction that changes the status, delivered by a task,
    and swept again by the beat while `delivered_at` and `gave_up_at` are empty.
    """

    __tablename__ = "user_callbacks"
    __table_args__ = (Index("ix_user_callbacks_next_attempt_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # A status event names its message; a forwarded incoming message, its inbound row.
    message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True, default=None
    )
    inbound_message_id: Mapped[int | None] = mapped_column(
        ForeignKey("inbound_messages.id", ondelete="CASCADE"), index=True, default=None
    )
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(default=None)
    gave_up_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
