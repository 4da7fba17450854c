"""Applying Twilio status events: once, forward only, with final billing and user events."""

from __future__ import annotations

import logging
import threading
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from shared import delivery, messaging
from shared.handoff import hand_off
from shared.models import OptOut, TwilioEvent, UserCallback
from shared.providers import PermanentError, Sent
from tests.delivery_helpers import balance, handed_off, load, new_sid, refunds


def callback(
    session_factory, message, status, *, code=None, token="auto", sid=None, message_id=None
):
    """Apply one callback in its own transaction, as the webhook does."""
    with session_factory() as session:
        applied = delivery.apply_callback(
            session,
            sid=sid or message.sms_sid,
            status=status,
            error_code=code,
            token=str(uuid.uuid4()) if token == "auto" else token,
            message_id=message_id,
        )
        session.commit()
    return applied


def test_status_moves_forward_and_a_final_never_changes(session_factory):
    message = handed_off(session_factory)
    for status in ("queued", "sent", "delivered", "sent", "undelivered", "failed"):
        callback(session_factory, message, status)
    stored = load(session_factory, message.id)
    assert stored.status == "delivered" and stored.error_code is None
    assert refunds(session_factory, message.id) == 0


def test_failed_refunds_once_and_undelivered_keeps_the_charge(session_factory):
    failed = handed_off(session_factory)
    before = balance(session_factory, failed.user_id)
    callback(session_factory, failed, "failed", code=30008)
    callback(session_factory, failed, "failed", code=30008, token=None)
    assert balance(session_factory, failed.user_id) == before + failed.total_cost
    assert refunds(session_factory, failed.id) == 1
    undelivered = handed_off(session_factory)
    before = balance(session_factory, undelivered.user_id)
    callback(session_factory, undelivered, "undelivered", code=30003)
    assert balance(session_factory, undelivered.user_id) == before
    stored = load(session_factory, undelivered.id)
    assert (stored.status, stored.error_code) == ("undelivered", 30003)
    assert stored.error_message == "Unreachable destination handset"


def test_error_codes_get_readable_messages():
    assert delivery.error_message(30007) == "Message filtered by the carrier"
    assert delivery.error_message(30999) == "Twilio error 30999"
    assert delivery.error_message(30999, "Twilio's text") == "Twilio's text"
    assert delivery.parse_error_code("30003") == 30003
    assert delivery.parse_error_code("") is None and delivery.parse_error_code("x") is None


def test_a_repeat_by_token_or_by_sid_and_status_changes_nothing(session_factory):
    message = handed_off(session_factory)
    assert callback(session_factory, message, "sent", token="t-1").kind == "applied"
    assert callback(session_factory, message, "delivered", token="t-1").kind == "repeat"
    assert callback(session_factory, message, "sent", token="t-2").kind == "repeat"
    assert callback(session_factory, message, "sent", token=None).kind == "repeat"
    assert load(session_factory, message.id).status == "sent"
    with session_factory() as session:
        assert len(session.scalars(select(TwilioEvent.id)).all()) == 1


def test_an_unknown_sid_is_logged_and_ignored(session_factory, caplog):
    message = handed_off(session_factory)
    with caplog.at_level(logging.WARNING, logger="shared.delivery"):
        applied = callback(session_factory, message, "delivered", sid=new_sid())
    assert applied.kind == "unknown" and "unknown SID" in caplog.text
    # The URL's message id does not let a callback take over a message with another SID.
    applied = callback(session_factory, message, "delivered", sid=new_sid(), message_id=message.id)
    assert applied.kind == "unknown"
    too_long = "SM" + "0" * 60
    assert callback(session_factory, message, "sent", sid=too_long).kind == "unknown"
    assert load(session_factory, message.id).status == "sending"


class CallbackFirstProvider:
    """A provider whose callback reaches the gateway before `send` returns the SID."""

    def __init__(self, session_factory, status: str) -> None:
        self.session_factory, self.status, self.sid = session_factory, status, new_sid()

    def send(self, *, to, from_, body, status_callback, validity_period=None):
        message_id = int(status_callback.rsplit("=", 1)[1])
        with self.session_factory() as session:
            delivery.apply_callback(
                session,
                sid=self.sid,
                status=self.status,
                error_code=None,
                token=None,
                message_id=message_id,
                to=to,
            )
            session.commit()
        return Sent(self.sid, "queued")


