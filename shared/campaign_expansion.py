"""Expanding a campaign: from raw recipients to charged, queued messages, in one transaction.

Recipients are read in chunks of `CHUNK` rows; each chunk is rendered,
validated and priced with the single-send rules while a writer thread
copies the previous one into the messages, all in one transaction that
holds the campaign's row lock. A unique index on (campaign_id, to) keeps the
first row of each recipient, and one conditional update charges the whole
campaign at the end: memory is bounded by the chunk, the charge is all or
nothing, and the database works on one core while Python checks on the other.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    DateTime,
    Integer,
    Numeric,
    String,
    Text,
    column,
    delete,
    func,
    select,
    table,
    text,
)
from sqlalchemy.orm import Session, sessionmaker

from shared import billing
from shared.campaigns import bulk_write
from shared.db import utcnow
from shared.messaging import MAX_BODY_CHARS, Rejected, is_unicode_text, parse_to, sender_number
from shared.models import Campaign, CampaignRecipient, Message, OptOut, Price
from shared.money import cost
from shared.scheduling import Schedule, parse_quiet_hours, timing
from shared.segments import count_segments
from shared.smart_encoding import replace as smart_encode
from shared.templates import MissingVariable, Template, TemplateError, parse_template

log = logging.getLogger(__name__)
CHUNK = 5000
# Below this many rows the pool is not worth the pickling; chunks screened ahead of use.
POOL_MIN_ROWS = 20_000
POOL_AHEAD = 3
SHOWN_REJECTIONS = 100
_STAGE = "campaign_expansion"
_STAGE_COLUMNS = (
    "idx",
    "to",
    "body",
    "segments",
    "encoding",
    "segment_price",
    "total_cost",
    "status",
    "send_at",
    "valid_until",
)
_STAGE_TYPES: tuple[Any, ...] = (
    Integer,
    String,
    Text,
    Integer,
    String,
    Numeric(14, 4),
    Numeric(14, 4),
    String,
    DateTime,
    DateTime,
)
_STAGE_TABLE = table(
    _STAGE, *(column(name, kind) for name, kind in zip(_STAGE_COLUMNS, _STAGE_TYPES, strict=True))
)


def screen(
    template_text: str, rows: Sequence[tuple[int, str, str]], smart_encoding: bool = False
) -> tuple[list, list]:
    """Render and check a chunk without the database: the part worth a second core.

    Returns rows `(idx, to, body, segments, encoding, region, raw_to)` and rejections.
    """
    template = _template(template_text)
    good: list[tuple] = []
    bad: list[dict] = []
    for idx, to, values in rows:
        try:
            body = render_body(template, json.loads(values), smart_encoding)
            recipient, region = parse_to(to)
        except Rejected as rejection:
            bad.append({"index": idx, "to": to, "message": rejection.message})
            continue
        count = count_segments(body)
        good.append((idx, recipient, body, count.segments, count.encoding, region, to))
    return good, bad


@lru_cache(maxsize=8)
def _template(text: str) -> Template:
    return parse_template(text)


def warm_up() -> None:
    """Load the phone metadata a campaign needs (in a pool process, before the first one)."""
    screen("{a}", [(0, "+14155550123", '{"a": "x"}'), (1, "+442079460000", '{"a": "x"}')])


class RecipientChecker:
    """The checks of a recipient that need the database: price and opt-out, cached."""

    def __init__(self, session: Session, *, user_id: int) -> None:
        self._session = session
        self._user_id = user_id
        self._prices: dict[str, Decimal | None] = {}

    def price(self, region: str) -> Decimal | None:
        """Return the segment price of a country, or None where it is not supported."""
        if region not in self._prices:
            self._prices[region] = self._session.scalar(
                select(Price.price).where(Price.country == region)
            )
        return self._prices[region]

    def opted_out(self, numbers: list[str]) -> set[str]:
        """Return those of `numbers` that texted STOP to one of the user's numbers."""
        if not numbers:
            return set()
        return set(
            self._session.scalars(
                select(OptOut.number).where(
                    OptOut.user_id == self._user_id, OptOut.number.in_(set(numbers))
                )
            )
        )


