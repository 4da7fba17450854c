"""Bulk campaigns: accepting the upload, showing progress, canceling.

The request only stores the campaign `pending` with its raw recipients in
`campaign_recipients`; `shared.campaign_expansion` validates, prices and
charges them in the worker, and `shared.campaign_dispatch` releases the
messages at the sender number's rate.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from shared import billing, listing, user_callbacks
from shared.db import utcnow
from shared.messaging import STATUSES as MESSAGE_STATUSES
from shared.messaging import is_unicode_text, sender_number
from shared.models import Campaign, CampaignRecipient, LedgerEntry, Message
from shared.scheduling import Schedule
from shared.templates import Template

MAX_RECIPIENTS = 100_000
STATUSES = ("pending", "scheduled", "sending", "completed", "canceled", "failed")
_STAGE_COLUMNS = ("campaign_id", "idx", "to", "vars")


class UploadError(ValueError):
    """The upload is malformed; `message` is the answer's text, `status` 400 or 413."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class NotCancelable(Exception):
    """The campaign already finished; `status` says how."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def json_recipients(items: Any, template: Template) -> Iterator[tuple[str, str]]:
    """Yield (to, vars as JSON) from the `recipients` array of a JSON request."""
    if not isinstance(items, list):
        raise UploadError("The recipients field must be an array")
    _check_count(len(items))
    for position, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("to"), str):
            raise UploadError(f"The recipients.{position}.to field must be a string")
        values = item.get("vars", {})
        if not isinstance(values, dict):
            raise UploadError(f"The recipients.{position}.vars field must be an object")
        encoded = json.dumps(values, ensure_ascii=False)
        if not is_unicode_text(encoded):
            encoded = json.dumps(values)  # escaped, it can be stored; rendering rejects the row
        yield _clean_to(item["to"]), encoded


def csv_recipients(stream: IO[bytes], template: Template) -> Iterator[tuple[str, str]]:
    """Yield (to, vars as JSON) from a UTF-8 CSV file whose header names `to`."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    try:
        reader = csv.reader(text)
        header = [name.strip() for name in next(reader, [])]
        if "to" not in header:
            raise UploadError("The recipients file must have a header row with a to column")
        for name in template.variables:
            if name not in header:
                raise UploadError(f"Missing template variable {name}")
        to_column = header.index("to")
        count = 0
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank lines are not recipients
            count += 1
            _check_count(count)
            values = {name: cell for name, cell in zip(header, row, strict=False) if name}
            to = row[to_column] if to_column < len(row) else ""
            yield _clean_to(to), json.dumps(values, ensure_ascii=False)
    except UnicodeDecodeError:
        raise UploadError("The recipients file must be UTF-8 text") from None
    except csv.Error as error:
        raise UploadError(f"The recipients file is not valid CSV: {error}") from None
    finally:
        text.detach()


def _clean_to(to: str) -> str:
    """Keep NUL and lone surrogates out of the database; the row is then an invalid number."""
    return to.replace("\x00", "\ufffd").encode("utf-8", "replace").decode()


def _check_count(count: int) -> None:
    if count > MAX_RECIPIENTS:
        raise UploadError(f"The recipients field must not have more than {MAX_RECIPIENTS} items")


def create_campaign(
    session: Session,
    *,
    user_id: int,
    phone_number_id: int,
    body: str,
    recipients: Iterable[tuple[str, str]],
    status_callback: str | None = None,
    schedule: Schedule | None = None,
    reference: str | None = None,
    smart_encoding: bool = False,
    mode: str = "live",
) -> Campaign:
    """Check the sender and store the campaign `pending` with its raw recipients.

    Its `reference`, `smart_encoding` and `mode` apply to each of its messages.

    Only flushes; the caller commits and then enqueues the expansion. Raises
    `Rejected` for the sender number and `UploadError` for the recipients.
    """
    now = utcnow()
    sender_number(session, user_id=user_id, phone_number_id=phone_number_id, now=now)
    campaign = Campaign(
        user_id=user_id,
        phone_number_id=phone_number_id,
        body=body,
        status_callback=status_callback,
        reference=reference,
        smart_encoding=smart_encoding,
        mode=mode,
        rejections=[],
        created_at=now,
        updated_at=now,
    )
    if schedule is not None:
        campaign.send_at = schedule.send_at
        campaign.quiet_hours = str(schedule.quiet) if schedule.quiet else None
        campaign.validity_period = schedule.validity_period
    session.add(campaign)
    session.flush()
    rows = ((campaign.id, idx, to, values) for idx, (to, values) in enumerate(recipients))
    campaign.total = bulk_write(session, CampaignRecipient.__table__, _STAGE_COLUMNS, rows)
    if campaign.total == 0:
        raise UploadError("The recipients field must not be empty")
    session.flush()
    return campaign


