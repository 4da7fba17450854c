"""Status callbacks to users: signed, retried with backoff by a real worker, swept when lost."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from sqlalchemy import select, update

from shared import delivery, user_callbacks
from shared.db import utcnow
from shared.models import Message, User, UserCallback
from tests.delivery_helpers import handed_off, load, refunds
from tests.processes import celery_app_prints
from tests.worker.test_send_message import (  # noqa: F401  (worker is a fixture)
    wait_for,
    worker,
)
from worker.factory import make_celery


class Receiver:
    """A local HTTP endpoint that answers 500 to the first `failures` posts, then 204."""

    def __init__(self, failures: int) -> None:
        self.failures, self.posts = failures, []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.posts.append((dict(self.headers), body))
                self.send_response(500 if len(receiver.posts) <= receiver.failures else 204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/sms"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(failures=1)
    yield receiver
    receiver.close()


def changed(session_factory, message, status="delivered") -> int:
    """Apply a Twilio callback to the message and return its outbox row's id."""
    with session_factory() as session:
        applied = delivery.apply_callback(
            session,
            sid=message.sms_sid,
            status=status,
            error_code=None,
            token=None,
            message_id=None,
        )
        session.commit()
    return applied.callback_id


def row(session_factory, callback_id: int) -> UserCallback:
    with session_factory() as session:
        return session.get(UserCallback, callback_id)


def make_due(session_factory, callback_id: int, **values) -> None:
    with session_factory.begin() as session:
        session.execute(
            update(UserCallback)
            .where(UserCallback.id == callback_id)
            .values(next_attempt_at=utcnow() - timedelta(seconds=1), **values)
        )


def secret_of(session_factory, user_id: int) -> str:
    with session_factory() as session:
        return session.scalar(select(User.webhook_secret).where(User.id == user_id))


def test_an_event_is_signed_retried_and_delivered_once(session_factory, receiver):
    message = handed_off(session_factory, status_callback=receiver.url)
    callback_id = changed(session_factory, message)
    first = user_callbacks.attempt(session_factory, callback_id=callback_id, allow_private=True)
    assert first.kind == "retry" and 2.5 <= first.delay <= 5
    assert row(session_factory, callback_id).last_error == "HTTP 500"
    # Not due yet: an early or duplicate task does nothing.
    assert (
        user_callbacks.attempt(session_factory, callback_id=callback_id, allow_private=True).kind
        == "skipped"
    )
    make_due(session_factory, callback_id)
    assert (
        user_callbacks.attempt(session_factory, callback_id=callback_id, allow_private=True).kind
        == "delivered"
    )
    make_due(session_factory, callback_id)
    assert (
        user_callbacks.attempt(session_factory, callback_id=callback_id, allow_private=True).kind
        == "skipped"
    )
    stored = row(session_factory, callback_id)
    assert stored.attempts == 2 and stored.delivered_at is not None
    [(h1, b1), (h2, b2)] = receiver.posts
    assert b1 == b2 and h1["X-Signature"] == h2["X-Signature"]
    secret = secret_of(session_factory, message.user_id)
    expected = "sha256=" + hmac.new(secret.encode(), b2, hashlib.sha256).hexdigest()
    assert h2["X-Signature"] == expected and h2["Content-Type"] == "application/json"
    payload = json.loads(b2)
    assert payload == {
        "event_id": stored.event_id,
        "id": message.id,
        "status": "delivered",
        "sms_sid": message.sms_sid,
        "error_code": None,
        "campaign_id": None,
        "reference": None,
        "occurred_at": payload["occurred_at"],
    }


def test_an_event_is_given_up_24_hours_after_it_happened(session_factory):
    message = handed_off(session_factory, status_callback="http://127.0.0.1:9/closed")
    callback_id = changed(session_factory, message)
    make_due(session_factory, callback_id, created_at=utcnow() - timedelta(hours=24))
    outcome = user_callbacks.attempt(session_factory, callback_id=callback_id, allow_private=True)
    assert outcome.kind == "gave_up" and outcome.error == "ConnectionError"
    assert user_callbacks.due(session_factory, limit=10) == []


def test_backoff_grows_exponentially_and_is_capped():
    assert all(2.5 <= user_callbacks.backoff(1) <= 5 for _ in range(50))
    assert all(20 <= user_callbacks.backoff(4) <= 40 for _ in range(50))
    assert all(1800 <= user_callbacks.backoff(30) <= 3600 for _ in range(50))


