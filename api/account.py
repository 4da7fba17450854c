"""The user's balance and phone numbers, and where a number's incoming messages go."""

from __future__ import annotations

from flask import Blueprint, g
from sqlalchemy import select

from api.auth import require_user
from api.errors import ApiError
from api.gateway import gateway
from api.openapi import document
from api.schemas import (
    BalanceOut,
    ErrorOut,
    PhoneNumberOne,
    PhoneNumbersOut,
    PhoneNumberUpdate,
    WebhookSecretOut,
    json_body,
    parse,
)
from api.serialize import number_json
from shared import inbound
from shared.errors import Rejected
from shared.models import PhoneNumber, User
from shared.money import CURRENCY, as_number

bp = Blueprint("account", __name__, url_prefix="/api/user")
bp.before_request(require_user)


@bp.get("/balance")
@document("Your prepaid balance", responses={200: BalanceOut})
def balance():
    """Return the prepaid balance."""
    with gateway().sessions() as session:
        amount = session.scalar(select(User.balance).where(User.id == g.user_id))
    return {"data": {"balance": as_number(amount), "currency": CURRENCY}}


@bp.get("/webhook-secret")
@document("The secret that signs your status callbacks", responses={200: WebhookSecretOut})
def webhook_secret():
    """Return the secret that signs the user's status callbacks (`X-Signature`)."""
    with gateway().sessions() as session:
        secret = session.scalar(select(User.webhook_secret).where(User.id == g.user_id))
    return {"data": {"webhook_secret": secret}}


@bp.get("/phone-numbers")
@document("Your phone numbers", responses={200: PhoneNumbersOut})
def phone_numbers():
    """Return the user's numbers."""
    with gateway().sessions() as session:
        rows = session.scalars(
            select(PhoneNumber)
            .where(PhoneNumber.user_id == g.user_id, PhoneNumber.removed_at.is_(None))
            .order_by(PhoneNumber.id)
        ).all()
    return {"data": [number_json(n) for n in rows]}


@bp.patch("/phone-numbers/<int:number_id>")
@document(
    "Forward your number's incoming messages to a URL, or stop (null)",
    body=PhoneNumberUpdate,
    responses={200: PhoneNumberOne, 400: ErrorOut, 404: ErrorOut},
)
def update_number(number_id: int):
    """Set or clear the number's `inbound_url`; another user's number is not found.

    The number is looked up before the body is read, so another user's id
    answers 404 whatever the body holds.
    """
    gw = gateway()
    with gw.sessions() as session:
        number = inbound.user_number(session, user_id=g.user_id, number_id=number_id)
        if number is None:
            raise ApiError(404, "Phone number not found")
        req = parse(PhoneNumberUpdate, json_body())
        if "inbound_url" in req.model_fields_set:  # absent: left as it is
            try:
                inbound.set_inbound_url(
                    session,
                    number=number,
                    inbound_url=req.inbound_url,
                    allow_private=gw.settings.callback_allow_private,
                )
            except Rejected as rejected:
                raise ApiError(400, rejected.message) from None
        session.commit()
        return {"data": number_json(number)}
