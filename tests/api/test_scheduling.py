"""Scheduled sends through the API: charged at once, held in PostgreSQL, released, canceled."""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update

from api.app import create_app
from shared import messaging
from shared.billing import ledger_sum
from shared.db import utcnow
from shared.handoff import hand_off
from shared.models import Campaign, LedgerEntry, Message, User, UserCallback
from shared.release import EXPIRED, expire_overdue, release_due
from shared.scheduling import Schedule
from tests.api.conftest import auth
from tests.factories import make_number, make_user, set_price

NEW_YORK = "+12125550123"
PRICE = Decimal("0.0079")


def send(client, token, number_id, **fields):
    body = {"from": number_id, "to": NEW_YORK, "body": "Your table is ready at 8"}
    return client.post("/api/user/sms", json={**body, **fields}, headers=auth(token))


def text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def balance(session, user_id) -> Decimal:
    session.expire_all()
    return session.get(User, user_id).balance


def ledger_kinds(session, message_id) -> list[str]:
    rows = session.scalars(
        select(LedgerEntry.kind)
        .where(LedgerEntry.message_id == message_id)
        .order_by(LedgerEntry.id)
    )
    return list(rows)


class NeverCalled:
    """A provider the test fails on if the gateway calls it."""

    def send(self, **_):
        raise AssertionError("a message that must not go reached the provider")


def hand_off_to_nobody(session_factory, settings, message_id: int):
    """Run a worker's hand-off of the message against a provider that must not be called."""
    return hand_off(
        session_factory,
        NeverCalled(),
        message_id=message_id,
        status_callback_base=settings.status_callback_base,
    )


def test_send_at_is_charged_now_held_and_shown_in_utc(client, session, account, redis_client):
    user_id, token, number_id = account
    due = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    offset = due.astimezone(ZoneInfo("Asia/Tokyo")).isoformat()  # "...+09:00"
    answer = send(client, token, number_id, send_at=offset, validity_period=600)
    assert answer.status_code == 201, answer.get_json()
    data = answer.get_json()["data"]
    assert data["status"] == "scheduled"
    assert data["send_at"] == text(due.replace(tzinfo=None))
    assert data["validity_period"] == 600
    assert balance(session, user_id) == Decimal("10.00") - PRICE  # charged at once
    assert ledger_kinds(session, data["id"]) == ["charge"]
    assert redis_client.llen("sms") == 0  # nothing waits in the broker
    listed = client.get("/api/user/sms?status=scheduled", headers=auth(token)).get_json()
    assert [m["id"] for m in listed["data"]] == [data["id"]]
    stored = session.get(Message, data["id"])
    assert stored.valid_until == due.replace(tzinfo=None) + timedelta(seconds=600)


def test_bad_schedules_answer_the_contracts_400_and_charge_nothing(client, session, account):
    user_id, token, number_id = account
    cases = [
        ({"send_at": "next tuesday"}, "The send_at field must be a time within the next 35 days"),
        ({"send_at": text(utcnow() + timedelta(days=36))}, "within the next 35 days"),
        ({"send_at": text(utcnow() - timedelta(minutes=10))}, "within the next 35 days"),
        ({"quiet_hours": {"start": "22:00"}}, "The quiet_hours field must have start and end"),
        ({"quiet_hours": "late"}, "The quiet_hours field must have start and end as HH:MM"),
        ({"validity_period": 0}, "The validity_period field must be between 1 and 36000"),
        ({"validity_period": 36001}, "The validity_period field must be between 1 and 36000"),
    ]
    for fields, message in cases:
        answer = send(client, token, number_id, **fields)
        assert answer.status_code == 400, fields
        assert message in answer.get_json()["message"], fields
    assert balance(session, user_id) == Decimal("10.00")
    assert session.scalar(select(func.count(Message.id))) == 0


def test_a_send_at_just_past_means_now(client, account, redis_client):
    _, token, number_id = account
    answer = send(client, token, number_id, send_at=text(utcnow() - timedelta(minutes=3)))
    assert answer.get_json()["data"]["status"] == "queued"
    assert answer.get_json()["data"]["send_at"] is None
    assert redis_client.llen("sms") == 1