def render_body(template: Template, values: dict, smart_encoding: bool = False) -> str:
    """Render one row's body, rejecting it with the single-send body messages.

    With `smart_encoding` the checked text is then Smart-Encoded, as a single send's is.
    """
    try:
        body = template.render(values)
    except MissingVariable as missing:
        raise Rejected(f"Missing template variable {missing.name}") from None
    if not body.strip():
        raise Rejected("The body field is required")
    if len(body) > MAX_BODY_CHARS:
        raise Rejected(f"The body field must not be greater than {MAX_BODY_CHARS} characters")
    if "\x00" in body:
        raise Rejected("The body field must not contain NUL characters")
    if not is_unicode_text(body):
        raise Rejected("The body field must be valid Unicode text")
    if smart_encoding:
        body = smart_encode(body)
        if not body.strip():
            raise Rejected("The body field is required")
    return body


def expand_campaign(
    session_factory: sessionmaker[Session],
    *,
    campaign_id: int,
    chunk: int = CHUNK,
    executor: Executor | None = None,
) -> tuple[str, str | None]:
    """Expand a `pending` campaign once; return its status and the dispatcher chain to start.

    The chain is None unless this call moved the campaign to `sending`: a
    repeated call never starts a second dispatcher. With a process pool,
    large campaigns are screened there, on the other cores.
    """
    with session_factory() as session, session_factory() as reader:
        campaign = session.get(Campaign, campaign_id, with_for_update=True)
        if campaign is None:
            return "gone", None
        if campaign.status != "pending":
            _drop_recipients(session, campaign_id)
            session.commit()
            return campaign.status, None
        try:
            number = sender_number(
                session,
                user_id=campaign.user_id,
                phone_number_id=campaign.phone_number_id,
                now=utcnow(),
            )
            parse_template(campaign.body)
        except (Rejected, TemplateError) as error:
            reason = error.message if isinstance(error, Rejected) else str(error)
            return _finish_failed(session, campaign, reason), None
        writer = _Writer(session, campaign, number.number)
        checker = RecipientChecker(reader, user_id=campaign.user_id)
        schedule, now = campaign_schedule(campaign), utcnow()
        valid = rejected = accepted = 0
        shown: list[dict] = []
        with ThreadPoolExecutor(1, thread_name_prefix="expand") as pool:
            pending: deque[Future[int]] = deque()
            for screened, last in _screened(reader, campaign, chunk, executor):
                good, bad = _price(screened, checker)
                good = _timed(good, schedule, now)
                valid, rejected = valid + len(good), rejected + len(bad)
                if len(shown) < SHOWN_REJECTIONS:
                    shown.extend(bad[: SHOWN_REJECTIONS - len(shown)])
                # The writer owns `session` until every future is done.
                pending.append(pool.submit(writer.write, good, last))
                while len(pending) > 1:
                    accepted += pending.popleft().result()
            while pending:
                accepted += pending.popleft().result()
        reader.rollback()
        writer.close()
        total_cost = Decimal(
            session.scalar(  # type: ignore[arg-type]
                select(func.coalesce(func.sum(Message.total_cost), 0)).where(
                    Message.campaign_id == campaign.id
                )
            )
        )
        tallies = (accepted, rejected, valid - accepted, shown)
        _record(campaign, tallies)
        if accepted:
            try:
                _charge(session, campaign, total_cost, accepted)
            except billing.InsufficientBalance:
                session.rollback()
                campaign = session.get(Campaign, campaign_id, with_for_update=True)
                assert campaign is not None
                _record(campaign, tallies)
                return _finish_failed(session, campaign, "Insufficient balance"), None
        campaign.total_cost = total_cost
        waits = campaign.send_at is not None and campaign.send_at > utcnow()
        campaign.status = ("scheduled" if waits else "sending") if accepted else "completed"
        campaign.pump_chain = str(uuid.uuid4()) if accepted else None
        campaign.updated_at = utcnow()
        _drop_recipients(session, campaign.id)
        session.commit()
        log.info("campaign %s: %d accepted, %d rejected", campaign.id, accepted, rejected)
        return campaign.status, campaign.pump_chain


