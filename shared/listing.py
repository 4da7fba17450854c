"""Cursor-paged lists: newest first, a page costs the same at any depth.

A page is the `limit` newest rows with an id below `before`, plus one row
more to know whether another page follows. Nothing is counted and nothing
skipped: no OFFSET, no total. Each list names the index that serves it as
its `key`: the columns its filter fixes, leading column first, then the id
(`ix_messages_user_id_status_id` for a status, say); the page is read
backwards along that index, ordered by the whole key.

On PostgreSQL the leading column is fixed as `= ANY(ARRAY[value])`, not
`= value`, on purpose. An equality would let the planner drop the column from
the order and walk the primary key backwards instead, filtering as it goes: a
plan that looks cheap for a large user or campaign and reads millions of rows
when their messages are old. The one-element array is estimated exactly like
the equality and bounds the index scan just as tightly, but the order can only
come from the key's own index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, any_, select
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.orm import InstrumentedAttribute, Session

from shared.models import Message

Row = TypeVar("Row")
DEFAULT_LIMIT = 50
MAX_LIMIT = 100
Key = Sequence[tuple[InstrumentedAttribute[Any], Any]]


@dataclass(frozen=True)
class Page(Generic[Row]):
    """The rows of one page, and the `before` of the next one (None on the last)."""

    items: Sequence[Row]
    next_before: int | None


def page(
    session: Session,
    query: Select[Any],
    key: Key,
    id_column: InstrumentedAttribute[int],
    *,
    limit: int,
    before: int | None,
) -> Page[Any]:
    """Return the page of `query` below `before`, newest (highest id) first.

    `query` holds the filters outside the key; the key's columns are fixed here.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    statement = page_query(query, key, id_column, limit=limit, before=before, postgres=postgres)
    rows = session.scalars(statement).all()
    if len(rows) <= limit:
        return Page(rows, None)
    return Page(rows[:limit], getattr(rows[limit - 1], id_column.key))


def page_query(
    query: Select[Any],
    key: Key,
    id_column: InstrumentedAttribute[int],
    *,
    limit: int,
    before: int | None,
    postgres: bool = True,
) -> Select[Any]:
    """Return the statement of a page: the key fixed, below `before`, backwards, one row more."""
    (lead, lead_value), *rest = key
    fixed = [lead == any_(array([lead_value])) if postgres else lead == lead_value]
    fixed += [column == value for column, value in rest]
    if before is not None:
        fixed.append(id_column < before)
    columns = [column for column, _ in key] + [id_column]
    return query.where(*fixed).order_by(*(c.desc() for c in columns)).limit(limit + 1)


def messages_query(
    *,
    user_id: int,
    status: str | None = None,
    campaign_id: int | None = None,
    to: str | None = None,
) -> tuple[Select[Any], Key]:
    """Return the user's messages with the given filters, and the key of the index serving them.

    The most selective filter picks the index (a campaign, a recipient, a
    status, else the user's own); the others only filter its rows. The key's
    columns are fixed by `page_query` alone (see the module).
    """
    filters: list[ColumnElement[bool]] = []
    if campaign_id is not None:
        key: Key = [(Message.campaign_id, campaign_id)]
        filters.append(Message.user_id == user_id)
    elif to is not None:
        key = [(Message.user_id, user_id), (Message.to, to)]
    elif status is not None:
        key = [(Message.user_id, user_id), (Message.status, status)]
    else:
        key = [(Message.user_id, user_id)]
    fixed = {column.key for column, _ in key}
    if status is not None and "status" not in fixed:
        filters.append(Message.status == status)
    if to is not None and "to" not in fixed:
        filters.append(Message.to == to)
    return select(Message).where(*filters), key


def list_messages(
    session: Session, *, user_id: int, limit: int, before: int | None, **filters: Any
) -> Page[Message]:
    """Return one page of the user's messages, newest first (filters as `messages_query`)."""
    query, key = messages_query(user_id=user_id, **filters)
    return page(session, query, key, Message.id, limit=limit, before=before)
