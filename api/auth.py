"""Bearer-token authentication for the `/api/user` routes."""

from __future__ import annotations

from flask import g, request
from sqlalchemy.exc import DBAPIError

from api.errors import ApiError
from api.gateway import gateway
from shared.accounts import hash_token, user_for_token


def require_user() -> None:
    """Set `g.user_id` from the Authorization header, or answer 401 (429 over the rate limit)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "Unauthenticated")
    user_id = _user_for(token)
    if user_id is None:
        raise ApiError(401, "Unauthenticated")
    g.user_id = user_id
    wait = gateway().limiter.retry_after(f"token:{hash_token(token)[:32]}")
    if wait is not None:
        raise ApiError(429, "Too many requests", headers={"Retry-After": str(wait)})


def _user_for(token: str) -> int | None:
    """Look the token up on the request's connection, the first statement it runs.

    The hot-path pool does not ping a connection before lending it. If the
    database restarted since the connection's last use, this read fails, the
    pool drops every connection that predates the failure, and one retry runs
    on a new one; later statements of the request use that checked connection.
    """
    gw = gateway()
    try:
        return user_for_token(gw.connection(), token)
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
    gw.close_connection()
    return user_for_token(gw.connection(), token)
