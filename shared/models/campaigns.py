"""Bulk campaigns, and the raw recipients staged between the 202 and the expansion."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, Money, utcnow


class Campaign(Base):
    """One templated send to many recipients, paced at its sender number's `mps`.

    `cursor` is the id of the last message released to the send queue, and
    `pump_chain` names the one dispatcher chain allowed to release more.
    `purged` counts, per final status, the messages retention has deleted, so
    the campaign's totals stay what they were.
    """

    __tablename__ = "campaigns"
    __table_args__ = (
        Index("ix_campaigns_user_id_id", "user_id", "id"),
        Index("ix_campaigns_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    phone_number_id: Mapped[int] = mapped_column(ForeignKey("phone_numbers.id"))
    body: Mapped[str] = mapped_column(Text)
    status_callback: Mapped[str | None] = mapped_column(Text, default=None)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    failure_reason: Mapped[str | None] = mapped_column(Text, default=None)
    total: Mapped[int] = mapped_column(Integer, default=0)
    accepted: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    rejections: Mapped[list] = mapped_column(JSON, default=list)
    total_cost: Mapped[Money] = mapped_column(default=Decimal("0"))
    purged: Mapped[dict] = mapped_column(JSON, default=dict)
    cursor: Mapped[int] = mapped_column(default=0)  # a message id
    pump_chain: Mapped[str | None] = mapped_column(String(36), default=None)
    pumped_at: Mapped[datetime | None] = mapped_column(default=None)
    # What its messages were asked for: a send time, quiet hours ("HH:MM-HH:MM"), validity.
    send_at: Mapped[datetime | None] = mapped_column(default=None)
    quiet_hours: Mapped[str | None] = mapped_column(String(11), default=None)
    validity_period: Mapped[int | None] = mapped_column(Integer, default=None)
    reference: Mapped[str | None] = mapped_column(String(255), default=None)
    smart_encoding: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    mode: Mapped[str] = mapped_column(String(4), default="live", server_default="live")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class CampaignRecipient(Base):
    """A recipient row as uploaded, kept only until the campaign is expanded."""

    __tablename__ = "campaign_recipients"

    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    to: Mapped[str] = mapped_column(Text)
    vars: Mapped[str] = mapped_column(Text)  # a JSON object of template variables
