"""64-bit ids end to end: a message numbered past 2**31 is sent, read, listed and called back."""

from __future__ import annotations

import json

from sqlalchemy import select, text, update

from shared import user_callbacks
from shared.models import Message, TwilioEvent, UserCallback
from tests.api.conftest import auth
from tests.api.test_webhooks import signed_post
from tests.delivery_helpers import new_sid
from tests.worker.test_user_callbacks import Receiver

PAST_INT32 = 2**31 + 1000
SEQUENCES = ("messages", "ledger_entries", "twilio_events", "user_callbacks")


def test_a_message_past_2_to_the_31_goes_through_every_route(
    settings, engine, redis_client, session_factory, session
):
    from api.app import create_app
    from tests.factories import make_number, make_user, set_price

    with engine.begin() as conn:
        for table in SEQUENCES:
            conn.execute(text(f"SELECT setval('{table}_id_seq', {PAST_INT32})"))
    user_id, token = make_user(session, balance="10.00")
    number_id = make_number(session, user_id=user_id)
    set_price(session)
    receiver = Receiver(failures=0)
    app = create_app(settings.with_overrides(callback_allow_private=True))
    client = app.test_client()
    try:
        answer = client.post(
            "/api/user/sms",
            json={
                "from": number_id,
                "to": "+14155550123",
                "body": "Hi",
                "status_callback": receiver.url,
            },
            headers=auth(token),
        )
        assert answer.status_code == 201, answer.get_json()
        message_id = answer.get_json()["data"]["id"]
        assert message_id > 2**31

        shown = client.get(f"/api/user/sms/{message_id}", headers=auth(token)).get_json()
        assert shown["data"]["id"] == message_id
        listed = client.get(
            f"/api/user/sms?limit=1&before={message_id + 1}", headers=auth(token)
        ).get_json()
        assert [m["id"] for m in listed["data"]] == [message_id]

        sid = new_sid()
        with session_factory.begin() as tx:
            tx.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(status="sending", handoff="done", sms_sid=sid)
            )
        params = {"MessageSid": sid, "MessageStatus": "delivered", "AccountSid": "AC1"}
        webhook = signed_post(client, f"/webhooks/twilio/status?message_id={message_id}", params)
        assert webhook.status_code == 204
        assert (
            client.get(f"/api/user/sms/{message_id}", headers=auth(token)).get_json()["data"][
                "status"
            ]
            == "delivered"
        )

        with session_factory() as tx:
            event = tx.scalar(select(TwilioEvent).where(TwilioEvent.message_id == message_id))
            callback = tx.scalar(select(UserCallback).where(UserCallback.message_id == message_id))
        assert event.id > 2**31 and callback.id > 2**31
        outcome = user_callbacks.attempt(
            session_factory, callback_id=callback.id, allow_private=True
        )
        assert outcome.kind == "delivered"
        posted = [json.loads(body) for _, body in receiver.posts]
        assert [(p["id"], p["status"]) for p in posted] == [(message_id, "delivered")]
    finally:
        receiver.close()
        app.extensions["smsgw"].close()


def test_any_id_up_to_2_to_the_63_is_accepted_in_a_path(client, account):
    _, token, _ = account
    for path in ("/api/user/sms/{}", "/api/user/sms/campaigns/{}"):
        for value in (2**40, 2**63 - 1, 2**63, 10**30):
            answer = client.get(path.format(value), headers=auth(token))
            assert answer.status_code == 404, (path, value)
    answer = client.get(f"/api/user/sms?before={2**63 - 1}", headers=auth(token))
    assert answer.status_code == 200
