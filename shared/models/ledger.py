"""The ledger: one row for every change of a balance."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base, Money, partial_index, utcnow


class LedgerEntry(Base):
    """A signed amount added to a user's balance (charges are negative).

    A message is charged once and refunded at most once: the unique index on
    (message_id, kind) makes a second refund impossible, not just unlikely.
    Ledger rows outlive the messages they name: retention deletes old messages
    but never money, so `message_id` is a plain id, not a foreign key, and
    `campaign_id` keeps a campaign's refunds summable after its messages go.
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("uq_ledger_entries_message_id_kind", "message_id", "kind", unique=True),
        # The user's ledger, newest first, by cursor; and the sum of it.
        Index("ix_ledger_entries_user_id_id", "user_id", "id"),
        # The ledger filtered by kind (`GET /api/user/transactions?kind=refund`), by cursor.
        Index("ix_ledger_entries_kind_user_id_id", "kind", "user_id", "id"),
        partial_index(
            "ix_ledger_entries_campaign_id", "campaign_id", where="campaign_id IS NOT NULL"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    amount: Mapped[Money]
    kind: Mapped[str] = mapped_column(String(16))  # topup, charge, refund, adjustment
    message_id: Mapped[int | None] = mapped_column(default=None)
    campaign_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), default=None
    )
    note: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
