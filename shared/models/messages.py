"""Messages and the idempotency keys that point at them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, Money, partial_index, utcnow


class Message(Base):
    """One SMS, from acceptance to its final status.

    `status` is what users see; `handoff` tracks the gateway's own call to
    Twilio: `pending` (safe to call), `in_flight` (a call may be under way),
    `unknown` (a call timed out: look it up before calling again), `done`.
    `lease_until` is how long the message is spoken for while it is `sending`
    without a SID: the claim's lease (as long as a hand-off can take), then
    the time its retry is due. Once it has passed, whoever held it is gone,
    and the reconciler hands it on (`shared.reconcile.take_over`).
    """

    __tablename__ = "messages"
    # Every list filter has an index ending in `id`, so a cursor-paged list
    # reads one page of index entries whatever the table holds.
    __table_args__ = (
        Index("ix_messages_user_id_id", "user_id", "id"),
        Index("ix_messages_status_user_id_id", "status", "user_id", "id"),
        Index("ix_messages_to_user_id_id", "to", "user_id", "id"),
        partial_index(
            "ix_messages_campaign_id_id", "campaign_id", "id", where="campaign_id IS NOT NULL"
        ),
        # The reaper, the reconciler and retention find their messages by status and age.
        Index("ix_messages_status_updated_at", "status", "updated_at"),
        # The requeue of single sends whose enqueue was lost, past any campaign backlog.
        partial_index(
            "ix_messages_queued_single_updated_at",
            "updated_at",
            where="status = 'queued' AND campaign_id IS NULL",
        ),
        partial_index(
            "ix_messages_campaign_id_status_id",
            "campaign_id",
            "status",
            "id",
            where="campaign_id IS NOT NULL",
        ),
        # The release of scheduled messages as they come due, and the expiry of those
        # whose validity period ran out before they were handed over.
        partial_index(
            "ix_messages_scheduled_send_at",
            "send_at",
            where="status = 'scheduled' AND campaign_id IS NULL",
        ),
        # A campaign's dispatcher: its held messages by due time, and those it released.
        partial_index(
            "ix_messages_campaign_id_scheduled_send_at",
            "campaign_id",
            "send_at",
            "id",
            where="status = 'scheduled' AND campaign_id IS NOT NULL",
        ),
        partial_index(
            "ix_messages_campaign_id_released_id",
            "campaign_id",
            "id",
            where="status = 'queued' AND send_at IS NOT NULL AND campaign_id IS NOT NULL",
        ),
        partial_index(
            "ix_messages_waiting_valid_until",
            "valid_until",
            where="valid_until IS NOT NULL AND status IN ('scheduled', 'queued')",
        ),
        # A test token lists only test messages: they are few beside the live ones.
        partial_index("ix_messages_test_user_id_id", "user_id", "id", where="mode = 'test'"),
        partial_index(
            "ix_messages_reference_user_id_id",
            "reference",
            "user_id",
            "id",
            where="reference IS NOT NULL",
        ),
        # A campaign sends once to each recipient, whatever the uploaded duplicates.
        partial_index(
            "uq_messages_campaign_id_to",
            "campaign_id",
            "to",
            where="campaign_id IS NOT NULL",
            unique=True,
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    phone_number_id: Mapped[int] = mapped_column(ForeignKey("phone_numbers.id"))
    from_number: Mapped[str] = mapped_column(String(20))
    to: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text)
    segments: Mapped[int] = mapped_column(Integer)
    encoding: Mapped[str] = mapped_column(String(8))
    segment_price: Mapped[Money]
    total_cost: Mapped[Money]
    status: Mapped[str] = mapped_column(String(16), default="queued")
    handoff: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sms_sid: Mapped[str | None] = mapped_column(String(34), unique=True, default=None)
    error_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    status_callback: Mapped[str | None] = mapped_column(Text, default=None)
    handoff_at: Mapped[datetime | None] = mapped_column(default=None)
    lease_until: Mapped[datetime | None] = mapped_column(default=None)
    # When a `scheduled` message is due (its send_at, or the end of its quiet hours).
    send_at: Mapped[datetime | None] = mapped_column(default=None)
    # Seconds it may wait from its send time; past `valid_until` it is failed, never sent.
    validity_period: Mapped[int | None] = mapped_column(Integer, default=None)
    valid_until: Mapped[datetime | None] = mapped_column(default=None)
    campaign_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), default=None
    )
    # The caller's own text, echoed in every answer and callback.
    reference: Mapped[str | None] = mapped_column(String(255), default=None)
    # `test` messages are never charged and never reach Twilio (`shared.testmode`).
    mode: Mapped[str] = mapped_column(String(4), default="live", server_default="live")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class MessageEvent(Base):
    """One status a message took, written by the database itself.

    Triggers on `messages` (migration 0008) insert a row for each new message
    and for each change of its status, in the statement that makes it: no
    code path can forget one, none costs a round trip, and since a status
    never moves backwards each appears once. The id orders them.
    """

    __tablename__ = "message_events"
    __table_args__ = (Index("ix_message_events_message_id_id", "message_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[int | None] = mapped_column(Integer, default=None)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyKey(Base):
    """The first answer given to a user's request carrying an Idempotency-Key."""

    __tablename__ = "idempotency_keys"
    # The index on message_id lets retention's delete of a message find its key.
    __table_args__ = (
        UniqueConstraint("user_id", "key"),
        Index("ix_idempotency_keys_message_id", "message_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict] = mapped_column(JSON)
    message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
