"""Single sends: `POST /api/user/sms`, and reading messages back."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, g, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import idempotency, paging
from api.auth import (
    authenticate,
    authenticate_and_count,
    authenticates_itself,
    bearer_token,
    rate_key,
    require_user,
    too_many_requests,
)
from api.committer import Outcome
from api.errors import ApiError
from api.gateway import Gateway, gateway
from api.metrics import ACCEPTED
from api.openapi import document
from api.schemas import (
    ErrorOut,
    MessageEventsOut,
    QuoteOut,
    QuoteSms,
    SendSms,
    SmsCanceled,
    SmsOne,
    SmsPage,
    SmsQuery,
    SmsQueued,
    check_reference,
    checked_body,
    json_body,
    parse,
)
from api.serialize import message_json, timestamp
from shared import listing, logs
from shared.accounts import hash_token
from shared.callback_urls import check_callback_url
from shared.db import MAX_ID, utcnow
from shared.messaging import (
    STATUSES,
    Rejected,
    accept_many,
    accept_message,
    fail,
    message_events,
    prepare_send,
)
from shared.models import Message
from shared.money import as_number
from shared.quotes import quote
from shared.release import NotCancelable, cancel_message
from shared.scheduling import Schedule

bp = Blueprint("sms", __name__, url_prefix="/api/user")
bp.before_request(require_user)
log = logging.getLogger(__name__)
# Where the fast path (api.fastsend) leaves a send's fields and its committer's outcome.
FAST_OUTCOME = "smsgw.send_outcome"


@bp.post("/sms")
@document(
    "Send one SMS",
    body=SendSms,
    responses={201: SmsQueued, 400: ErrorOut, 409: ErrorOut, 500: ErrorOut},
    description="Header `Idempotency-Key` makes a repeat return the first answer.",
)
@authenticates_itself
def send():
    """Accept, charge and queue one SMS; the worker hands it to Twilio.

    Without an Idempotency-Key the process's committer checks the token,
    counts the rate limit, accepts and queues the send together with the
    others waiting (`api.committer`). A send it does not accept, and one with
    a schedule (`send_at`, `quiet_hours`, `validity_period`), is authenticated
    and decided here, alone, with the contract's answer. A send the fast path
    (`api.fastsend`) took to its committer comes here with its outcome, to be
    finished the same way.
    """
    token = bearer_token()
    gw = gateway()
    handed = request.environ.get(FAST_OUTCOME)
    if handed is not None:
        fields, outcome = handed
        if isinstance(outcome, BaseException):
            raise outcome  # the group's statement failed: it is never run again
        return _finish_send(gw, token, fields, outcome)
    if gw.committer is None or idempotency.HEADER in request.headers:
        authenticate_and_count(token)
        return _send_alone(gw, idempotency.request_key())
    try:
        fields = send_fields(gw, json_body())
    except ApiError:
        authenticate(token)  # a bad token is a 401 whatever the body holds
        raise
    if fields["schedule"] is not None:
        authenticate_and_count(token)
        return _send_alone(gw, None, fields)
    token_hash = hash_token(token)
    prepared = prepare_send(token_hash=token_hash, **plain_fields(fields))
    if prepared is None:  # `to` is no number: which check fails first is decided alone
        authenticate_and_count(token)
        return _send_alone(gw, None, fields)
    outcome = gw.committer.submit(
        prepared, rate_key=rate_key(token_hash), request_id=logs.request_id.get()
    )
    return _finish_send(gw, token, fields, outcome)


def _finish_send(gw: Gateway, token: str, fields: dict, outcome: Outcome) -> ResponseReturnValue:
    """Answer a send the committer decided: 201, 429, 500 (not queued), or decide it alone."""
    if outcome.message is None:
        authenticate(token)
        if outcome.retry_after is not None:
            raise too_many_requests(outcome.retry_after)
        return _send_alone(gw, None, fields)
    if outcome.queue_error is not None:
        return _not_queued(gw, outcome.message.id, outcome.queue_error)
    return _accepted(outcome.message.id, accepted_answer(outcome.message))


def send_fields(gw: Gateway, data: dict) -> dict:
    """Return a send's checked fields from its JSON body, or answer the contract's 400."""
    req = parse(SendSms, data)
    body = checked_body(req.body, req.smart_encoding)
    reference = check_reference(req.reference)
    try:
        callback = req.status_callback and check_callback_url(
            req.status_callback, allow_private=gw.settings.callback_allow_private
        )
    except Rejected as rejected:
        raise ApiError(400, rejected.message) from None
    if not 1 <= req.from_ <= MAX_ID:
        raise ApiError(400, "From number not found")
    try:
        schedule = Schedule.parse(
            send_at=req.send_at,
            quiet_hours=req.quiet_hours,
            validity_period=req.validity_period,
            now=utcnow(),
        )
    except Rejected as rejected:
        raise ApiError(400, rejected.message) from None
    return dict(
        phone_number_id=req.from_,
        to=req.to,
        body=body,
        status_callback=callback or None,
        reference=reference,
        schedule=schedule,
    )


def plain_fields(fields: dict) -> dict:
    """Return a send's fields without its schedule: what the committer's statement takes."""
    return {name: value for name, value in fields.items() if name != "schedule"}


def _send_alone(gw: Gateway, key: str | None, fields: dict | None = None) -> ResponseReturnValue:
    """Accept one send in its own transaction, with its Idempotency-Key's answer if it has one."""
    digest = ""
    if key is not None:
        digest = idempotency.fingerprint(json_body())
        with gw.sessions() as session:
            earlier = idempotency.replay(session, user_id=g.user_id, key=key, digest=digest)
        if earlier is not None:
            return earlier
    fields = fields or send_fields(gw, json_body())
    try:
        message, answer = _accept_in_session(gw, fields, key=key, digest=digest)
    except Rejected as rejected:
        raise ApiError(400, rejected.message) from None
    except IntegrityError:
        # The same key was committed by a concurrent request: ours rolled back.
        with gw.sessions() as session:
            earlier = idempotency.replay(session, user_id=g.user_id, key=key or "", digest=digest)
        if earlier is None:
            raise
        return earlier
    if message.status == "scheduled":  # released when it is due (shared.release)
        return _accepted(message.id, answer)
    try:
        gw.enqueue_send(message.id)
    except Exception as exc:  # the broker is down: undo the charge, say so
        return _not_queued(gw, message.id, exc)
    return _accepted(message.id, answer)


