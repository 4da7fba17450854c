"""`smsgw api` (granian): a restart or a stop drops no request, and its logs are JSON.

SIGHUP replaces every worker while requests keep coming; SIGTERM lets a request
in flight (here held up by a row lock in PostgreSQL) finish and answer before
the server exits. A connection a stopping worker accepted in its last instant,
before reading the request, can be closed without an answer (gunicorn has the
same window: benoitc/gunicorn#2529): HTTP clients retry an idempotent request
on such a closed connection, as the load below does, and a send repeated with
an Idempotency-Key is answered once.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter
from sqlalchemy import text
from urllib3.util import Retry

from tests.factories import make_number, make_user, set_price
from tests.processes import api_server, stack_env


@pytest.fixture
def server(database_url, redis_url, tmp_path):
    """Run `smsgw api` with two workers; yield (base URL, its log, the process)."""
    log = tmp_path / "api.log"
    env = stack_env(
        database_url=database_url, redis_url=redis_url, twilio_api_base="http://127.0.0.1:9"
    )
    options = ("--workers", "2", "--threads", "4", "--graceful-timeout", "20")
    with api_server(env, log, *options) as (base, process):
        requests.get(f"{base}/healthz", timeout=30)  # the workers have loaded the app
        yield base, log, process


def _lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _pids(log: Path, since: int = 0) -> set[int]:
    return {x["pid"] for x in _lines(log)[since:] if x.get("logger") == "api.access"}


def test_sighup_replaces_every_worker_and_no_request_fails(server, session):
    base, log, process = server
    _, token = make_user(session)
    headers = {"Authorization": f"Bearer {token}", "Connection": "close"}
    stop = threading.Event()
    # As urllib3 retries a GET whose connection closed before any answer; nothing else.
    retry = Retry(total=2, connect=2, read=2, status=0, other=0, allowed_methods={"GET"})

    def load(_: int) -> list[int | str]:
        answers: list[int | str] = []
        with requests.Session() as client:
            client.mount("http://", HTTPAdapter(max_retries=retry))
            while not stop.is_set():
                try:
                    answer = client.get(f"{base}/api/user/balance", headers=headers, timeout=10)
                    answers.append(answer.status_code)
                except requests.RequestException as error:
                    answers.append(type(error).__name__)
        return answers

    with ThreadPoolExecutor(4) as pool:
        running = pool.map(load, range(4))
        time.sleep(1)
        before = _pids(log)
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 90  # each worker in turn, 10 s apart
        mark = len(_lines(log))
        while time.monotonic() < deadline:
            time.sleep(0.5)
            later = _pids(log, mark)
            if later and not later & before:
                break
            mark = len(_lines(log)) if later & before else mark
        time.sleep(1)
        stop.set()
        answers = [a for each in running for a in each]
    server_log = "\n".join(x["msg"] for x in _lines(log) if x.get("logger") != "api.access")
    assert later and not later & before, (before, later, server_log)  # the old workers are gone
    assert len(answers) > 50
    assert set(answers) == {200}, ({a for a in answers if a != 200}, server_log)
    assert process.poll() is None, server_log


def test_sigterm_lets_a_request_in_flight_answer(server, session, engine):
    base, log, process = server
    user_id, token = make_user(session)
    number_id = make_number(session, user_id=user_id)
    set_price(session)
    holder = engine.connect()
    holder.execute(text("SELECT 1 FROM users WHERE id = :id FOR UPDATE"), {"id": user_id})
    answer: dict = {}

    def send() -> None:
        answer["response"] = requests.post(
            f"{base}/api/user/sms",
            json={"from": number_id, "to": "+14155550123", "body": "Held up"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    sender = threading.Thread(target=send)
    sender.start()
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    deadline = time.monotonic() + 10
    while engine.connect().execute(text(waiting)).scalar() == 0:  # the send waits on the lock
        assert time.monotonic() < deadline, "the send never reached the database"
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    assert process.poll() is None  # still answering the request in flight
    holder.rollback()
    holder.close()
    sender.join(timeout=20)
    assert answer["response"].status_code == 201, answer["response"].text
    assert process.wait(timeout=20) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/healthz", timeout=2)
