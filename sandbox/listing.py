"""Filtering and paging of the Messages list route, the way Twilio pages it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

from sandbox.errors import TwilioError
from sandbox.store import Message

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
FILTERS = ("To", "From", "DateSent", "DateSent<", "DateSent>")


def parse_when(raw: str) -> tuple[dt.datetime | dt.date, bool]:
    """Parse a DateSent filter value; return it and whether it names a whole day."""
    text = raw.strip()
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text), True
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        raise TwilioError(20001, f"Invalid value for DateSent: {raw}", 400) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).replace(microsecond=0), False


Bound = tuple[str, Any, bool]


def date_bounds(query: Mapping[str, str]) -> list[Bound]:
    """Parse the DateSent filters of a query, raising a 400 TwilioError on a bad one.

    DateSent always matches a whole GMT day; DateSent< and DateSent> are inclusive
    and compare to the second when a time is given.
    """
    bounds = []
    for key in ("DateSent", "DateSent<", "DateSent>"):
        if query.get(key):
            when, whole_day = parse_when(query[key])
            if key == "DateSent" and isinstance(when, dt.datetime):
                when, whole_day = when.date(), True
            bounds.append((key, when, whole_day))
    return bounds


def matches(message: Message, query: Mapping[str, str], bounds: list[Bound]) -> bool:
    """Tell whether a message passes the To, From and parsed DateSent filters."""
    if query.get("To") and message.to != query["To"]:
        return False
    if query.get("From") and message.from_ != query["From"]:
        return False
    for key, when, whole_day in bounds:
        sent = message.date_sent
        sent_at: Any = sent.date() if whole_day else sent.replace(microsecond=0)
        if key == "DateSent" and sent_at != when:
            return False
        if key == "DateSent<" and sent_at > when:
            return False
        if key == "DateSent>" and sent_at < when:
            return False
    return True


def _page_size(query: Mapping[str, str]) -> int:
    """Return the requested page size, clamped to Twilio's limits."""
    try:
        size = int(query.get("PageSize", DEFAULT_PAGE_SIZE))
    except ValueError:
        size = DEFAULT_PAGE_SIZE
    return max(1, min(size, MAX_PAGE_SIZE))


def build_page(messages: list[Message], query: Mapping[str, str], path: str) -> dict[str, Any]:
    """Return one page of the already filtered messages, newest first.

    A PageToken of "PA" + SID starts after that message and "PB" + SID ends
    before it, so pages stay stable while new messages arrive.
    """
    size = _page_size(query)
    try:
        page = max(0, int(query.get("Page", 0)))
    except ValueError:
        page = 0
    ordered = list(reversed(messages))
    index = {m.sid: i for i, m in enumerate(ordered)}
    token = query.get("PageToken", "")
    start = page * size
    if token[:2] == "PA" and token[2:] in index:
        start = index[token[2:]] + 1
    elif token[:2] == "PB" and token[2:] in index:
        start = max(0, index[token[2:]] - size)
    items = ordered[start : start + size]
    filters = [(k, query[k]) for k in FILTERS if query.get(k)]

    def uri(page_no: int, page_token: str | None) -> str:
        params = [*filters, ("PageSize", size), ("Page", page_no)]
        if page_token:
            params.append(("PageToken", page_token))
        return f"{path}?{urlencode(params)}"

    has_next = start + size < len(ordered)
    return {
        "messages": [m.to_json() for m in items],
        "end": start + max(len(items) - 1, 0),
        "first_page_uri": uri(0, None),
        "next_page_uri": uri(page + 1, "PA" + items[-1].sid) if has_next and items else None,
        "previous_page_uri": uri(page - 1, "PB" + items[0].sid) if start > 0 and items else None,
        "page": page,
        "page_size": size,
        "start": start,
        "uri": uri(page, token or None),
    }
