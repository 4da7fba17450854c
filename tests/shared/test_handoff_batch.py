"""The hand-off's group commit: claims and SID stores of many threads in shared statements."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError

from shared import billing
from shared.db import utcnow
from shared.handoff import hand_off
from shared.handoff_batch import HandoffBatch, Request
from shared.models import LedgerEntry, Message, User
from shared.providers.twilio import TwilioProvider
from tests.shared.test_handoff import configure, load, queue, received
from tests.shared.test_handoff import twilio as twilio  # the fixture

TO = "+14155550123"


def run_threads(count: int, target) -> list:
    """Run `target(n)` in `count` threads started together; return their results."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(n: int) -> None:
        barrier.wait()
        results[n] = target(n)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_concurrent_hand_offs_share_statements_and_each_is_sent_once(session_factory, twilio):
    base_url, settings = twilio
    configure(base_url, latency_ms=50)  # calls overlap: claims and stores wait together
    ids = [queue(session_factory, body=f"Code {n}") for n in range(24)]
    sizes: list[int] = []
    provider = TwilioProvider(settings)
    with HandoffBatch(session_factory, observe=sizes.append) as batch:
        outcomes = run_threads(
            len(ids),
            lambda n: hand_off(
                session_factory,
                provider,
                message_id=ids[n],
                status_callback_base=settings.status_callback_base,
                batch=batch,
            ),
        )
    assert [outcome.kind for outcome in outcomes] == ["sent"] * len(ids)
    assert max(sizes) > 1 and sum(sizes) == 2 * len(ids)  # one claim and one store each
    at_twilio = received(base_url)
    assert len(at_twilio) == len(ids)
    for message_id, outcome in zip(ids, outcomes, strict=True):
        message = load(session_factory, message_id)
        assert (message.status, message.handoff, message.attempts) == ("sending", "done", 1)
        assert message.sms_sid == outcome.sid
        assert message.lease_until is not None and message.lease_until > message.handoff_at


def test_two_workers_racing_for_the_same_messages_send_each_once(session_factory, twilio):
    base_url, settings = twilio
    configure(base_url, latency_ms=20)
    ids = [queue(session_factory, body=f"Code {n}") for n in range(12)]
    provider = TwilioProvider(settings)
    # Two processes' batches, each with its own connection; every message is asked for
    # by three threads of each, as redelivered and requeued tasks would be.
    with HandoffBatch(session_factory) as first, HandoffBatch(session_factory) as second:
        batches = (first, second)
        outcomes = run_threads(
            6 * len(ids),
            lambda n: (
                ids[n % len(ids)],
                hand_off(
                    session_factory,
                    provider,
                    message_id=ids[n % len(ids)],
                    status_callback_base=settings.status_callback_base,
                    batch=batches[n % 2],
                ).kind,
            ),
        )
    kinds = Counter(outcomes)
    for message_id in ids:
        assert (kinds[(message_id, "sent")], kinds[(message_id, "skipped")]) == (1, 5)
        assert load(session_factory, message_id).attempts == 1
    assert len(received(base_url)) == len(ids)


def test_a_batch_with_permanent_and_transient_failures_settles_each_alone(session_factory, twilio):
    base_url, settings = twilio
    configure(base_url, latency_ms=30)
    sent = [queue(session_factory, body=f"Code {n}") for n in range(4)]
    refused = [queue(session_factory, to="+15005550001", body=f"Bad {n}") for n in range(3)]
    queue_full = [queue(session_factory, from_="+15005550008", body=f"Full {n}") for n in range(3)]
    ids = sent + refused + queue_full
    provider = TwilioProvider(settings)
    with HandoffBatch(session_factory) as batch:
        outcomes = run_threads(
            len(ids),
            lambda n: hand_off(
                session_factory,
                provider,
                message_id=ids[n],
                status_callback_base=settings.status_callback_base,
                batch=batch,
            ),
        )
    kinds = [outcome.kind for outcome in outcomes]
    assert kinds == ["sent"] * 4 + ["failed"] * 3 + ["retry"] * 3
    for message_id in refused:
        message = load(session_factory, message_id)
        assert (message.status, message.error_code, message.sms_sid) == ("failed", 21211, None)
    for message_id in queue_full:
        message = load(session_factory, message_id)
        # Nothing was created: safe to send again when its retry comes.
        assert (message.status, message.handoff, message.sms_sid) == ("sending", "pending", None)
    assert len(received(base_url)) == 4
    with session_factory() as session:
        user = session.scalars(select(User)).one()
        refunds = session.scalar(select(func.count()).where(LedgerEntry.kind == "refund"))
        assert refunds == len(refused)
        assert billing.ledger_sum(session, user_id=user.id) == user.balance
        assert user.balance == Decimal("1.00") - len(sent + queue_full) * Decimal("0.0079")


def test_a_sid_another_message_holds_fails_its_store_alone(session_factory):
    holder, taken, *others = (queue(session_factory, body=f"Code {n}") for n in range(5))
    with session_factory.begin() as session:
        session.execute(
            update(Message).values(status="sending", handoff="in_flight", lease_until=utcnow())
        )
        session.execute(update(Message).where(Message.id == holder).values(sms_sid="SM" + "0" * 32))
    sids = {message_id: f"SM{message_id:032x}" for message_id in others}
    with HandoffBatch(session_factory) as batch:
        results = run_threads(
            1 + len(others),
            lambda n: (
                _store(batch, taken, "SM" + "0" * 32)
                if n == 0
                else _store(batch, others[n - 1], sids[others[n - 1]])
            ),
        )
    assert isinstance(results[0], IntegrityError)
    assert results[1:] == ["sending"] * len(others)
    for message_id, sid in sids.items():
        message = load(session_factory, message_id)
        assert (message.sms_sid, message.handoff) == (sid, "done")
    assert load(session_factory, taken).handoff == "in_flight"  # the caller releases it


