"""The operator API (`/api/admin/...`): its authentication and its Idempotency-Key.

Every route needs `Authorization: Bearer <admin token>` (`smsgw admin-tokens
create`); a user's token, or none, is `401 Unauthenticated`. The routes
(`api.admin_routes`) are thin adapters over the operator functions of
`shared.accounts`, the same ones the `smsgw` CLI calls.

Every POST honours `Idempotency-Key`. The key's row is written first, in the
transaction of the operation itself: a second request with the same key,
even one racing the first, waits on the key's unique index until the first
commits, then answers the first's answer. So a top-up repeated under one key
adds money once. Only answers that changed something are kept: a refused
request (4xx) may be retried under its key. A token's text is not kept: a
repeat of a create shows its `token` as null (tokens are stored only hashed).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from flask import Blueprint, g, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import idempotency
from api.auth import bearer_token
from api.errors import ApiError
from api.gateway import gateway
from shared.accounts import AccountError, NotFound
from shared.models import OperatorRequest
from shared.operators import admin_for_token

bp = Blueprint("admin", __name__, url_prefix="/api/admin")

Work = Callable[[Session], tuple[dict[str, Any], int]]


@bp.before_request
def require_admin() -> None:
    """Set `g.admin_id` from an admin token, or answer 401."""
    admin_id = admin_for_token(gateway().connection(), bearer_token())
    if admin_id is None:
        raise ApiError(401, "Unauthenticated")
    g.admin_id = admin_id


def run_once(work: Work, *, body: Any = None) -> tuple[dict[str, Any], int]:
    """Run one operator operation in a transaction, once per Idempotency-Key.

    `work` does the operation in the session it is given and returns its
    answer; an `AccountError` it raises is a 400 with its message (the
    transaction rolls back). `body` is what the key's fingerprint covers, with
    the path: the request's checked values, or the raw text of an upload.
    """
    key = idempotency.request_key()
    if key is None:
        return run(work)
    sessions = gateway().sessions
    digest = idempotency.fingerprint({"path": request.path, "body": body})
    with sessions() as session:
        earlier = _replay(session, key, digest)
        if earlier is not None:
            return earlier
        row = OperatorRequest(key=key, request_hash=digest, status_code=0, response={})
        session.add(row)
        try:
            session.flush()  # a request racing with the same key waits here for ours
        except IntegrityError:
            session.rollback()
            earlier = _replay(session, key, digest)
            if earlier is None:
                raise
            return earlier
        answer, status = _do(work, session)
        row.response, row.status_code = _shown_once(answer), status
        session.commit()
        return answer, status


def _do(work: Work, session: Session) -> tuple[dict[str, Any], int]:
    try:
        return work(session)
    except AccountError as error:
        raise refusal(error) from None


def refusal(error: AccountError) -> ApiError:
    """Return the answer to a refused operation: `404 User not found`, or a 400 saying why."""
    if isinstance(error, NotFound):
        return ApiError(404, f"{error.what.capitalize()} not found")
    return ApiError(400, str(error))


def _replay(session: Session, key: str, digest: str) -> tuple[dict[str, Any], int] | None:
    row = session.scalar(select(OperatorRequest).where(OperatorRequest.key == key))
    if row is None:
        return None
    if row.request_hash != digest:
        raise ApiError(409, idempotency.REUSED)
    return row.response, row.status_code


def run(work: Work) -> tuple[dict[str, Any], int]:
    """Run a read, or a change that needs no Idempotency-Key, in one transaction."""
    with gateway().sessions() as session:
        answer = _do(work, session)
        session.commit()
        return answer


def decimal_body(*, empty_ok: bool = False) -> dict[str, Any]:
    """Return the request's JSON object, its numbers as written: money never passes a float.

    `0.1` is read as `Decimal("0.1")`; NaN and Infinity are no JSON. An empty
    body is `{}` where every field is optional (`empty_ok`).
    """
    raw = request.get_data()
    if empty_ok and not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_float=Decimal, parse_constant=_not_json)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise ApiError(400, "Invalid JSON body")
    return data


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _shown_once(answer: dict[str, Any]) -> dict[str, Any]:
    """Return the answer to keep for a repeat: a token's text is shown once, never stored."""
    data = answer.get("data")
    if isinstance(data, dict) and data.get("token") is not None:
        return {**answer, "data": {**data, "token": None}}
    return answer
