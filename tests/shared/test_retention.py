"""Retention on real PostgreSQL: old final messages go; money, totals and live messages stay."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import func, select, text, update

from shared import billing, campaigns, inbound, messaging, retention, user_callbacks
from shared.db import utcnow
from shared.models import (
    Campaign,
    InboundMessage,
    LedgerEntry,
    Message,
    PhoneNumber,
    TwilioEvent,
    User,
    UserCallback,
)
from tests.factories import make_number, make_user, set_price

OLD = timedelta(days=40)
_serial = iter(range(100, 10_000))


def _send(session, user_id, number_id, *, status, age=OLD, campaign_id=None, callback=None):
    message = messaging.accept_message(
        session,
        user_id=user_id,
        phone_number_id=number_id,
        to=f"+1415555{next(_serial):04d}",
        body="Hello",
        status_callback=callback,
    )
    message.campaign_id = campaign_id
    if status == "failed":
        messaging.fail(session, message=message, error_code=30008, error_message="Unknown")
    elif status == "canceled":
        message.status = "canceled"
        billing.refund(session, message=message, note="canceled")
    else:
        message.status = status
    session.flush()
    session.execute(
        update(Message).where(Message.id == message.id).values(updated_at=utcnow() - age)
    )
    return message.id


def _ledger(session):
    return session.execute(
        select(LedgerEntry.id, LedgerEntry.amount, LedgerEntry.message_id).order_by(LedgerEntry.id)
    ).all()


def test_old_final_messages_go_and_money_totals_and_live_messages_stay(session_factory):
    with session_factory() as session:
        user_id, _ = make_user(session, balance="10.00")
        number_id = make_number(session, user_id=user_id)
        set_price(session)
        campaign = Campaign(
            user_id=user_id, phone_number_id=number_id, body="Hi", rejections=[], status="sending"
        )
        session.add(campaign)
        session.flush()
        ids = {
            status: _send(session, user_id, number_id, status=status, campaign_id=campaign.id)
            for status in ("delivered", "undelivered", "failed", "canceled")
        }
        single_old = _send(session, user_id, number_id, status="delivered")
        live = [
            _send(session, user_id, number_id, status=status, campaign_id=campaign.id)
            for status in ("queued", "sending", "sent")
        ]
        recent = _send(session, user_id, number_id, status="delivered", age=timedelta(days=2))
        owed = _send(
            session, user_id, number_id, status="delivered", callback="https://example.com/h"
        )
        owed_message = session.get(Message, owed)
        user_callbacks.emit(session, message=owed_message, enqueue=False)
        session.add(TwilioEvent(sid="SM" + "0" * 32, status="delivered", message_id=single_old))
        session.commit()
        counts_before = campaigns.message_counts(session, campaign=campaign)
        refunded_before = campaigns.refunded(session, campaign_id=campaign.id)
        ledger_before = _ledger(session)
        updated_before = campaign.updated_at

    assert retention.purge(session_factory, retention_days=0).deleted == 0
    purged = retention.purge(session_factory, retention_days=30, batch=2)

    assert purged.deleted == 5 and purged.batches == [2, 2, 1]
    with session_factory() as session:
        left = set(session.scalars(select(Message.id)))
        assert left == {*live, recent, owed}
        assert not left & {*ids.values(), single_old}
        assert session.scalar(select(func.count(TwilioEvent.id))) == 0
        assert session.scalar(select(func.count(UserCallback.id))) == 1
        assert _ledger(session) == ledger_before
        balance = session.scalar(select(User.balance).where(User.id == user_id))
        assert billing.ledger_sum(session, user_id=user_id) == balance
        campaign = session.get(Campaign, campaign.id)
        assert campaigns.message_counts(session, campaign=campaign) == counts_before
        assert campaigns.refunded(session, campaign_id=campaign.id) == refunded_before
        assert refunded_before == Decimal("0.0158")  # the failed and the canceled one
        assert campaign.updated_at == updated_before
    # Nothing is left to purge: a second run deletes nothing.
    assert retention.purge(session_factory, retention_days=30, batch=2).deleted == 0


LOAD_OLD = """
INSERT INTO messages (user_id, phone_number_id, from_number, "to", body, segments, encoding,
    segment_price, total_cost, status, handoff, attempts, created_at, updated_at)
    SELECT {user}, {number}, '+15005550006', '+14155550123', 'Old', 1, 'GSM-7', 0.0079, 0.0079,
        CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'delivered' END, 'done', 1,
        now() - interval '60 days', now() - interval '60 days'
    FROM generate_series(1, {count}) g;
