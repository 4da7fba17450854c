"""Admin tokens: who may call the operator API (`/api/admin/...`).

Kept apart from users' tokens in every way: their own table, their own
lookup, their own routes. A user token is unknown here and an admin token is
unknown to `/api/user/...`, so each is a 401 on the other's routes. A revoked
admin token has no row: the next request with it is a 401 in every process.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from shared.accounts import USE_RESOLUTION, AccountError, NotFound, hash_token
from shared.db import utcnow
from shared.models import AdminToken

PREFIX = "admin_"


def create_admin_token(session: Session, *, name: str) -> tuple[AdminToken, str]:
    """Create an admin token named for who uses it; return it with its text (shown once)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise AccountError("the name must be 1 to 100 characters")
    token = PREFIX + secrets.token_urlsafe(32)
    row = AdminToken(name=name, token_hash=hash_token(token))
    session.add(row)
    session.flush()
    return row, token


def revoke_admin_token(session: Session, *, token_id: int) -> None:
    """Delete an admin token: its next request is a 401."""
    row = session.get(AdminToken, token_id)
    if row is None:
        raise NotFound("admin token", token_id)
    session.delete(row)
    session.flush()


def admin_for_token(session: Session | Connection, token: str) -> int | None:
    """Return the id of the admin token, or None; note its use, to the minute."""
    if not token:
        return None
    row = session.execute(
        select(AdminToken.id, AdminToken.last_used_at).where(
            AdminToken.token_hash == hash_token(token)
        )
    ).first()
    if row is None:
        return None
    now: datetime = utcnow()
    if row.last_used_at is None or row.last_used_at < now - USE_RESOLUTION:
        session.execute(update(AdminToken).where(AdminToken.id == row.id).values(last_used_at=now))
    return row.id
