"""Two-way messaging and the account: inbound messages, events, references, test mode.

- `inbound_messages`: every message recipients send to a user's number, once
  per Twilio SID; `phone_numbers.inbound_url` forwards them, through the same
  outbox as status callbacks (`user_callbacks.inbound_message_id`; its
  `message_id` becomes nullable).
- `message_events`: every status a message took. Triggers on `messages` write
  them in the statement that inserts a message or changes its status, so no
  code path can miss one and none costs a round trip: on PostgreSQL a
  statement-level trigger for inserts (one INSERT ... SELECT per statement,
  however many rows a campaign writes) and a row trigger for status changes,
  guarded by a WHEN clause so other updates (leases, SIDs) pay nothing. On
  SQLite (`smsgw dev`) row triggers do the same; a later batch migration that
  copies `messages` there must create them again.
- `messages.reference` (the caller's own text, a list filter) and `mode`
  (`live` or `test`), `api_tokens.mode`, and a campaign's `reference`,
  `smart_encoding` and `mode`; an index of the ledger by kind, for the
  transactions list. Added columns are nullable or have a constant
  default: PostgreSQL adds them without rewriting the table; the indexes on
  `messages` and the ledger are built concurrently, so sends go on while they are.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_messages_test_user_id_id": ("messages", ["user_id", "id"], "mode = 'test'"),
    "ix_messages_reference_user_id_id": (
        "messages",
        ["reference", "user_id", "id"],
        "reference IS NOT NULL",
    ),
    # The ledger through the API, filtered by kind, by cursor.
    "ix_ledger_entries_kind_user_id_id": ("ledger_entries", ["kind", "user_id", "id"], None),
}

# The time of a status change: the message's own `updated_at` when the change set
# it, else the database's clock (a statement that moved the status without it).
POSTGRESQL_TRIGGERS = """
CREATE FUNCTION message_events_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_events (message_id, status, error_code, occurred_at)
    SELECT id, status, error_code, created_at FROM inserted ORDER BY id;
    RETURN NULL;
END $$;

CREATE FUNCTION message_events_on_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_events (message_id, status, error_code, occurred_at)
    VALUES (NEW.id, NEW.status, NEW.error_code,
            CASE WHEN NEW.updated_at IS DISTINCT FROM OLD.updated_at THEN NEW.updated_at
                 ELSE date_trunc('second', clock_timestamp() AT TIME ZONE 'UTC') END);
    RETURN NULL;
END $$;

CREATE TRIGGER message_events_insert AFTER INSERT ON messages
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION message_events_on_insert();

CREATE TRIGGER message_events_status AFTER UPDATE OF status ON messages
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION message_events_on_status();
"""

SQLITE_TRIGGERS = [
    """
    CREATE TRIGGER message_events_insert AFTER INSERT ON messages BEGIN
        INSERT INTO message_events (message_id, status, error_code, occurred_at)
        VALUES (NEW.id, NEW.status, NEW.error_code, NEW.created_at);
    END
    """,
    """
    CREATE TRIGGER message_events_status AFTER UPDATE OF status ON messages
    WHEN OLD.status IS NOT NEW.status BEGIN
        INSERT INTO message_events (message_id, status, error_code, occurred_at)
        VALUES (NEW.id, NEW.status, NEW.error_code,
                CASE WHEN NEW.updated_at IS NOT OLD.updated_at THEN NEW.updated_at
                     ELSE strftime('%Y-%m-%d %H:%M:%S', 'now') END);
    END
    """,
]


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column(
            "user_id",
            sa.BigInteger(),
            sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_inbound_messages_user_id_users"),
            nullable=False,
        ),
        sa.Column(
            "phone_number_id",
            sa.BigInteger(),
            sa.ForeignKey(
                "phone_numbers.id", name="fk_inbound_messages_phone_number_id_phone_numbers"
            ),
            nullable=False,
        ),
        sa.Column("from_number", sa.String(32), nullable=False),
        sa.Column("to", sa.String(20), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("sms_sid", sa.String(34), nullable=False),
        sa.Column("keyword", sa.String(8), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_inbound_messages"),
        sa.UniqueConstraint("sms_sid", name="uq_inbound_messages_sms_sid"),
    )
    op.create_index("ix_inbound_messages_user_id_id", "inbound_messages", ["user_id", "id"])
    op.create_index(
        "ix_inbound_messages_phone_number_id_id", "inbound_messages", ["phone_number_id", "id"]
    )
    op.create_index(
        "ix_inbound_messages_from_number_user_id_id",
        "inbound_messages",
        ["from_number", "user_id", "id"],
    )
    op.create_index("ix_inbound_messages_received_at", "inbound_messages", ["received_at"])

    op.create_table(
        "message_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column(
            "message_id",
            sa.BigInteger(),
            sa.ForeignKey(
                "messages.id", ondelete="CASCADE", name="fk_message_events_message_id_messages"
            ),
            nullable=False,
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_message_events"),
    )
    op.create_index("ix_message_events_message_id_id", "message_events", ["message_id", "id"])

    with op.batch_alter_table("user_callbacks") as batch:
        batch.alter_column("message_id", existing_type=sa.BigInteger(), nullable=True)
        batch.add_column(
            sa.Column(
                "inbound_message_id",
                sa.BigInteger(),
                sa.ForeignKey(
                    "inbound_messages.id",
                    ondelete="CASCADE",
                    name="fk_user_callbacks_inbound_message_id_inbound_messages",
                ),
                nullable=True,
            )
        )
        batch.create_index("ix_user_callbacks_inbound_message_id", ["inbound_message_id"])
    with op.batch_alter_table("phone_numbers") as batch:
        batch.add_column(sa.Column("inbound_url", sa.Text(), nullable=True))
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("mode", sa.String(4), nullable=False, server_default="live"))
    with op.batch_alter_table("campaigns") as batch:
        batch.add_column(sa.Column("reference", sa.String(255), nullable=True))
        batch.add_column(
            sa.Column("smart_encoding", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("mode", sa.String(4), nullable=False, server_default="live"))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("reference", sa.String(255), nullable=True))
        batch.add_column(sa.Column("mode", sa.String(4), nullable=False, server_default="live"))

    for name, (table, columns, where) in INDEXES.items():
        condition = sa.text(where) if where else None
        if postgresql:
            with op.get_context().autocommit_block():
                op.create_index(
                    name,
                    table,
                    columns,
                    postgresql_where=condition,
                    postgresql_concurrently=True,
                )
        else:
            op.create_index(name, table, columns, sqlite_where=condition)

    if postgresql:
        op.execute(POSTGRESQL_TRIGGERS)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER message_events_status ON messages")
        op.execute("DROP TRIGGER message_events_insert ON messages")
        op.execute("DROP FUNCTION message_events_on_status()")
        op.execute("DROP FUNCTION message_events_on_insert()")
    else:
        op.execute("DROP TRIGGER message_events_status")
        op.execute("DROP TRIGGER message_events_insert")
    for name, (table, _columns, _where) in INDEXES.items():
        op.drop_index(name, table_name=table)
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("mode")
        batch.drop_column("reference")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("mode")
        batch.drop_column("smart_encoding")
        batch.drop_column("reference")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("mode")
    with op.batch_alter_table("phone_numbers") as batch:
        batch.drop_column("inbound_url")
    with op.batch_alter_table("user_callbacks") as batch:
        batch.drop_index("ix_user_callbacks_inbound_message_id")
        batch.drop_column("inbound_message_id")
        batch.alter_column("message_id", existing_type=sa.BigInteger(), nullable=False)
    op.drop_table("message_events")
    op.drop_table("inbound_messages")
