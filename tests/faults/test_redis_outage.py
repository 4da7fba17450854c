"""Redis stopped and restarted under a running API and worker: nothing charged, nothing lost."""

from __future__ import annotations

from decimal import Decimal

import requests
from sqlalchemy import func, select

from api.app import create_app
from api.dev import free_port
from shared.billing import ledger_sum
from shared.models import Message, User
from tests.factories import make_number, make_user, set_price
from tests.processes import RedisServer, celery_worker, stack_env, wait_until

TO = "+14155550123"


def test_api_and_worker_ride_out_a_redis_restart(
    settings, session, session_factory, sandbox, database_url, tmp_path
):
    _server, sandbox_url = sandbox
    redis = RedisServer(free_port(), tmp_path)
    redis.start()
    user_id, token = make_user(session, balance="1.00")
    number_id = make_number(session, user_id=user_id)
    set_price(session, country="US", price="0.0079")
    app = create_app(settings.with_overrides(redis_url=redis.url))
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    env = stack_env(database_url=database_url, redis_url=redis.url, twilio_api_base=sandbox_url)
    before = len(requests.get(f"{sandbox_url}/_sandbox/messages", timeout=5).json()["messages"])

    def send(n: int) -> list[tuple[int, str]]:
        answers = [
            client.post(
                "/api/user/sms", json={"from": number_id, "to": TO, "body": "Hi"}, headers=headers
            )
            for _ in range(n)
        ]
        return [(a.status_code, a.get_json()["message"]) for a in answers]

    def handed_off() -> int:
        with session_factory() as s:
            return s.scalar(select(func.count()).where(Message.sms_sid.is_not(None)))

    log = tmp_path / "worker.log"
    try:
        with celery_worker(env, log):
            assert send(3) == [(201, "SMS queued for sending")] * 3
            wait_until(lambda: handed_off() == 3, seconds=30, what="3 hand-offs", log=log)

            redis.stop()
            assert send(3) == [(500, "Failed to send SMS")] * 3
            session.expire_all()
            assert session.get(User, user_id).balance == Decimal("1.00") - 3 * Decimal("0.0079")

            redis.start()
            assert send(3) == [(201, "SMS queued for sending")] * 3
            wait_until(
                lambda: handed_off() == 6, seconds=60, what="6 hand-offs after restart", log=log
            )
    finally:
        app.extensions["smsgw"].close()
        redis.stop()
    session.expire_all()
    assert session.get(User, user_id).balance == Decimal("1.00") - 6 * Decimal("0.0079")
    assert ledger_sum(session, user_id=user_id) == session.get(User, user_id).balance
    statuses = session.scalars(select(Message.status).order_by(Message.id)).all()
    assert statuses.count("failed") == 3 and len(statuses) == 9
    after = requests.get(f"{sandbox_url}/_sandbox/messages", timeout=5).json()["messages"]
    assert len(after) - before == 6
