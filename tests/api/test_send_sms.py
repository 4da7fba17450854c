"""POST /api/user/sms: the contract's answers, the charge and the queue."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from shared.billing import ledger_sum
from shared.models import Message, OptOut, User
from tests.api.conftest import auth
from tests.factories import make_number, make_user

TO = "+14155550123"


def send(client, token, **fields):
    body = {"from": fields.pop("from_", None), "to": TO, "body": "Hello"}
    body.update(fields)
    return client.post("/api/user/sms", json=body, headers=auth(token))


def balance(session, user_id) -> Decimal:
    session.expire_all()
    return session.get(User, user_id).balance


def test_send_is_charged_stored_and_queued(client, session, account, redis_client):
    user_id, token, number_id = account
    answer = send(client, token, from_=number_id)
    assert answer.status_code == 201
    body = answer.get_json()
    assert body["message"] == "SMS queued for sending"
    data = body["data"]
    assert data["status"] == "queued" and data["sms_sid"] is None
    assert data["to"] == TO and data["user_id"] == user_id and data["phone_number_id"] == number_id
    assert (data["segments"], data["encoding"]) == (1, "GSM-7")
    assert data["segment_price"] == 0.0079 and data["total_cost"] == 0.0079
    assert len(data["created_at"]) == 19 and data["created_at"] == data["updated_at"]
    assert balance(session, user_id) == Decimal("9.9921")
    assert ledger_sum(session, user_id=user_id) == Decimal("9.9921")
    queued = [json.loads(raw) for raw in redis_client.lrange("sms", 0, -1)]
    assert [q["headers"]["task"] for q in queued] == ["send_message"]
    assert queued[0]["headers"]["argsrepr"] == f"[{data['id']}]"


def test_long_unicode_body_is_priced_per_segment(client, session, account):
    user_id, token, number_id = account
    answer = send(client, token, from_=number_id, body="é" * 71)  # é is GSM-7
    assert (answer.get_json()["data"]["segments"], answer.get_json()["data"]["encoding"]) == (
        1,
        "GSM-7",
    )
    answer = send(client, token, from_=number_id, body="ж" * 71)
    data = answer.get_json()["data"]
    assert (data["segments"], data["encoding"], data["total_cost"]) == (2, "UCS-2", 0.0158)


def test_recipient_is_stored_in_e164(client, account):
    _, token, number_id = account
    answer = send(client, token, from_=number_id, to="+1 (415) 555-0123")
    assert answer.status_code == 201
    assert answer.get_json()["data"]["to"] == TO


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}]
)
def test_missing_or_bad_token_is_401(client, account, headers):
    answer = client.post("/api/user/sms", json={}, headers=headers)
    assert answer.status_code == 401
    assert answer.get_json() == {"message": "Unauthenticated"}


@pytest.mark.parametrize(
    "raw, message",
    [
        ("not json", "Invalid JSON body"),
        ("[1, 2]", "Invalid JSON body"),
        ('"text"', "Invalid JSON body"),
        ("{}", "The from field is required"),
        ('{"from": 1, "body": "x"}', "The to field is required"),
        ('{"from": 1, "to": "+14155550123"}', "The body field is required"),
        ('{"from": "1", "to": "+14155550123", "body": "x"}', "The from field must be an integer"),
        ('{"from": true, "to": "+14155550123", "body": "x"}', "The from field must be an integer"),
        ('{"from": 1.5, "to": "+14155550123", "body": "x"}', "The from field must be an integer"),
        ('{"from": 1, "to": 14155550123, "body": "x"}', "The to field must be a string"),
        ('{"from": 1, "to": "+14155550123", "body": ["x"]}', "The body field must be a string"),
        ('{"from": 1, "to": "+14155550123", "body": ""}', "The body field is required"),
        ('{"from": 1, "to": "+14155550123", "body": "   "}', "The body field is required"),
    ],
)
def test_malformed_requests_are_400(client, account, raw, message):
    _, token, _ = account
    answer = client.post(
        "/api/user/sms", data=raw, headers=auth(token), content_type="application/json"
    )
    assert answer.status_code == 400
    assert answer.get_json()["message"] == message


def test_body_length_counts_code_points(client, session, account):
    user_id, token, number_id = account
    assert send(client, token, from_=number_id, body="😀" * 300).status_code == 201
    answer = send(client, token, from_=number_id, body="a" * 301)
    assert answer.status_code == 400
    assert answer.get_json()["message"] == "The body field must not be greater than 300 characters"


def test_from_number_rules(client, session, account):
    user_id, token, number_id = account
    other_id, _ = make_user(session, balance="1")
    others = make_number(session, user_id=other_id, number="+15005550010")
    no_sms = make_number(session, user_id=user_id, number="+15005550011", sms_capable=False)
    expired = make_number(
        session,
        user_id=user_id,
        number="+15005550012",
        expires_at=datetime.utcnow() - timedelta(days=1),
    )
    future = make_number(
        session,
        user_id=user_id,
        number="+15005550013",
        expires_at=datetime.utcnow() + timedelta(days=30),
    )
    cases = {
        others: "From number not found",
        999999: "From number not found",
        2**40: "From number not found",
        -1: "From number not found",
        no_sms: "From number is not SMS capable",
        expired: "From number subscription has expired",
    }
    for from_id, message in cases.items():
        answer = send(client, token, from_=from_id)
        assert (answer.status_code, answer.get_json()["message"]) == (400, message), from_id
    assert send(client, token, from_=future).status_code == 201


@pytest.mark.parametrize("to", ["12345", "+1234567890", "hello", "+447700900123", ""])
def test_invalid_recipients(client, account, to):
    _, token, number_id = account
    answer = send(client, token, from_=number_id, to=to)
    assert (answer.status_code, answer.get_json()["message"]) == (400, "Invalid to phone number")


def test_unpriced_country_is_refused(client, account):
    _, token, number_id = account
    answer = send(client, token, from_=number_id, to="+33612345678")
    assert answer.get_json()["message"] == "Destination country is not supported"


def test_insufficient_balance_charges_nothing(client, session, account):
    user_id, token, number_id = account
    session.execute(User.__table__.update().values(balance=Decimal("0.0078")))
    session.commit()
    answer = send(client, token, from_=number_id)
    assert (answer.status_code, answer.get_json()["message"]) == (400, "Insufficient balance")
    assert balance(session, user_id) == Decimal("0.0078")
    assert session.scalar(select(Message.id)) is None


def test_opted_out_recipient_is_refused_before_charging(client, session, account):
    user_id, token, number_id = account
    session.add(OptOut(user_id=user_id, number=TO))
    session.commit()
    answer = send(client, token, from_=number_id)
    assert (answer.status_code, answer.get_json()["message"]) == (400, "Recipient has opted out")
    assert balance(session, user_id) == Decimal("10.0000")


def test_status_callback_must_be_public_http(client, account):
    _, token, number_id = account
    for url in ["ftp://example.com/x", "not a url", "http://127.0.0.1/hook", "http://10.0.0.1/x"]:
        answer = send(client, token, from_=number_id, status_callback=url)
        assert answer.get_json()["message"] == "Invalid status_callback URL", url


def test_oversized_request_is_413(client, account):
    _, token, number_id = account
    answer = client.post(
        "/api/user/sms", data="x" * 100_000, headers=auth(token), content_type="application/json"
    )
    assert answer.status_code == 413
    assert "message" in answer.get_json()


def test_nul_characters_are_a_400_not_a_500(client, session, account):
    user_id, token, number_id = account
    answer = send(client, token, from_=number_id, body="a\u0000b")
    assert answer.status_code == 400
    assert answer.get_json()["message"] == "The body field must not contain NUL characters"
    callback = send(client, token, from_=number_id, status_callback="http://x.test/\u0000")
    assert callback.get_json()["message"] == "Invalid status_callback URL"
    assert balance(session, user_id) == Decimal("10.0000")


def test_a_lone_surrogate_is_a_400_not_a_500(client, session, account):
    # JSON can escape half of a surrogate pair; such text cannot be stored or sent.
    user_id, token, number_id = account
    answer = send(client, token, from_=number_id, body="hi \ud83d there")
    assert answer.status_code == 400
    assert answer.get_json()["message"] == "The body field must be valid Unicode text"
    for field in ({"to": "+1415555\ud83d0123"}, {"status_callback": "https://x.test/\ud83d"}):
        other = send(client, token, from_=number_id, **field)
        assert other.status_code == 400, other.get_json()
    assert balance(session, user_id) == Decimal("10.0000")
