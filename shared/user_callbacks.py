"""Status callbacks to users: the outbox row, its signature and one delivery attempt.

A status change writes its outbox row in the same transaction (`emit`), so an
event exists exactly when the change does. Delivery is at least once: an
attempt claims the row for a lease, posts the signed JSON and records the
outcome; a failure schedules the next attempt with exponential backoff and
jitter until 24 hours after the event, after which the event is given up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import requests
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.callback_urls import check_callback_url
from shared.db import utcnow
from shared.errors import Rejected
from shared.models import Message, User, UserCallback

log = logging.getLogger(__name__)
GIVE_UP_AFTER = timedelta(hours=24)
BACKOFF_BASE_SECONDS = 5.0
BACKOFF_MAX_SECONDS = 60 * 60.0
POST_TIMEOUT_SECONDS = 10.0
# An attempt holds its row this long, longer than any post can take.
LEASE = timedelta(seconds=60)
# Stored times have whole seconds; a countdown may end just before one. Kept
# below the shortest backoff, so an early or duplicate task never posts early.
CLOCK_SLACK = timedelta(seconds=1)
# A row enqueued this long ago without being attempted is enqueued again.
ENQUEUE_LEASE = timedelta(minutes=5)


@dataclass(frozen=True)
class Attempt:
    """What one attempt did: `delivered`, `retry` (with its delay), `gave_up` or `skipped`."""

    kind: str
    delay: float = 0.0
    error: str | None = None


def emit(session: Session, *, message: Message, enqueue: bool = True) -> int | None:
    """Write the outbox row for the message's current status; None if it has no callback.

    With `enqueue` the caller promises to enqueue its delivery after the commit;
    without it the row is left for the beat sweeper.
    """
    if not message.status_callback:
        return None
    now = utcnow()
    event_id = str(uuid.uuid4())
    payload = {
        "event_id": event_id,
        "id": message.id,
        "status": message.status,
        "sms_sid": message.sms_sid,
        "error_code": message.error_code,
        "campaign_id": getattr(message, "campaign_id", None),
        "reference": getattr(message, "reference", None),
        "occurred_at": now.strftime("%Y-%m-%d %H:%M:%S"),
    }
    row = UserCallback(
        event_id=event_id,
        user_id=message.user_id,
        message_id=message.id,
        url=message.status_callback,
        payload=payload,
        next_attempt_at=now,
        enqueued_at=now if enqueue else None,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row.id


def body_bytes(payload: dict[str, Any]) -> bytes:
    """Return the exact bytes posted, and signed, for a payload."""
    return json.dumps(payload, separators=(",", ":")).encode()


def signature(secret: str, body: bytes) -> str:
    """Return the `X-Signature` header value: `sha256=` and the hex HMAC of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff(attempts: int) -> float:
    """Return the delay before the next attempt: exponential, full jitter, capped at an hour."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0))
    return random.uniform(ceiling / 2, ceiling)


def attempt(
    session_factory: sessionmaker[Session],
    *,
    callback_id: int,
    allow_private: bool = False,
    http: Any = requests,
) -> Attempt:
    """Post one due outbox row to the user's URL and record what happened.

    The URL is checked again before each post: a name that resolved to a
    public address when the message was sent may point inward by now.
    """
    now = utcnow()
    with session_factory() as session:
        claimed = session.execute(
            update(UserCallback)
            .where(
                UserCallback.id == callback_id,
                UserCallback.next_attempt_at <= now + CLOCK_SLACK,
                UserCallback.delivered_at.is_(None),
                UserCallback.gave_up_at.is_(None),
            )
            .values(
                next_attempt_at=now + LEASE,
                enqueued_at=None,
                attempts=UserCallback.attempts + 1,
            )
            .returning(
                UserCallback.url,
                UserCallback.payload,
                UserCallback.attempts,
                UserCallback.created_at,
                UserCallback.user_id,
            )
        ).first()
        secret = None
        if claimed is not None:
            secret = session.scalar(select(User.webhook_secret).where(User.id == claimed.user_id))
        session.commit()
    if claimed is None or secret is None:
        return Attempt("skipped")
    body = body_bytes(claimed.payload)
    headers = {
        "Content-Type": "application/json",
        "X-Signature": signature(secret, body),
        "User-Agent": "smsgw-callbacks/1",
    }
    error = None
    try:
        check_callback_url(claimed.url, allow_private=allow_private)
        response = http.post(
            claimed.url,
            data=body,
            headers=headers,
            timeout=POST_TIMEOUT_SECONDS,
            allow_redirects=False,
        )
        if not 200 <= response.status_code < 300:
            error = f"HTTP {response.status_code}"
    except Rejected as rejected:
        error = rejected.message
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}"
    return _record(session_factory, callback_id, claimed.attempts, claimed.created_at, error)


def _record(
    session_factory: sessionmaker[Session],
    callback_id: int,
    attempts: int,
    created_at: datetime,
    error: str | None,
) -> Attempt:
    now = utcnow()
    values: dict[str, Any]
    if error is None:
        values, outcome = {"delivered_at": now, "next_attempt_at": None, "last_error": None}, None
        result = Attempt("delivered")
    else:
        delay = backoff(attempts)
        if now + timedelta(seconds=delay) > created_at + GIVE_UP_AFTER:
            values = {"gave_up_at": now, "next_attempt_at": None, "last_error": error}
            result = Attempt("gave_up", error=error)
        else:
            values = {"next_attempt_at": now + timedelta(seconds=delay), "last_error": error}
            result = Attempt("retry", delay=delay, error=error)
        outcome = error
    with session_factory() as session:
        session.execute(update(UserCallback).where(UserCallback.id == callback_id).values(**values))
        session.commit()
    log.info("user callback %s: attempt %d %s", callback_id, attempts, outcome or "delivered")
    return result


def mark_enqueued(session_factory: sessionmaker[Session], *, callback_id: int) -> None:
    """Note that a task was enqueued for the row, so the sweeper leaves it alone a while."""
    with session_factory() as session:
        session.execute(
            update(UserCallback).where(UserCallback.id == callback_id).values(enqueued_at=utcnow())
        )
        session.commit()


def due(session_factory: sessionmaker[Session], *, limit: int) -> list[int]:
    """Return ids of rows due and not enqueued recently, marking them enqueued.

    An enqueue lost between a commit and the broker, or a task lost with its
    worker, leaves its row due; this is what finds it again.
    """
    now = utcnow()
    with session_factory() as session:
        ids = list(
            session.scalars(
                select(UserCallback.id)
                .where(
                    UserCallback.next_attempt_at <= now,
                    or_(
                        UserCallback.enqueued_at.is_(None),
                        UserCallback.enqueued_at < now - ENQUEUE_LEASE,
                    ),
                )
                .order_by(UserCallback.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        if ids:
            session.execute(
                update(UserCallback).where(UserCallback.id.in_(ids)).values(enqueued_at=now)
            )
        session.commit()
    return ids
