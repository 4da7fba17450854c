"""A flaky Twilio: 20% of creates answer 500 or 429 and 10% answer too late to be seen.

Every message must still be handed off exactly once: retried after errors,
and after a timeout looked up (and adopted) rather than sent again. On each
broker: on RabbitMQ a retry's countdown waits unacknowledged in the worker.
"""

from __future__ import annotations

import requests
from sqlalchemy import func, select

from api.dev import free_port
from sandbox.server import start_in_thread
from shared import messaging
from shared.models import Message
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.factories import make_number, make_user, set_price
from tests.processes import celery_worker, stack_env, wait_until
from worker.factory import make_celery

COUNT = 200


def test_every_message_is_handed_off_exactly_once(
    session, session_factory, database_url, redis_url, any_broker, tmp_path
):
    server, base_url = start_in_thread(
        port=free_port(),
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        seed=7,
        callbacks=False,
        rate_500=0.1,
        rate_429=0.1,
        rate_slow=0.1,
        slow_ms=1500,
    )
    user_id, _ = make_user(session, balance="100")
    number_id = make_number(session, user_id=user_id)
    set_price(session)
    ids = []
    for _ in range(COUNT):
        # Identical messages are the hard case for a lookup after a timeout.
        message = messaging.accept_message(
            session, user_id=user_id, phone_number_id=number_id, to="+14155550123", body="Same text"
        )
        ids.append(message.id)
    session.commit()
    celery = make_celery(any_broker)
    for message_id in ids:
        celery.send_task("send_message", args=[message_id], queue="sms")
    env = stack_env(
        database_url=database_url,
        redis_url=redis_url,
        twilio_api_base=base_url,
        broker_url=any_broker.broker_url,
        TWILIO_TIMEOUT="0.5",
    )

    def handed_off() -> int:
        with session_factory() as s:
            return s.scalar(select(func.count()).where(Message.sms_sid.is_not(None)))

    log = tmp_path / "worker.log"
    try:
        with celery_worker(env, log, concurrency=8):
            wait_until(lambda: handed_off() == COUNT, seconds=150, what="every hand-off", log=log)
        state = requests.get(f"{base_url}/_sandbox/messages", timeout=5).json()
    finally:
        server.shutdown()
    created = {m["sid"] for m in state["messages"]}
    assert len(state["messages"]) == COUNT, "a message was created twice at Twilio"
    assert len(state["rejected"]) > 0, "the fault switches did not fire"
    session.expire_all()
    sids = session.scalars(select(Message.sms_sid)).all()
    assert set(sids) == created and len(set(sids)) == COUNT
    assert set(session.scalars(select(Message.status)).all()) == {"sending"}
