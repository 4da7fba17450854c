"""Single sends: `POST /api/user/sms`, and reading messages back."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, g, request
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from api import idempotency
from api.auth import require_user
from api.errors import ApiError
from api.gateway import Gateway, gateway
from api.metrics import ACCEPTED
from api.openapi import document
from api.schemas import (
    ErrorOut,
    SendSms,
    SmsOne,
    SmsPage,
    SmsQuery,
    SmsQueued,
    check_body,
    json_body,
    parse,
)
from api.serialize import message_json
from shared.callback_urls import check_callback_url
from shared.messaging import Rejected, accept_at_once, accept_message, fail
from shared.models import Message

bp = Blueprint("sms", __name__, url_prefix="/api/user")
bp.before_request(require_user)
log = logging.getLogger(__name__)

MAX_ID = 2**31 - 1
STATUSES = ("queued", "sending", "sent", "delivered", "undelivered", "failed", "canceled")


@bp.post("/sms")
@document(
    "Send one SMS",
    body=SendSms,
    responses={201: SmsQueued, 400: ErrorOut, 409: ErrorOut, 500: ErrorOut},
    description="Header `Idempotency-Key` makes a repeat return the first answer.",
)
def send():
    """Accept, charge and queue one SMS; the worker hands it to Twilio."""
    data = json_body()
    key = idempotency.request_key()
    digest = idempotency.fingerprint(data) if key is not None else ""
    gw = gateway()
    if key is not None:
        with gw.sessions() as session:
            earlier = idempotency.replay(session, user_id=g.user_id, key=key, digest=digest)
        if earlier is not None:
            return earlier
    req = parse(SendSms, data)
    check_body(req.body)
    try:
        callback = req.status_callback and check_callback_url(
            req.status_callback, allow_private=gw.settings.callback_allow_private
        )
        if not 1 <= req.from_ <= MAX_ID:
            raise Rejected("From number not found")
        fields = dict(
            user_id=g.user_id,
            phone_number_id=req.from_,
            to=req.to,
            body=req.body,
            status_callback=callback or None,
        )
        message = None
        if key is None and gw.on_postgres:  # nothing to store beside it: one round trip
            message = accept_at_once(gw.connection(), **fields)
        if message is None:
            message, answer = _accept_in_session(gw, fields, key=key, digest=digest)
        else:
            answer = _answer(message)
    except Rejected as rejected:
        raise ApiError(400, rejected.message) from None
    except IntegrityError:
        # The same key was committed by a concurrent request: ours rolled back.
        with gw.sessions() as session:
            earlier = idempotency.replay(session, user_id=g.user_id, key=key or "", digest=digest)
        if earlier is None:
            raise
        return earlier
    try:
        gw.enqueue_send(message.id)
    except Exception as exc:  # the broker is down: undo the charge, say so
        log.error("could not queue message", extra={"message_id": message.id, "error": str(exc)})
        with gw.sessions() as session:
            stored = session.get(Message, message.id)
            fail(session, message=stored, error_code=None, error_message="Could not be queued")
            idempotency.forget(session, message_id=message.id)
            session.commit()
        return {"message": "Failed to send SMS", "error": f"Queue unavailable: {exc}"}, 500
    ACCEPTED.labels("single").inc()
    log.info("message accepted", extra={"message_id": message.id})
    return answer, 201


def _answer(message: Any) -> dict:
    return {"message": "SMS queued for sending", "data": message_json(message)}


def _accept_in_session(
    gw: Gateway, fields: dict, *, key: str | None, digest: str
) -> tuple[Any, dict]:
    """Accept in a transaction that also stores the Idempotency-Key's answer, if any.

    On PostgreSQL the one statement is tried first; when it accepts nothing,
    `accept_message` runs each check to reject with the right message.
    """
    with gw.sessions() as session:
        message = None
        if gw.on_postgres and key is not None:  # without a key the caller just tried it
            message = accept_at_once(session.connection(), **fields)
        if message is None:
            message = accept_message(session, **fields)
        answer = _answer(message)
        if key is not None:
            idempotency.remember(
                session,
                user_id=fields["user_id"],
                key=key,
                digest=digest,
                answer=answer,
                message_id=message.id,
            )
        session.commit()
    return message, answer


@bp.get("/sms/<int:message_id>")
@document("One of your messages", responses={200: SmsOne, 404: ErrorOut})
def show(message_id: int):
    """Return one of the user's messages."""
    with gateway().sessions() as session:
        message = session.scalar(
            select(Message).where(Message.id == message_id, Message.user_id == g.user_id)
        )
    if message is None:
        raise ApiError(404, "SMS not found")
    return {"data": message_json(message)}


@bp.get("/sms")
@document("List your messages", query=SmsQuery, responses={200: SmsPage, 400: ErrorOut})
def index():
    """List the user's messages, newest first, filtered and paginated."""
    page = _int_arg("page", 1, 1, 10**6)
    per_page = _int_arg("per_page", 20, 1, 100)
    query = select(Message).where(Message.user_id == g.user_id)
    status = request.args.get("status")
    if status is not None:
        if status not in STATUSES:
            raise ApiError(400, f"The status field must be one of {', '.join(STATUSES)}")
        query = query.where(Message.status == status)
    if request.args.get("campaign_id"):
        query = query.where(Message.campaign_id == _int_arg("campaign_id", 0, 1, MAX_ID))
    if request.args.get("to"):
        query = query.where(Message.to == request.args["to"].strip().replace(" ", "+"))
    with gateway().sessions() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery()))
        rows = session.scalars(
            query.order_by(Message.id.desc()).limit(per_page).offset((page - 1) * per_page)
        ).all()
    return {
        "data": [message_json(m) for m in rows],
        "meta": {"page": page, "per_page": per_page, "total": total},
    }


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(400, f"The {name} field must be an integer from {low} to {high}")
    return int(raw)