def bulk_write(session: Session, table: Any, columns: tuple[str, ...], rows: Iterable) -> int:
    """Write rows with COPY on PostgreSQL (executemany elsewhere); return how many."""
    connection = session.connection()
    count = 0
    if connection.dialect.name == "postgresql":
        names = ", ".join(f'"{name}"' for name in columns)
        raw: Any = connection.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        return count
    batch: list[dict] = []
    for row in rows:
        batch.append(dict(zip(columns, row, strict=True)))
        count += 1
        if len(batch) == 1000:
            connection.execute(insert(table), batch)
            batch = []
    if batch:
        connection.execute(insert(table), batch)
    return count


def message_counts(session: Session, *, campaign: Campaign) -> dict[str, int]:
    """Return the number of the campaign's messages in each status, retention's included."""
    rows = session.execute(
        select(Message.status, func.count())
        .where(Message.campaign_id == campaign.id)
        .group_by(Message.status)
    )
    counts = dict.fromkeys(MESSAGE_STATUSES, 0)
    for status, count in (campaign.purged or {}).items():
        counts[status] = counts.get(status, 0) + count
    for status, count in rows:
        counts[status] = counts.get(status, 0) + count
    return counts


def refunded(session: Session, *, campaign_id: int) -> Any:
    """Return the sum refunded so far for the campaign's messages, from the ledger."""
    return session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.campaign_id == campaign_id, LedgerEntry.kind == "refund"
        )
    )


def list_campaigns(
    session: Session, *, user_id: int, limit: int, before: int | None, mode: str = "live"
) -> listing.Page[Campaign]:
    """Return one page of the user's campaigns of one mode, newest first."""
    key = [(Campaign.user_id, user_id)]
    query = select(Campaign).where(Campaign.mode == mode)
    return listing.page(session, query, key, Campaign.id, limit=limit, before=before)


def find_campaign(
    session: Session, *, user_id: int, campaign_id: int, mode: str
) -> Campaign | None:
    """Return the user's campaign of this mode, or None: a token sees its own mode's only."""
    return session.scalar(
        select(Campaign).where(
            Campaign.id == campaign_id, Campaign.user_id == user_id, Campaign.mode == mode
        )
    )


def cancel_campaign(
    session: Session, *, user_id: int, campaign_id: int, mode: str = "live"
) -> Campaign | None:
    """Cancel what has not been handed to Twilio and refund it; None if not the user's.

    A message is canceled by one conditional update on `handoff = 'pending'`;
    a worker claims it by one on the same column, so whichever commits first
    wins and the other finds nothing to do. Flushes only.
    """
    campaign = session.scalar(
        select(Campaign)
        .where(Campaign.id == campaign_id, Campaign.user_id == user_id, Campaign.mode == mode)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if campaign is None:
        return None
    if campaign.status in ("completed", "failed"):
        raise NotCancelable(campaign.status)
    if campaign.status == "canceled":
        return campaign
    now = utcnow()
    campaign.status = "canceled"
    campaign.updated_at = now
    canceled = session.scalars(
        update(Message)
        .where(
            Message.campaign_id == campaign.id,
            Message.status.in_(("scheduled", "queued", "sending")),
            Message.handoff == "pending",
        )
        .values(status="canceled", handoff="done", updated_at=now)
        .returning(Message.id)
        .execution_options(synchronize_session=False)
    ).all()
    if canceled:
        billing.refund_messages(
            session,
            user_id=campaign.user_id,
            message_ids=select(Message.id).where(
                Message.campaign_id == campaign.id, Message.status == "canceled"
            ),
            note=f"campaign {campaign.id} canceled",
        )
        if campaign.status_callback:
            _emit_callbacks(session, canceled)
    session.flush()
    return campaign


def _emit_callbacks(session: Session, message_ids: Sequence[int]) -> None:
    """Write the `canceled` callback of each message; the beat sweeper delivers them."""
    session.flush()
    for start in range(0, len(message_ids), 1000):
        chunk = message_ids[start : start + 1000]
        for message in session.scalars(select(Message).where(Message.id.in_(chunk))):
            user_callbacks.emit(session, message=message, enqueue=False)
            session.expunge(message)
