"""Bearer-token authentication for the `/api/user` routes."""

from __future__ import annotations

from flask import g, request

from api.errors import ApiError
from api.gateway import gateway
from shared.accounts import hash_token, user_for_token


def require_user() -> None:
    """Set `g.user_id` from the Authorization header, or answer 401 (429 over the rate limit)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "Unauthenticated")
    with gateway().sessions() as session:
        user_id = user_for_token(session, token.strip())
    if user_id is None:
        raise ApiError(401, "Unauthenticated")
    g.user_id = user_id
    wait = gateway().limiter.retry_after(f"token:{hash_token(token.strip())[:32]}")
    if wait is not None:
        raise ApiError(429, "Too many requests", headers={"Retry-After": str(wait)})
