"""The send's fast path (api.fastsend) against the plain Flask view, its oracle.

Each request goes, from a fresh account, once through the app as it runs (fast
path first) and once through the Flask view alone; the answers, their
headers, the balance, the ledger, the queued tasks and the access lines must
be the same. The fast path must also really answer the common send itself.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from api.app import create_app
from shared.billing import ledger_sum
from shared.db import utcnow
from shared.models import LedgerEntry, OptOut, User
from tests.factories import make_number, make_user, set_price

TO = "+14155550123"
LATER = (utcnow() + timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S")

# (name, body or raw text, extra headers, what to do to the account first)
CASES = [
    ("plain send", {"body": "Hello"}, {}, None),
    ("callback and reference", {"body": "Hi", "reference": "r-1"}, {}, None),
    ("unicode, two segments", {"body": "ж" * 71}, {}, None),
    ("smart encoding", {"body": "“Quoted” — text", "smart_encoding": True}, {}, None),
    ("no token", {"body": "Hello"}, {"Authorization": ""}, None),
    ("bad token", {"body": "Hello"}, {"Authorization": "Bearer nope"}, None),
    ("bad JSON", "{not json", {}, None),
    ("not an object", "[1, 2]", {}, None),
    ("no body field", {}, {}, None),
    ("unknown number", {"body": "Hello", "from": 2**40}, {}, None),
    ("not a number", {"body": "Hello", "to": "12"}, {}, None),
    ("unpriced country", {"body": "Hello", "to": "+442071838750"}, {}, None),
    ("too poor", {"body": "Hello"}, {}, "poor"),
    ("opted out", {"body": "Hello"}, {}, "opted_out"),
    ("scheduled", {"body": "Later", "send_at": LATER}, {}, None),
    ("idempotency key", {"body": "Once"}, {"Idempotency-Key": "k-1"}, None),
    ("request id kept", {"body": "Hello"}, {"X-Request-Id": "req-fast-1"}, None),
]


@pytest.fixture
def plain_app(settings, engine, redis_client):
    """The same app with the fast path taken out: every send goes through Flask."""
    app = create_app(settings)
    app.wsgi_app = app.wsgi_app.plain
    yield app
    app.extensions["smsgw"].close()


def _account(session, setup: str | None) -> tuple[int, str, int]:
    user_id, token = make_user(session, balance="0.0010" if setup == "poor" else "10.00")
    number_id = make_number(session, user_id=user_id)
    set_price(session)
    if setup == "opted_out":
        session.add(OptOut(user_id=user_id, number=TO))
        session.commit()
    return user_id, token, number_id


def _send(app, session, redis_client, caplog, body, headers, setup) -> dict:
    """Send once from a fresh account; return what can be compared across accounts."""
    user_id, token, number_id = _account(session, setup)
    if isinstance(body, dict):
        body = json.dumps({"from": number_id, "to": TO, **body})
    sent = {"Authorization": f"Bearer {token}", **headers}
    queued = redis_client.llen("sms")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="api.access"):
        answer = app.test_client().post(
            "/api/user/sms", data=body, headers=sent, content_type="application/json"
        )
    session.expire_all()
    lines = [r for r in caplog.records if r.name == "api.access"]
    data = answer.get_json()
    if isinstance(data.get("data"), dict):
        for key in ("id", "user_id", "phone_number_id", "created_at", "updated_at", "send_at"):
            data["data"].pop(key, None)
    return {
        "status": answer.status_code,
        "json": data,
        "content_type": answer.headers["Content-Type"],
        "request_id": answer.headers.get("X-Request-Id") if "X-Request-Id" in headers else None,
        "has_request_id": bool(answer.headers.get("X-Request-Id")),
        "balance": session.get(User, user_id).balance,
        "ledger_rows": session.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.user_id == user_id)
        ),
        "ledger_sums": ledger_sum(session, user_id=user_id) == session.get(User, user_id).balance,
        "queued": redis_client.llen("sms") - queued,
        "access": [(r.getMessage(), r.status, r.message_id is not None) for r in lines],
    }


@pytest.mark.parametrize(("name", "body", "headers", "setup"), CASES, ids=[c[0] for c in CASES])
def test_the_fast_path_answers_as_the_view_does(
    name, body, headers, setup, app, plain_app, session, redis_client, caplog
):
    fast = _send(app, session, redis_client, caplog, body, headers, setup)
    plain = _send(plain_app, session, redis_client, caplog, body, headers, setup)
    assert fast == plain
    assert fast["access"] and fast["ledger_sums"]


def test_the_fast_path_answers_the_common_send_itself(app, session, redis_client, caplog):
    handed = []
    fast = app.wsgi_app
    plain = fast.plain
    fast.plain = lambda environ, start: handed.append(environ["PATH_INFO"]) or plain(environ, start)
    for name, body, headers, setup in CASES:
        handed.clear()
        answer = _send(app, session, redis_client, caplog, body, headers, setup)
        common = name in {"plain send", "callback and reference", "unicode, two segments"}
        common |= name in {"smart encoding", "request id kept"}
        assert (handed == []) == common, name  # the rest went to the view
        if common:
            assert answer["status"] == 201 and answer["queued"] == 1
            assert answer["balance"] < Decimal("10.00")
