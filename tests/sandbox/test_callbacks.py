"""Signed status callbacks posted by the sandbox to a local receiver."""

from __future__ import annotations

import time

from twilio.request_validator import RequestValidator

from sandbox import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN

FROM = "+15017122661"
REQUIRED = {
    "MessageSid",
    "SmsSid",
    "MessageStatus",
    "SmsStatus",
    "AccountSid",
    "From",
    "To",
    "ApiVersion",
}


def send(twilio, receiver, to: str = "+15558675310"):
    """Create a message whose callbacks go to the receiver."""
    return twilio.messages.create(to=to, from_=FROM, body="Hi", status_callback=receiver.url)


def statuses(calls) -> list[str]:
    return [c["params"]["MessageStatus"] for c in calls]


def test_callbacks_arrive_in_order_and_are_signed(twilio, receiver):
    message = send(twilio, receiver)
    calls = receiver.wait_for(3)
    assert statuses(calls) == ["queued", "sent", "delivered"]
    validator = RequestValidator(SANDBOX_AUTH_TOKEN)
    for call in calls:
        params = call["params"]
        assert set(params) >= REQUIRED and "ErrorCode" not in params
        assert params["MessageSid"] == params["SmsSid"] == message.sid
        assert params["MessageStatus"] == params["SmsStatus"]
        assert params["AccountSid"] == SANDBOX_ACCOUNT_SID and params["ApiVersion"] == "2010-04-01"
        assert (params["From"], params["To"]) == (FROM, "+15558675310")
        assert call["path"] == "/twilio/status?tenant=7"
        assert call["headers"]["content-type"] == "application/x-www-form-urlencoded"
        assert validator.validate(receiver.url, params, call["headers"]["x-twilio-signature"])
        assert not validator.validate(
            receiver.url, {**params, "MessageStatus": "x"}, call["headers"]["x-twilio-signature"]
        )
    tokens = [c["headers"]["i-twilio-idempotency-token"] for c in calls]
    assert len(set(tokens)) == 3
    fetched = twilio.messages(message.sid).fetch()
    assert fetched.status == "delivered" and fetched.price == "-0.00790"


def test_undelivered_outcome_carries_an_error_code(twilio, receiver, sandbox_server):
    sandbox_server.configure(rate_undelivered=1)
    message = send(twilio, receiver)
    calls = receiver.wait_for(3)
    assert statuses(calls) == ["queued", "sent", "undelivered"]
    assert "ErrorCode" not in calls[1]["params"]
    code = calls[2]["params"]["ErrorCode"]
    assert code in {"30003", "30005", "30006"}
    fetched = twilio.messages(message.sid).fetch()
    assert fetched.status == "undelivered"
    assert fetched.error_code == int(code) and fetched.error_message


def test_callbacks_can_be_switched_off(twilio, receiver, sandbox_server):
    sandbox_server.configure(callbacks=False)
    message = send(twilio, receiver)
    time.sleep(0.2)
    assert receiver.calls == []
    assert twilio.messages(message.sid).fetch().status == "delivered"


def test_duplicates_repeat_each_callback_with_the_same_token(twilio, receiver, sandbox_server):
    sandbox_server.configure(callback_duplicates=True)
    send(twilio, receiver)
    calls = receiver.wait_for(6)
    time.sleep(0.05)
    assert len(receiver.calls) == 6
    assert statuses(calls) == ["queued", "queued", "sent", "sent", "delivered", "delivered"]
    tokens = [c["headers"]["i-twilio-idempotency-token"] for c in calls]
    assert tokens[0] == tokens[1] and tokens[2] == tokens[3] and tokens[4] == tokens[5]
    assert len(set(tokens)) == 3


def test_shuffle_posts_callbacks_out_of_order(twilio, receiver, sandbox_server):
    sandbox_server.configure(callback_shuffle=True)
    sids = [send(twilio, receiver, to=f"+1555867530{i}").sid for i in range(8)]
    receiver.wait_for(24)
    orders = [statuses(receiver.for_message(sid)) for sid in sids]
    assert all(sorted(order) == ["delivered", "queued", "sent"] for order in orders)
    assert any(order != ["queued", "sent", "delivered"] for order in orders)
    assert {twilio.messages(sid).fetch().status for sid in sids} == {"delivered"}


def test_late_callbacks_arrive_after_the_final_status(twilio, receiver, sandbox_server):
    sandbox_server.configure(callback_late_ms=300)
    started = time.monotonic()
    message = send(twilio, receiver)
    time.sleep(0.1)
    assert receiver.calls == []
    assert twilio.messages(message.sid).fetch().status == "delivered"
    calls = receiver.wait_for(3)
    assert statuses(calls) == ["queued", "sent", "delivered"]
    assert calls[0]["at"] - started >= 0.3


def test_each_message_gets_its_own_ordered_callbacks(twilio, receiver):
    sids = [send(twilio, receiver, to=f"+1555867531{i}").sid for i in range(10)]
    receiver.wait_for(30)
    for sid in sids:
        assert statuses(receiver.for_message(sid)) == ["queued", "sent", "delivered"]
