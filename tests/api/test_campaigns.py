"""POST /api/user/sms/campaigns and friends: shape checks, expansion, charge, progress, cancel."""

from __future__ import annotations

import io
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from shared import campaign_expansion
from shared.billing import ledger_sum
from shared.campaign_expansion import expand_campaign
from shared.models import Campaign, CampaignRecipient, LedgerEntry, Message, OptOut, User
from tests.api.conftest import auth
from tests.factories import make_number

URL = "/api/user/sms/campaigns"


def create(client, token, number_id, recipients, body="Hi {name}", **extra):
    payload = {"from": number_id, "body": body, "recipients": recipients, **extra}
    return client.post(URL, json=payload, headers=auth(token))


def upload(client, token, number_id, csv_bytes: bytes, body="Hi {name}"):
    data = {"from": str(number_id), "body": body, "recipients": (io.BytesIO(csv_bytes), "list.csv")}
    return client.post(URL, data=data, headers=auth(token), content_type="multipart/form-data")


def person(n: int, name: str = "Ann") -> dict:
    return {"to": f"+1415555{n:04d}", "vars": {"name": name}}


def balance(session, user_id) -> Decimal:
    session.expire_all()
    return session.get(User, user_id).balance


def test_json_campaign_is_accepted_at_once_then_expanded(
    client, session, session_factory, account, redis_client
):
    user_id, token, number_id = account
    answer = create(client, token, number_id, [person(1), person(2, "Bob")])
    assert answer.status_code == 202
    body = answer.get_json()
    assert body["message"] == "Campaign accepted"
    data = body["data"]
    assert (data["status"], data["total"], data["accepted"]) == ("pending", 2, 0)
    queued = [json.loads(raw) for raw in redis_client.lrange("campaign", 0, -1)]
    assert [q["headers"]["task"] for q in queued] == ["expand_campaign"]
    assert balance(session, user_id) == Decimal("10.0000")  # nothing charged by the request

    status, chain = expand_campaign(session_factory, campaign_id=data["id"])
    assert status == "sending" and chain
    shown = client.get(f"{URL}/{data['id']}", headers=auth(token)).get_json()["data"]
    assert (shown["status"], shown["accepted"], shown["rejected"]) == ("sending", 2, 0)
    assert shown["counts"]["queued"] == 2 and shown["total_cost"] == 0.0158
    listed = client.get(f"/api/user/sms?campaign_id={data['id']}", headers=auth(token))
    messages = listed.get_json()["data"]
    assert sorted(m["body"] for m in messages) == ["Hi Ann", "Hi Bob"]
    assert {m["campaign_id"] for m in messages} == {data["id"]}
    assert balance(session, user_id) == Decimal("9.9842") == ledger_sum(session, user_id=user_id)
    assert session.scalar(select(func.count()).select_from(CampaignRecipient)) == 0


def test_csv_campaign_with_bom_and_blank_lines(client, session, session_factory, account):
    _user_id, token, number_id = account
    csv_bytes = "\ufeffto,name\n+14155550001,Ann\n\n+14155550002,Zoë\n".encode()
    answer = upload(client, token, number_id, csv_bytes)
    assert answer.status_code == 202, answer.get_json()
    campaign_id = answer.get_json()["data"]["id"]
    assert answer.get_json()["data"]["total"] == 2
    expand_campaign(session_factory, campaign_id=campaign_id)
    bodies = session.scalars(select(Message.body).order_by(Message.id)).all()
    assert bodies == ["Hi Ann", "Hi Zoë"]


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"body": "Hi", "recipients": [{"to": "+14155550001"}]}, 400, "The from field is required"),
        (
            {"from": 1, "body": "Hi {name.__class__}", "recipients": [{"to": "+14155550001"}]},
            400,
            "The body field is not a valid template: unsupported placeholder "
            "{name.__class__}: only {name} is allowed",
        ),
        ({"from": 1, "body": "Hi {0:>99}", "recipients": [{"to": "+1"}]}, 400, None),
        ({"from": 1, "body": "Hi {", "recipients": [{"to": "+1"}]}, 400, None),
        (
            {"from": 1, "body": "Hi", "recipients": []},
            400,
            "The recipients field must not be empty",
        ),
        (
            {"from": 1, "body": "Hi", "recipients": [{"to": 5}]},
            400,
            "The recipients.0.to field must be a string",
        ),
        (
            {"from": 1, "body": "Hi", "recipients": [{"to": "+1"}] * 100_001},
            400,
            "The recipients field must not have more than 100000 items",
        ),
        ({"from": 999, "body": "Hi", "recipients": [{"to": "+1"}]}, 400, "From number not found"),
    ],
)
def test_json_shape_rejections(client, session, account, payload, status, message):
    _user_id, token, number_id = account
    if payload.get("from") == 1:
        payload["from"] = number_id
    answer = client.post(URL, json=payload, headers=auth(token))
    assert answer.status_code == status
    if message:
        assert answer.get_json()["message"] == message
    assert session.scalar(select(func.count()).select_from(Campaign)) == 0