def test_the_sweeper_finds_due_events_not_recently_enqueued(session_factory):
    message = handed_off(session_factory, status_callback="https://example.com/hook")
    enqueued = changed(session_factory, message, "sent")
    with session_factory() as session:
        stored = session.get(type(message), message.id)
        stored.status = "sending"  # lets a second event be written for this message
        lost = user_callbacks.emit(session, message=stored, enqueue=False)
        session.commit()
    assert user_callbacks.due(session_factory, limit=10) == [lost]
    assert user_callbacks.due(session_factory, limit=10) == []
    make_due(session_factory, enqueued, enqueued_at=utcnow() - timedelta(minutes=10))
    assert user_callbacks.due(session_factory, limit=10) == [enqueued]


@pytest.fixture
def celery(settings, worker):  # noqa: F811
    import worker.tasks.delivery  # noqa: F401  (registers the tasks with every app)

    app = make_celery(settings)
    yield app
    app.close()


def test_a_worker_retries_until_the_receiver_accepts(celery, session_factory, receiver, worker):  # noqa: F811
    message = handed_off(session_factory, status_callback=receiver.url)
    callback_id = changed(session_factory, message)
    celery.tasks["deliver_user_callback"].delay(callback_id)
    wait_for(lambda: row(session_factory, callback_id).delivered_at, worker, seconds=15)
    assert len(receiver.posts) == 2 and row(session_factory, callback_id).attempts == 2


def test_the_beat_sweeper_delivers_an_event_whose_enqueue_was_lost(
    celery,
    session_factory,
    worker,  # noqa: F811
):
    ok = Receiver(failures=0)
    try:
        message = handed_off(session_factory, status_callback=ok.url)
        with session_factory() as session:
            stored = session.get(type(message), message.id)
            callback_id = user_callbacks.emit(session, message=stored, enqueue=False)
            session.commit()
        celery.tasks["sweep_user_callbacks"].delay()
        wait_for(lambda: row(session_factory, callback_id).delivered_at, worker, seconds=15)
        assert len(ok.posts) == 1
    finally:
        ok.close()


def test_the_beat_hands_on_lapsed_hand_offs(celery, session_factory, sandbox, worker):  # noqa: F811
    base_url = sandbox[1]
    requests.post(f"{base_url}/_sandbox/reset", timeout=5)
    requests.post(f"{base_url}/_sandbox/config", json={"callbacks": False}, timeout=5)
    lost_retry = handed_off(session_factory, sid=None, handoff="pending")
    lost_call = handed_off(session_factory, sid=None, handoff="in_flight")  # its worker died
    with session_factory.begin() as session:
        session.execute(
            update(Message)
            .where(Message.id.in_([lost_retry.id, lost_call.id]))
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
    celery.tasks["take_over_messages"].delay()
    for message in (lost_retry, lost_call):
        wait_for(lambda m=message: load(session_factory, m.id).sms_sid, worker, seconds=15)
        assert refunds(session_factory, message.id) == 0
    at_twilio = requests.get(f"{base_url}/_sandbox/messages", timeout=5).json()["messages"]
    assert len(at_twilio) == 2
    requests.post(f"{base_url}/_sandbox/reset", timeout=5)


def test_the_beat_schedules_reconciliation_and_the_sweeper(database_url):
    script = (
        "s = app.conf.beat_schedule; "
        "print(s['reconcile-messages']['task'], s['sweep-user-callbacks']['task'], "
        "'worker.tasks.delivery' in app.conf.include, "
        "s['purge-messages']['task'], s['purge-messages']['schedule'], "
        "s['take-over-messages']['task'], s['take-over-messages']['schedule'])"
    )
    expected = [
        "reconcile_messages",
        "sweep_user_callbacks",
        "True",
        "purge_messages",
        "3600.0",
        "take_over_messages",
        "10.0",
    ]
    assert celery_app_prints(script, database_url=database_url) == expected


def test_a_url_that_now_points_inward_is_not_posted(session_factory, receiver):
    # Accepted when its name was public; by delivery time it resolves to loopback.
    message = handed_off(session_factory, status_callback=receiver.url)
    callback_id = changed(session_factory, message)
    outcome = user_callbacks.attempt(session_factory, callback_id=callback_id)
    assert outcome.kind == "retry" and outcome.error == "Invalid status_callback URL"
    assert receiver.posts == []
