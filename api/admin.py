"""The operator API (`/api/admin/...`): its authentication and its Idempotency-Key.

Every route needs `Authorization: Bearer <admin token>` (`smsgw admin-tokens
create`); a user's token, or none, is `401 Unauthenticated`. The routes are
thin adapters over the operator functions of `shared.accounts`, the same ones
the `smsgw` CLI calls.

Every POST honours `Idempotency-Key`. The key's row is written first, in the
transaction of the operation itself: a second request with the same key,
even one racing the first, waits on the key's unique index until the first
commits, then answers the first's answer. So a top-up repeated under one key
adds money once. Only answers that changed something are kept: a refused
request (4xx) may be retried under its key.
"""

from __future__ import annotations

from collections.abc import Callable
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
    transaction rolls back). `body` is what the key's fingerprint covers: the
    JSON body by default, or the raw text of an upload.
    """
    key = idempotency.request_key()
    sessions = gateway().sessions
    if key is None:
        with sessions() as session:
            answer = _do(work, session)
            session.commit()
            return answer
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
        row.response, row.status_code = answer, status
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
