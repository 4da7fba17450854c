"""The migrations: they build exactly the models' schema, and 0005 keeps a populated database."""

from __future__ import annotations

from decimal import Decimal

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError

from shared.db import Base, make_engine
from shared.migrate import alembic_config, upgrade
from tests.conftest import DATABASE_URL

ID_COLUMNS = {
    "messages": ("id", "user_id", "phone_number_id", "campaign_id"),
    "ledger_entries": ("id", "user_id", "message_id", "campaign_id"),
    "user_callbacks": ("id", "user_id", "message_id"),
    "twilio_events": ("id", "message_id"),
    "campaigns": ("id", "cursor"),
    "users": ("id",),
}


def test_the_migrated_schema_is_the_models_schema(engine):
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


@pytest.fixture
def scratch_url():
    """A database of its own, for migrating step by step."""
    url = f"{DATABASE_URL}_mig"
    name = make_url(url).database
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


POPULATE = """
INSERT INTO users (id, email, balance, webhook_secret, created_at)
    VALUES (1, 'ann@example.com', 9.9763, 's', now());
INSERT INTO phone_numbers (id, user_id, number, sms_capable, mps, created_at)
    VALUES (1, 1, '+15005550006', true, 1, now());
INSERT INTO campaigns (id, user_id, phone_number_id, body, status, total, accepted, rejected,
    duplicates, rejections, total_cost, cursor, created_at, updated_at)
    VALUES (1, 1, 1, 'Hi', 'completed', 2, 2, 0, 0, '[]', 0.0158, 3, now(), now());
INSERT INTO messages (id, user_id, phone_number_id, from_number, "to", body, segments, encoding,
    segment_price, total_cost, status, handoff, attempts, campaign_id, created_at, updated_at)
    SELECT g, 1, 1, '+15005550006', '+1415555' || lpad(g::text, 4, '0'), 'Hi', 1, 'GSM-7',
        0.0079, 0.0079, CASE WHEN g = 3 THEN 'failed' ELSE 'delivered' END, 'done', 1,
        CASE WHEN g > 1 THEN 1 END, now(), now()
    FROM generate_series(1, 3) g;
INSERT INTO ledger_entries (user_id, amount, kind, message_id, note, created_at) VALUES
    (1, 10, 'topup', NULL, 'opening balance', now()),
    (1, -0.0079, 'charge', 1, NULL, now()),
    (1, -0.0158, 'charge', NULL, 'campaign 1: 2 messages', now()),
    (1, 0.0079, 'refund', 3, 'failed: 30008', now()),
    (1, -0.0079, 'charge', NULL, 'a charge that names no campaign', now());
SELECT setval('messages_id_seq', 3); SELECT setval('ledger_entries_id_seq', 5);
"""


def test_0005_widens_ids_and_keeps_a_populated_database(scratch_url):
    upgrade(scratch_url, "0004")
    engine = make_engine(scratch_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(POPULATE)
    upgrade(scratch_url)
    with engine.connect() as conn:
        types = dict(
            conn.execute(
                text(
                    "SELECT table_name || '.' || column_name, data_type"
                    " FROM information_schema.columns WHERE table_schema = 'public'"
                )
            ).all()
        )
        for table, columns in ID_COLUMNS.items():
            for column in columns:
                assert types[f"{table}.{column}"] == "bigint", f"{table}.{column}"
        sequences = dict(
            conn.execute(text("SELECT sequencename, max_value FROM pg_sequences")).all()
        )
        assert sequences["messages_id_seq"] == 2**63 - 1
        assert sequences["ledger_entries_id_seq"] == 2**63 - 1
        assert conn.scalar(text("SELECT count(*) FROM messages")) == 3
        ledger = conn.execute(
            text("SELECT kind, message_id, campaign_id, amount FROM ledger_entries ORDER BY id")
        ).all()
        assert [tuple(row) for row in ledger] == [
            ("topup", None, None, Decimal("10.0000")),
            ("charge", 1, None, Decimal("-0.0079")),
            ("charge", None, 1, Decimal("-0.0158")),
            ("refund", 3, 1, Decimal("0.0079")),
            ("charge", None, None, Decimal("-0.0079")),
        ]
        assert conn.scalar(text("SELECT purged FROM campaigns")) == {}
        # Ledger rows outlive their messages.
        conn.execute(text("DELETE FROM messages WHERE id = 3"))
        assert conn.scalar(text("SELECT count(*) FROM ledger_entries")) == 5
        conn.commit()
    # Down and up again: the downgrade unlinks the ledger row of the deleted message.
    command.downgrade(alembic_config(scratch_url), "0004")
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT message_id FROM ledger_entries WHERE id = 4")) is None
    upgrade(scratch_url)
    with engine.begin() as conn:
        conn.execute(text(f"SELECT setval('messages_id_seq', {2**40})"))
        assert conn.scalar(text("SELECT nextval('messages_id_seq')")) == 2**40 + 1
    # Once ids are past 2**31 there is no way back to 32 bits.
    with pytest.raises(DataError):
        command.downgrade(alembic_config(scratch_url), "0004")
    engine.dispose()
