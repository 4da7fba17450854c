"""The user's ledger as a list: a cursor-paged page, or every row in chunks for an export.

Both read the same query backwards along the same index key (see
`shared.listing`): the user's `(user_id, id)` index, or with a `kind` the
`(kind, user_id, id)` one. The export reads `CHUNK` rows at a time below the
last id it gave, each chunk in its own short transaction, so a download of
any size holds neither a transaction nor a server-side cursor open while the
client reads, and needs memory for one chunk only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, select
from sqlalchemy.orm import Session

from shared.listing import Key, Page, page, page_query
from shared.models import LedgerEntry

KINDS = ("topup", "charge", "refund", "adjustment")
COLUMNS = ("id", "kind", "amount", "message_id", "campaign_id", "note", "created_at")
CHUNK = 5000


def transactions_query(
    *,
    user_id: int,
    kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[Select[Any], Key]:
    """Return the user's ledger rows in `[since, until)` of one kind, and the key serving them.

    A kind leads the key: scanning the user's index and skipping other kinds
    would read every charge of a large sender to find its few top-ups.
    """
    filters = []
    if since is not None:
        filters.append(LedgerEntry.created_at >= since)
    if until is not None:
        filters.append(LedgerEntry.created_at < until)
    user = (LedgerEntry.user_id, user_id)
    key: Key = [(LedgerEntry.kind, kind), user] if kind is not None else [user]
    return select(LedgerEntry).where(*filters), key


def list_transactions(
    session: Session, *, user_id: int, limit: int, before: int | None, **filters: Any
) -> Page[LedgerEntry]:
    """Return one page of the user's ledger, newest first (filters as `transactions_query`)."""
    query, key = transactions_query(user_id=user_id, **filters)
    return page(session, query, key, LedgerEntry.id, limit=limit, before=before)


def transaction_chunks(
    sessions: Callable[[], Session], *, user_id: int, chunk: int = CHUNK, **filters: Any
) -> Iterator[Sequence[Row[Any]]]:
    """Yield every row of the user's ledger in range, newest first, `chunk` rows at a time.

    Rows are tuples of `COLUMNS`. Each chunk is one short query in a session
    of its own, closed before the chunk is yielded.
    """
    query, key = transactions_query(user_id=user_id, **filters)
    columns = query.with_only_columns(*(getattr(LedgerEntry, name) for name in COLUMNS))
    before: int | None = None
    while True:
        with sessions() as session:
            postgres = session.get_bind().dialect.name == "postgresql"
            statement = page_query(
                columns, key, LedgerEntry.id, limit=chunk, before=before, postgres=postgres
            )
            found = session.execute(statement).all()
        rows, more = found[:chunk], len(found) > chunk
        del found
        if rows:
            before = rows[-1].id
            yield rows
        del rows  # freed by the time the next chunk is read: one chunk in memory, not two
        if not more:
            return
