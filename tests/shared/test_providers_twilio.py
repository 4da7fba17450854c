"""The Twilio adapter against the in-process sandbox, through the real SDK."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import requests

from shared.db import utcnow
from shared.providers import PermanentError, TransientError, UnknownOutcome
from shared.providers.twilio import TwilioProvider

TO, FROM = "+14155550123", "+15005550006"
CALLBACK = "http://gateway.test/webhooks/twilio/status?message_id=1"


@pytest.fixture
def sandbox_url(sandbox):
    """Return the sandbox's base URL, emptied and with status callbacks off."""
    _server, base_url = sandbox
    requests.post(f"{base_url}/_sandbox/reset", timeout=5)
    configure(base_url, callbacks=False)
    yield base_url
    requests.post(f"{base_url}/_sandbox/reset", timeout=5)


def configure(base_url: str, **switches: object) -> None:
    requests.post(f"{base_url}/_sandbox/config", json=switches, timeout=5).raise_for_status()


def received(base_url: str) -> list[dict]:
    return requests.get(f"{base_url}/_sandbox/messages", timeout=5).json()["messages"]


@pytest.fixture
def provider(settings, sandbox_url) -> TwilioProvider:
    return TwilioProvider(settings.with_overrides(twilio_api_base=sandbox_url))


def send(provider: TwilioProvider, *, to: str = TO, from_: str = FROM, body: str = "Hello"):
    return provider.send(to=to, from_=from_, body=body, status_callback=CALLBACK)


def test_send_reaches_the_sandbox_with_the_status_callback(provider, sandbox_url):
    sent = send(provider)
    assert sent.sid.startswith("SM") and sent.status == "queued"
    [message] = received(sandbox_url)
    assert message["sid"] == sent.sid
    assert (message["to"], message["from"], message["body"]) == (TO, FROM, "Hello")
    assert message["status_callback"] == CALLBACK


def test_the_process_environment_cannot_move_the_host(provider, sandbox_url, monkeypatch):
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    assert send(provider).sid == received(sandbox_url)[0]["sid"]


@pytest.mark.parametrize(
    ("to", "from_", "code"),
    [
        ("+15005550001", FROM, 21211),
        ("+15005550004", FROM, 21610),
        ("+15005550009", FROM, 21614),
        ("+15005550002", FROM, 21612),
        (TO, "+15005550001", 21212),
        (TO, "+15005550007", 21606),
    ],
)
def test_refusals_are_permanent_with_twilio_code_and_message(provider, to, from_, code):
    with pytest.raises(PermanentError) as caught:
        send(provider, to=to, from_=from_)
    assert caught.value.code == code
    assert caught.value.message and not caught.value.message.startswith("Unable to")


def test_rate_limits_are_transient(provider, sandbox_url):
    configure(sandbox_url, rate_429=1)
    with pytest.raises(TransientError):
        send(provider)
    assert received(sandbox_url) == []


def test_a_server_error_is_an_unknown_outcome(provider, sandbox_url):
    # A 5xx does not prove Twilio created nothing: the message must be looked up first.
    configure(sandbox_url, rate_500=1)
    with pytest.raises(UnknownOutcome, match="20500"):
        send(provider)


def test_a_full_sender_queue_is_transient(provider):
    with pytest.raises(TransientError, match="21611"):
        send(provider, from_="+15005550008")


def test_wrong_credentials_are_transient(settings, sandbox_url):
    wrong = TwilioProvider(
        settings.with_overrides(twilio_api_base=sandbox_url, twilio_auth_token="0" * 32)
    )
    with pytest.raises(TransientError, match="20003"):
        send(wrong)


def test_a_refused_connection_is_transient(settings):
    # The default test settings point Twilio at port 9, where nothing listens.
    with pytest.raises(TransientError, match="could not connect"):
        send(TwilioProvider(settings))


def test_a_read_timeout_is_an_unknown_outcome_and_the_message_exists(settings, sandbox_url):
    configure(sandbox_url, latency_ms=1000)
    slow = TwilioProvider(settings.with_overrides(twilio_api_base=sandbox_url, twilio_timeout=0.3))
    since = utcnow()
    with pytest.raises(UnknownOutcome):
        send(slow)
    deadline = time.monotonic() + 5
    while not received(sandbox_url) and time.monotonic() < deadline:
        time.sleep(0.05)
    configure(sandbox_url, latency_ms=0)
    found = slow.find(to=TO, from_=FROM, body="Hello", since=since, exclude=set())
    assert found is not None and found.sid == received(sandbox_url)[0]["sid"]


def test_find_matches_body_sender_recipient_and_time(provider):
    since = utcnow() - timedelta(seconds=1)
    first, second = send(provider), send(provider)
    send(provider, body="Other")
    send(provider, to="+14155550124")

    def find(**changes):
        query = {"to": TO, "from_": FROM, "body": "Hello", "since": since, "exclude": set()}
        return provider.find(**{**query, **changes})

    assert find().sid == first.sid
    assert find(exclude={first.sid}).sid == second.sid
    assert find(exclude={first.sid, second.sid}) is None
    assert find(body="Missing") is None
    assert find(since=utcnow() + timedelta(minutes=1)) is None


def test_fetch_reports_status_and_error(provider):
    sent = send(provider)
    fetched = provider.fetch(sent.sid)
    assert fetched.sid == sent.sid and fetched.status == "queued"
    assert fetched.error_code is None and fetched.error_message is None
    with pytest.raises(PermanentError) as caught:
        provider.fetch("SM" + "0" * 32)
    assert caught.value.code == 20404
