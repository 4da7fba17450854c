"""Cursor-paged lists: newest first, a page costs the same at any depth.

A page is the `limit` newest rows with an id below `before`, plus one row
more to know whether another page follows. Nothing is counted and nothing
skipped: no OFFSET, no total. Each list names the index that serves it as
its `key`: the column its filter fixes, then the user's (for a status,
`ix_messages_status_user_id_id`), the index ending in the id; the page is
read backwards along it, ordered by the whole key.

The filter's own column is fixed as `= ANY(ARRAY[value])` on PostgreSQL, not
`= value`, and leads its index, on purpose. With equalities the planner may
drop the fixed columns from the order and serve it from another index that
ends in the id, filtering as it goes: the primary key backwards for a large
user, the user's index for `status=delivered`. That plan looks cheap and
reads millions of rows when the matching messages are old, or a backlog of
others is newer. The one-element array is estimated exactly like the
equality and bounds the scan just as tightly, but the order it leaves,
(filter column, id), only the key's own index has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, any_, literal_column, select
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
    fixed: list[ColumnElement[bool]] = []
    if key:  # an empty key reads the primary key itself: a list of everything
        (lead, lead_value), *rest = key
        fixed.append(lead == any_(array([lead_value])) if postgres else lead == lead_value)
        fixed += [column == value for column, value in rest]
    if before is not None:
        fixed.append(id_column < before)
    columns = [column for column, _ in key] + [id_column]
    return query.where(*fixed).order_by(*(c.desc() for c in columns)).limit(limit + 1)


def messages_query(
    *,
    user_id: int,
    mode: str = "live",
    status: str | None = None,
    campaign_id: int | None = None,
    to: str | None = None,
    reference: str | None = None,
) -> tuple[Select[Any], Key]:
    """Return the user's messages with the given filters, and the key of the index serving them.

    The most selective filter picks the index (a campaign, a recipient, a
    reference, a status, else the user's own); the others only filter its
    rows. The key's columns are fixed by `page_query` alone (see the module).
    A token sees the messages of its own mode: test messages, few beside the
    live ones, have their own partial index, which the planner can only use
    when the mode is written into the statement, not bound.
    """
    filters: list[ColumnElement[bool]] = [
        Message.mode == literal_column("'test'") if mode == "test" else Message.mode == "live"
    ]
    user = (Message.user_id, user_id)
    if campaign_id is not None:
        key: Key = [(Message.campaign_id, campaign_id)]
        filters.append(Message.user_id == user_id)
    elif to is not None:
        key = [(Message.to, to), user]
    elif reference is not None:
        key = [(Message.reference, reference), user]
    elif status is not None:
        key = [(Message.status, status), user]
    else:
        key = [user]
    fixed = {column.key for column, _ in key}
    if status is not None and "status" not in fixed:
        filters.append(Message.status == status)
    if to is not None and "to" not in fixed:
        filters.append(Message.to == to)
    if reference is not None and "reference" not in fixed:
        filters.append(Message.reference == reference)
    return select(Message).where(*filters), key


def list_messages(
    session: Session, *, user_id: int, limit: int, before: int | None, **filters: Any
) -> Page[Message]:
    """Return one page of the user's messages, newest first (filters as `messages_query`)."""
    query, key = messages_query(user_id=user_id, **filters)
    return page(session, query, key, Message.id, limit=limit, before=before)