@pytest.mark.parametrize(
    ("csv_bytes", "message"),
    [
        (b"to,name\n+14155550001,\xff\xfe\n", "The recipients file must be UTF-8 text"),
        (
            b"phone,name\n+14155550001,Ann\n",
            "The recipients file must have a header row with a to column",
        ),
        (b"to\n+14155550001\n", "Missing template variable name"),
        (
            b"to,name\n" + b"+14155550001,A\n" * 100_001,
            "The recipients field must not have more than 100000 items",
        ),
    ],
)
def test_csv_rejections(client, session, account, csv_bytes, message):
    _user_id, token, number_id = account
    answer = upload(client, token, number_id, csv_bytes)
    assert (answer.status_code, answer.get_json()["message"]) == (400, message)
    assert session.scalar(select(func.count()).select_from(Campaign)) == 0


def test_a_multipart_upload_needs_its_fields(client, account):
    _user_id, token, number_id = account
    data = {"from": str(number_id), "recipients": (io.BytesIO(b"to\n+14155550001\n"), "a.csv")}
    answer = client.post(URL, data=data, headers=auth(token), content_type="multipart/form-data")
    assert (answer.status_code, answer.get_json()["message"]) == (400, "The body field is required")
    data = {"from": str(number_id), "body": "Hi"}
    answer = client.post(URL, data=data, headers=auth(token), content_type="multipart/form-data")
    assert answer.get_json()["message"] == "The recipients field is required"


def test_over_the_size_limit_is_413(app, client, account):
    _user_id, token, number_id = account
    gw = app.extensions["smsgw"]
    gw.settings = gw.settings.with_overrides(max_campaign_bytes=1000)
    answer = create(client, token, number_id, [person(n) for n in range(100)])
    assert answer.status_code == 413
    assert answer.get_json()["message"] == "Request body too large"
    big = b"to,name\n" + b"+14155550001,Ann\n" * 100
    assert upload(client, token, number_id, big).status_code == 413


@pytest.mark.parametrize("pooled", [False, True])
def test_rows_are_rejected_one_by_one_and_duplicates_sent_once(
    client, session, session_factory, account, monkeypatch, pooled
):
    user_id, token, number_id = account
    session.add(OptOut(user_id=user_id, number="+14155550009"))
    session.commit()
    recipients = [
        person(1),
        {"to": "+14155550002"},  # no name
        {"to": "not a number", "vars": {"name": "X"}},
        {"to": "+442079460000", "vars": {"name": "Uk"}},  # no GB price
        {"to": "+14155550009", "vars": {"name": "Stop"}},
        {"to": "+1 415 555 0001", "vars": {"name": "Again"}},  # duplicate of row 0
        {"to": "+14155550003", "vars": {"name": "x" * 300}},
        {"to": "+1415555\u00000004", "vars": {"name": "Nul"}},
        {"to": "+14155550005", "vars": {"name": "a\u0000b"}},
        {"to": "+1415555\ud83d0006", "vars": {"name": "Half"}},  # a lone surrogate
        {"to": "+14155550007", "vars": {"name": "half \ud83d"}},
    ]
    campaign_id = create(client, token, number_id, recipients).get_json()["data"]["id"]
    if pooled:  # the screening pool's path, in small chunks screened ahead of their use
        monkeypatch.setattr(campaign_expansion, "POOL_MIN_ROWS", 0)
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            expand_campaign(session_factory, campaign_id=campaign_id, chunk=2, executor=pool)
    else:
        expand_campaign(session_factory, campaign_id=campaign_id)
    data = client.get(f"{URL}/{campaign_id}", headers=auth(token)).get_json()["data"]
    assert (data["total"], data["accepted"], data["rejected"], data["duplicates"]) == (11, 1, 9, 1)
    assert data["rejections"] == [
        {"index": 1, "to": "+14155550002", "message": "Missing template variable name"},
        {"index": 2, "to": "not a number", "message": "Invalid to phone number"},
        {"index": 3, "to": "+442079460000", "message": "Destination country is not supported"},
        {"index": 4, "to": "+14155550009", "message": "Recipient has opted out"},
        {
            "index": 6,
            "to": "+14155550003",
            "message": "The body field must not be greater than 300 characters",
        },
        {"index": 7, "to": "+1415555\ufffd0004", "message": "Invalid to phone number"},
        {
            "index": 8,
            "to": "+14155550005",
            "message": "The body field must not contain NUL characters",
        },
        {"index": 9, "to": "+1415555?0006", "message": "Invalid to phone number"},
        {
            "index": 10,
            "to": "+14155550007",
            "message": "The body field must be valid Unicode text",
        },
    ]
    [message] = session.scalars(select(Message)).all()
    assert (message.to, message.body) == ("+14155550001", "Hi Ann")


