"""The user's balance and phone numbers."""

from __future__ import annotations

from flask import Blueprint, g
from sqlalchemy import select

from api.auth import require_user
from api.gateway import gateway
from api.openapi import document
from api.schemas import BalanceOut, PhoneNumbersOut, WebhookSecretOut
from api.serialize import number_json
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
            select(PhoneNumber).where(PhoneNumber.user_id == g.user_id).order_by(PhoneNumber.id)
        ).all()
    return {"data": [number_json(n) for n in rows]}
