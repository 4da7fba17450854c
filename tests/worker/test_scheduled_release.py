"""A scheduled send through real processes: the API, a worker running beat, the sandbox.

The message is handed to Twilio within 5 seconds after its send_at and never
before, with the rest of its validity period as Twilio's ValidityPeriod; one
whose validity ends while no worker runs fails, is refunded, and never reaches
Twilio.
"""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from sqlalchemy import select

from api.app import create_app
from shared.billing import ledger_sum
from shared.db import utcnow
from shared.models import Message, User
from tests.api.conftest import auth
from tests.factories import make_number, make_user, set_price
from tests.processes import celery_worker, stack_env, wait_until

TO = "+14155550123"


@pytest.mark.timeout(120)
def test_a_scheduled_message_goes_within_five_seconds_of_its_time_never_before(
    settings, session, session_factory, sandbox, database_url, redis_url, redis_client, tmp_path
):
    _server, sandbox_url = sandbox
    requests.post(f"{sandbox_url}/_sandbox/reset", timeout=5)
    user_id, token = make_user(session, balance="1.00")
    number_id = make_number(session, user_id=user_id)
    set_price(session)
    app = create_app(settings.with_overrides(twilio_api_base=sandbox_url))
    client = app.test_client()
    env = stack_env(
        database_url=database_url,
        redis_url=redis_url,
        twilio_api_base=sandbox_url,
        WORKER_METRICS_PORT="0",
    )
    log = tmp_path / "worker.log"
    try:
        with celery_worker(env, log, beat=True):
            wait_until(lambda: " ready." in log.read_text(), seconds=30, what="the worker", log=log)
            due = utcnow() + timedelta(seconds=4)
            answer = client.post(
                "/api/user/sms",
                headers=auth(token),
                json={
                    "from": number_id,
                    "to": TO,
                    "body": "Doors open now",
                    "send_at": due.strftime("%Y-%m-%d %H:%M:%S"),
                    "validity_period": 120,
                },
            )
            assert answer.status_code == 201, answer.get_json()
            message_id = answer.get_json()["data"]["id"]
            assert answer.get_json()["data"]["status"] == "scheduled"

            def handed_off() -> Message | None:
                with session_factory() as s:
                    message = s.get(Message, message_id)
                    return message if message.sms_sid else None

            while utcnow() < due:  # nothing leaves before its time
                assert handed_off() is None
                time.sleep(0.2)
            message = wait_until(handed_off, seconds=15, what="the hand-off", log=log)
            # Stored times have whole seconds: the claim came within 5 s after the due time.
            assert due <= message.handoff_at <= due + timedelta(seconds=5)
            [at_twilio] = requests.get(f"{sandbox_url}/_sandbox/messages", timeout=5).json()[
                "messages"
            ]
            assert at_twilio["sid"] == message.sms_sid
            assert 100 <= at_twilio["validity_period"] <= 120

        # No worker now: a message whose short validity ends meanwhile is never sent.
        late = client.post(
            "/api/user/sms",
            headers=auth(token),
            json={"from": number_id, "to": TO, "body": "Flash sale", "validity_period": 1},
        ).get_json()["data"]["id"]
        time.sleep(2)
        with celery_worker(env, tmp_path / "worker-2.log", beat=True):

            def failed() -> bool:
                with session_factory() as s:
                    return s.get(Message, late).status == "failed"

            wait_until(failed, seconds=20, what="the expiry", log=tmp_path / "worker-2.log")
    finally:
        app.extensions["smsgw"].close()
    session.expire_all()
    expired = session.get(Message, late)
    assert expired.error_message == "Validity period expired" and expired.sms_sid is None
    received = requests.get(f"{sandbox_url}/_sandbox/messages", timeout=5).json()["messages"]
    assert len(received) == 1, "the expired message reached Twilio"
    balance = session.get(User, user_id).balance
    assert balance == Decimal("1.00") - Decimal("0.0079")  # the expired one refunded
    assert ledger_sum(session, user_id=user_id) == balance
    assert session.scalars(select(Message.status).order_by(Message.id)).all()[1] == "failed"
