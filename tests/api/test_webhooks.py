"""The Twilio webhooks: signatures, replays, callbacks before the SID, opt-outs."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from api.app import create_app
from shared.models import OptOut, TwilioEvent
from tests.api.conftest import auth
from tests.conftest import AUTH_TOKEN
from tests.delivery_helpers import FROM, balance, handed_off, load, new_sid, refunds

STATUS = "/webhooks/twilio/status"
INBOUND = "/webhooks/twilio/inbound"
TO = "+14155550123"


def signed_post(
    client, path, params, *, base="http://gateway.test", token=AUTH_TOKEN, headers=None, **kwargs
):
    """Post form params signed the way Twilio signs them, for the public URL `base + path`."""
    signature = RequestValidator(token).compute_signature(base + path, params)
    return client.post(
        path, data=params, headers={"X-Twilio-Signature": signature, **(headers or {})}, **kwargs
    )


def status_params(message, status, **extra):
    return {
        "MessageSid": message.sms_sid,
        "MessageStatus": status,
        "AccountSid": "AC1",
        "From": FROM,
        "To": message.to,
        **extra,
    }


def events(session_factory) -> int:
    with session_factory() as session:
        return len(session.scalars(select(TwilioEvent.id)).all())


def test_a_valid_callback_is_applied(client, session_factory):
    message = handed_off(session_factory)
    path = f"{STATUS}?message_id={message.id}"
    answer = signed_post(client, path, status_params(message, "delivered"))
    assert answer.status_code == 204
    assert load(session_factory, message.id).status == "delivered"


@pytest.mark.parametrize("problem", ["missing", "wrong token", "tampered", "query dropped"])
def test_a_bad_or_missing_signature_is_403_and_changes_nothing(client, session_factory, problem):
    message = handed_off(session_factory)
    path = f"{STATUS}?message_id={message.id}"
    params = status_params(message, "failed", ErrorCode="30008")
    if problem == "missing":
        answer = client.post(path, data=params)
    elif problem == "wrong token":
        answer = signed_post(client, path, params, token="e" * 32)
    elif problem == "tampered":
        signature = RequestValidator(AUTH_TOKEN).compute_signature(
            "http://gateway.test" + path, {**params, "MessageStatus": "delivered"}
        )
        answer = client.post(path, data=params, headers={"X-Twilio-Signature": signature})
    else:
        signature = RequestValidator(AUTH_TOKEN).compute_signature(
            "http://gateway.test" + STATUS, params
        )
        answer = client.post(path, data=params, headers={"X-Twilio-Signature": signature})
    assert answer.status_code == 403
    assert load(session_factory, message.id).status == "sending"
    assert events(session_factory) == 0 and refunds(session_factory, message.id) == 0


@pytest.mark.parametrize("dev", [False, True])
def test_no_setting_turns_the_signature_check_off(
    settings, engine, redis_client, session_factory, dev
):
    # Not even development mode: `smsgw dev`'s sandbox signs its callbacks like Twilio.
    app = create_app(settings.with_overrides(dev=dev, callback_allow_private=True))
    client = app.test_client()
    message = handed_off(session_factory)
    for path, params in (
        (f"{STATUS}?message_id={message.id}", status_params(message, "delivered")),
        (INBOUND, {"From": TO, "To": FROM, "Body": "STOP", "MessageSid": new_sid()}),
    ):
        assert client.post(path, data=params).status_code == 403
    assert load(session_factory, message.id).status == "sending"
    assert events(session_factory) == 0
    app.extensions["smsgw"].close()


def test_the_signature_is_checked_against_the_public_url_behind_a_proxy(
    settings, engine, redis_client, session_factory
):
    app = create_app(settings.with_overrides(public_base_url="https://sms.example.com/"))
    client = app.test_client()
    message = handed_off(session_factory)
    path = f"{STATUS}?message_id={message.id}"
    params = status_params(message, "sent")
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "sms.example.com"}
    # What the app itself sees (http://localhost) is not what Twilio signed.
    seen = signed_post(client, path, params, base="http://localhost", headers=proxied)
    assert seen.status_code == 403
    public = signed_post(client, path, params, base="https://sms.example.com", headers=proxied)
    assert public.status_code == 204
    assert load(session_factory, message.id).status == "sent"
    app.extensions["smsgw"].close()


def test_a_replayed_callback_changes_nothing(client, session_factory):
    message = handed_off(session_factory)
    before = balance(session_factory, message.user_id)
    path = f"{STATUS}?message_id={message.id}"
    params = status_params(message, "failed", ErrorCode="30008")
    token = {"I-Twilio-Idempotency-Token": "4a1b4b3c-4fd9-4a2b-9d0a-9f0fd5e4c0e1"}
    for _ in range(3):
        assert signed_post(client, path, params, headers=token).status_code == 204
        assert signed_post(client, path, params).status_code == 204
    stored = load(session_factory, message.id)
    assert (stored.status, stored.error_code) == ("failed", 30008)
    assert balance(session_factory, message.user_id) == before + message.total_cost
    assert refunds(session_factory, message.id) == 1 and events(session_factory) == 1


def test_a_callback_before_the_sid_is_stored_is_matched_by_the_url(client, session_factory):
    message = handed_off(session_factory, sid=None, handoff="in_flight")
    sid = new_sid()
    path = f"{STATUS}?message_id={message.id}"
    params = {"MessageSid": sid, "MessageStatus": "sent", "To": message.to, "From": FROM}
    assert signed_post(client, path, params).status_code == 204
    stored = load(session_factory, message.id)
    assert (stored.status, stored.sms_sid, stored.handoff) == ("sent", sid, "done")


def test_an_unknown_sid_answers_2xx_and_is_logged(client, session_factory, caplog):
    params = {"MessageSid": new_sid(), "MessageStatus": "delivered", "To": TO, "From": FROM}
    with caplog.at_level(logging.WARNING, logger="shared.delivery"):
        answer = signed_post(client, STATUS, params)
    assert answer.status_code == 204 and "unknown SID" in caplog.text
    assert events(session_factory) == 0


def test_a_user_callback_is_enqueued_after_the_update(client, session_factory, redis_client):
    message = handed_off(session_factory, status_callback="https://example.com/hook")
    path = f"{STATUS}?message_id={message.id}"
    assert signed_post(client, path, status_params(message, "sent")).status_code == 204
    # On the callbacks queue: a slow receiver never holds a worker that sends.
    assert (redis_client.llen("callbacks"), redis_client.llen("sms")) == (1, 0)
    assert b"deliver_user_callback" in redis_client.lindex("callbacks", 0)


def inbound(client, body, *, from_=TO, to=FROM):
    return signed_post(
        client,
        INBOUND,
        {"From": from_, "To": to, "Body": body, "MessageSid": new_sid(), "AccountSid": "AC1"},
    )


def send(client, token, number_id):
    return client.post(
        "/api/user/sms", headers=auth(token), json={"from": number_id, "to": TO, "body": "Hi"}
    )


def test_stop_and_start_by_inbound_message(client, account, session_factory):
    user_id, token, number_id = account
    answer = inbound(client, "  stop ")
    assert answer.status_code == 200 and answer.mimetype == "text/xml"
    assert answer.get_data(as_text=True).endswith("<Response/>")
    before = balance(session_factory, user_id)
    refused = send(client, token, number_id)
    assert refused.status_code == 400
    assert refused.get_json() == {"message": "Recipient has opted out"}
    assert balance(session_factory, user_id) == before
    inbound(client, "Hello there")  # not a keyword: nothing changes
    assert send(client, token, number_id).status_code == 400
    inbound(client, "UNSTOP")
    assert send(client, token, number_id).status_code == 201


@pytest.mark.parametrize("word", ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"])
def test_every_stop_keyword_opts_out(client, account, session_factory, word):
    assert inbound(client, word.lower()).status_code == 200
    with session_factory() as session:
        assert session.scalar(select(OptOut.number)) == TO


def test_inbound_needs_a_valid_signature(client, account, session_factory):
    answer = client.post(INBOUND, data={"From": TO, "To": FROM, "Body": "STOP"})
    assert answer.status_code == 403
    with session_factory() as session:
        assert session.scalar(select(OptOut.id)) is None


def test_an_opt_out_is_per_user(client, account, session):
    from tests.factories import make_number, make_user

    other_id, other_token = make_user(session, balance="1.00")
    other_number = make_number(session, user_id=other_id, number="+15005550010")
    inbound(client, "STOP", to="+15005550010")
    _user_id, token, number_id = account
    assert send(client, token, number_id).status_code == 201
    assert send(client, other_token, other_number).status_code == 400


def test_the_webhook_secret_is_shown_to_its_user(client, account, session):
    from shared.models import User

    user_id, token, _ = account
    answer = client.get("/api/user/webhook-secret", headers=auth(token))
    assert answer.status_code == 200
    assert answer.get_json()["data"]["webhook_secret"] == session.get(User, user_id).webhook_secret
    assert client.get("/api/user/webhook-secret").status_code == 401
