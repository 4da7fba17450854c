"""Sends accepted together (`api.committer`): money, order, rate limit and faults, for real."""

from __future__ import annotations

import json
import random
import threading
import time
from decimal import Decimal

from sqlalchemy import create_engine, func, select, text

from api.app import create_app
from shared.billing import ledger_sum
from shared.models import Message, User
from tests.api.conftest import auth
from tests.factories import make_number, make_user, set_price
from worker.factory import SEND_QUEUE

TO = "+14155550123"
PRICE = Decimal("0.0079")


def _post(app, token: str, body: dict, **headers: str):
    return app.test_client().post("/api/user/sms", json=body, headers={**auth(token), **headers})


def test_two_processes_batching_three_users_never_overdraw_or_deadlock(settings, session):
    """Two committers (as two API processes) take interleaved sends of three users at once.

    Each batch locks its payers; two batches lock them in the same order, so
    they wait for each other instead of deadlocking. Every refusal must be
    true at the end: a send refused for its cost would not fit the balance left.
    """
    set_price(session, country="US", price=str(PRICE))
    users = []
    for _ in range(3):
        user_id, token = make_user(session, balance="0.1000")  # about 8 of the 16 sends each
        users.append((user_id, token, make_number(session, user_id=user_id)))
    apps = [create_app(settings), create_app(settings)]
    rng = random.Random(7)
    plan = [
        (rng.choice(users), rng.choice(["short", "x" * 200]), rng.choice(apps)) for _ in range(48)
    ]
    results: list = [None] * len(plan)
    barrier = threading.Barrier(len(plan))

    def run(i: int) -> None:
        (_, token, number_id), body, app = plan[i]
        barrier.wait()
        answer = _post(app, token, {"from": number_id, "to": TO, "body": body})
        results[i] = (answer.status_code, answer.get_json()["message"])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(plan))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for app in apps:
        app.extensions["smsgw"].close()

    assert set(results) == {(201, "SMS queued for sending"), (400, "Insufficient balance")}
    session.expire_all()
    for user_id, _token, _ in users:
        balance = session.get(User, user_id).balance
        assert balance >= 0
        assert ledger_sum(session, user_id=user_id) == balance
        mine = [i for i, (user, _, _) in enumerate(plan) if user[0] == user_id]
        accepted = [i for i in mine if results[i][0] == 201]
        spent = session.scalar(
            select(func.coalesce(func.sum(Message.total_cost), 0)).where(Message.user_id == user_id)
        )
        assert spent == Decimal("0.1000") - balance
        assert len(accepted) == session.scalar(
            select(func.count(Message.id)).where(Message.user_id == user_id)
        )
        for i in mine:
            if results[i][0] == 400:  # refused: its cost must exceed what is left now
                segments = 2 if len(plan[i][1]) > 160 else 1
                assert PRICE * segments > balance


def test_each_accepted_send_is_queued_once_with_its_request_id(app, session, account, redis_client):
    _, token, number_id = account
    answers = []

    def run(i: int) -> None:
        answers.append(
            _post(
                app,
                token,
                {"from": number_id, "to": TO, "body": f"n{i}"},
                **{"X-Request-Id": f"r{i}"},
            )
        )

    threads = [threading.Thread(target=run, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [a.status_code for a in answers] == [201] * 20
    queued = [json.loads(raw) for raw in redis_client.lrange(SEND_QUEUE, 0, -1)]
    by_message = {}
    for task in queued:
        message_id = json.loads(_body(task))[0][0]
        by_message.setdefault(message_id, []).append(task["headers"]["smsgw_request_id"])
    bodies = dict(session.execute(select(Message.id, Message.body)).all())
    assert sorted(by_message) == sorted(bodies)
    for message_id, request_ids in by_message.items():
        assert request_ids == [f"r{bodies[message_id][1:]}"]  # once, with its own request's id


def _body(task: dict) -> str:
    import base64

    return base64.b64decode(task["body"]).decode()


def test_a_connection_the_server_closed_is_replaced_before_the_batch(
    app, session, account, database_url
):
    user_id, token, number_id = account
    body = {"from": number_id, "to": TO, "body": "Hi"}
    assert _post(app, token, body).status_code == 201
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        terminated = conn.execute(
            text(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'"
            )
        ).all()
        ended = [pid for pid, _ in terminated]
        # pg_terminate_backend only signals: wait until the backends have gone,
        # as after a restart, so that their sockets are closed before the next send.
        deadline = time.monotonic() + 10
        while conn.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:ended)"),
            {"ended": ended},
        ):
            assert time.monotonic() < deadline, "terminated backends did not exit"
            time.sleep(0.01)
    admin.dispose()
    assert len(ended) >= 1
    # The committer's idle connection was ended by the server: no request may see it.
    session.close()
    assert _post(app, token, body).status_code == 201
    session.expire_all()
    assert session.scalar(select(func.count(Message.id))) == 2
    assert ledger_sum(session, user_id=user_id) == session.get(User, user_id).balance


