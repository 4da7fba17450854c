"""The broker stopped and restarted under load, on Redis and on RabbitMQ.

Sends keep coming from several threads while a broker of the test's own is
stopped and started again under a running API and worker. A send the broker
could not take answers 500 and is not charged (its message says `failed`); a
send answered 201 is handed to Twilio exactly once, whether its task waited
in the broker across the restart, was held by the worker when the broker
went, or was queued after it. Every ledger sums to its balance. With RabbitMQ
as the broker, Redis (rate limits) stays up.

The worker runs beat's jobs too, with a short requeue age: on Redis a task the
worker held when the broker stopped stays unacknowledged there until the
visibility timeout (two hours), and the requeue of its still `queued` message
is what sends it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from decimal import Decimal

import pytest
import requests
from sqlalchemy import func, select

from api.app import create_app
from api.dev import free_port
from shared.billing import ledger_sum
from shared.models import Message, User
from tests.brokers import RabbitServer
from tests.factories import make_number, make_user, set_price
from tests.processes import RedisServer, celery_worker, stack_env, wait_until

TO = "+14155550123"
PRICE = Decimal("0.0079")
SENDERS = 3


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request, settings, tmp_path):
    """Start a broker of this test's own; yield (its server, the API's settings for it)."""
    if request.param == "redis":
        server = RedisServer(free_port(), tmp_path)
        server.start()
        yield server, settings.with_overrides(redis_url=server.url)
        server.stop()
    else:
        server = RabbitServer(free_port())
        server.start()
        yield server, settings.with_overrides(broker_url=server.url)
        server.remove()


@pytest.mark.timeout(240)
def test_sends_ride_out_a_broker_restart_under_load(
    broker, session, session_factory, sandbox, database_url, tmp_path
):
    server, ours = broker
    _sandbox, sandbox_url = sandbox
    requests.post(f"{sandbox_url}/_sandbox/reset", timeout=5)
    user_id, token = make_user(session, balance="100.00")
    number_id = make_number(session, user_id=user_id)
    set_price(session, country="US", price=str(PRICE))
    app = create_app(ours.with_overrides(twilio_api_base=sandbox_url))
    env = stack_env(
        database_url=database_url,
        redis_url=ours.redis_url,
        broker_url=ours.broker_url,
        twilio_api_base=sandbox_url,
        REQUEUE_AFTER_SECONDS="10",
        WORKER_METRICS_PORT="0",
    )
    answers: list[tuple[int, str, int]] = []  # status, message, id
    sending = threading.Event()
    sending.set()

    def send_until_stopped() -> None:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        while sending.is_set():
            answer = client.post(
                "/api/user/sms", json={"from": number_id, "to": TO, "body": "Hi"}, headers=headers
            )
            body = answer.get_json()
            message_id = (body.get("data") or {}).get("id")
            answers.append((answer.status_code, body["message"], message_id))
            time.sleep(0.01)

    def handed_off() -> int:
        with session_factory() as s:
            return s.scalar(select(func.count()).where(Message.sms_sid.is_not(None)))

    def accepted() -> list[int]:
        return [mid for status, _, mid in answers if status == 201]

    log = tmp_path / "worker.log"
    senders = [threading.Thread(target=send_until_stopped) for _ in range(SENDERS)]
    try:
        with celery_worker(env, log, beat=True):
            for sender in senders:
                sender.start()
            wait_until(lambda: handed_off() >= 20, seconds=30, what="hand-offs before", log=log)
            server.stop()
            stopped_at = len(answers)
            time.sleep(2)
            refused_while_down = len(answers) - stopped_at
            server.start()
            restarted_at = len(answers)
            wait_until(
                lambda: (
                    len(accepted()) > len([a for a in answers[:restarted_at] if a[0] == 201]) + 20
                ),
                seconds=60,
                what="sends accepted after the restart",
                log=log,
            )
            sending.clear()
            for sender in senders:
                sender.join()
            wait_until(
                lambda: handed_off() == len(accepted()),
                seconds=90,
                what="every accepted send handed off",
                log=log,
            )
    finally:
        sending.clear()
        app.extensions["smsgw"].close()
    statuses = Counter((status, message) for status, message, _ in answers)
    print(f"{ours.broker}: {dict(statuses)}")
    assert set(statuses) == {(201, "SMS queued for sending"), (500, "Failed to send SMS")}
    assert refused_while_down > 0 and statuses[(500, "Failed to send SMS")] >= refused_while_down
    session.expire_all()
    stored = Counter(session.scalars(select(Message.status)).all())
    # A refused send's record, if it was written, says failed; no other message failed.
    assert stored["failed"] <= statuses[(500, "Failed to send SMS")]
    assert sum(stored.values()) - stored["failed"] == len(accepted())
    balance = session.get(User, user_id).balance
    assert balance == Decimal("100.00") - len(accepted()) * PRICE, "a refused send was charged"
    assert ledger_sum(session, user_id=user_id) == balance
    received = requests.get(f"{sandbox_url}/_sandbox/messages", timeout=10).json()["messages"]
    sids = session.scalars(select(Message.sms_sid).where(Message.sms_sid.is_not(None))).all()
    assert len(received) == len(sids) == len(set(sids)) == len(accepted()), "lost or sent twice"
