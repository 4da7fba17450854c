"""Workers killed with SIGKILL again and again during a 2,000-message run.

Within two minutes of the last kill every message is delivered (none failed
for a kill), Twilio got each message once, and every ledger sums to its
balance. The periodic jobs that settle what a dead worker left behind (the
requeue of queued messages, the take-over of lapsed hand-offs) are run here
by the test as beat runs them: at beat's periods, with the settings' ages.
It runs on each broker: on Redis a dead worker's tasks stay unacknowledged
until the sweeps replace them; on RabbitMQ they go back to the queue at once.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import func, select
from werkzeug.serving import make_server

from api.app import create_app
from api.dev import free_port
from sandbox.server import start_in_thread
from shared import messaging
from shared.billing import ledger_sum
from shared.messaging import FINAL
from shared.models import LedgerEntry, Message, User
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.factories import make_number, make_user, set_price
from tests.faults.sweeps import BeatSweeps
from tests.processes import celery_worker, stack_env, wait_until
from worker.factory import make_celery

COUNT = 2000
KILLS = 5


@pytest.mark.timeout(420)
def test_killed_workers_lose_and_double_nothing(
    session, session_factory, any_broker, database_url, redis_url, tmp_path
):
    sandbox, sandbox_url = start_in_thread(
        port=free_port(),
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        callback_delay_ms=5,
        seed=3,
    )
    api = make_server("127.0.0.1", 0, None, threaded=True)
    ours = any_broker.with_overrides(
        public_base_url=f"http://127.0.0.1:{api.server_port}", twilio_api_base=sandbox_url
    )
    api.app = create_app(ours)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    users = []
    for i in range(4):
        user_id, _ = make_user(session, balance="20")
        users.append((user_id, make_number(session, user_id=user_id, number=f"+1500555006{i}")))
    set_price(session)
    for n in range(COUNT):
        user_id, number_id = users[n % len(users)]
        messaging.accept_message(
            session, user_id=user_id, phone_number_id=number_id, to="+14155550123", body=f"Code {n}"
        )
        if n % 250 == 0:
            session.commit()
    session.commit()
    celery = make_celery(ours)
    ids = session.scalars(select(Message.id).order_by(Message.id)).all()
    for message_id in ids:
        celery.send_task("send_message", args=[message_id], queue="sms")
    env = stack_env(
        database_url=database_url,
        redis_url=redis_url,
        twilio_api_base=sandbox_url,
        public_base_url=ours.public_base_url,
        broker_url=ours.broker_url,
    )
    rng = random.Random(11)

    def count(*where) -> int:
        with session_factory() as s:
            return s.scalar(select(func.count(Message.id)).where(*where))

    try:
        for round_ in range(KILLS):
            log = tmp_path / f"worker-{round_}.log"
            with celery_worker(env, log, concurrency=8) as worker:
                wait_until(
                    lambda log=log: log.exists() and " ready." in log.read_text(),
                    seconds=30,
                    what="a worker",
                    log=log,
                )
                time.sleep(rng.uniform(0.5, 1.5))
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        assert count(Message.status.in_(FINAL)) < COUNT, "the kills came too late to matter"

        last_kill = time.monotonic()
        log = tmp_path / "worker-last.log"
        with celery_worker(env, log, concurrency=8):
            sweeps = BeatSweeps(session_factory, celery, ours)

            def settle() -> bool:
                sweeps()  # what beat does, at its periods and the settings' ages
                return count(Message.status == "delivered") == COUNT

            # Settled within two minutes of the last kill, the last worker's start included.
            wait_until(settle, seconds=120, what="every message delivered", log=log)
            settled_after = time.monotonic() - last_kill
            print(f"{ours.broker}: all delivered {settled_after:.0f} s after the last kill")
        received = requests.get(f"{sandbox_url}/_sandbox/messages", timeout=10).json()["messages"]
    finally:
        api.shutdown()
        api.app.extensions["smsgw"].close()
        sandbox.shutdown()

    per_message = Counter(
        parse_qs(urlsplit(m["status_callback"]).query)["message_id"][0] for m in received
    )
    assert per_message and max(per_message.values()) == 1, "a message reached Twilio twice"
    session.expire_all()
    with_sid = session.scalar(select(func.count(Message.id)).where(Message.sms_sid.is_not(None)))
    assert with_sid == len(received)
    assert with_sid == COUNT, "every message was sent, none failed for a kill"
    assert settled_after <= 120
    refunds = session.scalar(select(func.count(LedgerEntry.id)).where(LedgerEntry.kind == "refund"))
    assert refunds == 0
    for user_id, _ in users:
        assert ledger_sum(session, user_id=user_id) == session.get(User, user_id).balance
        assert session.get(User, user_id).balance >= Decimal("0")