def test_quiet_hours_hold_until_the_recipients_own_morning(client, account, redis_client):
    _, token, number_id = account
    # A window around New York's present hour holds the message until its end, there.
    local = datetime.now(ZoneInfo("America/New_York"))
    start, end = local - timedelta(hours=1), local + timedelta(hours=1)
    window = {"start": f"{start:%H:%M}", "end": f"{end:%H:%M}"}
    held = send(client, token, number_id, quiet_hours=window).get_json()["data"]
    assert held["status"] == "scheduled"
    expected = end.replace(second=0, microsecond=0).astimezone(UTC).replace(tzinfo=None)
    assert held["send_at"] == text(expected)
    # The same window two hours on does not hold it: it is queued at once.
    later = {
        "start": f"{end + timedelta(hours=1):%H:%M}",
        "end": f"{end + timedelta(hours=2):%H:%M}",
    }
    free = send(client, token, number_id, quiet_hours=later).get_json()["data"]
    assert free["status"] == "queued" and free["send_at"] is None
    assert redis_client.llen("sms") == 1


def test_cancel_refunds_once_and_then_refuses(client, session, account):
    user_id, token, number_id = account
    message = send(client, token, number_id, send_at=text(utcnow() + timedelta(hours=1)))
    message_id = message.get_json()["data"]["id"]
    answer = client.post(f"/api/user/sms/{message_id}/cancel", headers=auth(token))
    assert answer.status_code == 200
    assert answer.get_json()["message"] == "SMS canceled"
    assert answer.get_json()["data"]["status"] == "canceled"
    again = client.post(f"/api/user/sms/{message_id}/cancel", headers=auth(token))
    assert again.status_code == 409
    assert again.get_json() == {"message": "SMS can no longer be canceled"}
    assert ledger_kinds(session, message_id) == ["charge", "refund"]
    assert balance(session, user_id) == Decimal("10.00") == ledger_sum(session, user_id=user_id)
    other_id, other_token = make_user(session)
    stranger = client.post(f"/api/user/sms/{message_id}/cancel", headers=auth(other_token))
    assert stranger.status_code == 404 and stranger.get_json() == {"message": "SMS not found"}
    missing = client.post("/api/user/sms/9223372036854775807/cancel", headers=auth(token))
    assert missing.status_code == 404


def test_a_canceled_queued_message_is_never_handed_over(
    client, session, session_factory, account, settings
):
    _, token, number_id = account
    message_id = send(client, token, number_id).get_json()["data"]["id"]  # queued, task queued
    assert client.post(f"/api/user/sms/{message_id}/cancel", headers=auth(token)).status_code == 200
    outcome = hand_off_to_nobody(session_factory, settings, message_id)
    assert outcome.kind == "skipped"
    session.expire_all()
    assert session.get(Message, message_id).status == "canceled"


def test_a_message_taken_by_a_worker_cannot_be_canceled(client, session, account):
    _, token, number_id = account
    message_id = send(client, token, number_id).get_json()["data"]["id"]
    session.execute(update(Message).where(Message.id == message_id).values(status="sending"))
    session.commit()
    answer = client.post(f"/api/user/sms/{message_id}/cancel", headers=auth(token))
    assert answer.status_code == 409


def test_release_moves_only_what_is_due_once_across_racing_runs(session, session_factory):
    user_id, _ = make_user(session, balance="100")
    number_id = make_number(session, user_id=user_id)
    set_price(session)
    now = utcnow()
    due_ids = []
    for n in range(600):
        schedule = Schedule(send_at=now + timedelta(minutes=5))
        message = messaging.accept_message(
            session,
            user_id=user_id,
            phone_number_id=number_id,
            to=NEW_YORK,
            body=f"Reminder {n}",
            schedule=schedule,
        )
        due_ids.append(message.id)
    later = messaging.accept_message(
        session,
        user_id=user_id,
        phone_number_id=number_id,
        to=NEW_YORK,
        body="Later",
        schedule=Schedule(send_at=now + timedelta(hours=5)),
    )
    session.commit()
    at = now + timedelta(minutes=6)
    released: list[list[int]] = [[], [], []]

    def run(slot: int) -> None:
        while batch := release_due(session_factory, limit=50, now=at).singles:
            released[slot].extend(batch)

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [mid for part in released for mid in part]
    assert sorted(everything) == sorted(due_ids), "each due message released exactly once"
    assert sum(1 for part in released if part) >= 2, "the runs shared the work"
    session.expire_all()
    assert session.get(Message, later.id).status == "scheduled"
    statuses = session.scalars(select(Message.status).where(Message.id.in_(due_ids))).all()
    assert set(statuses) == {"queued"}