def _charge(session: Session, campaign: Campaign, total_cost: Decimal, accepted: int) -> None:
    """Charge a live campaign's whole cost; a test one's only has to be covered."""
    if campaign.mode == "test":
        if not billing.covers(session, user_id=campaign.user_id, amount=total_cost):
            raise billing.InsufficientBalance()
        return
    billing.charge_campaign(
        session,
        user_id=campaign.user_id,
        campaign_id=campaign.id,
        amount=total_cost,
        note=f"campaign {campaign.id}: {accepted} messages",
    )


def campaign_schedule(campaign: Campaign) -> Schedule | None:
    """Return what the campaign asked of its messages' timing, None if nothing."""
    if (campaign.send_at, campaign.quiet_hours, campaign.validity_period) == (None, None, None):
        return None
    return Schedule(
        send_at=campaign.send_at,
        quiet=parse_quiet_hours(campaign.quiet_hours),
        validity_period=campaign.validity_period,
    )


def _timed(good: list[tuple], schedule: Schedule | None, now: datetime) -> list[tuple]:
    """Give each priced row its status, due time and validity deadline, in its recipient's zones."""
    if schedule is None:
        return [(*row, "queued", None, None) for row in good]
    timed = []
    for row in good:
        when = timing(schedule, to=row[1], now=now)
        status = "scheduled" if when.send_at is not None else "queued"
        timed.append((*row, status, when.send_at, when.valid_until))
    return timed


def _record(campaign: Campaign, tallies: tuple[int, int, int, list[dict]]) -> None:
    campaign.accepted, campaign.rejected, campaign.duplicates, campaign.rejections = tallies


def _chunks(reader: Session, campaign_id: int, size: int) -> Iterator[Sequence[Any]]:
    """Yield the raw recipients in order of upload, `size` rows at a time."""
    last = -1
    while True:
        rows = reader.execute(
            select(CampaignRecipient.idx, CampaignRecipient.to, CampaignRecipient.vars)
            .where(CampaignRecipient.campaign_id == campaign_id, CampaignRecipient.idx > last)
            .order_by(CampaignRecipient.idx)
            .limit(size)
        ).all()
        if not rows:
            return
        last = rows[-1].idx
        yield rows


def _price(screened: tuple[list, list], checker: RecipientChecker) -> tuple[list, list]:
    """Price a screened chunk and drop opted-out recipients; rejections in upload order."""
    rows, bad = screened
    good: list[tuple] = []
    raw: list[str] = []
    for idx, recipient, body, segments, encoding, region, to in rows:
        price = checker.price(region)
        if price is None:
            bad.append({"index": idx, "to": to, "message": "Destination country is not supported"})
            continue
        total = cost(segment_price=price, segments=segments)
        good.append((idx, recipient, body, segments, encoding, price, total))
        raw.append(to)
    stopped = checker.opted_out([row[1] for row in good])
    if stopped:
        bad.extend(
            {"index": row[0], "to": to, "message": "Recipient has opted out"}
            for row, to in zip(good, raw, strict=True)
            if row[1] in stopped
        )
        good = [row for row in good if row[1] not in stopped]
    bad.sort(key=lambda rejection: rejection["index"])
    return good, bad


