"""Releasing a campaign's messages at its sender number's rate.

One dispatcher chain per campaign (`Campaign.pump_chain`) runs `pump` again
and again: each pass takes tokens from the number's Redis bucket, shared by
every worker process and campaign, and releases as many messages to the
`campaign` queue. Between passes it is a short countdown, never a sleeping
worker. A released message whose task was lost is released again, through
the bucket, after `stale_after` seconds; nothing else ever enqueues one.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.db import utcnow
from shared.models import Campaign, Message, PhoneNumber
from shared.pacing import Pacer

# Passes come at most this often; each takes every token the bucket gathered
# since the last one (up to its one-second capacity), so a late pass loses none.
MIN_DELAY = 0.1
# Released messages not yet picked up, above which the pump waits for the workers.
BACKLOG_SECONDS = 2.0
IDLE_DELAY = 1.0
BUSY_DELAY = 0.5
# A campaign waiting for its send_at, or for held messages, passes at least this often:
# below revive_campaigns' silence limit, so its chain is never taken for lost.
HELD_DELAY = 10.0


@dataclass(frozen=True)
class Pass:
    """What one pass did: the ids released, and the delay before the next (None: stop)."""

    released: list[int] = field(default_factory=list)
    delay: float | None = None
    status: str = ""


def pump(
    session_factory: sessionmaker[Session],
    pacer: Pacer,
    *,
    campaign_id: int,
    chain: str,
    stale_after: int,
) -> Pass:
    """Release the messages the number's bucket allows now; commit before they are enqueued."""
    with session_factory() as session:
        row = session.execute(
            select(Campaign, PhoneNumber.number, PhoneNumber.mps)
            .join(PhoneNumber, PhoneNumber.id == Campaign.phone_number_id)
            .where(Campaign.id == campaign_id)
            .with_for_update(of=Campaign, skip_locked=True)
        ).first()
        if row is None:
            # Locked by a cancel or another pass, or gone.
            exists = session.get(Campaign, campaign_id) is not None
            return Pass(delay=BUSY_DELAY if exists else None, status="busy")
        campaign, number, mps = row
        if campaign.status not in ("scheduled", "sending") or campaign.pump_chain != chain:
            return Pass(status=campaign.status)
        now = utcnow()
        campaign.pumped_at = now
        if campaign.status == "scheduled":
            if campaign.send_at is not None and campaign.send_at > now:
                session.commit()
                return Pass(delay=_until(campaign.send_at, now), status="scheduled")
            campaign.status, campaign.updated_at = "sending", now
        wanted = max(1, math.ceil(mps))
        queued = (Message.campaign_id == campaign.id) & (Message.status == "queued")
        # Released: up to the cursor in id order, or (held, then due) released by send_at.
        by_cursor = queued & (Message.id <= campaign.cursor)
        by_time = queued & Message.send_at.is_not(None)
        backlog = session.scalar(select(func.count()).where(by_cursor)) or 0
        backlog += session.scalar(select(func.count()).where(by_time)) or 0
        stale: list[int] = []
        for was_released in (by_cursor, by_time):
            stale += session.scalars(
                select(Message.id)
                .where(
                    was_released,
                    Message.handoff == "pending",
                    Message.updated_at < now - timedelta(seconds=stale_after),
                )
                .order_by(Message.id)
                .limit(wanted - len(stale))
            )
        fresh = list(
            session.scalars(
                select(Message.id)
                .where(queued, Message.id > campaign.cursor, Message.send_at.is_(None))
                .order_by(Message.id)
                .limit(wanted - len(stale))
            )
        )
        due = list(
            session.scalars(
                select(Message.id)
                .where(
                    Message.campaign_id == campaign.id,
                    Message.status == "scheduled",
                    Message.send_at <= now,
                )
                .order_by(Message.send_at, Message.id)
                .limit(wanted - len(stale) - len(fresh))
            )
        )
        if not stale and not fresh and not due:
            held = session.scalar(
                select(func.min(Message.send_at)).where(
                    Message.campaign_id == campaign.id, Message.status == "scheduled"
                )
            )
            if backlog == 0:
                # Messages waiting for a send retry are not handed off yet: the
                # campaign is still sending, and a cancel may still stop them.
                backlog = (
                    session.scalar(
                        select(func.count()).where(
                            Message.campaign_id == campaign.id,
                            Message.status == "sending",
                            Message.sms_sid.is_(None),
                            Message.handoff.in_(("pending", "unknown")),
                        )
                    )
                    or 0
                )
            if backlog == 0 and held is None:
                campaign.status = "completed"
                campaign.updated_at = now
            session.commit()
            if backlog == 0 and held is not None:  # only held messages left: wake when due
                return Pass(delay=_until(held, now), status="held")
            return Pass(delay=None if backlog == 0 else IDLE_DELAY, status=campaign.status)
        if backlog - len(stale) >= max(10, BACKLOG_SECONDS * mps):
            session.commit()
            return Pass(delay=BUSY_DELAY, status="backlog")
        candidates = stale + fresh + due
        grant = pacer.take(number, rate=mps, wanted=len(candidates))
        released = candidates[: grant.granted]
        if released:
            session.execute(
                update(Message)
                # Never a message a worker took meanwhile, or one canceled alone.
                .where(Message.id.in_(released), Message.status.in_(("scheduled", "queued")))
                .values(status="queued", updated_at=now)
                .execution_options(synchronize_session=False)
            )
            held_ones = set(due)
            by_id = [mid for mid in released if mid not in held_ones]
            if by_id:
                campaign.cursor = max(campaign.cursor, *by_id)
        session.commit()
        delay = min(max(grant.wait, MIN_DELAY), IDLE_DELAY)
        return Pass(released=released, delay=delay, status="sending")


def _until(moment: datetime, now: datetime) -> float:
    """Return the delay to the next pass of a campaign waiting for `moment`.

    At most HELD_DELAY, so a pass comes now and then (and revive_campaigns sees
    the chain alive); at least MIN_DELAY.
    """
    return min(HELD_DELAY, max(MIN_DELAY, (moment - now).total_seconds()))


def stalled(
    session_factory: sessionmaker[Session], *, pending_after: int, silent_after: int, limit: int
) -> tuple[list[int], list[tuple[int, str]]]:
    """Return campaigns to expand again and dispatchers to restart, each with a new chain.

    A campaign left `pending` lost its expansion task; one `scheduled` or
    `sending` whose pump has not run for `silent_after` seconds lost its chain. The new chain
    id retires the old one, should it ever come back.
    """
    now = utcnow()
    with session_factory() as session:
        pending = list(
            session.scalars(
                select(Campaign.id)
                .where(
                    Campaign.status == "pending",
                    Campaign.updated_at < now - timedelta(seconds=pending_after),
                )
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        if pending:
            session.execute(update(Campaign).where(Campaign.id.in_(pending)).values(updated_at=now))
        silent = session.scalars(
            select(Campaign)
            .where(
                Campaign.status.in_(("scheduled", "sending")),
                func.coalesce(Campaign.pumped_at, Campaign.updated_at)
                < now - timedelta(seconds=silent_after),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        restarted = []
        for campaign in silent:
            campaign.pump_chain = str(uuid.uuid4())
            campaign.pumped_at = now
            restarted.append((campaign.id, campaign.pump_chain))
        session.commit()
    return pending, restarted
