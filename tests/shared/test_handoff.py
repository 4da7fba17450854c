"""The hand-off of messages to the sandbox: at most one create per message, refunds once."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from sqlalchemy import func, select, update

from shared import billing, messaging
from shared.db import utcnow
from shared.handoff import give_up, hand_off, requeue_stale
from shared.models import LedgerEntry, Message, OptOut, User
from shared.providers import UnknownOutcome
from shared.providers.twilio import TwilioProvider
from tests.factories import make_number, make_user, set_price

TO, FROM = "+14155550123", "+15005550006"


@pytest.fixture
def twilio(sandbox, settings):
    """Return the sandbox's base URL and settings for it; the sandbox starts empty."""
    _server, base_url = sandbox
    requests.post(f"{base_url}/_sandbox/reset", timeout=5)
    configure(base_url, callbacks=False)
    yield base_url, settings.with_overrides(twilio_api_base=base_url)
    requests.post(f"{base_url}/_sandbox/reset", timeout=5)


def configure(base_url: str, **switches: object) -> None:
    requests.post(f"{base_url}/_sandbox/config", json=switches, timeout=5).raise_for_status()


def received(base_url: str) -> list[dict]:
    return requests.get(f"{base_url}/_sandbox/messages", timeout=5).json()["messages"]


def wait_received(base_url: str, count: int) -> list[dict]:
    """Wait for the sandbox to hold `count` messages (a slow create finishes late)."""
    deadline = time.monotonic() + 5
    while len(messages := received(base_url)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return messages


def queue(session_factory, *, to: str = TO, from_: str = FROM, body: str = "Hello") -> int:
    """Write one accepted, charged message as the API would and return its id."""
    with session_factory() as session:
        user_id = session.scalar(select(User.id).limit(1))
        if user_id is None:
            user_id, _ = make_user(session, balance="1.00")
            set_price(session)
        number_id = make_number(session, user_id=user_id, number=from_)
        message = messaging.accept_message(
            session, user_id=user_id, phone_number_id=number_id, to=to, body=body
        )
        session.commit()
        return message.id


def send(session_factory, settings, message_id: int, provider=None):
    provider = provider or TwilioProvider(settings)
    return hand_off(
        session_factory,
        provider,
        message_id=message_id,
        status_callback_base=settings.status_callback_base,
    )


def load(session_factory, message_id: int) -> Message:
    with session_factory() as session:
        return session.get(Message, message_id)


def assert_refunded_once(session_factory) -> None:
    with session_factory() as session:
        user = session.scalars(select(User)).one()
        assert user.balance == Decimal("1.00")
        assert billing.ledger_sum(session, user_id=user.id) == user.balance
        refunds = select(func.count()).where(LedgerEntry.kind == "refund")
        assert session.scalar(refunds) == session.scalar(select(func.count(Message.id)))


def test_a_send_ends_sending_with_a_sid_and_reaches_the_sandbox_once(session_factory, twilio):
    base_url, settings = twilio
    message_id = queue(session_factory)
    outcome = send(session_factory, settings, message_id)
    message = load(session_factory, message_id)
    assert outcome.kind == "sent" and outcome.sid == message.sms_sid
    assert (message.status, message.handoff, message.attempts) == ("sending", "done", 1)
    assert message.sms_sid.startswith("SM") and message.handoff_at is not None
    [at_twilio] = received(base_url)
    assert at_twilio["sid"] == message.sms_sid
    callback = f"http://gateway.test/webhooks/twilio/status?message_id={message_id}"
    assert at_twilio["status_callback"] == callback


@pytest.mark.parametrize(
    ("to", "from_", "code"),
    [
        ("+15005550001", FROM, 21211),
        ("+15005550004", FROM, 21610),
        ("+15005550009", FROM, 21614),
        (TO, "+15005550001", 21212),
        (TO, "+15005550007", 21606),
    ],
)
def test_a_permanent_error_fails_and_refunds_once(session_factory, twilio, to, from_, code):
    base_url, settings = twilio
    message_id = queue(session_factory, to=to, from_=from_)
    assert send(session_factory, settings, message_id).kind == "failed"
    assert send(session_factory, settings, message_id).kind == "skipped"
    assert (
        give_up(
            session_factory, TwilioProvider(settings), message_id=message_id, reason="late"
        ).kind
        == "skipped"
    )
    message = load(session_factory, message_id)
    assert (message.status, message.error_code, message.sms_sid) == ("failed", code, None)
    assert message.error_message and "Unable to" not in message.error_message
    assert_refunded_once(session_factory)
    assert received(base_url) == []
    with session_factory() as session:
        opted_out = session.scalars(select(OptOut.number)).all()
    assert opted_out == ([to] if code == 21610 else [])


@pytest.mark.parametrize("switch, handoff", [("rate_429", "pending"), ("rate_500", "unknown")])
def test_a_transient_error_retries_then_sends_once(session_factory, twilio, switch, handoff):
    base_url, settings = twilio
    message_id = queue(session_factory)
    configure(base_url, **{switch: 1})
    outcome = send(session_factory, settings, message_id)
    assert outcome.kind == "retry"
    message = load(session_factory, message_id)
    # After a 5xx the next attempt looks the message up before it sends again.
    assert (message.status, message.handoff, message.sms_sid) == ("sending", handoff, None)
    configure(base_url, **{switch: 0})
    assert send(session_factory, settings, message_id).kind == "sent"
    assert len(received(base_url)) == 1
    assert load(session_factory, message_id).attempts == 2


def test_a_full_sender_queue_retries_and_give_up_refunds_once(session_factory, twilio):
    base_url, settings = twilio
    message_id = queue(session_factory, from_="+15005550008")
    for _ in range(2):
        outcome = send(session_factory, settings, message_id)
        assert outcome.kind == "retry" and "21611" in str(outcome.error)
    message = load(session_factory, message_id)
    assert (message.status, message.handoff, message.attempts) == ("sending", "pending", 2)
    provider = TwilioProvider(settings)
    assert give_up(session_factory, provider, message_id=message_id, reason="No luck").kind == (
        "failed"
    )
    assert give_up(session_factory, provider, message_id=message_id, reason="Again").kind == (
        "skipped"
    )
    message = load(session_factory, message_id)
    assert (message.status, message.error_message) == ("failed", "No luck")
    assert_refunded_once(session_factory)
    assert received(base_url) == []


def time_out(session_factory, settings, base_url, message_id: int, **switches) -> None:
    """Make one hand-off time out while the sandbox still works on the request."""
    configure(base_url, latency_ms=1000, **switches)
    slow = TwilioProvider(settings.with_overrides(twilio_timeout=0.3))
    outcome = send(session_factory, settings, message_id, slow)
    assert outcome.kind == "retry" and isinstance(outcome.error, UnknownOutcome)
    message = load(session_factory, message_id)
    assert (message.status, message.handoff) == ("sending", "unknown")


def test_after_a_timeout_the_next_attempt_adopts_the_message_it_finds(session_factory, twilio):
    base_url, settings = twilio
    message_id = queue(session_factory)
    time_out(session_factory, settings, base_url, message_id)
    [created] = wait_received(base_url, 1)
    configure(base_url, latency_ms=0)
    outcome = send(session_factory, settings, message_id)
    assert (outcome.kind, outcome.sid) == ("sent", created["sid"])
    assert load(session_factory, message_id).sms_sid == created["sid"]
    assert len(received(base_url)) == 1


def test_after_a_timeout_that_created_nothing_the_next_attempt_sends(session_factory, twilio):
    base_url, settings = twilio
    # An identical message already sent must not be mistaken for this one.
    earlier = queue(session_factory)
    assert send(session_factory, settings, earlier).kind == "sent"
    message_id = queue(session_factory)
    time_out(session_factory, settings, base_url, message_id, rate_500=1)
    time.sleep(0.8)  # let the slow request end in its 500
    configure(base_url, latency_ms=0, rate_500=0)
    outcome = send(session_factory, settings, message_id)
    assert outcome.kind == "sent" and outcome.sid != load(session_factory, earlier).sms_sid
    assert len(received(base_url)) == 2


def test_a_failed_lookup_keeps_the_message_unknown_and_sends_nothing(
    session_factory, twilio, settings
):
    base_url, sandbox_settings = twilio
    message_id = queue(session_factory)
    time_out(session_factory, sandbox_settings, base_url, message_id, rate_500=1)
    # `settings` points Twilio at a closed port: the lookup cannot be made.
    outcome = send(session_factory, settings, message_id)
    assert outcome.kind == "retry"
    give_up_outcome = give_up(
        session_factory, TwilioProvider(settings), message_id=message_id, reason="x"
    )
    assert give_up_outcome.kind == "skipped"
    message = load(session_factory, message_id)
    assert (message.status, message.handoff, message.attempts) == ("sending", "unknown", 3)


def test_give_up_after_a_timeout_adopts_what_reached_the_sandbox(session_factory, twilio):
    base_url, settings = twilio
    message_id = queue(session_factory)
    time_out(session_factory, settings, base_url, message_id)
    [created] = wait_received(base_url, 1)
    outcome = give_up(session_factory, TwilioProvider(settings), message_id=message_id, reason="x")
    assert (outcome.kind, outcome.sid) == ("sent", created["sid"])
    with session_factory() as session:
        assert session.scalar(select(func.count()).where(LedgerEntry.kind == "refund")) == 0


def test_give_up_after_a_timeout_that_created_nothing_refunds_once(session_factory, twilio):
    base_url, settings = twilio
    message_id = queue(session_factory)
    time_out(session_factory, settings, base_url, message_id, rate_500=1)
    time.sleep(0.8)
    provider = TwilioProvider(settings)
    assert give_up(session_factory, provider, message_id=message_id, reason="x").kind == "failed"
    assert give_up(session_factory, provider, message_id=message_id, reason="x").kind == "skipped"
    assert_refunded_once(session_factory)
    assert received(base_url) == []


def test_a_second_hand_off_in_a_row_is_skipped(session_factory, twilio):
    base_url, settings = twilio
    message_id = queue(session_factory)
    assert send(session_factory, settings, message_id).kind == "sent"
    assert send(session_factory, settings, message_id).kind == "skipped"
    assert len(received(base_url)) == 1
    assert load(session_factory, message_id).attempts == 1


def test_eight_concurrent_hand_offs_send_once(session_factory, twilio):
    base_url, settings = twilio
    message_id = queue(session_factory)
    provider = TwilioProvider(settings)
    barrier = threading.Barrier(8)
    kinds: list[str] = []

    def run() -> None:
        barrier.wait()
        kinds.append(send(session_factory, settings, message_id, provider).kind)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(kinds) == ["sent"] + ["skipped"] * 7
    assert len(received(base_url)) == 1
    assert load(session_factory, message_id).attempts == 1


def test_a_message_left_in_flight_or_gone_is_not_sent(session_factory, twilio):
    base_url, settings = twilio
    message_id = queue(session_factory)
    with session_factory.begin() as session:
        session.execute(update(Message).values(status="sending", handoff="in_flight"))
    assert send(session_factory, settings, message_id).kind == "skipped"
    assert send(session_factory, settings, message_id + 1).kind == "skipped"
    assert received(base_url) == []


def test_storing_the_sid_keeps_a_status_a_callback_set_meanwhile(session_factory, twilio):
    base_url, settings = twilio
    message_id = queue(session_factory)
    configure(base_url, latency_ms=500)
    worker = threading.Thread(target=send, args=(session_factory, settings, message_id))
    worker.start()
    time.sleep(0.25)
    with session_factory.begin() as session:  # as the status callback would, by message id
        session.execute(update(Message).where(Message.id == message_id).values(status="sent"))
    worker.join(5)
    message = load(session_factory, message_id)
    assert (message.status, message.handoff) == ("sent", "done")
    assert message.sms_sid == received(base_url)[0]["sid"]


def test_requeue_stale_returns_old_queued_messages_once(session_factory):
    old, fresh, started = (queue(session_factory) for _ in range(3))
    past = utcnow() - timedelta(minutes=5)
    with session_factory.begin() as session:
        session.execute(update(Message).where(Message.id != fresh).values(updated_at=past))
        session.execute(update(Message).where(Message.id == started).values(status="sending"))
    assert requeue_stale(session_factory, older_than_seconds=120, limit=10) == [old]
    assert requeue_stale(session_factory, older_than_seconds=120, limit=10) == []


def test_a_claim_carries_a_lease_of_one_call_and_a_margin(session_factory, twilio):
    base_url, settings = twilio
    configure(base_url, latency_ms=300)

    message_id = queue(session_factory)
    seen: list[Message] = []

    def watch() -> None:  # reads the row while the call is under way
        time.sleep(0.15)
        seen.append(load(session_factory, message_id))

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = utcnow()
    assert send(session_factory, settings, message_id).kind == "sent"
    watcher.join()
    [during] = seen
    assert during.handoff == "in_flight"
    lease = (during.lease_until - started).total_seconds()
    assert settings.lease_seconds - 1 <= lease <= settings.lease_seconds + 1
    assert settings.lease_seconds == settings.twilio_timeout + 15


def _timed_out_unknown(session_factory, settings, base_url) -> int:
    """Return a message left `unknown` by a call that created nothing at the sandbox."""
    message_id = queue(session_factory)
    time_out(session_factory, settings, base_url, message_id, rate_500=1)
    time.sleep(0.8)  # the slow request ends in its 500: nothing was created
    configure(base_url, latency_ms=0, rate_500=0)
    return message_id


def test_a_slow_lookup_renews_the_lease_and_the_message_is_sent_once(
    session_factory, twilio, monkeypatch
):
    base_url, settings = twilio
    message_id = _timed_out_unknown(session_factory, settings, base_url)
    provider = TwilioProvider(settings)
    look_up = provider.find

    def slow_find(**kwargs):  # the lookup eats the claim's call window
        time.sleep(0.3)
        return look_up(**kwargs)

    monkeypatch.setattr(provider, "find", slow_find)
    monkeypatch.setattr("shared.handoff.CALL_WINDOW", 0.2)
    # Without the renewal the claim would be too old for the call: `retry`, nothing sent.
    assert send(session_factory, settings, message_id, provider=provider).kind == "sent"
    assert len(received(base_url)) == 1


def test_a_lease_taken_over_during_the_lookup_is_not_sent_by_its_old_holder(
    session_factory, twilio, monkeypatch
):
    from shared.reconcile import take_over

    base_url, settings = twilio
    message_id = _timed_out_unknown(session_factory, settings, base_url)
    provider = TwilioProvider(settings)
    look_up = provider.find

    def lapsing_find(**kwargs):  # the holder stalls past its lease; the reconciler moves
        with session_factory.begin() as session:
            session.execute(
                update(Message)
                .where(Message.id == message_id)
                .values(lease_until=utcnow() - timedelta(seconds=1))
            )
        assert take_over(session_factory, hold_seconds=60, limit=10).resend == [message_id]
        return look_up(**kwargs)

    monkeypatch.setattr(provider, "find", lapsing_find)
    assert send(session_factory, settings, message_id, provider=provider).kind == "skipped"
    assert received(base_url) == []
    assert load(session_factory, message_id).handoff == "unknown"
    # The hand-off the reconciler enqueued sends it, once.
    assert send(session_factory, settings, message_id).kind == "sent"
    assert len(received(base_url)) == 1


def test_a_claim_past_its_call_window_makes_no_call(session_factory, twilio, monkeypatch):
    base_url, settings = twilio
    message_id = queue(session_factory)
    monkeypatch.setattr("shared.handoff.CALL_WINDOW", -1.0)  # every claim is too old
    outcome = send(session_factory, settings, message_id)
    assert outcome.kind == "retry" and "before the call" in str(outcome.error)
    assert received(base_url) == []
    assert load(session_factory, message_id).handoff == "pending"  # nothing sent: send again


def test_a_retry_holds_the_message_until_it_is_due(session_factory, twilio):
    from shared.handoff import hold_for_retry
    from shared.reconcile import take_over

    base_url, settings = twilio
    configure(base_url, rate_500=1)
    message_id = queue(session_factory)
    assert send(session_factory, settings, message_id).kind == "retry"
    hold_for_retry(session_factory, message_id=message_id, seconds=600)
    held = load(session_factory, message_id)
    assert held.handoff == "unknown"  # a 500 may have created it: looked up when retried
    assert (held.lease_until - utcnow()).total_seconds() > 600
    assert take_over(session_factory, hold_seconds=60, limit=10).resend == []
