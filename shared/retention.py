"""Retention: delete final messages and inbound messages older than the period.

Each batch is its own short transaction: it locks up to `batch` final
messages (`SKIP LOCKED`, so a row a callback or a worker holds is left for
the next run), adds them to their campaigns' `purged` counts, and deletes
them with what hangs on them (Twilio events, user callbacks, idempotency
keys). It never touches a balance or a ledger row, so the ledger still sums
to every balance, and a send never waits for it: sends lock their payer and
write new rows, and a batch holds only old, final messages and, for a
moment, their campaigns. A message whose status callback to the user is
still being retried is kept until that ends.

Inbound messages go by `received_at`, after the messages and in batches of
their own the same way, with their forwards; one whose forward is still being
retried is kept until that ends too.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.db import utcnow
from shared.messaging import FINAL
from shared.models import Campaign, InboundMessage, Message, UserCallback

log = logging.getLogger(__name__)
BATCH = 1000


@dataclass
class Purged:
    """What one run deleted: messages and inbound messages, and how many per batch.

    `deleted` counts both; `inbound` the inbound messages among them. Each
    batch is one transaction.
    """

    deleted: int = 0
    batches: list[int] = field(default_factory=list)
    inbound: int = 0


def purge(
    session_factory: sessionmaker[Session],
    *,
    retention_days: int,
    batch: int = BATCH,
    max_seconds: float | None = None,
    now: datetime | None = None,
) -> Purged:
    """Delete final messages, then inbound messages, older than `retention_days`; 0 keeps all.

    Each kind goes batch by batch until a batch finds fewer than `batch`
    rows; the run stops after `max_seconds` (the next run goes on from there).
    """
    result = Purged()
    if retention_days <= 0:
        return result
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    if _purge_all(session_factory, _purge_batch, cutoff, batch, deadline, result) is not None:
        inbound = _purge_all(session_factory, _purge_inbound_batch, cutoff, batch, deadline, result)
        result.inbound = inbound or 0
    if deadline is not None and time.monotonic() > deadline:
        log.info("purge: stopped after %.0f s, the next run goes on", max_seconds)
    if result.deleted:
        log.info(
            "purge: deleted %d messages and inbound messages older than %d days",
            result.deleted,
            retention_days,
            extra={"deleted": result.deleted, "inbound": result.inbound},
        )
    return result


def _purge_all(
    session_factory: sessionmaker[Session],
    purge_batch: Callable[..., int],
    cutoff: datetime,
    batch: int,
    deadline: float | None,
    result: Purged,
) -> int | None:
    """Run one kind's batches until one comes short; return how many, None if out of time."""
    deleted = 0
    while True:
        with session_factory() as session:
            count = purge_batch(session, cutoff=cutoff, batch=batch)
            session.commit()
        if count:
            deleted += count
            result.deleted += count
            result.batches.append(count)
            log.debug("purge: deleted %d rows", count, extra={"deleted": result.deleted})
        if count < batch:
            return deleted
        if deadline is not None and time.monotonic() > deadline:
            return None


def _purge_batch(session: Session, *, cutoff: datetime, batch: int) -> int:
    """Delete one batch of old final messages, keeping their campaigns' totals; flush only."""
    callback_pending = exists().where(
        and_(
            UserCallback.message_id == Message.id,
            UserCallback.delivered_at.is_(None),
            UserCallback.gave_up_at.is_(None),
        )
    )
    rows = session.execute(
        select(Message.id, Message.campaign_id, Message.status)
        .where(
            Message.status.in_(sorted(FINAL)),
            Message.updated_at < cutoff,
            ~callback_pending,
        )
        .limit(batch)
        .with_for_update(of=Message, skip_locked=True)
    ).all()
    if not rows:
        return 0
    tallies: dict[int, Counter[str]] = {}
    for row in rows:
        if row.campaign_id is not None:
            tallies.setdefault(row.campaign_id, Counter())[row.status] += 1
    for campaign_id in sorted(tallies):  # in id order, so two runs never deadlock
        purged = session.scalar(
            select(Campaign.purged).where(Campaign.id == campaign_id).with_for_update()
        )
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            # Not a change of the campaign: its `updated_at` stays.
            .values(
                purged=dict(Counter(purged or {}) + tallies[campaign_id]),
                updated_at=Campaign.updated_at,
            )
        )
    session.execute(
        delete(Message)
        .where(Message.id.in_([row.id for row in rows]))
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return len(rows)


def _purge_inbound_batch(session: Session, *, cutoff: datetime, batch: int) -> int:
    """Delete one batch of old inbound messages, with their forwards; flush only."""
    forward_pending = exists().where(
        and_(
            UserCallback.inbound_message_id == InboundMessage.id,
            UserCallback.delivered_at.is_(None),
            UserCallback.gave_up_at.is_(None),
        )
    )
    ids = list(
        session.scalars(
            select(InboundMessage.id)
            .where(InboundMessage.received_at < cutoff, ~forward_pending)
            .limit(batch)
            .with_for_update(of=InboundMessage, skip_locked=True)
        )
    )
    if not ids:
        return 0
    session.execute(
        delete(InboundMessage)
        .where(InboundMessage.id.in_(ids))
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return len(ids)
