"""Scheduling: `send_at`, `validity_period`, `valid_until` of messages, a campaign's own.

A `scheduled` single send waits for its `send_at`; the release walks the
partial index of those by `send_at`. A campaign's scheduled messages are
released by its dispatcher, which walks its own index, by campaign. A message
with a validity period must be handed to Twilio before `valid_until`, its send
time plus the period; the expiry walks the partial index of such messages not
yet handed over. A campaign keeps what it was asked for (`send_at`,
`quiet_hours`, `validity_period`). The columns are nullable (no table
rewrite); on PostgreSQL the indexes are built concurrently, so sends go on
while they are.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_messages_scheduled_send_at": (
        ["send_at"],
        "status = 'scheduled' AND campaign_id IS NULL",
    ),
    "ix_messages_campaign_id_scheduled_send_at": (
        ["campaign_id", "send_at", "id"],
        "status = 'scheduled' AND campaign_id IS NOT NULL",
    ),
    # A campaign's released messages that were held: queued, with a send_at.
    "ix_messages_campaign_id_released_id": (
        ["campaign_id", "id"],
        "status = 'queued' AND send_at IS NOT NULL AND campaign_id IS NOT NULL",
    ),
    "ix_messages_waiting_valid_until": (
        ["valid_until"],
        "valid_until IS NOT NULL AND status IN ('scheduled', 'queued')",
    ),
}


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("send_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("validity_period", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("valid_until", sa.DateTime(), nullable=True))
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("send_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("quiet_hours", sa.String(11), nullable=True))
        batch.add_column(sa.Column("validity_period", sa.Integer(), nullable=True))
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, (columns, where) in INDEXES.items():
        if postgresql:
            with op.get_context().autocommit_block():
                op.create_index(
                    name,
                    "messages",
                    columns,
                    postgresql_where=sa.text(where),
                    postgresql_concurrently=True,
                )
        else:
            op.create_index(name, "messages", columns, sqlite_where=sa.text(where))


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="messages")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("validity_period")
        batch.drop_column("quiet_hours")
        batch.drop_column("send_at")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("valid_until")
        batch.drop_column("validity_period")
        batch.drop_column("send_at")
