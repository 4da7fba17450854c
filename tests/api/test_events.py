"""`GET /api/user/sms/{id}/events`: every status a message took, once each, in order.

The events are written by triggers on `messages`, so every path that moves a
status is covered: the API's group statement, the ORM, the hand-off's bulk
updates, Twilio's callbacks (repeated and late ones), the reconciler, the
release of scheduled messages, cancels and campaign expansion.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, select, update

from shared import delivery, reconcile
from shared.db import utcnow
from shared.handoff import hand_off
from shared.models import Message, MessageEvent
from shared.providers import Fetched, PermanentError, Sent
from shared.release import release_due
from tests.api.conftest import auth
from tests.delivery_helpers import age, new_sid
from tests.factories import make_user

NEW_YORK = "+12125550123"


class Twilio:
    """A provider that accepts every message, or refuses with `code`, and reports `delivered`."""

    def __init__(self, code: int | None = None) -> None:
        self.code = code

    def send(self, **_) -> Sent:
        if self.code is not None:
            raise PermanentError(self.code, "refused")
        return Sent(sid=new_sid(), status="queued")

    def fetch(self, sid: str) -> Fetched:
        return Fetched(sid=sid, status="delivered", error_code=None, error_message=None)


def send(client, token, number_id, **fields):
    body = {"from": number_id, "to": NEW_YORK, "body": "Hi", **fields}
    answer = client.post("/api/user/sms", json=body, headers=auth(token))
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()["data"]["id"]


def events(client, token, message_id):
    answer = client.get(f"/api/user/sms/{message_id}/events", headers=auth(token))
    assert answer.status_code == 200, answer.get_json()
    return [(e["status"], e["error_code"]) for e in answer.get_json()["data"]]


def callback(session_factory, message_id, status, error_code=None):
    with session_factory() as session:
        sid = session.get(Message, message_id).sms_sid
        delivery.apply_callback(
            session,
            sid=sid,
            status=status,
            error_code=error_code,
            token=None,
            message_id=message_id,
        )
        session.commit()


def test_a_delivered_message_has_each_status_once_in_order(
    client, account, session_factory, settings
):
    _user_id, token, number_id = account
    message_id = send(client, token, number_id)
    assert events(client, token, message_id) == [("queued", None)]
    outcome = hand_off(
        session_factory,
        Twilio(),
        message_id=message_id,
        status_callback_base=settings.status_callback_base,
    )
    assert outcome.kind == "sent"
    for status in ("queued", "sending", "sent", "sent", "delivered", "sent", "delivered"):
        callback(session_factory, message_id, status)  # repeats and late ones change nothing
    assert events(client, token, message_id) == [
        ("queued", None),
        ("sending", None),
        ("sent", None),
        ("delivered", None),
    ]
    answer = client.get(f"/api/user/sms/{message_id}/events", headers=auth(token)).get_json()
    times = [e["occurred_at"] for e in answer["data"]]
    assert times == sorted(times) and len(times[0]) == 19


def test_a_failure_at_hand_off_and_an_undelivered_one_carry_their_codes(
    client, account, session_factory, settings
):
    _user_id, token, number_id = account
    refused = send(client, token, number_id)
    hand_off(
        session_factory,
        Twilio(code=21614),
        message_id=refused,
        status_callback_base=settings.status_callback_base,
    )
    assert events(client, token, refused) == [
        ("queued", None),
        ("sending", None),
        ("failed", 21614),
    ]
    lost = send(client, token, number_id)
    hand_off(
        session_factory,
        Twilio(),
        message_id=lost,
        status_callback_base=settings.status_callback_base,
    )
    callback(session_factory, lost, "undelivered", 30003)
    assert events(client, token, lost)[-1] == ("undelivered", 30003)


def test_the_reconcilers_status_is_an_event(client, account, session_factory, settings):
    _user_id, token, number_id = account
    message_id = send(client, token, number_id)
    hand_off(
        session_factory,
        Twilio(),
        message_id=message_id,
        status_callback_base=settings.status_callback_base,
    )
    age(session_factory, message_id, 7200)
    report = reconcile.reconcile_unfinished(
        session_factory, Twilio(), older_than_seconds=3600, limit=10
    )
    assert message_id in report.updated
    assert [s for s, _ in events(client, token, message_id)] == ["queued", "sending", "delivered"]


def test_scheduled_released_and_canceled_messages(client, account, session_factory):
    _user_id, token, number_id = account
    later = (utcnow() + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    released = send(client, token, number_id, send_at=later)
    canceled = send(client, token, number_id, send_at=later)
    assert client.post(f"/api/user/sms/{canceled}/cancel", headers=auth(token)).status_code == 200
    release_due(session_factory, limit=10, now=utcnow() + timedelta(hours=2))
    assert [s for s, _ in events(client, token, released)] == ["scheduled", "queued"]
    assert [s for s, _ in events(client, token, canceled)] == ["scheduled", "canceled"]


def test_campaign_messages_have_their_events(client, account, session_factory):
    from shared.campaign_expansion import expand_campaign

    _user_id, token, number_id = account
    recipients = [{"to": f"+1212555{n:04d}"} for n in range(5)]
    answer = client.post(
        "/api/user/sms/campaigns",
        json={"from": number_id, "body": "Hi", "recipients": recipients},
        headers=auth(token),
    )
    campaign_id = answer.get_json()["data"]["id"]
    expand_campaign(session_factory, campaign_id=campaign_id)
    page = client.get(f"/api/user/sms?campaign_id={campaign_id}", headers=auth(token)).get_json()
    assert len(page["data"]) == 5
    for message in page["data"]:
        assert events(client, token, message["id"]) == [("queued", None)]


def test_another_users_message_has_no_events_to_show(client, account, session):
    _user_id, token, number_id = account
    message_id = send(client, token, number_id)
    _other, other_token = make_user(session)
    answer = client.get(f"/api/user/sms/{message_id}/events", headers=auth(other_token))
    assert answer.status_code == 404 and answer.get_json() == {"message": "SMS not found"}
    assert (
        client.get("/api/user/sms/9223372036854775807/events", headers=auth(token)).status_code
        == 404
    )


def test_updates_that_leave_the_status_alone_write_no_event(client, account, session_factory):
    _user_id, token, number_id = account
    message_id = send(client, token, number_id)
    with session_factory.begin() as session:
        session.execute(
            update(Message).where(Message.id == message_id).values(attempts=3, lease_until=utcnow())
        )
    assert events(client, token, message_id) == [("queued", None)]


def test_a_deleted_message_takes_its_events_with_it(client, account, session_factory):
    _user_id, token, number_id = account
    message_id = send(client, token, number_id)
    with session_factory.begin() as session:
        session.execute(delete(Message).where(Message.id == message_id))
    with session_factory() as session:
        left = session.scalar(select(func.count()).where(MessageEvent.message_id == message_id))
    assert left == 0
