"""Test mode end to end: a real API, a real worker with beat, and the sandbox watching.

Every test here fails if a test send reaches the provider (the sandbox counts
each create it receives) or the ledger (the user's rows and balance are
compared before and after).
"""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal

import pytest
import redis
import requests
from sqlalchemy import select

from api.app import create_app
from shared import accounts
from shared.models import LedgerEntry, OptOut, User
from tests.api.conftest import auth
from tests.factories import make_number, make_user, set_price
from tests.processes import celery_worker, stack_env, wait_until
from tests.worker.test_user_callbacks import Receiver

NEW_YORK = "+12125550123"
PRICE = Decimal("0.0079")


@pytest.fixture(scope="module")
def stack(database_url, redis_url, sandbox, tmp_path_factory):
    """A worker consuming every queue, with beat, wired to the sandbox; yield its log."""
    _server, base_url = sandbox
    redis.Redis.from_url(redis_url).flushdb()
    log = tmp_path_factory.mktemp("testmode") / "worker.log"
    env = stack_env(
        database_url=database_url,
        redis_url=redis_url,
        twilio_api_base=base_url,
        CALLBACK_ALLOW_PRIVATE="true",
    )
    with celery_worker(env, log, queues="sms,campaign,callbacks", concurrency=4, beat=True):
        yield log
    redis.Redis.from_url(redis_url).flushdb()


@pytest.fixture
def client(settings, sandbox, stack):
    _server, base_url = sandbox
    requests.post(f"{base_url}/_sandbox/reset", timeout=5)
    app = create_app(settings.with_overrides(twilio_api_base=base_url, callback_allow_private=True))
    yield app.test_client()
    app.extensions["smsgw"].close()


@pytest.fixture
def receiver():
    receiver = Receiver(failures=0)
    yield receiver
    receiver.close()


@pytest.fixture
def tokens(session):
    """A user with $1.00 and a number: (user_id, live token, test token, number id)."""
    user_id, live = make_user(session, balance="1.00")
    number_id = make_number(session, user_id=user_id)
    set_price(session, country="US", price=str(PRICE))
    test = accounts.create_token(session, user_id=user_id, test=True)[1]
    session.commit()
    return user_id, live, test, number_id


def creates_at_twilio(sandbox) -> int:
    state = requests.get(f"{sandbox[1]}/_sandbox/messages", timeout=5).json()
    return len(state["messages"]) + len(state.get("rejected", []))


def ledger(session, user_id):
    session.expire_all()
    rows = session.scalars(select(LedgerEntry.id).where(LedgerEntry.user_id == user_id)).all()
    return list(rows), session.get(User, user_id).balance


def message(client, token, message_id):
    return client.get(f"/api/user/sms/{message_id}", headers=auth(token)).get_json()["data"]


def wait_status(client, token, message_id, statuses, stack, seconds=10.0):
    return wait_until(
        lambda: (m := message(client, token, message_id))["status"] in statuses and m,
        seconds=seconds,
        what=f"message {message_id} to be {statuses}",
        log=stack,
    )


def test_a_test_send_is_checked_priced_delivered_and_never_charged_or_sent(
    client, session, tokens, sandbox, stack, receiver
):
    user_id, _live, test, number_id = tokens
    before = ledger(session, user_id)
    started = time.monotonic()
    answer = client.post(
        "/api/user/sms",
        json={
            "from": number_id,
            "to": NEW_YORK,
            "body": "Hello from the test suite",
            "status_callback": receiver.url,
            "reference": "order-7",
        },
        headers=auth(test),
    )
    assert answer.status_code == 201, answer.get_json()
    data = answer.get_json()["data"]
    assert data["mode"] == "test" and data["status"] == "queued"
    assert data["total_cost"] == float(PRICE) and data["reference"] == "order-7"
    final = wait_status(client, test, data["id"], {"delivered"}, stack)
    assert time.monotonic() - started < 10
    assert re.fullmatch(r"SM[0-9a-f]{32}", final["sms_sid"])
    events = client.get(f"/api/user/sms/{data['id']}/events", headers=auth(test)).get_json()
    assert [e["status"] for e in events["data"]] == ["queued", "sending", "sent", "delivered"]
    # Callbacks as for a live message: `sending` via the sweeper, `sent` and `delivered` at once.
    wait_until(lambda: len(receiver.posts) >= 3, seconds=30, what="three user callbacks", log=stack)
    posted = [json.loads(body) for _headers, body in receiver.posts]
    assert sorted(p["status"] for p in posted) == ["delivered", "sending", "sent"]
    assert {p["reference"] for p in posted} == {"order-7"}
    assert creates_at_twilio(sandbox) == 0
    assert ledger(session, user_id) == before


