"""Fault injection switches, the seed, and the admin routes of the sandbox."""

from __future__ import annotations

import time

import pytest
import requests
from twilio.base.exceptions import TwilioRestException

from sandbox import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, SandboxConfig, start_in_thread

FROM = "+15017122661"
DATA = {"To": "+15558675310", "From": FROM, "Body": "Hi"}


@pytest.mark.parametrize(
    ("switch", "status", "code"), [("rate_429", 429, 20429), ("rate_500", 500, 20500)]
)
def test_rate_switches_reject_without_creating(
    twilio, sandbox_server, base_url, switch, status, code
):
    sandbox_server.configure(**{switch: 1})
    with pytest.raises(TwilioRestException) as caught:
        twilio.messages.create(to="+15558675310", from_=FROM, body="Hi")
    assert (caught.value.status, caught.value.code) == (status, code)
    seen = requests.get(f"{base_url}/_sandbox/messages").json()
    assert seen["messages"] == []
    assert [(r["to"], r["code"], r["status"]) for r in seen["rejected"]] == [
        ("+15558675310", code, status)
    ]


def test_latency_delays_the_create_answer(twilio, sandbox_server):
    sandbox_server.configure(latency_ms=200)
    started = time.monotonic()
    twilio.messages.create(to="+15558675310", from_=FROM, body="Hi")
    assert time.monotonic() - started >= 0.2


def outcomes(seed: int) -> list[int]:
    """Return the status codes of 20 sequential creates against a fresh seeded sandbox."""
    server, base_url = start_in_thread(seed=seed, rate_429=0.3, rate_500=0.2, callbacks=False)
    try:
        url = f"{base_url}/2010-04-01/Accounts/{SANDBOX_ACCOUNT_SID}/Messages.json"
        with requests.Session() as session:
            session.auth = (SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN)
            return [session.post(url, data=DATA).status_code for _ in range(20)]
    finally:
        server.shutdown()


def test_a_seed_makes_fault_injection_reproducible():
    first = outcomes(42)
    assert first == outcomes(42)
    assert set(first) - {201}


def test_admin_config_reads_and_changes_switches(base_url):
    config = requests.get(f"{base_url}/_sandbox/config").json()
    assert config == {**SandboxConfig(callback_delay_ms=10).to_dict(), "seed": 1234}
    changed = requests.post(
        f"{base_url}/_sandbox/config",
        json={"latency_ms": 5, "rate_429": 0.25, "callback_shuffle": True},
    )
    assert changed.status_code == 200
    assert changed.json()["latency_ms"] == 5 and changed.json()["rate_429"] == 0.25
    assert requests.get(f"{base_url}/_sandbox/config").json()["callback_shuffle"] is True
    for bad in ({"nope": 1}, {"rate_500": 2}, {"latency_ms": -1}, {"callbacks": "maybe"}, []):
        assert requests.post(f"{base_url}/_sandbox/config", json=bad).status_code == 400


def test_admin_messages_and_reset(twilio, base_url):
    twilio.messages.create(
        to="+15558675310", from_=FROM, body="Hi", status_callback="http://x.test/cb"
    )
    requests.post(f"{base_url}/_sandbox/config", json={"rate_500": 1})
    seen = requests.get(f"{base_url}/_sandbox/messages").json()
    assert [(m["to"], m["body"], m["status_callback"]) for m in seen["messages"]] == [
        ("+15558675310", "Hi", "http://x.test/cb")
    ]
    reset = requests.post(f"{base_url}/_sandbox/reset").json()
    assert reset["rate_500"] == 0
    assert requests.get(f"{base_url}/_sandbox/messages").json() == {"messages": [], "rejected": []}
    assert twilio.messages.list() == []
