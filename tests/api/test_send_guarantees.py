"""Money under concurrency, Idempotency-Key, and a broker outage."""

from __future__ import annotations

import threading
from decimal import Decimal

from sqlalchemy import func, select

from api.app import create_app
from shared.billing import ledger_sum
from shared.models import IdempotencyKey, LedgerEntry, Message, User
from tests.api.conftest import auth
from tests.factories import make_number, make_user, set_price

TO = "+14155550123"


def _concurrently(count: int, work) -> list:
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_fifty_concurrent_sends_against_a_balance_for_ten(app, session):
    user_id, token = make_user(session, balance="0.0790")  # exactly 10 x 0.0079
    number_id = make_number(session, user_id=user_id)
    set_price(session, country="US", price="0.0079")

    def send(_: int):
        answer = app.test_client().post(
            "/api/user/sms", json={"from": number_id, "to": TO, "body": "Hi"}, headers=auth(token)
        )
        return answer.status_code, answer.get_json()["message"]

    results = _concurrently(50, send)
    assert results.count((201, "SMS queued for sending")) == 10
    assert results.count((400, "Insufficient balance")) == 40
    session.expire_all()
    assert session.get(User, user_id).balance == Decimal("0")
    assert ledger_sum(session, user_id=user_id) == Decimal("0")
    assert session.scalar(select(func.count(Message.id))) == 10
    charges = session.scalar(select(func.count()).where(LedgerEntry.kind == "charge"))
    assert charges == 10


def test_idempotency_key_replays_the_first_answer(client, session, account):
    user_id, token, number_id = account
    headers = {**auth(token), "Idempotency-Key": "order-42"}
    body = {"from": number_id, "to": TO, "body": "Hi"}
    first = client.post("/api/user/sms", json=body, headers=headers)
    again = client.post("/api/user/sms", json=dict(reversed(body.items())), headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.get_json() == again.get_json()
    assert session.scalar(select(func.count(Message.id))) == 1
    assert ledger_sum(session, user_id=user_id) == Decimal("9.9921")

    changed = client.post("/api/user/sms", json={**body, "body": "Other"}, headers=headers)
    assert changed.status_code == 409
    assert changed.get_json() == {"message": "Idempotency-Key reused with a different request"}


def test_same_key_from_another_user_is_independent(client, session, account):
    _, token, number_id = account
    other_id, other_token = make_user(session, balance="1")
    other_number = make_number(session, user_id=other_id, number="+15005550020")
    key = {"Idempotency-Key": "k1"}
    a = client.post(
        "/api/user/sms",
        json={"from": number_id, "to": TO, "body": "A"},
        headers={**auth(token), **key},
    )
    b = client.post(
        "/api/user/sms",
        json={"from": other_number, "to": TO, "body": "B"},
        headers={**auth(other_token), **key},
    )
    assert a.status_code == b.status_code == 201
    assert a.get_json()["data"]["id"] != b.get_json()["data"]["id"]


def test_concurrent_requests_with_one_key_charge_once(app, session, account):
    user_id, token, number_id = account
    headers = {**auth(token), "Idempotency-Key": "race"}
    body = {"from": number_id, "to": TO, "body": "Hi"}

    def send(_: int):
        answer = app.test_client().post("/api/user/sms", json=body, headers=headers)
        return answer.status_code, answer.get_json()["data"]["id"]

    results = _concurrently(10, send)
    assert {status for status, _ in results} == {201}
    assert len({message_id for _, message_id in results}) == 1
    assert session.scalar(select(func.count(Message.id))) == 1
    assert ledger_sum(session, user_id=user_id) == Decimal("9.9921")


def test_broker_down_answers_500_and_charges_nothing(settings, session, account):
    user_id, token, number_id = account
    app = create_app(settings.with_overrides(redis_url="redis://127.0.0.1:1/0"))
    headers = {**auth(token), "Idempotency-Key": "while-down"}
    answer = app.test_client().post(
        "/api/user/sms", json={"from": number_id, "to": TO, "body": "Hi"}, headers=headers
    )
    app.extensions["smsgw"].close()
    assert answer.status_code == 500
    assert answer.get_json()["message"] == "Failed to send SMS"
    assert answer.get_json()["error"]
    session.expire_all()
    assert session.get(User, user_id).balance == Decimal("10.0000")
    assert ledger_sum(session, user_id=user_id) == Decimal("10.0000")
    message = session.scalar(select(Message))
    assert message.status == "failed"
    # The key was released, so the same request may be tried again once the broker is back.
    assert session.scalar(select(func.count(IdempotencyKey.id))) == 0
