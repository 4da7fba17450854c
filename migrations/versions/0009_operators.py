"""The operator API: admin tokens, operator idempotency keys, token use, removed numbers.

`admin_tokens` are the operator API's bearer tokens, apart from users' tokens
in every way. `operator_requests` keeps the first answer of each operator
POST with an Idempotency-Key. `api_tokens.last_used_at` is written at most
once a minute per token, in the statement that looks it up. A removed number
keeps its row (`phone_numbers.removed_at`): its messages, campaigns and
inbound messages still name it. All added columns are nullable: no rewrite.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "admin_tokens",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_admin_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_admin_tokens_token_hash"),
    )
    op.create_table(
        "operator_requests",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_operator_requests"),
        sa.UniqueConstraint("key", name="uq_operator_requests_key"),
    )
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("last_used_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("phone_numbers") as batch:
        batch.add_column(sa.Column("removed_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("phone_numbers") as batch:
        batch.drop_column("removed_at")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("last_used_at")
    op.drop_table("operator_requests")
    op.drop_table("admin_tokens")
