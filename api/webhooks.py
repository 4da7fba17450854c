"""Twilio's webhooks: status callbacks and incoming messages, both signature-checked.

The signature is checked against the public URL Twilio called, built from
`PUBLIC_BASE_URL` rather than from the request, so it holds behind a
TLS-terminating proxy. There is no switch to turn the check off.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, request
from twilio.request_validator import RequestValidator

from api.errors import ApiError
from api.gateway import gateway
from shared import delivery, optouts
from shared.db import MAX_ID
from shared.inbound import receive

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks/twilio")
log = logging.getLogger(__name__)
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def public_url() -> str:
    """Return the URL Twilio signed: the public base, the path and the raw query string."""
    base = gateway().settings.public_base_url.rstrip("/")
    query = request.query_string.decode("latin-1")
    return f"{base}{request.path}" + (f"?{query}" if query else "")


@bp.before_request
def check_signature() -> None:
    """Answer 403, changing nothing, unless X-Twilio-Signature is valid for this request."""
    signature = request.headers.get("X-Twilio-Signature", "")
    validator = RequestValidator(gateway().settings.twilio_auth_token)
    if not signature or not validator.validate(public_url(), request.form, signature):
        log.warning("Twilio webhook %s with a missing or bad signature refused", request.path)
        raise ApiError(403, "Invalid signature")


@bp.post("/status")
def status():
    """Record and apply one status callback; 204 also for repeats and unknown SIDs."""
    form = request.form
    sid, twilio_status = form.get("MessageSid", ""), form.get("MessageStatus", "")
    if not sid or not twilio_status:
        raise ApiError(400, "MessageSid and MessageStatus are required")
    gw = gateway()
    with gw.sessions() as session:
        applied = delivery.apply_callback(
            session,
            sid=sid,
            status=twilio_status.lower(),
            error_code=delivery.parse_error_code(form.get("ErrorCode")),
            token=request.headers.get("I-Twilio-Idempotency-Token"),
            message_id=_row_id(request.args.get("message_id", "")),
            to=form.get("To") or None,
        )
        session.commit()
    if applied.callback_id is not None:
        try:
            gw.celery.send_task("deliver_user_callback", args=[applied.callback_id])
        except Exception as exc:  # the sweeper delivers it later; the update stands
            log.warning("user callback %s not enqueued: %s", applied.callback_id, exc)
    return "", 204


@bp.post("/inbound")
def inbound():
    """Store the message once per SID, forward it, apply STOP / START; answer empty TwiML.

    A repeat of a stored SID changes nothing: its keyword was applied the first time.
    """
    form = request.form
    to, from_, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
    gw = gateway()
    with gw.sessions() as session:
        received = receive(session, sid=form.get("MessageSid", ""), to=to, from_=from_, body=body)
        if not received.repeat:
            optouts.apply_inbound(session, to=to, from_=from_, body=body)
        session.commit()
    if received.callback_id is not None:
        try:
            gw.celery.send_task("deliver_user_callback", args=[received.callback_id])
        except Exception as exc:  # the sweeper delivers it later; the message is stored
            log.warning("inbound forward %s not enqueued: %s", received.callback_id, exc)
    return Response(EMPTY_TWIML, mimetype="text/xml")


def _row_id(raw: str) -> int | None:
    """Return the message id of the callback URL, or None if it cannot be one."""
    return int(raw) if raw.isdigit() and len(raw) <= 19 and int(raw) <= MAX_ID else None