INSERT INTO ledger_entries (user_id, amount, kind, message_id, created_at)
    SELECT user_id, -total_cost, 'charge', id, created_at FROM messages WHERE body = 'Old';
INSERT INTO ledger_entries (user_id, amount, kind, message_id, created_at)
    SELECT user_id, total_cost, 'refund', id, updated_at FROM messages
    WHERE body = 'Old' AND status = 'failed';
UPDATE users SET balance = (SELECT sum(amount) FROM ledger_entries WHERE user_id = {user})
    WHERE id = {user};
"""


def test_a_purge_beside_running_sends_never_stalls_them(session_factory, engine):
    with session_factory() as session:
        user_id, _ = make_user(session, balance="1000.00")
        number_id = make_number(session, user_id=user_id)
        set_price(session)
    with engine.begin() as conn:
        conn.connection.driver_connection.execute(
            LOAD_OLD.format(user=user_id, number=number_id, count=20_000)
        )
    sent: list[tuple[int, float]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def sender() -> None:
        while not stop.is_set():
            try:
                with session_factory() as session:
                    # Any lock wait over a second fails the send, and so the test.
                    session.execute(text("SET LOCAL lock_timeout = '1s'"))
                    message = messaging.accept_message(
                        session,
                        user_id=user_id,
                        phone_number_id=number_id,
                        to="+14155550199",
                        body="New",
                    )
                    message.status = "delivered"  # final, but new: never purged
                    session.commit()
                    sent.append((message.id, time.monotonic()))
            except BaseException as error:  # noqa: BLE001  (reported below)
                errors.append(error)
                return

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    purged = retention.purge(session_factory, retention_days=30, batch=500)
    finished = time.monotonic()
    time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert purged.deleted == 20_000 and len(purged.batches) == 40
    assert max(purged.batches) <= 500
    during = [sent_at for _, sent_at in sent if started < sent_at < finished]
    assert len(during) > 10, "sends went on while the purge ran"
    with session_factory() as session:
        assert session.scalar(select(func.count(Message.id)).where(Message.body == "Old")) == 0
        kept = set(session.scalars(select(Message.id).where(Message.body == "New")))
        assert kept == {message_id for message_id, _ in sent}
        balance = session.scalar(select(User.balance).where(User.id == user_id))
        assert billing.ledger_sum(session, user_id=user_id) == balance
        rows = session.scalar(select(func.count(LedgerEntry.id)))
        # The opening balance, each old charge and refund, each new charge: all kept.
        assert rows == 1 + 20_000 + 2_000 + len(kept)


def test_old_inbound_messages_go_with_their_forwards_unless_one_is_owed(session_factory):
    with session_factory() as session:
        user_id, _ = make_user(session)
        number_id = make_number(session, user_id=user_id)
        set_price(session)
        received = {
            body: inbound.receive(
                session, sid=f"SM{index:032x}", to="+15005550006", from_="+14155550123", body=body
            )
            for index, body in enumerate(["old", "old too", "recent"])
        }
        session.execute(
            update(PhoneNumber)
            .where(PhoneNumber.id == number_id)
            .values(inbound_url="https://x.test/in")
        )
        session.flush()
        owed = inbound.receive(
            session, sid="SM" + "f" * 32, to="+15005550006", from_="+14155550123", body="owed"
        )
        delivered = inbound.receive(
            session, sid="SM" + "e" * 32, to="+15005550006", from_="+14155550123", body="sent on"
        )
        session.execute(
            update(UserCallback)
            .where(UserCallback.id == delivered.callback_id)
            .values(delivered_at=utcnow(), next_attempt_at=None)
        )
        old = [received["old"], received["old too"], owed, delivered]
        session.execute(
            update(InboundMessage)
            .where(InboundMessage.id.in_([r.inbound_id for r in old]))
            .values(received_at=utcnow() - OLD)
        )
        old_message = _send(session, user_id, number_id, status="delivered")
        session.commit()

    purged = retention.purge(session_factory, retention_days=30, batch=2)

    assert (purged.deleted, purged.inbound, purged.batches) == (4, 3, [1, 2, 1])
    with session_factory() as session:
        left = set(session.scalars(select(InboundMessage.body)))
        assert left == {"recent", "owed"}
        assert session.scalars(select(UserCallback.id)).all() == [owed.callback_id]
        assert session.get(Message, old_message) is None
