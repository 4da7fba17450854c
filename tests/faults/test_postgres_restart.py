"""PostgreSQL restarted mid-run: API and worker recover; no message lost.

The test runs a PostgreSQL cluster of its own (the machine's one is shared
with other runs) and restarts it twice under a running API and Celery worker:
once while they are idle, when the API must answer a JSON 5xx at once and
charge nothing, and once while the worker has a backlog, so hand-offs in
progress hit the outage. Afterwards every accepted message is handed off,
Twilio got each at most once, and the ledger sums to the balance.

A hand-off that met the outage before its claim is retried by its own task,
with no periodic job. One that met it after Twilio took the message, while
storing the SID, is left `in_flight` for the reconciler, which adopts it by
lookup: the test calls it directly, on short ages, as its beat job never looks
at a message younger than 16 minutes (and sends `requeue_stale_messages`
too, as beat would). It runs on each broker.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import func, select
from werkzeug.serving import make_server

from api.app import create_app
from api.dev import free_port
from shared import reconcile
from shared.billing import ledger_sum
from shared.db import make_engine, make_session_factory
from shared.migrate import upgrade
from shared.models import Message, User
from tests.factories import make_number, make_user, set_price
from tests.processes import PostgresServer, RedisServer, celery_worker, stack_env, wait_until
from worker.factory import make_celery

TO = "+14155550123"
PRICE = Decimal("0.0079")
BATCH = 120
HANDED_OFF = ("sending", "sent", "delivered")


@pytest.mark.timeout(240)
def test_api_and_worker_ride_out_a_postgres_restart(any_broker, sandbox, tmp_path):
    _server, sandbox_url = sandbox
    postgres = PostgresServer(free_port())
    redis = RedisServer(free_port(), tmp_path)
    api = make_server("127.0.0.1", 0, None, threaded=True)
    base = f"http://127.0.0.1:{api.server_port}"
    ours = any_broker.with_overrides(
        database_url=postgres.url,
        redis_url=redis.url,
        twilio_api_base=sandbox_url,
        public_base_url=base,
    )
    api.app = create_app(ours)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    engine = make_engine(postgres.url)
    try:
        postgres.start()
        redis.start()
        upgrade(postgres.url)
        requests.post(f"{sandbox_url}/_sandbox/reset", timeout=5)
        sessions = make_session_factory(engine)
        with sessions() as session:
            user_id, token = make_user(session, balance="10.00")
            number_id = make_number(session, user_id=user_id)
            set_price(session, country="US", price=str(PRICE))
        env = stack_env(
            database_url=postgres.url,
            redis_url=redis.url,
            broker_url=ours.broker_url,
            twilio_api_base=sandbox_url,
            public_base_url=base,
            REQUEUE_AFTER_SECONDS="2",
            WORKER_METRICS_PORT="0",
        )
        headers = {"Authorization": f"Bearer {token}"}

        def post(body: str) -> requests.Response:
            message = {"from": number_id, "to": TO, "body": body}
            return requests.post(f"{base}/api/user/sms", json=message, headers=headers, timeout=30)

        def send(tag: str, n: int) -> list[int]:
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(post, [f"pg-restart {tag} {i}" for i in range(n)]))
            assert [a.status_code for a in answers] == [201] * n, answers[0].text
            return [a.json()["data"]["id"] for a in answers]

        def handed_off(ids: list[int]) -> int:
            with sessions() as s:
                return s.scalar(
                    select(func.count()).where(Message.id.in_(ids), Message.sms_sid.is_not(None))
                )

        log = tmp_path / "worker.log"
        with celery_worker(env, log):
            accepted = send("before", 5)
            wait_until(lambda: handed_off(accepted) == 5, seconds=30, what="5 hand-offs", log=log)

            # Down while idle: a quick JSON 503, nothing stored or charged.
            postgres.stop()
            for _ in range(3):
                started = time.monotonic()
                answer = post("pg-restart refused")
                assert time.monotonic() - started < 5
                assert answer.status_code == 503, answer.text
                assert answer.headers["Content-Type"] == "application/json", answer.text
                assert answer.headers["Retry-After"] == "1"
                assert answer.json() == {
                    "message": "Service unavailable",
                    "error": "Database unavailable",
                }
            ready = requests.get(f"{base}/readyz", timeout=10)
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"].startswith("unavailable")
            postgres.start()
            accepted += send("after", 5)
            wait_until(lambda: handed_off(accepted) == 10, seconds=30, what="10 hand-offs", log=log)

            # Down while the worker has a backlog: each Twilio call takes a second, so the
            # worker (4 threads) is busy calling Twilio and still has most of the batch to do.
            configure(sandbox_url, latency_ms=1000)
            batch = send("batch", BATCH)
            accepted += batch
            postgres.stop()
            time.sleep(2)
            postgres.start()
            configure(sandbox_url, latency_ms=0)
            assert handed_off(batch) < BATCH, "the outage came too late to matter"
            assert "OperationalError" in log.read_text(), "no hand-off met the outage"

            def unclaimed() -> int:
                with sessions() as s:
                    return s.scalar(
                        select(func.count()).where(
                            Message.id.in_(batch), Message.handoff == "pending"
                        )
                    )

            # No beat job has run: the worker's own retries claim every message.
            wait_until(lambda: unclaimed() == 0, seconds=60, what="claims by retries", log=log)
            assert "database unavailable, retry in" in log.read_text()

            celery = make_celery(ours)

            def settled() -> bool:
                if handed_off(accepted) == len(accepted):
                    return True
                # What beat does: a hand-off whose lease ran out is handed on.
                celery.send_task("requeue_stale_messages")
                report = reconcile.take_over(sessions, hold_seconds=60, limit=1000)
                for resend_id in report.resend:
                    celery.send_task("send_message", args=[resend_id], queue="sms")
                time.sleep(1)
                return False

            wait_until(settled, seconds=90, what="every accepted message handed off", log=log)
        received = requests.get(f"{sandbox_url}/_sandbox/messages", timeout=10).json()["messages"]

        with sessions() as session:
            messages = session.scalars(select(Message).order_by(Message.id)).all()
            assert [m.id for m in messages] == sorted(accepted), "a refused send was stored"
            assert all(m.sms_sid and m.status in HANDED_OFF for m in messages)
            balance = session.get(User, user_id).balance
            assert balance == Decimal("10.00") - len(accepted) * PRICE
            assert ledger_sum(session, user_id=user_id) == balance
    finally:
        api.shutdown()
        api.app.extensions["smsgw"].close()
        engine.dispose()
        redis.stop()
        postgres.remove()
        requests.post(f"{sandbox_url}/_sandbox/reset", timeout=5)

    mine = [m for m in received if (m["status_callback"] or "").startswith(base)]
    per_message = Counter(message_id(m) for m in mine)
    assert sorted(per_message) == sorted(accepted)
    assert max(per_message.values()) == 1, "a message reached Twilio twice"
    sids = {m.id: m.sms_sid for m in messages}
    assert all(sids[message_id(m)] == m["sid"] for m in mine), "a message holds another's SID"


def configure(base_url: str, **switches: object) -> None:
    requests.post(f"{base_url}/_sandbox/config", json=switches, timeout=5).raise_for_status()


def message_id(received: dict) -> int:
    """Return the gateway's id of a message the sandbox received, from its callback URL."""
    return int(parse_qs(urlsplit(received["status_callback"]).query)["message_id"][0])
