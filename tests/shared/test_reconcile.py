"""Reconciliation against the sandbox: lapsed hand-offs handed on and sent once, fetches."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import requests
from sqlalchemy import update

from shared.db import utcnow
from shared.handoff import hand_off
from shared.models import Campaign, Message
from shared.providers import TransientError
from shared.providers.twilio import TwilioProvider
from shared.reconcile import reconcile_unfinished, take_over
from shared.settings import SettingsError, load_settings
from tests.delivery_helpers import FROM, TO, age, balance, handed_off, load, refunds

HOUR = 3600


@pytest.fixture
def twilio(sandbox, settings):
    """Return the sandbox's base URL and a provider for it; the sandbox starts empty."""
    _server, base_url = sandbox
    requests.post(f"{base_url}/_sandbox/reset", timeout=5)
    configure(base_url, callbacks=False, callback_delay_ms=10)
    yield base_url, TwilioProvider(settings.with_overrides(twilio_api_base=base_url))
    requests.post(f"{base_url}/_sandbox/reset", timeout=5)


def configure(base_url: str, **switches: object) -> None:
    requests.post(f"{base_url}/_sandbox/config", json=switches, timeout=5).raise_for_status()


def at_twilio(base_url: str) -> list[dict]:
    return requests.get(f"{base_url}/_sandbox/messages", timeout=5).json()["messages"]


def settled(base_url: str, count: int) -> list[dict]:
    """Wait until the sandbox's messages reached their final status."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        messages = at_twilio(base_url)
        if len(messages) == count and all(
            m["status"] in ("delivered", "undelivered") for m in messages
        ):
            return messages
        time.sleep(0.02)
    raise AssertionError(at_twilio(base_url))


def lapse(session_factory, message_id: int, seconds: float = 1) -> None:
    """Make a message's lease have run out `seconds` ago, as when its worker died."""
    past = utcnow() - timedelta(seconds=seconds)
    with session_factory.begin() as session:
        session.execute(update(Message).where(Message.id == message_id).values(lease_until=past))


def hand_on(session_factory, settings, base_url, report):
    """Run the hand-off the reconciler enqueued, as the next worker would."""
    ours = settings.with_overrides(twilio_api_base=base_url)
    for message_id in report.resend + report.resend_campaign:
        hand_off(
            session_factory,
            TwilioProvider(ours),
            message_id=message_id,
            status_callback_base=ours.status_callback_base,
            lease_seconds=ours.lease_seconds,
        )


def test_a_claim_whose_worker_died_is_sent_once_when_twilio_has_no_trace(
    twilio, session_factory, settings
):
    base_url, _provider = twilio
    message = handed_off(session_factory, sid=None, handoff="in_flight")
    lapse(session_factory, message.id)
    report = take_over(session_factory, hold_seconds=60, limit=10)
    assert report.resend == [message.id]
    assert load(session_factory, message.id).handoff == "unknown"  # looked up before it is sent
    hand_on(session_factory, settings, base_url, report)
    stored = load(session_factory, message.id)
    assert stored.sms_sid and stored.handoff == "done" and stored.status == "sending"
    assert [m["sid"] for m in at_twilio(base_url)] == [stored.sms_sid]
    assert refunds(session_factory, message.id) == 0


def test_a_claim_whose_call_reached_twilio_is_adopted_not_sent_again(
    twilio, session_factory, settings
):
    base_url, provider = twilio
    message = handed_off(session_factory, sid=None, handoff="in_flight")
    # The dead worker's call went out; it died before it stored the SID.
    sent = provider.send(to=TO, from_=FROM, body="Hello", status_callback="http://127.0.0.1:9/")
    lapse(session_factory, message.id)
    hand_on(
        session_factory, settings, base_url, take_over(session_factory, hold_seconds=60, limit=10)
    )
    assert load(session_factory, message.id).sms_sid == sent.sid
    assert len(at_twilio(base_url)) == 1


def test_a_sid_held_by_another_message_is_not_adopted(twilio, session_factory, settings):
    base_url, provider = twilio
    sent = provider.send(to=TO, from_=FROM, body="Hello", status_callback="http://127.0.0.1:9/")
    settled(base_url, 1)
    holder = handed_off(session_factory, sid=sent.sid)
    orphan = handed_off(session_factory, sid=None, handoff="in_flight")
    with session_factory.begin() as session:  # the same sender, recipient and body
        session.execute(
            update(Message).where(Message.id == orphan.id).values(user_id=holder.user_id)
        )
    lapse(session_factory, orphan.id)
    hand_on(
        session_factory, settings, base_url, take_over(session_factory, hold_seconds=60, limit=10)
    )
    stored = load(session_factory, orphan.id)
    assert stored.sms_sid not in (None, sent.sid)
    assert len(at_twilio(base_url)) == 2


