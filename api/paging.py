"""The cursor of every list route: `limit` and `before` in, `meta.next` out."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import request
from pydantic import BaseModel, Field

from api.errors import ApiError
from shared.db import MAX_ID
from shared.listing import DEFAULT_LIMIT, MAX_LIMIT, Page

GONE = ("page", "per_page")


class CursorQuery(BaseModel):
    """`limit` and `before` of a cursor-paged list; a list's filters extend it."""

    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    before: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="Only items older than this id (meta.next)"
    )


class PageMeta(BaseModel):
    limit: int
    next: str | None = Field(description="Path of the next page, filters kept; null on the last")


def int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    """Return an integer query argument in [low, high], or answer the contract's 400."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(400, f"The {name} field must be an integer from {low} to {high}")
    return int(raw)


def cursor() -> tuple[int, int | None]:
    """Return (limit, before) of this request; `page` and `per_page` are refused, not ignored.

    A client still paging by number would otherwise get the first page forever.
    """
    for name in GONE:
        if name in request.args:
            raise ApiError(400, f"The {name} field is gone: lists are paged by limit and before")
    limit = int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    assert limit is not None
    return limit, int_arg("before", None, 1, MAX_ID)


def meta(result: Page[Any], limit: int) -> dict[str, Any]:
    """Return a page's `meta`: its limit, and the path of the next page, filters kept."""
    if result.next_before is None:
        return {"limit": limit, "next": None}
    args = [
        (key, value)
        for key, value in request.args.items(multi=True)
        if key not in ("limit", "before")
    ]
    query = urlencode([("limit", limit), ("before", result.next_before), *args])
    return {"limit": limit, "next": f"{request.path}?{query}"}
