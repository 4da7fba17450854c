"""Incoming messages to the user's numbers: `GET /api/user/sms/inbound` and one by id.

Static `/sms/inbound` never meets `/sms/<int:message_id>` of `api.sms`: the
integer converter does not match the word.
"""

from __future__ import annotations

from flask import Blueprint, g, request

from api import paging
from api.auth import require_user
from api.errors import ApiError
from api.gateway import gateway
from api.openapi import document
from api.schemas import ErrorOut, InboundOne, InboundPage, InboundQuery
from api.serialize import inbound_json
from shared import inbound
from shared.db import MAX_ID

bp = Blueprint("inbound", __name__, url_prefix="/api/user")
bp.before_request(require_user)


@bp.get("/sms/inbound")
@document(
    "List messages sent to your numbers",
    query=InboundQuery,
    responses={200: InboundPage, 400: ErrorOut},
    tag="inbound",
)
def index():
    """List the user's inbound messages, newest first, filtered, by cursor (`limit`, `before`)."""
    limit, before = paging.cursor()
    # A `+` left unescaped in a query string arrives as a space (a number has none).
    sender = request.args.get("from", "").replace(" ", "+").strip() or None
    with gateway().sessions() as session:
        result = inbound.list_inbound(
            session,
            user_id=g.user_id,
            limit=limit,
            before=before,
            phone_number_id=paging.int_arg("phone_number_id", None, 1, MAX_ID),
            from_=sender,
        )
    return {"data": [inbound_json(m) for m in result.items], "meta": paging.meta(result, limit)}


@bp.get("/sms/inbound/<int:inbound_id>")
@document(
    "One message sent to your numbers",
    responses={200: InboundOne, 404: ErrorOut},
    tag="inbound",
)
def show(inbound_id: int):
    """Return one of the user's inbound messages."""
    with gateway().sessions() as session:
        message = inbound.get_inbound(session, user_id=g.user_id, inbound_id=inbound_id)
    if message is None:
        raise ApiError(404, "Inbound message not found")
    return {"data": inbound_json(message)}