def test_a_test_campaign_is_delivered_and_never_charged_or_sent(
    client, session, tokens, sandbox, stack
):
    user_id, live, test, number_id = tokens
    before = ledger(session, user_id)
    recipients = [{"to": f"+1212555{n:04d}", "vars": {"n": n}} for n in range(3)]
    answer = client.post(
        "/api/user/sms/campaigns",
        json={"from": number_id, "body": "Ticket {n}", "recipients": recipients},
        headers=auth(test),
    )
    assert answer.status_code == 202, answer.get_json()
    campaign_id = answer.get_json()["data"]["id"]
    assert answer.get_json()["data"]["mode"] == "test"

    def delivered():
        data = client.get(f"/api/user/sms/campaigns/{campaign_id}", headers=auth(test)).get_json()[
            "data"
        ]
        return data["counts"]["delivered"] == 3 and data

    data = wait_until(delivered, seconds=30, what="the campaign delivered", log=stack)
    assert data["total_cost"] == float(PRICE * 3) and data["refunded"] == 0
    assert creates_at_twilio(sandbox) == 0
    assert ledger(session, user_id) == before
    # The live token sees neither the campaign nor its messages.
    live_view = client.get(f"/api/user/sms/campaigns/{campaign_id}", headers=auth(live))
    assert live_view.status_code == 404
    listed = client.get("/api/user/sms/campaigns", headers=auth(live)).get_json()["data"]
    assert campaign_id not in [c["id"] for c in listed]


@pytest.mark.parametrize(
    ("to", "code"), [("+15005550001", 21211), ("+15005550009", 21614), ("+15005550004", 21610)]
)
def test_magic_numbers_fail_with_their_code_and_record_no_opt_out(
    client, session, tokens, sandbox, stack, to, code
):
    user_id, live, test, number_id = tokens
    before = ledger(session, user_id)
    answer = client.post(
        "/api/user/sms", json={"from": number_id, "to": to, "body": "Hi"}, headers=auth(test)
    )
    assert answer.status_code == 201, answer.get_json()
    final = wait_status(client, test, answer.get_json()["data"]["id"], {"failed"}, stack)
    assert final["error_code"] == code and final["sms_sid"] is None
    assert ledger(session, user_id) == before  # nothing charged, nothing refunded
    assert session.scalar(select(OptOut.id).where(OptOut.user_id == user_id)) is None
    assert creates_at_twilio(sandbox) == 0


def test_test_mode_checks_like_live_and_lists_only_its_own(client, session, tokens):
    user_id, live, test, number_id = tokens
    # The same 400s as live, the balance included: $1.00 does not cover 300 segments' worth.
    poor_id, _ = make_user(session, balance="0.00")
    poor_number = make_number(session, user_id=poor_id)
    poor_test = accounts.create_token(session, user_id=poor_id, test=True)[1]
    session.commit()
    broke = client.post(
        "/api/user/sms",
        json={"from": poor_number, "to": NEW_YORK, "body": "Hi"},
        headers=auth(poor_test),
    )
    assert broke.status_code == 400 and broke.get_json()["message"] == "Insufficient balance"
    bad = client.post(
        "/api/user/sms", json={"from": number_id, "to": "+1", "body": "Hi"}, headers=auth(test)
    )
    assert bad.get_json()["message"] == "Invalid to phone number"

    sent_live = client.post(
        "/api/user/sms", json={"from": number_id, "to": NEW_YORK, "body": "L"}, headers=auth(live)
    ).get_json()["data"]
    sent_test = client.post(
        "/api/user/sms", json={"from": number_id, "to": NEW_YORK, "body": "T"}, headers=auth(test)
    ).get_json()["data"]
    assert (sent_live["mode"], sent_test["mode"]) == ("live", "test")

    def ids(token, **query):
        page = client.get("/api/user/sms", query_string=query, headers=auth(token)).get_json()
        return [m["id"] for m in page["data"]]

    assert sent_test["id"] in ids(test) and sent_live["id"] not in ids(test)
    assert sent_live["id"] in ids(live) and sent_test["id"] not in ids(live)
    assert sent_test["id"] not in ids(live, to=NEW_YORK)
    for token, other in ((live, sent_test), (test, sent_live)):
        assert client.get(f"/api/user/sms/{other['id']}", headers=auth(token)).status_code == 404
        events = client.get(f"/api/user/sms/{other['id']}/events", headers=auth(token))
        assert events.status_code == 404
        cancel = client.post(f"/api/user/sms/{other['id']}/cancel", headers=auth(token))
        assert cancel.status_code == 404
