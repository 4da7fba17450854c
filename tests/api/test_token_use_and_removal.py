"""A token's last use (to the minute, no extra round trip), and what a removed number leaves.

A removed number sends nothing more and receives nothing more, yet every
message, campaign and inbound message that names it stays readable to its owner.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from shared import accounts
from shared.campaign_expansion import expand_campaign
from shared.db import utcnow
from shared.models import ApiToken, InboundMessage
from tests.api.conftest import auth
from tests.api.test_webhooks import signed_post
from tests.factories import make_number, make_user

NEW_YORK = "+12125550123"


def last_used(session, token: str):
    session.expire_all()
    return session.scalar(
        select(ApiToken.last_used_at).where(ApiToken.token_hash == accounts.hash_token(token))
    )


def set_last_used(session, token: str, when) -> None:
    session.execute(
        update(ApiToken)
        .where(ApiToken.token_hash == accounts.hash_token(token))
        .values(last_used_at=when)
    )
    session.commit()


def test_a_request_notes_its_tokens_use_to_the_minute(client, session, account):
    _user_id, token, _number_id = account
    assert last_used(session, token) is None
    assert client.get("/api/user/balance", headers=auth(token)).status_code == 200
    first = last_used(session, token)
    assert first is not None and abs(utcnow() - first) <= timedelta(seconds=2)
    recent = utcnow() - timedelta(seconds=30)
    set_last_used(session, token, recent)
    client.get("/api/user/balance", headers=auth(token))
    assert last_used(session, token) == recent  # within the minute: not written again
    stale = utcnow() - timedelta(minutes=5)
    set_last_used(session, token, stale)
    client.get("/api/user/balance", headers=auth(token))
    assert last_used(session, token) > stale


def test_a_send_through_the_group_statement_notes_it_too(client, session, account):
    _user_id, token, number_id = account
    stale = utcnow() - timedelta(minutes=5)
    set_last_used(session, token, stale)
    answer = client.post(
        "/api/user/sms",
        json={"from": number_id, "to": NEW_YORK, "body": "Hi"},
        headers=auth(token),
    )
    assert answer.status_code == 201
    assert last_used(session, token) > stale


def test_a_removed_numbers_messages_campaigns_and_replies_stay_readable(
    client, session, session_factory, account
):
    user_id, token, number_id = account
    sent = client.post(
        "/api/user/sms",
        json={"from": number_id, "to": NEW_YORK, "body": "Before"},
        headers=auth(token),
    ).get_json()["data"]
    campaign = client.post(
        "/api/user/sms/campaigns",
        json={"from": number_id, "body": "Hi", "recipients": [{"to": "+12125550124"}]},
        headers=auth(token),
    ).get_json()["data"]
    expand_campaign(session_factory, campaign_id=campaign["id"])
    reply = {"MessageSid": "SM" + "c3" * 16, "From": NEW_YORK, "To": "+15005550006", "Body": "Yo"}
    assert signed_post(client, "/webhooks/twilio/inbound", reply).status_code == 200
    [inbound_id] = session.scalars(
        select(InboundMessage.id).where(InboundMessage.user_id == user_id)
    ).all()

    accounts.remove_number(session, number_id=number_id)
    session.commit()

    for path in (
        f"/api/user/sms/{sent['id']}",
        f"/api/user/sms/campaigns/{campaign['id']}",
        f"/api/user/sms/inbound/{inbound_id}",
    ):
        answer = client.get(path, headers=auth(token))
        assert answer.status_code == 200, (path, answer.get_json())
        assert answer.get_json()["data"]["phone_number_id"] == number_id
    listed = client.get(
        "/api/user/sms/inbound", query_string={"phone_number_id": number_id}, headers=auth(token)
    ).get_json()["data"]
    assert [m["id"] for m in listed] == [inbound_id]
    # Nothing more goes out from it or comes in to it.
    again = client.post(
        "/api/user/sms",
        json={"from": number_id, "to": NEW_YORK, "body": "After"},
        headers=auth(token),
    )
    assert again.get_json() == {"message": "From number not found"}
    later = {**reply, "MessageSid": "SM" + "c4" * 16}
    assert signed_post(client, "/webhooks/twilio/inbound", later).status_code == 200
    assert (
        session.scalar(
            select(InboundMessage.id).where(InboundMessage.sms_sid == later["MessageSid"])
        )
        is None
    )
    numbers = client.get("/api/user/phone-numbers", headers=auth(token)).get_json()["data"]
    assert numbers == []
    patched = client.patch(
        f"/api/user/phone-numbers/{number_id}", json={"inbound_url": None}, headers=auth(token)
    )
    assert patched.status_code == 404


def test_a_number_given_to_another_user_after_removal_receives_for_them(client, session, account):
    user_id, token, number_id = account
    accounts.remove_number(session, number_id=number_id)
    session.commit()
    other_id, other_token = make_user(session)
    make_number(session, user_id=other_id, number="+15005550006")
    reply = {"MessageSid": "SM" + "c5" * 16, "From": NEW_YORK, "To": "+15005550006", "Body": "Hi"}
    assert signed_post(client, "/webhooks/twilio/inbound", reply).status_code == 200
    owner = session.scalar(
        select(InboundMessage.user_id).where(InboundMessage.sms_sid == reply["MessageSid"])
    )
    assert owner == other_id
    theirs = client.get("/api/user/sms/inbound", headers=auth(other_token)).get_json()["data"]
    assert len(theirs) == 1
    assert client.get("/api/user/sms/inbound", headers=auth(token)).get_json()["data"] == []
