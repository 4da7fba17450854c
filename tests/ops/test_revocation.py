"""Revocation and removal take effect at once in every API process (`smsgw api`, three workers).

Nothing caches a token or a number: the first request after the change, in
whichever process it lands, already sees it. Each check sends many requests on
fresh connections and reads the access log (each line names the worker's pid)
to make sure every worker answered some of them.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from shared import accounts
from tests.factories import make_number, make_user, set_price
from tests.processes import api_server, stack_env

WORKERS = 3
BATCH = 30


@pytest.fixture(scope="module")
def api(database_url, redis_url, tmp_path_factory):
    """Serve `smsgw api` with three workers.

    Yields its base URL and its log, whose JSON access lines name the worker's pid.
    """
    log = tmp_path_factory.mktemp("revocation") / "api.log"
    env = stack_env(
        database_url=database_url, redis_url=redis_url, twilio_api_base="http://127.0.0.1:9"
    )
    with api_server(env, log, "--workers", str(WORKERS)) as (base, _):
        yield base, log


def many(call, log) -> list[requests.Response]:
    """Call on fresh connections, eight at a time, until every worker has answered some.

    Returns every answer made: each must be what the test expects, whichever
    worker gave it. A worker's threads let it take many connections,
    so the batches go on (up to 30 s) until the access log names all workers.
    """
    seen = len(log.read_text().splitlines())
    answers: list[requests.Response] = []
    deadline = time.monotonic() + 30
    served: set[int] = set()
    with ThreadPoolExecutor(8) as pool:
        while len(served) < WORKERS and time.monotonic() < deadline:
            answers += pool.map(lambda _: call(), range(BATCH))
            time.sleep(0.2)  # access lines are written after the answer
            lines = [json.loads(line) for line in log.read_text().splitlines()[seen:]]
            served = {line["pid"] for line in lines if line.get("logger") == "api.access"}
    assert len(served) == WORKERS, served
    return answers


def test_a_revoked_token_is_refused_by_every_process_at_once(api, session):
    base, log = api
    user_id, _ = make_user(session)
    row, token = accounts.create_token(session, user_id=user_id)
    session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    balance = lambda: requests.get(f"{base}/api/user/balance", headers=headers, timeout=10)  # noqa: E731
    assert {r.status_code for r in many(balance, log)} == {200}
    accounts.revoke_token(session, token_id=row.id)
    session.commit()
    answers = many(balance, log)
    assert {(r.status_code, r.json()["message"]) for r in answers} == {(401, "Unauthenticated")}


def test_a_removed_number_sends_nothing_more_from_any_process(api, session):
    base, log = api
    user_id, token = make_user(session, balance="10.00")
    number_id = make_number(session, user_id=user_id)
    set_price(session)
    headers = {"Authorization": f"Bearer {token}"}
    body = {"from": number_id, "to": "+12125550123", "body": "Hi"}
    send = lambda: requests.post(f"{base}/api/user/sms", json=body, headers=headers, timeout=10)  # noqa: E731
    first = send()
    assert first.status_code == 201, first.text
    accounts.remove_number(session, number_id=number_id)
    session.commit()
    answers = many(send, log)
    assert {(r.status_code, r.json()["message"]) for r in answers} == {
        (400, "From number not found")
    }
    message_id = first.json()["data"]["id"]
    shown = requests.get(f"{base}/api/user/sms/{message_id}", headers=headers, timeout=10)
    assert shown.status_code == 200 and shown.json()["data"]["phone_number_id"] == number_id
    numbers = requests.get(f"{base}/api/user/phone-numbers", headers=headers, timeout=10)
    assert number_id not in [n["id"] for n in numbers.json()["data"]]