def _screened(
    reader: Session, campaign: Campaign, chunk: int, executor: Executor | None
) -> Iterator[tuple[tuple[list, list], int]]:
    """Yield each chunk screened, in order, with its last index; on the pool if given."""
    chunks = ([tuple(row) for row in rows] for rows in _chunks(reader, campaign.id, chunk))
    if executor is None or campaign.total < POOL_MIN_ROWS:
        for rows in chunks:
            yield screen(campaign.body, rows, campaign.smart_encoding), rows[-1][0]
        return
    ahead: deque[tuple[Future, int]] = deque()
    for rows in chunks:
        future = executor.submit(screen, campaign.body, rows, campaign.smart_encoding)
        ahead.append((future, rows[-1][0]))
        if len(ahead) >= POOL_AHEAD:
            future, last = ahead.popleft()
            yield future.result(), last
    while ahead:
        future, last = ahead.popleft()
        yield future.result(), last


class _Writer:
    """Writes checked chunks as `queued` messages inside the expansion's transaction."""

    def __init__(self, session: Session, campaign: Campaign, from_number: str) -> None:
        self.session = session
        self.campaign_id = campaign.id
        self.params = {
            "user_id": campaign.user_id,
            "number_id": campaign.phone_number_id,
            "from_number": from_number,
            "callback": campaign.status_callback,
            "campaign_id": campaign.id,
            "validity": campaign.validity_period,
            "reference": campaign.reference,
            "mode": campaign.mode,
            "now": utcnow(),
        }
        postgres = session.connection().dialect.name == "postgresql"
        session.execute(text(f"DROP TABLE IF EXISTS {_STAGE}"))
        session.execute(
            text(
                f'CREATE TEMPORARY TABLE {_STAGE} (idx integer PRIMARY KEY, "to" varchar(20), '
                "body text, segments integer, encoding varchar(8), "
                "segment_price numeric(14, 4), total_cost numeric(14, 4), status varchar(16), "
                "send_at timestamp, valid_until timestamp)"
                + (" ON COMMIT DROP" if postgres else "")
            )
        )

    def write(self, rows: list[tuple], last_idx: int) -> int:
        """Write one chunk, skipping recipients already written; return how many were new."""
        session = self.session
        written = 0
        if rows:
            bulk_write(session, _STAGE_TABLE, _STAGE_COLUMNS, rows)
            result = session.execute(_INSERT, self.params)
            written = int(result.rowcount)  # type: ignore[attr-defined]
            session.execute(text(f"DELETE FROM {_STAGE}"))
        # Consumed rows go now, while Python checks the next chunk.
        session.execute(
            delete(CampaignRecipient).where(
                CampaignRecipient.campaign_id == self.campaign_id,
                CampaignRecipient.idx <= last_idx,
            )
        )
        return written

    def close(self) -> None:
        self.session.execute(text(f"DROP TABLE IF EXISTS {_STAGE}"))


# The first row of each recipient wins: rows go in upload order, later ones conflict.
_INSERT = text(
    'INSERT INTO messages (user_id, phone_number_id, from_number, "to", body, '
    "segments, encoding, segment_price, total_cost, status, handoff, attempts, "
    "status_callback, campaign_id, send_at, validity_period, valid_until, reference, mode, "
    "created_at, updated_at) "
    'SELECT :user_id, :number_id, :from_number, "to", body, segments, encoding, '
    "segment_price, total_cost, status, 'pending', 0, :callback, :campaign_id, "
    f"send_at, :validity, valid_until, :reference, :mode, :now, :now FROM {_STAGE} ORDER BY idx "
    'ON CONFLICT (campaign_id, "to") WHERE campaign_id IS NOT NULL DO NOTHING'
)


def _finish_failed(session: Session, campaign: Campaign, reason: str) -> str:
    campaign.status = "failed"
    campaign.failure_reason = reason
    campaign.total_cost = Decimal(0)
    campaign.updated_at = utcnow()
    _drop_recipients(session, campaign.id)
    session.commit()
    log.info("campaign %s: failed (%s)", campaign.id, reason)
    return "failed"


def _drop_recipients(session: Session, campaign_id: int) -> None:
    session.execute(delete(CampaignRecipient).where(CampaignRecipient.campaign_id == campaign_id))