def _accepted(message_id: int, answer: dict) -> tuple[dict, int]:
    ACCEPTED.labels("single").inc()
    g.message_id = message_id  # on the request's access line (api.metrics)
    return answer, 201


def _not_queued(gw: Gateway, message_id: int, error: Exception) -> tuple[dict, int]:
    """Fail and refund a committed message the broker did not take; answer 500."""
    log.error("could not queue message", extra={"message_id": message_id, "error": str(error)})
    with gw.sessions() as session:
        stored = session.get(Message, message_id)
        fail(session, message=stored, error_code=None, error_message="Could not be queued")
        idempotency.forget(session, message_id=message_id)
        session.commit()
    return {"message": "Failed to send SMS", "error": f"Queue unavailable: {error}"}, 500


def accepted_answer(message: Any) -> dict:
    """Return the 201's body for an accepted message."""
    return {"message": "SMS queued for sending", "data": message_json(message)}


def _accept_in_session(
    gw: Gateway, fields: dict, *, key: str | None, digest: str
) -> tuple[Any, dict]:
    """Accept in a transaction that also stores the Idempotency-Key's answer, if any.

    With a key, on PostgreSQL, the committer's statement is tried first, in
    the transaction; when it accepts nothing (and always without a key: the
    committer just tried) `accept_message` runs each check to reject with the
    right message.
    """
    with gw.sessions() as session:
        message = None
        if gw.committer is not None and key is not None and fields["schedule"] is None:
            prepared = prepare_send(token_hash=hash_token(bearer_token()), **plain_fields(fields))
            if prepared is not None:
                message = accept_many(session.connection(), [prepared])[0]
        if message is None:
            message = accept_message(session, user_id=g.user_id, mode=g.mode, **fields)
        answer = accepted_answer(message)
        if key is not None:
            idempotency.remember(
                session,
                user_id=g.user_id,
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
        message = _own_message(session, message_id)
    return {"data": message_json(message)}


def _own_message(session: Session, message_id: int) -> Message:
    """Return the caller's message of its token's mode, or answer 404."""
    message = session.scalar(
        select(Message).where(
            Message.id == message_id, Message.user_id == g.user_id, Message.mode == g.mode
        )
    )
    if message is None:
        raise ApiError(404, "SMS not found")
    return message


@bp.get("/sms/<int:message_id>/events")
@document(
    "Every status one of your messages took", responses={200: MessageEventsOut, 404: ErrorOut}
)
def events(message_id: int):
    """Return the statuses the message took, oldest first, each once."""
    with gateway().sessions() as session:
        _own_message(session, message_id)
        rows = message_events(session, message_id=message_id)
    return {
        "data": [
            {
                "status": row.status,
                "error_code": row.error_code,
                "occurred_at": timestamp(row.occurred_at),
            }
            for row in rows
        ]
    }


@bp.post("/sms/quote")
@document(
    "What a send would cost: checked and priced as the send is, nothing written or charged",
    body=QuoteSms,
    responses={200: QuoteOut, 400: ErrorOut},
)
def quote_send():
    """Check and price a send without writing it; a balance too low says `affordable: false`."""
    req = parse(QuoteSms, json_body())
    body = checked_body(req.body, req.smart_encoding)
    if req.from_ is not None and not 1 <= req.from_ <= MAX_ID:
        raise ApiError(400, "From number not found")
    with gateway().sessions() as session:
        try:
            found = quote(
                session, user_id=g.user_id, phone_number_id=req.from_, to=req.to, body=body
            )
        except Rejected as rejected:
            raise ApiError(400, rejected.message) from None
    priced = found.priced
    return {
        "data": {
            "to": priced.to,
            "country": priced.country,
            "segments": priced.segments,
            "encoding": priced.encoding,
            "segment_price": as_number(priced.segment_price),
            "total_cost": as_number(priced.total_cost),
            "balance": as_number(found.balance),
            "affordable": found.affordable,
        }
    }


@bp.post("/sms/<int:message_id>/cancel")
@document(
    "Cancel a message no worker has taken yet (scheduled or queued), refunding it",
    responses={200: SmsCanceled, 404: ErrorOut, 409: ErrorOut},
)
def cancel(message_id: int):
    """Cancel and refund one of the user's scheduled or queued messages."""
    with gateway().sessions() as session:
        try:
            message = cancel_message(session, user_id=g.user_id, message_id=message_id, mode=g.mode)
        except NotCancelable:
            raise ApiError(409, "SMS can no longer be canceled") from None
        if message is None:
            raise ApiError(404, "SMS not found")
        session.commit()
        log.info("message canceled", extra={"message_id": message_id})
        return {"message": "SMS canceled", "data": message_json(message)}


@bp.get("/sms")
@document("List your messages", query=SmsQuery, responses={200: SmsPage, 400: ErrorOut})
def index():
    """List the user's messages, newest first, filtered, by cursor (`limit`, `before`)."""
    limit, before = paging.cursor()
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        raise ApiError(400, f"The status field must be one of {', '.join(STATUSES)}")
    # An unescaped `+` arrives as a space: put it back before trimming.
    to = request.args.get("to", "").replace(" ", "+").strip() or None
    with gateway().sessions() as session:
        result = listing.list_messages(
            session,
            user_id=g.user_id,
            mode=g.mode,
            limit=limit,
            before=before,
            status=status,
            campaign_id=paging.int_arg("campaign_id", None, 1, MAX_ID),
            to=to,
            reference=request.args.get("reference") or None,
        )
    return {"data": [message_json(m) for m in result.items], "meta": paging.meta(result, limit)}
