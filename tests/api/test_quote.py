"""`POST /api/user/sms/quote`: the send's own checks and price, nothing written or charged."""

from __future__ import annotations

from decimal import Decimal

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from shared.models import LedgerEntry, Message, User
from shared.optouts import record_opt_out
from tests.api.conftest import auth
from tests.factories import make_number, make_user, set_price

DESTINATIONS = {
    "US": "+12125550123",
    "GB": "+447400123456",
    "DE": "+4915112345678",
    "JP": "+819012345678",
    "BR": "+5511912345678",
    "IN": "+919812345678",
}
# GSM-7 text, its extension characters, Smart Encoding's look-alikes, other scripts, emoji.
ALPHABET = (
    "abcXYZ 0189.,!?@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    "^{}\\[~]|€"
    "\u2018\u2019\u201c\u201d\u2013\u2014\u2026\u00a0\u00ab\u00bb\u200b"
    "привет中文"
    "\U0001f600\U0001f44d\U0001f3fd"
)


def quote(client, token, **fields):
    return client.post("/api/user/sms/quote", json=fields, headers=auth(token))


def counts(session, user_id):
    session.expire_all()
    messages = session.scalar(select(func.count()).where(Message.user_id == user_id))
    rows = session.scalar(select(func.count()).where(LedgerEntry.user_id == user_id))
    return messages, rows, session.get(User, user_id).balance


def test_a_quote_prices_like_a_send_and_writes_nothing(client, session, account):
    user_id, token, number_id = account
    before = counts(session, user_id)
    answer = quote(client, token, **{"from": number_id, "to": "+1 212 555 0123", "body": "Hi"})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {
        "data": {
            "to": "+12125550123",
            "country": "US",
            "segments": 1,
            "encoding": "GSM-7",
            "segment_price": 0.0079,
            "total_cost": 0.0079,
            "balance": 10.0,
            "affordable": True,
        }
    }
    assert counts(session, user_id) == before


def test_a_quote_without_from_skips_only_the_sender_checks(client, account):
    _user_id, token, _number_id = account
    answer = quote(client, token, to="+12125550123", body="x" * 161)
    assert answer.status_code == 200
    assert answer.get_json()["data"]["segments"] == 2


def test_a_quote_answers_the_sends_400s_but_not_for_the_balance(client, session, account):
    user_id, token, number_id = account
    other_user, _ = make_user(session)
    foreign = make_number(session, user_id=other_user)
    record_opt_out(session, user_id=user_id, number="+12125550199")
    session.commit()
    cases = [
        ({"from": foreign, "to": "+12125550123", "body": "Hi"}, "From number not found"),
        ({"from": number_id, "to": "+1", "body": "Hi"}, "Invalid to phone number"),
        ({"to": "+447400123456", "body": "Hi"}, "Destination country is not supported"),
        ({"to": "+12125550199", "body": "Hi"}, "Recipient has opted out"),
        ({"to": "+12125550123", "body": ""}, "The body field is required"),
        ({"to": "+12125550123", "body": "x" * 301}, None),
        ({"to": "+12125550123", "body": "Hi", "smart_encoding": "yes"}, None),
    ]
    for fields, message in cases:
        answer = quote(client, token, **fields)
        assert answer.status_code == 400, fields
        if message is not None:
            assert answer.get_json()["message"] == message
    poor_id, poor_token = make_user(session, balance="0.00")
    answer = quote(client, poor_token, to="+12125550123", body="Hi")
    assert answer.status_code == 200
    assert answer.get_json()["data"]["affordable"] is False
    assert answer.get_json()["data"]["balance"] == 0
    send = client.post(
        "/api/user/sms",
        json={"from": make_number(session, user_id=poor_id), "to": "+12125550123", "body": "Hi"},
        headers=auth(poor_token),
    )
    assert send.get_json()["message"] == "Insufficient balance"


def test_a_quote_needs_a_token(client):
    assert quote(client, "nope", to="+12125550123", body="Hi").status_code == 401


@pytest.fixture
def rich(session):
    """A user with $1,000 and a number, and every test destination priced."""
    user_id, token = make_user(session, balance="1000.00")
    number_id = make_number(session, user_id=user_id)
    for country, to in DESTINATIONS.items():
        assert phonenumbers.region_code_for_number(phonenumbers.parse(to)) == country
    return user_id, token, number_id


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.text(alphabet=ALPHABET, min_size=1, max_size=300).filter(str.strip),
    country=st.sampled_from(sorted(DESTINATIONS)),
    price=st.decimals(min_value="0.0001", max_value="0.5000", places=4),
    smart=st.booleans(),
)
def test_a_quote_and_the_send_after_it_always_agree(
    client, session, rich, body, country, price, smart
):
    user_id, token, number_id = rich
    set_price(session, country=country, price=str(price))
    fields = {"to": DESTINATIONS[country], "body": body, "smart_encoding": smart}
    quoted = quote(client, token, **{"from": number_id, **fields})
    assert quoted.status_code == 200, quoted.get_json()
    before = counts(session, user_id)[2]
    sent = client.post("/api/user/sms", json={"from": number_id, **fields}, headers=auth(token))
    if sent.status_code == 400:  # Smart Encoding can empty a body of invisible characters
        assert quoted.status_code == 400
        return
    assert sent.status_code == 201, sent.get_json()
    q, s = quoted.get_json()["data"], sent.get_json()["data"]
    for name in ("to", "segments", "encoding", "segment_price", "total_cost"):
        assert q[name] == s[name], name
    assert Decimal(str(q["total_cost"])) == price * q["segments"]
    assert before - counts(session, user_id)[2] == price * q["segments"]
