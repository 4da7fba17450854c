"""The user's ledger: `GET /api/user/transactions`, as JSON pages or one streamed CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, g, request

from api import paging
from api.auth import require_user
from api.errors import ApiError
from api.gateway import gateway
from api.openapi import document
from api.schemas import ErrorOut, TransactionsPage, TransactionsQuery
from api.serialize import timestamp
from shared import transactions
from shared.models import LedgerEntry
from shared.money import QUANTUM, as_number
from shared.scheduling import parse_time

bp = Blueprint("transactions", __name__, url_prefix="/api/user")
bp.before_request(require_user)
FORMATS = ("json", "csv")
TIME_FORMS = "ISO 8601 with an offset, or YYYY-MM-DD HH:MM:SS (UTC)"


@bp.get("/transactions")
@document(
    "Your ledger: top-ups, charges, refunds and adjustments",
    query=TransactionsQuery,
    responses={200: TransactionsPage, 400: ErrorOut},
    description="`format=csv` answers `text/csv` instead: the same columns as a header and"
    " every row in range (filters kept, no limit), newest first, streamed.",
    also={200: {"text/csv": {"schema": {"type": "string"}}}},
)
def index():
    """List the user's ledger newest first, by cursor, or all of it in range as CSV."""
    form = request.args.get("format") or "json"
    if form not in FORMATS:
        raise ApiError(400, "The format field must be json or csv")
    filters = _filters()
    if form == "csv":
        return _csv_answer(filters)
    limit, before = paging.cursor()
    with gateway().sessions() as session:
        result = transactions.list_transactions(
            session, user_id=g.user_id, limit=limit, before=before, **filters
        )
    return {"data": [_entry_json(e) for e in result.items], "meta": paging.meta(result, limit)}


def _filters() -> dict[str, Any]:
    """Return the request's `kind`, `since` and `until`, or answer the contract's 400."""
    kind = request.args.get("kind") or None
    if kind is not None and kind not in transactions.KINDS:
        raise ApiError(400, f"The kind field must be one of {', '.join(transactions.KINDS)}")
    return {"kind": kind, "since": _time_arg("since"), "until": _time_arg("until")}


def _time_arg(name: str) -> datetime | None:
    raw = request.args.get(name) or None
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except ValueError:
        raise ApiError(400, f"The {name} field must be a time: {TIME_FORMS}") from None


def _entry_json(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "kind": entry.kind,
        "amount": as_number(entry.amount),
        "message_id": entry.message_id,
        "campaign_id": entry.campaign_id,
        "note": entry.note,
        "created_at": timestamp(entry.created_at),
    }


def _csv_answer(filters: dict[str, Any]) -> Response:
    """Answer every row in range as CSV, read and written one chunk at a time.

    The first chunk is read here, so a database that is down answers the usual
    503 rather than a 200 cut short; the rest is read while the client downloads.
    """
    chunks = transactions.transaction_chunks(gateway().sessions, user_id=g.user_id, **filters)
    return Response(
        _csv_text(next(chunks, None), chunks),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="transactions.csv"'},
    )


def _csv_text(rows: Sequence[Any] | None, chunks: Iterator[Sequence[Any]]) -> Iterator[str]:
    """Yield the header with the first chunk's lines, then one piece of text per chunk.

    A chunk is let go before the next one is read: one at a time is in memory.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(transactions.COLUMNS)
    while rows is not None:
        writer.writerows([_cell(value) for value in row] for row in rows)
        rows = None
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        rows = next(chunks, None)
    if buffer.tell():  # no row at all: the header alone
        yield buffer.getvalue()


def _cell(value: Any) -> Any:
    """Return a value as CSV text: money as decimal digits (never a float), times as the API's."""
    if isinstance(value, Decimal):
        return format(value.quantize(QUANTUM).normalize(), "f")
    if isinstance(value, datetime):
        return timestamp(value)
    return value