def test_validity_expired_before_the_hand_off_fails_refunds_and_never_sends(
    client, session, session_factory, account, settings
):
    user_id, token, number_id = account
    waiting = send(client, token, number_id, validity_period=30).get_json()["data"]["id"]
    scheduled = send(
        client,
        token,
        number_id,
        validity_period=30,
        send_at=text(utcnow() + timedelta(hours=1)),
    ).get_json()["data"]["id"]
    # Their worker never came: both outlived their validity.
    session.execute(
        update(Message)
        .where(Message.id.in_([waiting, scheduled]))
        .values(valid_until=utcnow() - timedelta(seconds=1))
    )
    session.commit()
    outcome = hand_off_to_nobody(session_factory, settings, waiting)
    assert outcome.kind == "skipped"
    assert expire_overdue(session_factory, limit=100) == 1  # the scheduled one; the other is done
    session.expire_all()
    for message_id in (waiting, scheduled):
        message = session.get(Message, message_id)
        assert (message.status, message.error_message) == ("failed", EXPIRED)
        assert ledger_kinds(session, message_id) == ["charge", "refund"]
    assert balance(session, user_id) == Decimal("10.00") == ledger_sum(session, user_id=user_id)


def test_status_callbacks_report_scheduled_queued_and_canceled(
    settings, session, session_factory, account
):
    _, token, number_id = account
    app = create_app(settings.with_overrides(callback_allow_private=True))
    client = app.test_client()
    hook = "http://127.0.0.1:9/hook"
    soon = text(utcnow() + timedelta(seconds=30))
    try:
        first = send(
            client,
            token,
            number_id,
            send_at=text(utcnow() + timedelta(hours=1)),
            status_callback=hook,
        ).get_json()["data"]["id"]
        client.post(f"/api/user/sms/{first}/cancel", headers=auth(token))
        second = send(client, token, number_id, send_at=soon, status_callback=hook)
        second = second.get_json()["data"]["id"]
    finally:
        app.extensions["smsgw"].close()
    release_due(session_factory, limit=10, now=utcnow() + timedelta(minutes=1))
    rows = session.scalars(
        select(UserCallback).where(UserCallback.message_id == first).order_by(UserCallback.id)
    ).all()
    assert [row.payload["status"] for row in rows] == ["scheduled", "canceled"]
    rows = session.scalars(
        select(UserCallback).where(UserCallback.message_id == second).order_by(UserCallback.id)
    ).all()
    assert [row.payload["status"] for row in rows] == ["scheduled", "queued"]


def test_a_campaign_checks_its_schedule_as_a_send_does(client, session, account):
    _, token, number_id = account
    body = {"from": number_id, "body": "Sale", "recipients": [{"to": NEW_YORK}]}
    for field, value, message in (
        ("send_at", "soon", "The send_at field must be a time within the next 35 days"),
        ("quiet_hours", "21-8", "The quiet_hours field must have start and end as HH:MM"),
        ("validity_period", 0, "The validity_period field must be between 1 and 36000"),
    ):
        answer = client.post(
            "/api/user/sms/campaigns", json={**body, field: value}, headers=auth(token)
        )
        assert answer.status_code == 400
        assert answer.get_json()["message"] == message
    form = client.post(
        "/api/user/sms/campaigns",
        data={
            "from": str(number_id),
            "body": "Sale",
            "validity_period": "forever",
            "recipients": (io.BytesIO(f"to\n{NEW_YORK}\n".encode()), "list.csv"),
        },
        headers=auth(token),
        content_type="multipart/form-data",
    )
    assert form.status_code == 400
    assert form.get_json()["message"] == "The validity_period field must be between 1 and 36000"
    assert session.scalar(select(func.count(Campaign.id))) == 0


def test_quiet_hours_longer_than_the_validity_expire_the_message(
    client, session, session_factory, account
):
    user_id, token, number_id = account
    local = datetime.now(ZoneInfo("America/New_York"))
    window = {
        "start": f"{local - timedelta(hours=1):%H:%M}",
        "end": f"{local + timedelta(hours=1):%H:%M}",
    }
    data = send(client, token, number_id, quiet_hours=window, validity_period=60)
    data = data.get_json()["data"]
    assert data["status"] == "scheduled"  # held about an hour, valid for a minute
    assert expire_overdue(session_factory, limit=10, now=utcnow() + timedelta(minutes=2)) == 1
    session.expire_all()
    message = session.get(Message, data["id"])
    assert (message.status, message.error_message) == ("failed", EXPIRED)
    assert balance(session, user_id) == Decimal("10.00") == ledger_sum(session, user_id=user_id)
