"""Reconciliation against the sandbox: adopt, fail and refund, re-enqueue, fetch; never resend."""

from __future__ import annotations

import time

import pytest
import requests

from shared.models import Campaign, Message
from shared.providers import TransientError
from shared.providers.twilio import TwilioProvider
from shared.reconcile import NOT_FOUND, reconcile_unfinished, reconcile_unsent
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


def unsent(session_factory, provider, **kwargs):
    return reconcile_unsent(
        session_factory, provider, older_than_seconds=HOUR, limit=kwargs.get("limit", 10)
    )


@pytest.mark.parametrize("handoff", ["in_flight", "unknown"])
def test_a_message_that_reached_twilio_is_adopted(twilio, session_factory, handoff):
    base_url, provider = twilio
    message = handed_off(session_factory, sid=None, handoff=handoff)
    sent = provider.send(to=TO, from_=FROM, body="Hello", status_callback="http://127.0.0.1:9/")
    settled(base_url, 1)
    age(session_factory, message.id, 2 * HOUR)
    report = unsent(session_factory, provider)
    stored = load(session_factory, message.id)
    assert report.adopted == [message.id] and report.failed == []
    assert (stored.sms_sid, stored.handoff, stored.status) == (sent.sid, "done", "delivered")
    assert refunds(session_factory, message.id) == 0
    assert len(at_twilio(base_url)) == 1


def test_a_message_not_at_twilio_is_failed_and_refunded_never_resent(twilio, session_factory):
    base_url, provider = twilio
    message = handed_off(session_factory, sid=None, handoff="unknown")
    before = balance(session_factory, message.user_id)
    age(session_factory, message.id, 2 * HOUR)
    report = unsent(session_factory, provider)
    stored = load(session_factory, message.id)
    assert report.failed == [message.id] and report.resend == []
    assert (stored.status, stored.error_message) == ("failed", NOT_FOUND)
    assert balance(session_factory, message.user_id) == before + message.total_cost
    assert at_twilio(base_url) == []
    # A second run finds nothing to do and refunds nothing more.
    assert unsent(session_factory, provider).failed == []
    assert refunds(session_factory, message.id) == 1


def test_a_sid_held_by_another_message_is_not_adopted(twilio, session_factory):
    base_url, provider = twilio
    sent = provider.send(to=TO, from_=FROM, body="Hello", status_callback="http://127.0.0.1:9/")
    settled(base_url, 1)
    handed_off(session_factory, sid=sent.sid)
    orphan = handed_off(session_factory, sid=None, handoff="unknown")
    age(session_factory, orphan.id, 2 * HOUR)
    assert unsent(session_factory, provider).failed == [orphan.id]


def test_a_pending_message_whose_retry_was_lost_is_enqueued_again(twilio, session_factory):
    _base_url, provider = twilio
    lost = handed_off(session_factory, sid=None, handoff="pending")
    young = handed_off(session_factory, sid=None, handoff="pending")
    age(session_factory, lost.id, 2 * HOUR)
    report = unsent(session_factory, provider)
    assert report.resend == [lost.id]
    assert load(session_factory, lost.id).status == "sending"
    # Touched: the next run does not enqueue it again while it waits in the queue.
    assert unsent(session_factory, provider).resend == []
    assert load(session_factory, young.id).handoff == "pending"


def test_young_messages_are_left_alone_and_batches_are_bounded(twilio, session_factory):
    _base_url, provider = twilio
    young = handed_off(session_factory, sid=None, handoff="unknown")
    old = [handed_off(session_factory, sid=None, handoff="unknown") for _ in range(3)]
    for message in old:
        age(session_factory, message.id, 2 * HOUR)
    assert unsent(session_factory, provider, limit=2).failed == [old[0].id, old[1].id]
    assert unsent(session_factory, provider, limit=2).failed == [old[2].id]
    assert load(session_factory, young.id).status == "sending"


class DownProvider:
    def find(self, **_):
        raise TransientError("503: down")

    def fetch(self, sid):
        raise TransientError("503: down")


def test_when_twilio_cannot_answer_nothing_is_decided(session_factory):
    message = handed_off(session_factory, sid=None, handoff="unknown")
    with_sid = handed_off(session_factory)
    for stuck in (message, with_sid):
        age(session_factory, stuck.id, 2 * HOUR)
    assert unsent(session_factory, DownProvider()).failed == []
    reconcile_unfinished(session_factory, DownProvider(), older_than_seconds=HOUR, limit=10)
    assert load(session_factory, message.id).status == "sending"
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


def test_the_reconcile_ages_are_settings():
    env = {
        "DATABASE_URL": "postgresql://db/x",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "t",
    }
    defaults = load_settings(env)
    assert (
        defaults.reconcile_unsent_after_seconds,
        defaults.reconcile_unfinished_after_seconds,
    ) == (1200, 3600)
    chosen = load_settings(
        {
            **env,
            "RECONCILE_UNSENT_AFTER_SECONDS": "1800",
            "RECONCILE_UNFINISHED_AFTER_SECONDS": "7200",
        }
    )
    assert (chosen.reconcile_unsent_after_seconds, chosen.reconcile_unfinished_after_seconds) == (
        1800,
        7200,
    )
    with pytest.raises(SettingsError, match="RECONCILE_UNSENT_AFTER_SECONDS"):
        load_settings({**env, "RECONCILE_UNSENT_AFTER_SECONDS": "soon"})


def test_a_lost_campaign_message_is_resent_on_the_campaign_queue(twilio, session_factory):
    _base_url, provider = twilio
    lost = handed_off(session_factory, sid=None, handoff="pending")
    with session_factory() as session:
        campaign = Campaign(user_id=lost.user_id, phone_number_id=lost.phone_number_id, body="Hi")
        session.add(campaign)
        session.flush()
        session.get(Message, lost.id).campaign_id = campaign.id
        session.commit()
    age(session_factory, lost.id, 2 * HOUR)
    report = unsent(session_factory, provider)
    assert (report.resend, report.resend_campaign) == ([], [lost.id])
