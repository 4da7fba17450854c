"""Hand-off leases: `messages.lease_until`.

A message `sending` without a SID is spoken for until its lease: the claim's
(one Twilio call and a margin), then its retry's due time. Messages already
waiting get the longest wait of the rules they were claimed under (a retry
countdown of up to 15 minutes), so none is taken over early.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("lease_until", sa.DateTime(), nullable=True))
    later = (
        "updated_at + interval '16 minutes'"
        if op.get_bind().dialect.name == "postgresql"
        else "datetime(updated_at, '+16 minutes')"
    )
    op.execute(
        f"UPDATE messages SET lease_until = {later}"
        " WHERE status = 'sending' AND sms_sid IS NULL AND handoff <> 'done'"
    )


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("lease_until")
