"""Batched claims and SID stores under real workers: two racing for the same tasks, one killed.

Each worker process runs the claims and stores of its threads as shared
statements (`shared.handoff_batch`). Two workers given every task twice must
still hand each message to Twilio once; a worker killed while its batches'
claims are committed and their calls under way loses nothing and doubles
nothing: the take-over hands its messages on, and each is looked up at Twilio
and adopted, or sent if Twilio has no trace of it. On each broker.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import func, select

from api.dev import free_port
from sandbox.server import start_in_thread
from shared import messaging
from shared.models import Message
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.factories import make_number, make_user, set_price
from tests.faults.sweeps import BeatSweeps
from tests.processes import celery_worker, stack_env, wait_until
from worker.factory import make_celery


def queued(session, count: int) -> list[int]:
    user_id, _ = make_user(session, balance="100")
    number_id = make_number(session, user_id=user_id)
    set_price(session)
    ids = [
        messaging.accept_message(
            session, user_id=user_id, phone_number_id=number_id, to="+14155550123", body=f"N {n}"
        ).id
        for n in range(count)
    ]
    session.commit()
    return ids


def created_per_message(base_url: str) -> Counter:
    state = requests.get(f"{base_url}/_sandbox/messages", timeout=10).json()
    return Counter(
        parse_qs(urlsplit(m["status_callback"]).query)["message_id"][0] for m in state["messages"]
    )


def with_sid(session_factory) -> int:
    with session_factory() as s:
        return s.scalar(select(func.count()).where(Message.sms_sid.is_not(None)))


@pytest.mark.timeout(240)
def test_two_workers_given_every_task_twice_send_each_message_once(
    session, session_factory, database_url, redis_url, any_broker, tmp_path
):
    server, base_url = start_in_thread(
        port=free_port(), account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, callbacks=False
    )
    ids = queued(session, 300)
    celery = make_celery(any_broker)
    for message_id in ids + ids:
        celery.send_task("send_message", args=[message_id], queue="sms")
    env = stack_env(
        database_url=database_url,
        redis_url=redis_url,
        twilio_api_base=base_url,
        broker_url=any_broker.broker_url,
    )
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    try:
        with (
            celery_worker(env, logs[0], concurrency=16, name="first@%h"),
            celery_worker(env, logs[1], concurrency=16, name="second@%h"),
        ):
            wait_until(
                lambda: with_sid(session_factory) == len(ids),
                seconds=120,
                what="every hand-off",
                log=logs[0],
            )
            time.sleep(1)  # the second task of each message runs meanwhile
        per_message = created_per_message(base_url)
    finally:
        server.shutdown()
    assert len(per_message) == len(ids) and max(per_message.values()) == 1
    session.expire_all()
    attempts = session.scalars(select(Message.attempts)).all()
    assert attempts == [1] * len(ids), "a message was claimed twice"
    both = [log.read_text() for log in logs]
    assert all(": sent SM" in text for text in both), "one worker sent nothing: no race"


@pytest.mark.timeout(240)
def test_a_worker_killed_with_claims_in_flight_loses_and_doubles_nothing(
    session, session_factory, database_url, redis_url, any_broker, tmp_path
):
    # Twilio answers after 1.5 s: the killed worker dies holding claims whose calls
    # are under way (Twilio creates those messages anyway) and claims not yet called.
    server, base_url = start_in_thread(
        port=free_port(),
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        callbacks=False,
        latency_ms=1500,
    )
    ids = queued(session, 200)
    ours = any_broker.with_overrides(twilio_api_base=base_url, twilio_timeout=3.0)
    celery = make_celery(ours)
    for message_id in ids:
        celery.send_task("send_message", args=[message_id], queue="sms")
    env = stack_env(
        database_url=database_url,
        redis_url=redis_url,
        twilio_api_base=base_url,
        broker_url=ours.broker_url,
        TWILIO_TIMEOUT="3",
    )

    def in_flight() -> int:
        with session_factory() as s:
            return s.scalar(select(func.count()).where(Message.handoff == "in_flight"))

    try:
        log = tmp_path / "killed.log"
        with celery_worker(env, log, concurrency=32) as worker:
            wait_until(lambda: in_flight() >= 20, seconds=30, what="claims in flight", log=log)
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        assert with_sid(session_factory) < len(ids), "the kill came too late to matter"
        requests.post(f"{base_url}/_sandbox/config", json={"latency_ms": 0}, timeout=5)
        log = tmp_path / "last.log"
        with celery_worker(env, log, concurrency=8):
            sweeps = BeatSweeps(session_factory, celery, ours)

            def settle() -> bool:
                sweeps()  # what beat does, at its periods and the settings' ages
                return with_sid(session_factory) == len(ids)

            wait_until(settle, seconds=150, what="every message handed off", log=log)
        per_message = created_per_message(base_url)
    finally:
        server.shutdown()
    assert len(per_message) == len(ids) and max(per_message.values()) == 1
    session.expire_all()
    assert set(session.scalars(select(Message.status)).all()) == {"sending"}, "one failed"
    assert set(session.scalars(select(Message.handoff)).all()) == {"done"}
