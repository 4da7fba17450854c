"""End to end: the sandbox posts signed callbacks, duplicated, shuffled and late, to a live API."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from werkzeug.serving import make_server

from api.app import create_app
from shared.handoff import hand_off
from shared.providers.twilio import TwilioProvider
from tests.delivery_helpers import balance, handed_off, load, refunds


@pytest.fixture
def live(settings, sandbox, engine, redis_client):
    """Serve the API on a free port, as the public URL the sandbox calls back."""
    server = make_server("127.0.0.1", 0, None, threaded=True)
    public = f"http://127.0.0.1:{server.server_port}"
    base_url = sandbox[1]
    ours = settings.with_overrides(public_base_url=public, twilio_api_base=base_url)
    server.app = create_app(ours)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    requests.post(f"{base_url}/_sandbox/reset", timeout=5)
    yield ours, base_url
    requests.post(f"{base_url}/_sandbox/reset", timeout=5)
    server.shutdown()
    server.app.extensions["smsgw"].close()


def configure(base_url: str, **switches: object) -> None:
    requests.post(f"{base_url}/_sandbox/config", json=switches, timeout=5).raise_for_status()


def wait_final(session_factory, ids: list[int], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(load(session_factory, i).status in ("delivered", "undelivered") for i in ids):
            return
        time.sleep(0.05)
    raise AssertionError([load(session_factory, i).status for i in ids])


@pytest.mark.parametrize("undelivered", [False, True])
def test_duplicated_shuffled_late_callbacks_end_in_the_final_status(
    live, session_factory, undelivered
):
    settings, base_url = live
    configure(
        base_url,
        callback_duplicates=True,
        callback_shuffle=True,
        callback_late_ms=200,
        callback_delay_ms=10,
        rate_undelivered=1.0 if undelivered else 0.0,
        seed=7,
    )
    provider = TwilioProvider(settings)
    messages = [handed_off(session_factory, sid=None, handoff="pending") for _ in range(4)]
    starts = [balance(session_factory, m.user_id) for m in messages]
    for message in messages:
        outcome = hand_off(
            session_factory,
            provider,
            message_id=message.id,
            status_callback_base=settings.status_callback_base,
        )
        assert outcome.kind == "sent"
    wait_final(session_factory, [m.id for m in messages])
    for message, start in zip(messages, starts, strict=True):
        stored = load(session_factory, message.id)
        assert stored.status == ("undelivered" if undelivered else "delivered")
        assert (stored.error_code is not None) == undelivered
        assert balance(session_factory, message.user_id) == start
        assert refunds(session_factory, message.id) == 0
