"""delivery: Twilio status events and the user-callback outbox

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "twilio_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=128), nullable=True),
        sa.Column("sid", sa.String(length=34), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_twilio_events_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_twilio_events")),
        sa.UniqueConstraint("sid", "status", name=op.f("uq_twilio_events_sid")),
        sa.UniqueConstraint("token", name=op.f("uq_twilio_events_token")),
    )
    op.create_index(
        op.f("ix_twilio_events_message_id"), "twilio_events", ["message_id"], unique=False
    )
    op.create_table(
        "user_callbacks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("enqueued_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.Column("gave_up_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_user_callbacks_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_callbacks_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_callbacks")),
        sa.UniqueConstraint("event_id", name=op.f("uq_user_callbacks_event_id")),
    )
    op.create_index(
        op.f("ix_user_callbacks_message_id"), "user_callbacks", ["message_id"], unique=False
    )
    op.create_index(
        "ix_user_callbacks_next_attempt_at", "user_callbacks", ["next_attempt_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_user_callbacks_next_attempt_at", table_name="user_callbacks")
    op.drop_index(op.f("ix_user_callbacks_message_id"), table_name="user_callbacks")
    op.drop_table("user_callbacks")
    op.drop_index(op.f("ix_twilio_events_message_id"), table_name="twilio_events")
    op.drop_table("twilio_events")
