"""Campaigns in two real Celery worker processes, against the test database, Redis and sandbox."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from decimal import Decimal

import pytest
import redis
import requests
from sqlalchemy import func, select

from shared import billing, campaigns, messaging
from shared.campaign_expansion import expand_campaign
from shared.db import utcnow
from shared.handoff import hand_off
from shared.models import Campaign, LedgerEntry, Message, User
from tests.factories import make_number, make_user, set_price
from tests.processes import celery_worker, stack_env
from tests.worker.test_send_message import configure, sandbox_state
from worker.factory import make_celery

PUBLIC_BASE_URL = "http://gateway.test"


@pytest.fixture(scope="module")
def workers(database_url, redis_url, sandbox, tmp_path_factory):
    """Run two worker processes on both queues; yield their log files."""
    _server, base_url = sandbox
    redis.Redis.from_url(redis_url).flushdb()
    env = stack_env(
        database_url=database_url,
        redis_url=redis_url,
        twilio_api_base=base_url,
        public_base_url=PUBLIC_BASE_URL,
    )
    folder = tmp_path_factory.mktemp("workers")
    logs = [folder / f"{name}.log" for name in ("one", "two")]
    with ExitStack() as stack:
        for name, log in zip(("one", "two"), logs, strict=True):
            stack.enter_context(
                celery_worker(
                    env, log, queues="sms,campaign,callbacks", concurrency=4, name=f"{name}@%h"
                )
            )
        yield logs
    redis.Redis.from_url(redis_url).flushdb()


@pytest.fixture
def app(settings, sandbox, workers):
    """A Celery app for enqueueing, as the API would; the sandbox emptied, callbacks off."""
    _server, base_url = sandbox
    requests.post(f"{base_url}/_sandbox/reset", timeout=5)
    configure(base_url, callbacks=False)
    app = make_celery(settings.with_overrides(twilio_api_base=base_url))
    yield app
    app.close()
    requests.post(f"{base_url}/_sandbox/reset", timeout=5)


def start(app, session_factory, *, number_id: int, user_id: int, count: int, offset=0) -> int:
    rows = ((f"+1415555{offset + n:04d}", json.dumps({"name": f"n{n}"})) for n in range(count))
    with session_factory() as session:
        campaign = campaigns.create_campaign(
            session,
            user_id=user_id,
            phone_number_id=number_id,
            body="Hi {name}",
            recipients=rows,
        )
        session.commit()
    app.send_task("expand_campaign", args=[campaign.id], queue="campaign")
    return campaign.id


def account(session_factory, *, mps: int, balance: str = "100.00", number="+15005550006"):
    with session_factory() as session:
        user_id, _ = make_user(session, balance=balance)
        set_price(session)
        return user_id, make_number(session, user_id=user_id, number=number, mps=mps)


def handed_off(session_factory, campaign_id: int) -> int:
    with session_factory() as session:
        return session.scalar(
            select(func.count()).where(
                Message.campaign_id == campaign_id,
                Message.status != "queued",
                Message.status != "canceled",
            )
        )


def wait_for(check, logs, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    tails = "\n".join(log.read_text()[-3000:] for log in logs)
    pytest.fail(f"timed out; worker logs:\n{tails}")


def campaign_status(session_factory, campaign_id: int) -> str:
    with session_factory() as session:
        return session.get(Campaign, campaign_id).status


def test_a_campaign_is_expanded_paced_and_completed(app, session_factory, sandbox, workers):
    user_id, number_id = account(session_factory, mps=20)
    campaign_id = start(app, session_factory, number_id=number_id, user_id=user_id, count=30)
    wait_for(lambda: campaign_status(session_factory, campaign_id) == "completed", workers)
    wait_for(lambda: len(sandbox_state(sandbox[1])["messages"]) == 30, workers, seconds=5)
    sent = sandbox_state(sandbox[1])["messages"]
    assert len(sent) == 30 and len({m["to"] for m in sent}) == 30
    with session_factory() as session:
        sids = session.scalars(select(Message.sms_sid).where(Message.campaign_id == campaign_id))
        assert {m["sid"] for m in sent} == set(sids)


def test_pacing_holds_across_two_worker_processes(app, session_factory, workers):
    mps, window = 10, 3.0
    user_id, number_id = account(session_factory, mps=mps)
    # Two campaigns on one number: two dispatchers, on either process, share its bucket.
    ids = [
        start(app, session_factory, number_id=number_id, user_id=user_id, count=40, offset=o)
        for o in (0, 1000)
    ]

    def total() -> int:
        return sum(handed_off(session_factory, campaign_id) for campaign_id in ids)

    wait_for(lambda: total() >= 5, workers)
    time.sleep(0.5)
    first, began = total(), time.monotonic()
    time.sleep(window)
    counted = total() - first
    elapsed = time.monotonic() - began
    assert counted <= mps * elapsed + 3
    assert counted >= mps * window * 0.7
    logs = [log.read_text() for log in workers]
    assert all("send_message" in log for log in logs), "both processes sent"
    for campaign_id in ids:
        with session_factory() as session:
            campaigns.cancel_campaign(session, user_id=user_id, campaign_id=campaign_id)
            session.commit()


def test_single_sends_overtake_a_long_campaign(app, session_factory, sandbox, workers):
    user_id, number_id = account(session_factory, mps=2)
    campaign_id = start(app, session_factory, number_id=number_id, user_id=user_id, count=200)
    wait_for(lambda: handed_off(session_factory, campaign_id) >= 2, workers)
    with session_factory() as session:
        message = messaging.accept_message(
            session, user_id=user_id, phone_number_id=number_id, to="+14155550123", body="OTP 1"
        )
        session.commit()
    began = time.monotonic()
    app.send_task("send_message", args=[message.id], queue="sms")
    wait_for(
        lambda: any(m["body"] == "OTP 1" for m in sandbox_state(sandbox[1])["messages"]),
        workers,
        seconds=10,
    )
    assert time.monotonic() - began < 3
    assert handed_off(session_factory, campaign_id) < 20  # the campaign is far from done
    with session_factory() as session:
        campaigns.cancel_campaign(session, user_id=user_id, campaign_id=campaign_id)
        session.commit()


def test_cancel_racing_the_workers_sends_or_refunds_each_message_once(
    app, session_factory, sandbox, workers
):
    user_id, number_id = account(session_factory, mps=100)
    campaign_id = start(app, session_factory, number_id=number_id, user_id=user_id, count=400)
    wait_for(lambda: handed_off(session_factory, campaign_id) >= 30, workers)
    with session_factory() as session:
        campaigns.cancel_campaign(session, user_id=user_id, campaign_id=campaign_id)
        session.commit()
    time.sleep(1.5)  # let in-flight hand-offs finish
    with session_factory() as session:
        rows = session.execute(
            select(Message.id, Message.status, Message.sms_sid).where(
                Message.campaign_id == campaign_id
            )
        ).all()
        canceled = {r.id for r in rows if r.status == "canceled"}
        sent = {r.id for r in rows if r.sms_sid}
        assert canceled and sent and not canceled & sent
        assert canceled | sent == {r.id for r in rows}
        refunds = session.scalars(
            select(LedgerEntry.message_id).where(LedgerEntry.kind == "refund")
        ).all()
        assert sorted(refunds) == sorted(canceled)
        balance = session.get(User, user_id).balance
        assert balance == billing.ledger_sum(session, user_id=user_id)
        assert balance == Decimal("100.00") - Decimal("0.0079") * len(sent)
    at_twilio = sandbox_state(sandbox[1])["messages"]
    assert len(at_twilio) == len(sent)


def test_a_message_claimed_first_is_not_canceled_and_one_canceled_first_is_not_sent(
    session_factory, settings
):
    user_id, number_id = account(session_factory, mps=1)
    rows = ((f"+1415555{n:04d}", "{}") for n in range(2))
    with session_factory() as session:
        campaign = campaigns.create_campaign(
            session, user_id=user_id, phone_number_id=number_id, body="Hi", recipients=rows
        )
        session.commit()
    expand_campaign(session_factory, campaign_id=campaign.id)
    with session_factory() as session:
        first, second = session.scalars(select(Message.id).order_by(Message.id)).all()
        session.execute(
            Message.__table__.update()
            .where(Message.id == first)
            .values(handoff="in_flight", status="sending", handoff_at=utcnow())
        )
        session.commit()
        campaigns.cancel_campaign(session, user_id=user_id, campaign_id=campaign.id)
        session.commit()
        assert session.get(Message, first).status == "sending"
        assert session.get(Message, second).status == "canceled"

    class NoProvider:
        def send(self, **_):
            raise AssertionError("a canceled message must not be sent")

    outcome = hand_off(
        session_factory, NoProvider(), message_id=second, status_callback_base="http://x"
    )
    assert outcome.kind == "skipped"


def _expanded(session_factory, *, mps: int, count: int) -> tuple[int, int, str]:
    user_id, number_id = account(session_factory, mps=mps)
    rows = ((f"+1415555{n:04d}", "{}") for n in range(count))
    with session_factory() as session:
        campaign = campaigns.create_campaign(
            session, user_id=user_id, phone_number_id=number_id, body="Hi", recipients=rows
        )
        session.commit()
    _status, chain = expand_campaign(session_factory, campaign_id=campaign.id)
    return user_id, campaign.id, chain


def test_the_stale_requeue_job_leaves_campaign_messages_to_their_dispatcher(session_factory):
    from datetime import timedelta

    from shared.handoff import requeue_stale

    _user_id, campaign_id, _chain = _expanded(session_factory, mps=1, count=3)
    with session_factory.begin() as session:
        session.execute(Message.__table__.update().values(updated_at=utcnow() - timedelta(hours=1)))
    assert requeue_stale(session_factory, older_than_seconds=60, limit=100) == []


def test_pump_releases_each_message_once_within_the_bucket_then_completes(
    session_factory, redis_client
):
    from shared.campaign_dispatch import pump
    from shared.pacing import Pacer

    _user_id, campaign_id, chain = _expanded(session_factory, mps=50, count=20)
    pacer, released, passes = Pacer(redis_client), [], 0
    began = time.monotonic()
    while len(released) < 20 and passes < 200:
        done = pump(session_factory, pacer, campaign_id=campaign_id, chain=chain, stale_after=60)
        released += done.released
        passes += 1
        time.sleep(done.delay or 0)
    elapsed = time.monotonic() - began
    assert sorted(released) == sorted(set(released)) and len(released) == 20
    assert elapsed >= 20 / 50 * 0.8  # the bucket, not the loop, set the pace
    assert (
        pump(session_factory, pacer, campaign_id=campaign_id, chain="other", stale_after=60).delay
        is None
    )  # a retired chain stops
    with session_factory.begin() as session:
        session.execute(Message.__table__.update().values(status="sending", handoff="pending"))
    # Waiting for a send retry is not handed off: the campaign keeps sending (and cancelable).
    done = pump(session_factory, pacer, campaign_id=campaign_id, chain=chain, stale_after=60)
    assert done.delay and campaign_status(session_factory, campaign_id) == "sending"
    with session_factory.begin() as session:
        session.execute(Message.__table__.update().values(status="sending", handoff="done"))
    done = pump(session_factory, pacer, campaign_id=campaign_id, chain=chain, stale_after=60)
    assert done.delay is None and campaign_status(session_factory, campaign_id) == "completed"


def test_a_silent_dispatcher_is_restarted_with_a_new_chain(session_factory):
    from datetime import timedelta

    from shared.campaign_dispatch import stalled

    _user_id, campaign_id, chain = _expanded(session_factory, mps=1, count=2)
    with session_factory.begin() as session:
        session.get(Campaign, campaign_id).pumped_at = utcnow() - timedelta(minutes=5)
    pending, restarted = stalled(session_factory, pending_after=60, silent_after=30, limit=10)
    assert pending == [] and [c for c, _ in restarted] == [campaign_id]
    assert restarted[0][1] != chain


@pytest.mark.parametrize(
    "to",
    [
        "+14155550123",
        " +1 (415) 555-0123 ",
        "+442079460000",
        "+33612345678",
        "+1415555012",
        "+999123",
        "4155550123",
        "+1 800 FLOWERS",
        "",
        "+80012345678",
        "+12125550199",
    ],
)
def test_campaign_recipients_are_checked_exactly_like_single_sends(to):
    from shared.campaign_expansion import parse_to
    from shared.messaging import Rejected, parse_recipient

    try:
        expected = parse_recipient(to)
    except Rejected as rejection:
        with pytest.raises(Rejected) as ours:
            parse_to(to)
        assert ours.value.message == rejection.message
    else:
        assert parse_to(to)[0] == expected
