"""The routes of the operator API (contract section 4, "Operator API").

Each is a thin adapter over one operator function of `shared.accounts`, the
one the `smsgw` CLI calls, answering the views the CLI prints
(`api.serialize`). Authentication and the Idempotency-Key are `api.admin`'s.
"""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

from flask import request
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from api import paging
from api.admin import bp, decimal_body, run, run_once
from api.admin_schemas import (
    MAX_AMOUNT,
    AddNumber,
    BalanceChangeOut,
    CreateToken,
    CreateUser,
    ImportedOut,
    NumberOne,
    NumbersPage,
    NumbersQuery,
    PriceOne,
    PricesPage,
    SetPrice,
    TokenCreatedOut,
    TokensPage,
    TopUp,
    UpdateNumber,
    UserCreatedOut,
    UserOne,
    UsersPage,
    check_amount,
    check_country,
    check_email,
    check_expires_at,
    check_mps,
    check_note,
    check_number,
    refuse,
)
from api.openapi import document
from api.paging import CursorQuery
from api.schemas import ErrorOut, parse
from api.serialize import (
    number_json,
    operator_number_json,
    price_json,
    timestamp,
    token_json,
    user_json,
)
from shared import accounts
from shared.accounts import MAX_PRICE, AccountError
from shared.db import MAX_ID
from shared.money import as_number

TAG = "operator"
KEYED = (
    "Header `Idempotency-Key` makes a repeat return the first answer and change nothing"
    " more; the same key with another body is 409."
)


@bp.post("/users")
@document(
    "Create a user with a first token (shown once)",
    body=CreateUser,
    responses={201: UserCreatedOut, 400: ErrorOut, 409: ErrorOut},
    tag=TAG,
    description=KEYED,
)
def create_user():
    """Create a user, its opening balance (a ledger `topup`) and its first token."""
    req = parse(CreateUser, decimal_body())
    email = check_email(req.email)
    balance = check_amount("balance", req.balance, low=Decimal(0), high=MAX_AMOUNT)

    def work(session: Session) -> tuple[dict[str, Any], int]:
        try:
            user, token = accounts.create_user(session, email=email, balance=balance)
        except IntegrityError:  # the same email, created at the same moment
            raise AccountError(f"a user with email {email} exists") from None
        session.refresh(user)  # the balance was credited by a statement
        created = {"id": user.id, "email": user.email, "balance": as_number(user.balance)}
        return {"data": {**created, "token": token}}, 201

    return run_once(work, body={"email": email, "balance": str(balance)})


@bp.get("/users")
@document(
    "List users, newest first",
    query=CursorQuery,
    responses={200: UsersPage, 400: ErrorOut},
    tag=TAG,
)
def users():
    """List one page of users."""
    limit, before = paging.cursor()

    def work(session: Session) -> tuple[dict[str, Any], int]:
        page = accounts.list_users(session, limit=limit, before=before)
        return {"data": [user_json(u) for u in page.items], "meta": paging.meta(page, limit)}, 200

    return run(work)


@bp.get("/users/<int:user_id>")
@document(
    "One user, with its balance, numbers and tokens",
    responses={200: UserOne, 404: ErrorOut},
    tag=TAG,
)
def user(user_id: int):
    """Show a user as `smsgw users show` does."""

    def work(session: Session) -> tuple[dict[str, Any], int]:
        found = accounts.get_user(session, user_id)
        numbers = accounts.user_numbers(session, user_id=user_id)
        tokens = accounts.user_tokens(session, user_id=user_id)
        return {
            "data": {
                **user_json(found),
                "numbers": [number_json(n) for n in numbers],
                "tokens": [token_json(t) for t in tokens],
            }
        }, 200

    return run(work)


