"""Messages recipients send to users' numbers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, utcnow


class InboundMessage(Base):
    """One incoming message, stored once per Twilio `MessageSid`.

    `keyword` is `STOP` or `START` when the message opted its sender out or
    back in. The number's owner reads it through the API and, with an
    `inbound_url` on the number, gets it forwarded (`shared.inbound`).
    """

    __tablename__ = "inbound_messages"
    __table_args__ = (
        Index("ix_inbound_messages_user_id_id", "user_id", "id"),
        Index("ix_inbound_messages_phone_number_id_id", "phone_number_id", "id"),
        Index("ix_inbound_messages_from_number_user_id_id", "from_number", "user_id", "id"),
        # Retention deletes by age.
        Index("ix_inbound_messages_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    phone_number_id: Mapped[int] = mapped_column(ForeignKey("phone_numbers.id"))
    from_number: Mapped[str] = mapped_column(String(32))
    to: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text)
    sms_sid: Mapped[str] = mapped_column(String(34), unique=True)
    keyword: Mapped[str | None] = mapped_column(String(8), default=None)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