def test_a_callback_before_the_sid_is_stored_is_matched_by_message_id(session_factory):
    message = handed_off(session_factory, sid=None, handoff="pending")
    with session_factory.begin() as session:
        session.get(type(message), message.id).status = "queued"
    provider = CallbackFirstProvider(session_factory, "delivered")
    outcome = hand_off(
        session_factory,
        provider,
        message_id=message.id,
        status_callback_base="http://gateway.test/webhooks/twilio/status",
    )
    stored = load(session_factory, message.id)
    assert outcome.kind == "sent"
    assert (stored.status, stored.sms_sid, stored.handoff) == ("delivered", provider.sid, "done")


def test_a_21610_records_the_opt_out(session_factory):
    message = handed_off(session_factory)
    callback(session_factory, message, "failed", code=21610)
    with session_factory() as session:
        assert messaging.is_opted_out(session, user_id=message.user_id, to=message.to)
        assert len(session.scalars(select(OptOut.id)).all()) == 1


def test_every_change_writes_one_user_event(session_factory):
    message = handed_off(session_factory, status_callback="https://example.com/hook")
    for status in ("queued", "sent", "sent", "delivered", "failed"):
        callback(session_factory, message, status)
    with session_factory() as session:
        rows = session.scalars(select(UserCallback).order_by(UserCallback.id)).all()
    assert [r.payload["status"] for r in rows] == ["sent", "delivered"]
    assert rows[1].payload["sms_sid"] == message.sms_sid
    assert set(rows[1].payload) == {
        "event_id",
        "id",
        "status",
        "sms_sid",
        "error_code",
        "campaign_id",
        "reference",
        "occurred_at",
    }
    assert rows[0].event_id != rows[1].event_id


def test_concurrent_failed_callbacks_refund_once(session_factory):
    message = handed_off(session_factory)
    before = balance(session_factory, message.user_id)
    barrier, run = threading.Barrier(6), uuid.uuid4().hex

    def post(i: int) -> None:
        barrier.wait()
        callback(session_factory, message, "failed", code=30008, token=f"{run}-{i % 2}")

    threads = [threading.Thread(target=post, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert balance(session_factory, message.user_id) == before + message.total_cost
    assert refunds(session_factory, message.id) == 1


SCENARIOS = {
    "delivered": [("queued", None), ("sent", None), ("delivered", None)],
    "undelivered": [("queued", None), ("sent", None), ("undelivered", 30005)],
    "failed": [("queued", None), ("sending", None), ("failed", 30008)],
}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), final=st.sampled_from(sorted(SCENARIOS)))
def test_any_order_with_duplicates_ends_the_same(session_factory, data, final):
    """Any permutation of the callbacks, with repeats, gives one final status and balance."""
    run = uuid.uuid4().hex  # Twilio's tokens are unique; examples share one database.
    events = [(status, code, f"{run}-{i}") for i, (status, code) in enumerate(SCENARIOS[final])]
    repeats = data.draw(
        st.lists(
            st.tuples(st.sampled_from(events), st.sampled_from(["same", "none", "new"])), max_size=6
        )
    )
    for (status, code, token), mode in repeats:
        other = {"same": token, "none": None, "new": f"x-{uuid.uuid4()}"}[mode]
        events.append((status, code, other))
    order = data.draw(st.permutations(events))
    message = handed_off(session_factory)
    start = balance(session_factory, message.user_id)
    for status, code, token in order:
        callback(session_factory, message, status, code=code, token=token)
    stored = load(session_factory, message.id)
    assert stored.status == final
    refunded = message.total_cost if final == "failed" else 0
    assert balance(session_factory, message.user_id) == start + refunded
    assert refunds(session_factory, message.id) == (1 if final == "failed" else 0)


class RefusingProvider:
    """A provider that refuses every message as Twilio does an opted-out recipient."""

    def send(self, **_):
        raise PermanentError(21610, "Attempt to send to unsubscribed recipient")


def test_a_21610_at_hand_off_opts_out_and_tells_the_user(session_factory):
    message = handed_off(
        session_factory, sid=None, handoff="pending", status_callback="https://example.com/hook"
    )
    with session_factory.begin() as session:
        session.get(type(message), message.id).status = "queued"
    outcome = hand_off(
        session_factory,
        RefusingProvider(),
        message_id=message.id,
        status_callback_base="http://gateway.test/webhooks/twilio/status",
    )
    assert outcome.kind == "failed" and refunds(session_factory, message.id) == 1
    with session_factory() as session:
        assert messaging.is_opted_out(session, user_id=message.user_id, to=message.to)
        rows = session.scalars(select(UserCallback).order_by(UserCallback.id)).all()
    # Both changes are left for the sweeper: the worker has no task to enqueue them with.
    assert [(r.payload["status"], r.enqueued_at) for r in rows] == [
        ("sending", None),
        ("failed", None),
    ]
    assert rows[1].payload["error_code"] == 21610
