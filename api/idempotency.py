"""Idempotency-Key: a repeated request gets the first answer and costs nothing more."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import request
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from api.errors import ApiError
from shared.models import IdempotencyKey

HEADER = "Idempotency-Key"
REUSED = "Idempotency-Key reused with a different request"


def request_key() -> str | None:
    """Return the request's Idempotency-Key, checked for length, or None."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255:
        raise ApiError(400, "The Idempotency-Key header must be 1 to 255 characters")
    return key


def fingerprint(data: dict[str, Any]) -> str:
    """Return a hash of the request body that ignores key order and spacing."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay(session: Session, *, user_id: int, key: str, digest: str) -> tuple[dict, int] | None:
    """Return the stored answer for this key, None if unseen, or 409 for another body."""
    row = session.scalar(
        select(IdempotencyKey).where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
    )
    if row is None:
        return None
    if row.request_hash != digest:
        raise ApiError(409, REUSED)
    return row.response, row.status_code


def remember(
    session: Session, *, user_id: int, key: str, digest: str, answer: dict, message_id: int
) -> None:
    """Store the answer in the same transaction as the message it describes."""
    session.add(
        IdempotencyKey(
            user_id=user_id,
            key=key,
            request_hash=digest,
            status_code=201,
            response=answer,
            message_id=message_id,
        )
    )


def forget(session: Session, *, message_id: int) -> None:
    """Drop the key of a message that could not be queued, so a retry may try again."""
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.message_id == message_id))