def test_live_claims_and_messages_waiting_for_their_retry_are_left_alone(
    twilio, session_factory, settings
):
    live = handed_off(session_factory, sid=None, handoff="in_flight")
    waiting = handed_off(session_factory, sid=None, handoff="pending")
    for message in (live, waiting):  # as a claim, and as `hold_for_retry`, leave them
        lapse(session_factory, message.id, seconds=-30)
    assert take_over(session_factory, hold_seconds=60, limit=10).resend == []
    lapse(session_factory, waiting.id)  # its retry was due and never came: lost
    report = take_over(session_factory, hold_seconds=60, limit=10)
    assert report.resend == [waiting.id]
    assert load(session_factory, waiting.id).handoff == "pending"  # nothing was called: send
    # Held while its new task waits in the queue: not enqueued twice.
    assert take_over(session_factory, hold_seconds=60, limit=10).resend == []
    assert load(session_factory, live.id).handoff == "in_flight"


def test_take_overs_are_bounded_and_oldest_first(twilio, session_factory):
    old = [handed_off(session_factory, sid=None, handoff="unknown") for _ in range(3)]
    for n, message in enumerate(old):
        lapse(session_factory, message.id, seconds=100 - n)
    assert take_over(session_factory, hold_seconds=60, limit=2).resend == [old[0].id, old[1].id]
    assert take_over(session_factory, hold_seconds=60, limit=2).resend == [old[2].id]


class DownProvider:
    def find(self, **_):
        raise TransientError("503: down")

    def fetch(self, sid):
        raise TransientError("503: down")

    def send(self, **_):
        raise AssertionError("never sent while the lookup cannot answer")


def test_when_twilio_cannot_answer_nothing_is_decided(session_factory):
    message = handed_off(session_factory, sid=None, handoff="in_flight")
    with_sid = handed_off(session_factory)
    age(session_factory, with_sid.id, 2 * HOUR)
    lapse(session_factory, message.id)
    for message_id in take_over(session_factory, hold_seconds=60, limit=10).resend:
        outcome = hand_off(
            session_factory, DownProvider(), message_id=message_id, status_callback_base="x"
        )
        assert outcome.kind == "retry"
    reconcile_unfinished(session_factory, DownProvider(), older_than_seconds=HOUR, limit=10)
    assert (
        load(session_factory, message.id).status,
        load(session_factory, message.id).handoff,
    ) == (
        "sending",
        "unknown",
    )
    assert load(session_factory, with_sid.id).status == "sending"


@pytest.mark.parametrize("outcome", ["delivered", "undelivered"])
def test_a_message_without_a_final_status_is_fetched(twilio, session_factory, outcome):
    base_url, provider = twilio
    configure(base_url, rate_undelivered=1.0 if outcome == "undelivered" else 0.0)
    sent = provider.send(to=TO, from_=FROM, body="Hello", status_callback="http://127.0.0.1:9/")
    [remote] = settled(base_url, 1)
    message = handed_off(session_factory, sid=sent.sid)
    young = handed_off(session_factory)
    age(session_factory, message.id, 2 * HOUR)
    before = balance(session_factory, message.user_id)
    report = reconcile_unfinished(session_factory, provider, older_than_seconds=HOUR, limit=10)
    stored = load(session_factory, message.id)
    assert report.updated == [message.id] and stored.status == outcome
    assert stored.error_code == remote["error_code"]
    if outcome == "undelivered":
        assert stored.error_message and not stored.error_message.startswith("Twilio error")
    assert balance(session_factory, message.user_id) == before
    assert load(session_factory, young.id).status == "sending"


def test_the_lease_and_the_reconcile_age_come_from_the_settings():
    env = {
        "DATABASE_URL": "postgresql://db/x",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "t",
    }
    defaults = load_settings(env)
    assert (defaults.lease_seconds, defaults.reconcile_unfinished_after_seconds) == (25, 3600)
    assert defaults.requeue_after_seconds == 60
    chosen = load_settings(
        {**env, "TWILIO_TIMEOUT": "4", "RECONCILE_UNFINISHED_AFTER_SECONDS": "7200"}
    )
    assert (chosen.lease_seconds, chosen.reconcile_unfinished_after_seconds) == (19, 7200)
    with pytest.raises(SettingsError, match="RECONCILE_UNFINISHED_AFTER_SECONDS"):
        load_settings({**env, "RECONCILE_UNFINISHED_AFTER_SECONDS": "soon"})


def test_a_lost_campaign_message_is_resent_on_the_campaign_queue(twilio, session_factory):
    lost = handed_off(session_factory, sid=None, handoff="pending")
    with session_factory() as session:
        campaign = Campaign(user_id=lost.user_id, phone_number_id=lost.phone_number_id, body="Hi")
        session.add(campaign)
        session.flush()
        session.get(Message, lost.id).campaign_id = campaign.id
        session.commit()
    lapse(session_factory, lost.id)
    report = take_over(session_factory, hold_seconds=60, limit=10)
    assert (report.resend, report.resend_campaign) == ([], [lost.id])