def _store(batch: HandoffBatch, message_id: int, sid: str):
    try:
        return batch.store(message_id, sid=sid)
    except IntegrityError as error:
        return error


def test_the_statement_does_what_the_single_row_statements_do(session_factory):
    """The oracle: the same requests on the same rows, run both ways, leave the same rows."""
    outcomes = []
    for portable in (False, True):
        ids = [queue(session_factory, body=f"Code {n}") for n in range(8)]
        past = utcnow() - timedelta(minutes=1)
        with session_factory.begin() as session:
            changes = [
                {"status": "sending"},  # a retry: claimable
                {"status_callback": "http://hook.test/cb"},  # left to the ORM claim
                {"valid_until": past},  # expired: left to the ORM claim, which fails it
                {"status": "sending", "handoff": "in_flight"},  # someone else's claim
                {"status": "sending", "handoff": "in_flight"},  # ours: its SID is stored
                {"status": "sending", "handoff": "done", "sms_sid": f"SM{ids[6]:032x}"},
                {"status": "canceled"},
            ]
            for message_id, values in zip(ids[1:], changes, strict=True):
                session.execute(update(Message).where(Message.id == message_id).values(**values))
        requests = [Request(message_id, lease=25.0) for message_id in ids]
        requests += [Request(ids[0], lease=25.0)]  # asked twice: claimed once
        requests += [Request(ids[5], sid=f"SM{ids[5]:032x}"), Request(ids[6], sid="SMother")]
        requests += [Request(ids[-1] + 1000, lease=25.0)]  # gone
        with HandoffBatch(session_factory) as batch:
            if portable:
                batch._run_portable(batch_ := requests[:8] + requests[9:], utcnow())
            else:
                batch._answer(batch_ := requests)
        answers = [
            (request.sid is None, request.row is not None)
            for request in requests
            if request in batch_
        ]
        with session_factory() as session:
            rows = session.execute(
                select(Message.status, Message.handoff, Message.attempts, Message.sms_sid)
                .where(Message.id.in_(ids))
                .order_by(Message.id)
            ).all()
        outcomes.append((answers, [tuple(row[:3]) + (row[3] is not None,) for row in rows]))
    (statement_answers, statement_rows), (single_answers, single_rows) = outcomes
    assert statement_rows == single_rows
    # The statement answers the second claim of a message None without running it.
    assert statement_answers[:8] + statement_answers[9:] == single_answers
    assert statement_answers[8] == (True, False)


def test_a_batch_cut_off_mid_statement_runs_again_on_a_new_connection(session_factory, twilio):
    base_url, settings = twilio
    message_id = queue(session_factory)
    batch = HandoffBatch(session_factory)
    holder = session_factory.kw["bind"].connect()
    try:
        # The row is locked: the batch's claim waits, and its backend is ended meanwhile.
        holder.execute(select(Message.id).where(Message.id == message_id).with_for_update())
        result: list = []
        worker = threading.Thread(
            target=lambda: result.append(
                hand_off(
                    session_factory,
                    TwilioProvider(settings),
                    message_id=message_id,
                    status_callback_base=settings.status_callback_base,
                    batch=batch,
                )
            )
        )
        worker.start()
        waiting = None
        deadline = time.monotonic() + 10
        while waiting is None and time.monotonic() < deadline:
            with session_factory() as watcher:  # outside the lock's transaction and its snapshot
                waiting = watcher.scalar(
                    text(
                        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database() AND query LIKE '%WITH stored AS%'"
                    )
                )
            time.sleep(0.05)
        assert waiting is not None, "the batch never waited for the lock"
        holder.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": waiting})
        time.sleep(0.3)
        holder.rollback()  # the lock goes: the batch, run again, claims the message
        worker.join(10)
        [outcome] = result
        assert outcome.kind == "sent"
        message = load(session_factory, message_id)
        assert (message.handoff, message.sms_sid, message.attempts) == ("done", outcome.sid, 1)
        assert len(received(base_url)) == 1
    finally:
        holder.close()
        batch.close()


def test_a_batch_connection_the_database_dropped_is_replaced(session_factory, twilio):
    base_url, settings = twilio
    first, second = queue(session_factory), queue(session_factory)
    provider = TwilioProvider(settings)
    with HandoffBatch(session_factory) as batch:

        def send(message_id: int) -> str:
            return hand_off(
                session_factory,
                provider,
                message_id=message_id,
                status_callback_base=settings.status_callback_base,
                batch=batch,
            ).kind

        assert send(first) == "sent"
        with session_factory() as session:
            ended = session.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE '%WITH stored AS%' "
                    "AND pid <> pg_backend_pid()"
                )
            )
        assert ended == 1
        assert send(second) == "sent"
    assert load(session_factory, second).attempts == 1
    assert len(received(base_url)) == 2


@pytest.mark.parametrize("threads", [1, 8])
def test_a_claim_takes_its_lease_from_the_batch_time(session_factory, threads):
    ids = [queue(session_factory, body=f"Code {n}") for n in range(threads)]
    before = utcnow()
    with HandoffBatch(session_factory) as batch:
        claims = run_threads(threads, lambda n: batch.claim(ids[n], lease_seconds=25.5))
    for claim in claims:
        lease_until = claim.row[-1]
        assert claim.at is not None and before <= claim.at <= utcnow()
        assert lease_until == claim.at + timedelta(seconds=25.5)
        assert load(session_factory, claim.message_id).lease_until == lease_until