def test_database_down_is_503_and_charges_nothing(settings, session, account):
    user_id, token, number_id = account
    app = create_app(
        settings.with_overrides(database_url="postgresql+psycopg://postgres@127.0.0.1:1/x")
    )
    answers: list = []

    def run() -> None:
        answers.append(_post(app, token, {"from": number_id, "to": TO, "body": "Hi"}))

    # Concurrent sends share failed groups: each must be woken with the error, none left waiting.
    threads = [threading.Thread(target=run, daemon=True) for _ in range(12)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert len(answers) == 12
    app.extensions["smsgw"].close()
    for answer in answers:
        assert answer.status_code == 503
        assert answer.get_json() == {
            "message": "Service unavailable",
            "error": "Database unavailable",
        }
    assert app.extensions["smsgw"].committer._leading is False  # the lead was passed on and ended
    session.expire_all()
    assert session.get(User, user_id).balance == Decimal("10.00")


def test_sends_count_against_the_rate_limit_and_bad_tokens_stay_401(settings, session, account):
    _, token, number_id = account
    app = create_app(settings.with_overrides(rate_limit_per_minute=3))
    body = {"from": number_id, "to": TO, "body": "Hi"}
    try:
        codes = [_post(app, token, body).status_code for _ in range(4)]
        assert codes == [201, 201, 201, 429]
        assert 1 <= int(_post(app, token, body).headers["Retry-After"]) <= 60
        for _ in range(5):  # a token nobody has is 401, however often it is tried
            assert _post(app, "not-a-token", body).status_code == 401
        assert _post(app, "not-a-token", {"from": "x"}).status_code == 401
    finally:
        app.extensions["smsgw"].close()
    session.expire_all()
    assert session.scalar(select(func.count(Message.id))) == 3


def test_a_send_the_batch_refused_is_decided_again_alone(settings, session, database_url):
    """A batch [dear, cheap] for a balance that covers only the cheap one.

    The statement refuses both (the running sum is over); the request then
    decides the cheap send alone and it goes out. The batch is made by
    holding a first batch on another user's locked row while both wait.
    """
    set_price(session, country="US", price=str(PRICE))
    poor_id, poor = make_user(session, balance="0.0100")
    poor_number = make_number(session, user_id=poor_id)
    other_id, other = make_user(session, balance="1.00")
    other_number = make_number(session, user_id=other_id, number="+15005550009")
    app = create_app(settings)
    answers: dict[str, object] = {}

    def post(name: str, token: str, number_id: int, body: str) -> threading.Thread:
        def run() -> None:
            answers[name] = _post(app, token, {"from": number_id, "to": TO, "body": body})

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    holder = create_engine(database_url)
    try:
        with holder.connect() as conn:
            conn.execute(text("SELECT 1 FROM users WHERE id = :id FOR UPDATE"), {"id": other_id})
            threads = [post("other", other, other_number, "first batch")]
            _wait_for_lock_waiter(holder)
            threads.append(post("dear", poor, poor_number, "x" * 161))  # 2 segments: 0.0158
            _wait_until_queued(app, 1)
            threads.append(post("cheap", poor, poor_number, "y"))  # 0.0079
            _wait_until_queued(app, 2)
            conn.rollback()  # the first batch goes on; the next is [dear, cheap]
        for thread in threads:
            thread.join(timeout=30)
    finally:
        holder.dispose()
        app.extensions["smsgw"].close()
    assert answers["other"].status_code == 201
    assert (answers["dear"].status_code, answers["dear"].get_json()["message"]) == (
        400,
        "Insufficient balance",
    )
    assert answers["cheap"].status_code == 201
    session.expire_all()
    assert session.get(User, poor_id).balance == Decimal("0.0021")
    assert ledger_sum(session, user_id=poor_id) == Decimal("0.0021")


def _wait_for_lock_waiter(engine) -> None:
    for _ in range(500):
        with engine.connect() as conn:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar()
        if waiting:
            return
        time.sleep(0.01)
    raise AssertionError("the first batch never waited for the lock")


def _wait_until_queued(app, count: int) -> None:
    committer = app.extensions["smsgw"].committer
    for _ in range(500):
        if len(committer._pending) >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"{count} sends never waited for the committer")