@bp.post("/users/<int:user_id>/topups")
@document(
    "Top up (positive) or adjust (negative) a user's balance: one ledger row",
    body=TopUp,
    responses={201: BalanceChangeOut, 400: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    tag=TAG,
    description=KEYED + " A negative amount that would take the balance below zero is"
    " `400 Insufficient balance`.",
)
def topup(user_id: int):
    """Add a signed amount to the balance, as a `topup` or an `adjustment`."""
    req = parse(TopUp, decimal_body())
    amount = check_amount("amount", req.amount, low=-MAX_AMOUNT, high=MAX_AMOUNT)
    if amount == 0:
        raise refuse("amount", "The amount field must not be zero")
    note = check_note(req.note)

    def work(session: Session) -> tuple[dict[str, Any], int]:
        try:
            balance = accounts.adjust_balance(session, user_id=user_id, amount=amount, note=note)
        except DataError:  # past what Numeric(14, 4) holds
            raise AccountError("The balance would exceed its largest possible value") from None
        return {"data": {"id": user_id, "balance": as_number(balance)}}, 201

    return run_once(work, body={"amount": str(amount), "note": note})


@bp.post("/users/<int:user_id>/tokens")
@document(
    "Create an API token for a user (shown once)",
    body=CreateToken,
    responses={201: TokenCreatedOut, 400: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    tag=TAG,
    description=KEYED,
)
def create_token(user_id: int):
    """Create a live or test token; its text is in this answer only."""
    test = parse(CreateToken, decimal_body(empty_ok=True)).test

    def work(session: Session) -> tuple[dict[str, Any], int]:
        row, token = accounts.create_token(session, user_id=user_id, test=test)
        return {"data": {"id": row.id, "token": token, "mode": row.mode}}, 201

    return run_once(work, body={"test": test})


@bp.get("/users/<int:user_id>/tokens")
@document(
    "List a user's tokens, newest first (never their text)",
    query=CursorQuery,
    responses={200: TokensPage, 400: ErrorOut, 404: ErrorOut},
    tag=TAG,
)
def tokens(user_id: int):
    """List one page of a user's tokens."""
    limit, before = paging.cursor()

    def work(session: Session) -> tuple[dict[str, Any], int]:
        page = accounts.list_tokens(session, user_id=user_id, limit=limit, before=before)
        return {"data": [token_json(t) for t in page.items], "meta": paging.meta(page, limit)}, 200

    return run(work)


@bp.delete("/tokens/<int:token_id>")
@document(
    "Revoke a user's token: it answers 401 from the next request on",
    responses={204: "Revoked", 404: ErrorOut},
    tag=TAG,
)
def revoke_token(token_id: int):
    """Delete the token; nothing caches tokens, so every process refuses it at once."""
    run(lambda session: _removed(accounts.revoke_token(session, token_id=token_id)))
    return "", 204


@bp.post("/users/<int:user_id>/phone-numbers")
@document(
    "Give a user a phone number",
    body=AddNumber,
    responses={201: NumberOne, 400: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    tag=TAG,
    description=KEYED,
)
def add_number(user_id: int):
    """Add a number, stored in E.164."""
    req = parse(AddNumber, decimal_body())
    number, mps = check_number(req.number), check_mps(req.mps)
    expires_at = check_expires_at(req.expires_at)

    def work(session: Session) -> tuple[dict[str, Any], int]:
        phone = accounts.add_number(
            session,
            user_id=user_id,
            number=number,
            sms_capable=req.sms_capable,
            expires_at=expires_at,
            mps=mps,
        )
        return {"data": operator_number_json(phone)}, 201

    fields = {"number": number, "sms_capable": req.sms_capable, "mps": mps}
    return run_once(work, body={**fields, "expires_at": timestamp(expires_at)})


@bp.get("/phone-numbers")
@document(
    "List the phone numbers in use, newest first, of every user or of one",
    query=NumbersQuery,
    responses={200: NumbersPage, 400: ErrorOut, 404: ErrorOut},
    tag=TAG,
)
def numbers():
    """List one page of numbers; `user_id` names a user that must exist."""
    limit, before = paging.cursor()
    user_id = paging.int_arg("user_id", None, 1, MAX_ID)

    def work(session: Session) -> tuple[dict[str, Any], int]:
        page = accounts.list_numbers(session, user_id=user_id, limit=limit, before=before)
        data = [operator_number_json(n) for n in page.items]
        return {"data": data, "meta": paging.meta(page, limit)}, 200

    return run(work)


@bp.patch("/phone-numbers/<int:number_id>")
@document(
    "Change a number's SMS capability, expiry or rate; a field left out stays as it is",
    body=UpdateNumber,
    responses={200: NumberOne, 400: ErrorOut, 404: ErrorOut},
    tag=TAG,
)
def update_number(number_id: int):
    """Update the fields given; `expires_at: null` makes the number never expire."""
    req = parse(UpdateNumber, decimal_body())
    changes: dict[str, Any] = {"sms_capable": req.sms_capable}
    if "expires_at" in req.model_fields_set:
        changes["expires_at"] = check_expires_at(req.expires_at)
    if req.mps is not None:
        changes["mps"] = check_mps(req.mps)

    def work(session: Session) -> tuple[dict[str, Any], int]:
        phone = accounts.update_number(session, number_id=number_id, **changes)
        return {"data": operator_number_json(phone)}, 200

    return run(work)


@bp.delete("/phone-numbers/<int:number_id>")
@document(
    "Take a number from its user: sends from it are refused, its messages stay readable",
    responses={204: "Removed", 404: ErrorOut},
    tag=TAG,
)
def remove_number(number_id: int):
    """Mark the number removed; later sends from it are `400 From number not found`."""
    run(lambda session: _removed(accounts.remove_number(session, number_id=number_id)))
    return "", 204


def _removed(_: object) -> tuple[dict[str, Any], int]:
    return {}, 204


@bp.put("/prices/<country>")
@document(
    "Set the per-segment price of destinations in an ISO country",
    body=SetPrice,
    responses={200: PriceOne, 400: ErrorOut},
    tag=TAG,
)
def set_price(country: str):
    """Set or replace one country's price."""
    code = check_country(country)
    req = parse(SetPrice, decimal_body())
    price = check_amount("price", req.price, low=Decimal(0), high=MAX_PRICE)

    def work(session: Session) -> tuple[dict[str, Any], int]:
        return {"data": price_json(accounts.set_price(session, country=code, price=price))}, 200

    return run(work)


@bp.get("/prices")
@document(
    "Every price, by country",
    responses={200: PricesPage},
    tag=TAG,
    description="One price per ISO region, a few hundred at most: one page, `meta.next` null.",
)
def prices():
    """List every country's price."""

    def work(session: Session) -> tuple[dict[str, Any], int]:
        rows = accounts.list_prices(session)
        return {
            "data": [price_json(p) for p in rows],
            "meta": {"limit": len(rows), "next": None},
        }, 200

    return run(work)


@bp.post("/prices/import")
@document(
    "Set the prices of a CSV with header `country,price`: every row or none",
    responses={200: ImportedOut, 400: ErrorOut, 409: ErrorOut},
    tag=TAG,
    description="The CSV as the body (`text/csv`) or as the multipart upload field `file`, as"
    " `smsgw prices import`. A bad row loads nothing and is named by its line (the header is"
    " line 1). " + KEYED,
    extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {
                    "schema": {"type": "string", "examples": ["country,price\nUS,0.0079\n"]}
                },
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
            },
        }
    },
)
def import_prices():
    """Load a price list in one transaction."""
    text = _csv_text()

    def work(session: Session) -> tuple[dict[str, Any], int]:
        imported = accounts.import_prices(session, io.StringIO(text, newline=""))
        return {"data": {"imported": imported}}, 200

    return run_once(work, body=text)


def _csv_text() -> str:
    """Return the uploaded CSV (field `file`), or the body itself, as text."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise refuse("file", "The file field is required")
        raw = upload.read()
    else:
        raw = request.get_data()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise refuse("file", "The file must be UTF-8 text") from None
