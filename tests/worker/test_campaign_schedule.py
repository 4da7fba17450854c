"""Scheduled campaigns: quiet hours per recipient, send_at for all, cancel, real workers.

Each campaign message is held for its own recipient's quiet hours; a campaign
with a send_at ahead is charged at once, `scheduled` with every message, and
its dispatcher releases them at the number's rate from that time on, never
before.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import requests
from sqlalchemy import select

from api.app import create_app
from shared import campaigns
from shared.billing import ledger_sum
from shared.campaign_expansion import expand_campaign
from shared.db import utcnow
from shared.models import Campaign, Message, User
from shared.scheduling import Schedule, parse_quiet_hours
from tests.api.conftest import auth
from tests.factories import make_number, make_user, set_price
from tests.processes import celery_worker, stack_env, wait_until
from worker.factory import make_celery

NEW_YORK, HONOLULU = "+12125550123", "+18085550123"
PRICE = Decimal("0.0079")
CSV = f"to,name\n{NEW_YORK},Ann\n{HONOLULU},Bo\n"


def create(session, *, user_id, number_id, recipients, schedule) -> int:
    rows = ((to, json.dumps({"name": f"n{i}"})) for i, to in enumerate(recipients))
    campaign = campaigns.create_campaign(
        session,
        user_id=user_id,
        phone_number_id=number_id,
        body="Hi {name}",
        recipients=rows,
        schedule=schedule,
    )
    session.commit()
    return campaign.id


def test_each_recipient_is_held_for_its_own_night(session, session_factory):
    user_id, _ = make_user(session, balance="10.00")
    number_id = make_number(session, user_id=user_id)
    set_price(session)
    # A window around New York's present hour: New York waits, Honolulu (5 or 6 hours
    # behind) does not.
    local = datetime.now(ZoneInfo("America/New_York"))
    start, end = local - timedelta(hours=1), local + timedelta(hours=1)
    quiet = parse_quiet_hours(f"{start:%H:%M}-{end:%H:%M}")
    campaign_id = create(
        session,
        user_id=user_id,
        number_id=number_id,
        recipients=[NEW_YORK, HONOLULU],
        schedule=Schedule(quiet=quiet),
    )
    assert expand_campaign(session_factory, campaign_id=campaign_id)[0] == "sending"
    session.expire_all()
    by_to = {m.to: m for m in session.scalars(select(Message))}
    held = end.replace(second=0, microsecond=0).astimezone(UTC).replace(tzinfo=None)
    assert (by_to[NEW_YORK].status, by_to[NEW_YORK].send_at) == ("scheduled", held)
    assert (by_to[HONOLULU].status, by_to[HONOLULU].send_at) == ("queued", None)
    assert session.get(User, user_id).balance == Decimal("10.00") - 2 * PRICE  # both charged


def test_a_campaign_with_a_send_at_is_scheduled_and_cancels_whole(
    settings, session, session_factory
):
    user_id, token = make_user(session, balance="10.00")
    number_id = make_number(session, user_id=user_id)
    set_price(session)
    app = create_app(settings)
    client = app.test_client()
    due = utcnow() + timedelta(hours=3)
    try:
        answer = client.post(
            "/api/user/sms/campaigns",
            headers=auth(token),
            data={
                "from": str(number_id),
                "body": "Hi {name}",
                "send_at": due.strftime("%Y-%m-%d %H:%M:%S"),
                "quiet_hours": "21:00-08:00",
                "validity_period": "3600",
                "recipients": (io.BytesIO(CSV.encode()), "list.csv"),
            },
            content_type="multipart/form-data",
        )
        assert answer.status_code == 202, answer.get_json()
        campaign_id = answer.get_json()["data"]["id"]
        assert answer.get_json()["data"]["send_at"] == due.strftime("%Y-%m-%d %H:%M:%S")
        assert answer.get_json()["data"]["quiet_hours"] == "21:00-08:00"
        assert expand_campaign(session_factory, campaign_id=campaign_id)[0] == "scheduled"
        shown = client.get(f"/api/user/sms/campaigns/{campaign_id}", headers=auth(token))
        assert shown.get_json()["data"]["counts"]["scheduled"] == 2
        session.expire_all()
        messages = session.scalars(select(Message)).all()
        assert {m.status for m in messages} == {"scheduled"}
        assert all(m.send_at >= due and m.validity_period == 3600 for m in messages)
        assert session.get(User, user_id).balance == Decimal("10.00") - 2 * PRICE
        canceled = client.post(f"/api/user/sms/campaigns/{campaign_id}/cancel", headers=auth(token))
        assert canceled.status_code == 200, canceled.get_json()
    finally:
        app.extensions["smsgw"].close()
    session.expire_all()
    assert {m.status for m in session.scalars(select(Message))} == {"canceled"}
    assert session.get(User, user_id).balance == Decimal("10.00")
    assert ledger_sum(session, user_id=user_id) == Decimal("10.00")


@pytest.mark.timeout(120)
def test_a_scheduled_campaign_goes_at_its_time_at_the_numbers_rate(
    settings, session, session_factory, sandbox, database_url, redis_url, redis_client, tmp_path
):
    _server, sandbox_url = sandbox
    requests.post(f"{sandbox_url}/_sandbox/reset", timeout=5)
    user_id, _ = make_user(session, balance="10.00")
    number_id = make_number(session, user_id=user_id, mps=5)
    set_price(session)
    env = stack_env(
        database_url=database_url,
        redis_url=redis_url,
        twilio_api_base=sandbox_url,
        WORKER_METRICS_PORT="0",
    )
    recipients = [f"+1415555{n:04d}" for n in range(15)]
    log = tmp_path / "worker.log"
    with celery_worker(env, log, queues="sms,campaign,callbacks", beat=True):
        wait_until(lambda: " ready." in log.read_text(), seconds=30, what="the worker", log=log)
        due = utcnow() + timedelta(seconds=5)
        campaign_id = create(
            session,
            user_id=user_id,
            number_id=number_id,
            recipients=recipients,
            schedule=Schedule(send_at=due),
        )
        celery = make_celery(settings)
        celery.send_task("expand_campaign", args=[campaign_id], queue="campaign")

        def status() -> str:
            with session_factory() as s:
                return s.get(Campaign, campaign_id).status

        wait_until(lambda: status() == "scheduled", seconds=15, what="the expansion", log=log)

        def handed_off() -> list:
            with session_factory() as s:
                return s.scalars(
                    select(Message.handoff_at).where(Message.sms_sid.is_not(None))
                ).all()

        while utcnow() < due:  # nothing leaves before its time
            assert handed_off() == [], "a campaign message left before its send_at"
        wait_until(lambda: len(handed_off()) == 15, seconds=30, what="every hand-off", log=log)
        celery.close()
    times = sorted(handed_off())
    assert due <= times[0] <= due + timedelta(seconds=5), (due, times[0])
    # Paced at 5 a second, with the bucket's first second at once: about two seconds.
    assert (times[-1] - times[0]).total_seconds() >= 1, times
    assert status() in ("sending", "completed")
