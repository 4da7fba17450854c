"""Bearer-token authentication for the `/api/user` routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import current_app, g, request
from sqlalchemy.exc import DBAPIError

from api.errors import ApiError
from api.gateway import gateway
from shared.accounts import Caller, caller_for_token, hash_token

_SELF_AUTHENTICATING = "smsgw_self_authenticating"


def authenticates_itself(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a view that calls `bearer_token` and `authenticate` itself: `require_user` skips it."""
    setattr(view, _SELF_AUTHENTICATING, True)
    return view


def require_user() -> None:
    """Set `g.user_id` from the Authorization header, or answer 401 (429 over the rate limit)."""
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, _SELF_AUTHENTICATING, False):
        return
    authenticate_and_count(bearer_token())


def authenticate_and_count(token: str) -> None:
    """Set `g.user_id` for the token and count the request, or answer 401 or 429."""
    authenticate(token)
    wait = gateway().limiter.retry_after(rate_key(hash_token(token)))
    if wait is not None:
        raise too_many_requests(wait)


def bearer_token() -> str:
    """Return the request's bearer token, or answer 401 if it has none."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "Unauthenticated")
    return token


def authenticate(token: str) -> int:
    """Set `g.user_id` and `g.mode` (`live` or `test`) for the token, or answer 401."""
    caller = _caller_for(token)
    if caller is None:
        raise ApiError(401, "Unauthenticated")
    g.user_id, g.mode = caller
    return caller.user_id


def rate_key(token_hash: str) -> str:
    """Return the key a token's requests are counted under (see `shared.ratelimit`)."""
    return f"token:{token_hash[:32]}"


def too_many_requests(wait: int) -> ApiError:
    """Return the 429 for a token over its limit for `wait` more seconds."""
    return ApiError(429, "Too many requests", headers={"Retry-After": str(wait)})


def _caller_for(token: str) -> Caller | None:
    """Look the token up on the request's connection, the first statement it runs.

    The hot-path pool does not ping a connection before lending it. If the
    database restarted since the connection's last use, this read fails, the
    pool drops every connection that predates the failure, and one retry runs
    on a new one; later statements of the request use that checked connection.
    """
    gw = gateway()
    try:
        return caller_for_token(gw.connection(), token)
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
    gw.close_connection()
    return caller_for_token(gw.connection(), token)
