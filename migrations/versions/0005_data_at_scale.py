"""Data at scale: 64-bit ids, an index per list filter, ledger rows that outlive messages.

Every id, and every column holding one, becomes BIGINT, with its sequence;
each table is rewritten once (one ALTER TABLE for all its columns) under an
exclusive lock, so on a large database run it in a maintenance window. The
ledger's `message_id` stops being a foreign key (retention deletes old
messages, never money) and gains `campaign_id`, filled in from the messages.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Each table's id columns; the first named "id" has a sequence.
ID_COLUMNS = {
    "users": ("id",),
    "api_tokens": ("id", "user_id"),
    "phone_numbers": ("id", "user_id"),
    "opt_outs": ("id", "user_id"),
    "campaigns": ("id", "user_id", "phone_number_id", "cursor"),
    "campaign_recipients": ("campaign_id",),
    "messages": ("id", "user_id", "phone_number_id", "campaign_id"),
    "idempotency_keys": ("id", "user_id", "message_id"),
    "ledger_entries": ("id", "user_id", "message_id"),
    "twilio_events": ("id", "message_id"),
    "user_callbacks": ("id", "user_id", "message_id"),
}
CAMPAIGN_WHERE = sa.text("campaign_id IS NOT NULL")
QUEUED_SINGLE = sa.text("status = 'queued' AND campaign_id IS NULL")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        _widen_ids("bigint")
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_constraint("fk_ledger_entries_message_id_messages", type_="foreignkey")
        batch.add_column(sa.Column("campaign_id", _id_type(postgres), nullable=True))
        batch.create_foreign_key(
            "fk_ledger_entries_campaign_id_campaigns",
            "campaigns",
            ["campaign_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.drop_index("ix_ledger_entries_user_id")
        batch.create_index("ix_ledger_entries_user_id_id", ["user_id", "id"])
    # A campaign's refunds, and its charge (noted `campaign <id>: <n> messages`), are its own.
    op.execute(
        "UPDATE ledger_entries SET campaign_id = ("
        " SELECT m.campaign_id FROM messages m WHERE m.id = ledger_entries.message_id)"
        " WHERE message_id IS NOT NULL AND EXISTS ("
        " SELECT 1 FROM messages m WHERE m.id = ledger_entries.message_id"
        " AND m.campaign_id IS NOT NULL)"
    )
    op.execute(
        "UPDATE ledger_entries SET campaign_id = ("
        " SELECT c.id FROM campaigns c WHERE c.user_id = ledger_entries.user_id"
        " AND ledger_entries.note LIKE 'campaign ' || c.id || ':%')"
        " WHERE kind = 'charge' AND message_id IS NULL AND note LIKE 'campaign %'"
    )
    op.create_index(
        "ix_ledger_entries_campaign_id",
        "ledger_entries",
        ["campaign_id"],
        postgresql_where=CAMPAIGN_WHERE,
        sqlite_where=CAMPAIGN_WHERE,
    )
    op.create_index("ix_messages_status_user_id_id", "messages", ["status", "user_id", "id"])
    op.create_index("ix_messages_to_user_id_id", "messages", ["to", "user_id", "id"])
    op.create_index(
        "ix_messages_campaign_id_id",
        "messages",
        ["campaign_id", "id"],
        postgresql_where=CAMPAIGN_WHERE,
        sqlite_where=CAMPAIGN_WHERE,
    )
    op.create_index(
        "ix_messages_queued_single_updated_at",
        "messages",
        ["updated_at"],
        postgresql_where=QUEUED_SINGLE,
        sqlite_where=QUEUED_SINGLE,
    )
    op.create_index("ix_idempotency_keys_message_id", "idempotency_keys", ["message_id"])
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("purged", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("campaigns") as batch:
        batch.alter_column("purged", server_default=None)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("purged")
    op.drop_index("ix_idempotency_keys_message_id", table_name="idempotency_keys")
    op.drop_index("ix_messages_queued_single_updated_at", table_name="messages")
    op.drop_index("ix_messages_campaign_id_id", table_name="messages")
    op.drop_index("ix_messages_to_user_id_id", table_name="messages")
    op.drop_index("ix_messages_status_user_id_id", table_name="messages")
    op.drop_index("ix_ledger_entries_campaign_id", table_name="ledger_entries")
    # Ledger rows of messages retention deleted would break the foreign key: they stay unlinked.
    op.execute(
        "UPDATE ledger_entries SET message_id = NULL WHERE message_id IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = ledger_entries.message_id)"
    )
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_index("ix_ledger_entries_user_id_id")
        batch.create_index("ix_ledger_entries_user_id", ["user_id"])
        batch.drop_constraint("fk_ledger_entries_campaign_id_campaigns", type_="foreignkey")
        batch.drop_column("campaign_id")
        batch.create_foreign_key(
            "fk_ledger_entries_message_id_messages",
            "messages",
            ["message_id"],
            ["id"],
            ondelete="CASCADE",
        )
    if postgres:
        _widen_ids("integer")


def _id_type(postgres: bool) -> sa.types.TypeEngine:
    return sa.BigInteger() if postgres else sa.Integer()


def _widen_ids(kind: str) -> None:
    """Give every id column, and each table's id sequence, the type `kind`."""
    for table, columns in ID_COLUMNS.items():
        changes = ", ".join(f'ALTER COLUMN "{column}" TYPE {kind}' for column in columns)
        op.execute(f'ALTER TABLE "{table}" {changes}')
        if columns[0] == "id":
            op.execute(f"ALTER SEQUENCE {table}_id_seq AS {kind}")