def test_insufficient_balance_fails_the_campaign_and_charges_nothing(
    client, session, session_factory, account
):
    user_id, token, number_id = account
    session.get(User, user_id).balance  # noqa: B018
    recipients = [person(n) for n in range(1300)]  # 1300 x 0.0079 = 10.27 > 10.00
    campaign_id = create(client, token, number_id, recipients).get_json()["data"]["id"]
    assert expand_campaign(session_factory, campaign_id=campaign_id) == ("failed", None)
    data = client.get(f"{URL}/{campaign_id}", headers=auth(token)).get_json()["data"]
    assert (data["status"], data["failure_reason"]) == ("failed", "Insufficient balance")
    assert data["total_cost"] == 0 and sum(data["counts"].values()) == 0
    assert balance(session, user_id) == Decimal("10.0000") == ledger_sum(session, user_id=user_id)
    assert session.scalar(select(func.count()).select_from(Message)) == 0
    assert session.scalar(select(func.count()).select_from(CampaignRecipient)) == 0


def test_cancel_refunds_each_unsent_message_once(client, session, session_factory, account):
    user_id, token, number_id = account
    campaign_id = create(client, token, number_id, [person(n) for n in range(5)]).get_json()[
        "data"
    ]["id"]
    expand_campaign(session_factory, campaign_id=campaign_id)
    first = session.scalars(select(Message).order_by(Message.id)).first()
    first.status, first.handoff, first.sms_sid = "sending", "done", "SM" + "0" * 32
    session.commit()
    answer = client.post(f"{URL}/{campaign_id}/cancel", headers=auth(token))
    assert answer.status_code == 200
    data = answer.get_json()["data"]
    assert data["status"] == "canceled"
    assert data["counts"]["canceled"] == 4 and data["counts"]["sending"] == 1
    assert data["refunded"] == 0.0316
    again = client.post(f"{URL}/{campaign_id}/cancel", headers=auth(token)).get_json()["data"]
    assert again["refunded"] == 0.0316
    assert balance(session, user_id) == Decimal("9.9921") == ledger_sum(session, user_id=user_id)
    refunds = session.scalar(
        select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "refund")
    )
    assert refunds == 4


def test_a_later_refund_of_one_campaign_message_gives_back_its_own_cost_once(
    client, session, session_factory, account
):
    from shared import billing, messaging

    user_id, token, number_id = account
    campaign_id = create(client, token, number_id, [person(1), person(2)]).get_json()["data"]["id"]
    expand_campaign(session_factory, campaign_id=campaign_id)
    message = session.scalars(select(Message).order_by(Message.id)).first()
    assert messaging.fail(session, message=message, error_code=21211, error_message="bad")
    session.commit()
    assert not billing.refund(session, message=message, note="again")
    client.post(f"{URL}/{campaign_id}/cancel", headers=auth(token))
    assert balance(session, user_id) == Decimal("10.0000") == ledger_sum(session, user_id=user_id)


def test_other_users_campaigns_are_404(client, session, account):
    _user_id, token, number_id = account
    from tests.factories import make_user

    _other, other_token = make_user(session)
    campaign_id = create(client, token, number_id, [person(1)]).get_json()["data"]["id"]
    assert client.get(f"{URL}/{campaign_id}", headers=auth(other_token)).status_code == 404
    answer = client.post(f"{URL}/{campaign_id}/cancel", headers=auth(other_token))
    assert answer.status_code == 404


def test_an_expired_number_fails_the_campaign_at_expansion(
    client, session, session_factory, account
):
    from datetime import timedelta

    from shared.db import utcnow
    from shared.models import PhoneNumber

    user_id, token, _ = account
    number_id = make_number(session, user_id=user_id, number="+15005550007")
    campaign_id = create(client, token, number_id, [person(1)]).get_json()["data"]["id"]
    session.get(PhoneNumber, number_id).expires_at = utcnow() - timedelta(days=1)
    session.commit()
    assert expand_campaign(session_factory, campaign_id=campaign_id)[0] == "failed"
    data = client.get(f"{URL}/{campaign_id}", headers=auth(token)).get_json()["data"]
    assert data["failure_reason"] == "From number subscription has expired"
