"""The send_message task in a real Celery worker, against the test database, Redis and sandbox."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import requests
from sqlalchemy import select, update

from shared import messaging
from shared.db import utcnow
from shared.models import Message
from tests.factories import make_number, make_user, set_price
from tests.processes import ROOT, celery_app_prints, celery_worker, gateway_env, stack_env
from worker.factory import MAX_COUNTDOWN, make_celery
from worker.tasks.sending import backoff

PUBLIC_BASE_URL = "http://gateway.test"
BODY = "Your code is 7f3a9c"


@pytest.fixture(scope="module")
def worker(database_url, redis_url, sandbox, tmp_path_factory):
    """Run `celery -A worker.celery_app worker` on the sms queue; yield its log file."""
    _server, base_url = sandbox
    redis.Redis.from_url(redis_url).flushdb()
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    env = stack_env(
        database_url=database_url,
        redis_url=redis_url,
        twilio_api_base=base_url,
        public_base_url=PUBLIC_BASE_URL,
        # User callbacks in these tests go to receivers on this machine.
        CALLBACK_ALLOW_PRIVATE="true",
    )
    with celery_worker(env, log, queues="sms,callbacks", concurrency=2):
        yield log
    redis.Redis.from_url(redis_url).flushdb()


@pytest.fixture
def app(settings, sandbox, worker):
    """Return a Celery app for enqueueing, as the API would, with the sandbox emptied."""
    _server, base_url = sandbox
    requests.post(f"{base_url}/_sandbox/reset", timeout=5)
    configure(base_url, callbacks=False)
    import worker.tasks.sending  # noqa: F401  (registers the tasks with every app)

    app = make_celery(settings.with_overrides(twilio_api_base=base_url))
    yield app
    app.close()
    requests.post(f"{base_url}/_sandbox/reset", timeout=5)


def configure(base_url: str, **switches: object) -> None:
    requests.post(f"{base_url}/_sandbox/config", json=switches, timeout=5).raise_for_status()


def sandbox_state(base_url: str) -> dict:
    return requests.get(f"{base_url}/_sandbox/messages", timeout=5).json()


def queue(session_factory) -> int:
    with session_factory() as session:
        user_id, _ = make_user(session, balance="1.00")
        set_price(session)
        number_id = make_number(session, user_id=user_id)
        message = messaging.accept_message(
            session, user_id=user_id, phone_number_id=number_id, to="+14155550123", body=BODY
        )
        session.commit()
        return message.id


def wait_for(check, log: Path, seconds: float = 20):
    """Return check()'s first truthy value, failing with the worker's log at the deadline."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out; worker log:\n{log.read_text()[-4000:]}")


def sent_message(session_factory, message_id: int) -> Message | None:
    with session_factory() as session:
        message = session.get(Message, message_id)
        return message if message is not None and message.sms_sid else None


def test_the_worker_sends_a_queued_message(app, session_factory, sandbox, worker):
    message_id = queue(session_factory)
    app.tasks["send_message"].delay(message_id)
    message = wait_for(lambda: sent_message(session_factory, message_id), worker)
    assert message.status == "sending" and message.sms_sid.startswith("SM")
    [at_twilio] = sandbox_state(sandbox[1])["messages"]
    assert at_twilio["sid"] == message.sms_sid
    log = worker.read_text()
    assert f"send_message {message_id}: sent {message.sms_sid}" in log
    assert BODY not in log


def test_a_server_error_is_retried_and_sent_once(app, session_factory, sandbox, worker):
    base_url = sandbox[1]
    configure(base_url, rate_500=1)
    message_id = queue(session_factory)
    app.tasks["send_message"].delay(message_id)
    wait_for(lambda: sandbox_state(base_url)["rejected"], worker)
    configure(base_url, rate_500=0)
    message = wait_for(lambda: sent_message(session_factory, message_id), worker)
    assert message.attempts >= 2 and message.status == "sending"
    assert [m["sid"] for m in sandbox_state(base_url)["messages"]] == [message.sms_sid]


def test_the_beat_job_requeues_a_message_whose_enqueue_was_lost(app, session_factory, worker):
    message_id = queue(session_factory)
    with session_factory.begin() as session:
        past = utcnow() - timedelta(minutes=10)
        session.execute(update(Message).where(Message.id == message_id).values(updated_at=past))
    app.tasks["requeue_stale_messages"].delay()
    wait_for(lambda: sent_message(session_factory, message_id), worker)
    with session_factory() as session:
        assert session.scalar(select(Message.attempts).where(Message.id == message_id)) == 1


def test_a_bad_setting_stops_the_worker_with_one_line(database_url):
    env = gateway_env(DATABASE_URL=database_url, TWILIO_ACCOUNT_SID="nope")
    command = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "smsgw worker: TWILIO_ACCOUNT_SID must be AC followed by 32 characters"
    ]


def test_backoff_is_exponential_with_full_jitter_and_capped():
    assert all(0 <= backoff(0) <= 2 for _ in range(100))
    assert all(0 <= backoff(3) <= 16 for _ in range(100))
    assert max(backoff(3) for _ in range(200)) > 8
    assert all(backoff(30) <= MAX_COUNTDOWN for _ in range(100))
    assert all(backoff(0, floor=10) == 10 for _ in range(100))


def test_the_app_schedules_the_requeue_job_every_15_seconds(database_url):
    script = (
        "job = app.conf.beat_schedule['requeue-stale-messages']; "
        "print(job['task'], job['schedule'])"
    )
    assert celery_app_prints(script, database_url=database_url) == [
        "requeue_stale_messages",
        "15.0",
    ]
