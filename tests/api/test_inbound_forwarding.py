"""Inbound messages forwarded to the number's URL, and the sandbox playing the recipient."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import select, update
from werkzeug.serving import make_server

from api.app import create_app
from api.cli import main
from shared import user_callbacks
from shared.models import InboundMessage, PhoneNumber, UserCallback
from tests.api.test_inbound import SENDER, post_inbound, stored
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.delivery_helpers import FROM
from tests.worker.test_user_callbacks import Receiver, make_due, row, secret_of


@pytest.fixture
def receiver():
    receiver = Receiver(failures=1)
    yield receiver
    receiver.close()


def forward_to(session_factory, number_id: int, url: str) -> None:
    with session_factory.begin() as session:
        session.execute(
            update(PhoneNumber).where(PhoneNumber.id == number_id).values(inbound_url=url)
        )


def only_callback(session_factory) -> UserCallback:
    with session_factory() as session:
        [callback] = session.scalars(select(UserCallback)).all()
        return callback


def test_a_message_is_forwarded_signed_and_retried_until_accepted(
    client, account, session_factory, redis_client, receiver
):
    user_id, _, number_id = account
    forward_to(session_factory, number_id, receiver.url)
    assert post_inbound(client, "STOP").status_code == 200
    [message] = stored(session_factory)
    callback = only_callback(session_factory)
    assert (callback.inbound_message_id, callback.message_id) == (message.id, None)
    assert callback.url == receiver.url and callback.enqueued_at is not None
    # Enqueued after the commit, on the callbacks queue.
    assert redis_client.llen("callbacks") == 1
    assert b"deliver_user_callback" in redis_client.lindex("callbacks", 0)

    first = user_callbacks.attempt(session_factory, callback_id=callback.id, allow_private=True)
    assert first.kind == "retry" and first.error == "HTTP 500"
    make_due(session_factory, callback.id)
    again = user_callbacks.attempt(session_factory, callback_id=callback.id, allow_private=True)
    assert again.kind == "delivered"
    assert row(session_factory, callback.id).attempts == 2
    [(_, b1), (headers, body)] = receiver.posts
    assert b1 == body and headers["Content-Type"] == "application/json"
    secret = secret_of(session_factory, user_id)
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Signature"] == expected
    assert json.loads(body) == {
        "event_id": callback.event_id,
        "type": "inbound",
        "id": message.id,
        "phone_number_id": number_id,
        "from": SENDER,
        "to": FROM,
        "body": "STOP",
        "keyword": "STOP",
        "received_at": message.received_at.strftime("%Y-%m-%d %H:%M:%S"),
    }


def test_a_repeat_is_not_forwarded_again_and_no_url_forwards_nothing(
    client, account, session_factory, redis_client
):
    _, _, number_id = account
    post_inbound(client, "Not forwarded")
    with session_factory() as session:
        assert session.scalars(select(UserCallback)).all() == []
    forward_to(session_factory, number_id, "https://93.184.215.14/in")
    post_inbound(client, "Once", sid="SM" + "a" * 32)
    post_inbound(client, "Once", sid="SM" + "a" * 32)
    assert only_callback(session_factory).payload["body"] == "Once"
    assert redis_client.llen("callbacks") == 1


def test_a_lost_enqueue_leaves_the_forward_to_the_sweeper(
    client, account, session_factory, app, caplog, monkeypatch
):
    _, _, number_id = account
    forward_to(session_factory, number_id, "https://93.184.215.14/in")

    def broker_down(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(app.extensions["smsgw"].celery, "send_task", broker_down)
    answer = post_inbound(client, "Hello")
    assert answer.status_code == 200 and "not enqueued" in caplog.text
    assert len(stored(session_factory)) == 1
    callback = only_callback(session_factory)
    assert user_callbacks.due(session_factory, limit=10) == []  # enqueued a moment ago
    make_due(session_factory, callback.id, enqueued_at=callback.enqueued_at.replace(year=2000))
    assert user_callbacks.due(session_factory, limit=10) == [callback.id]


@pytest.fixture
def live(settings, sandbox, engine, redis_client):
    """Serve the API on a free port, as the gateway the sandbox posts incoming messages to."""
    server = make_server("127.0.0.1", 0, None, threaded=True)
    public = f"http://127.0.0.1:{server.server_port}"
    base_url = sandbox[1]
    server.app = create_app(settings.with_overrides(public_base_url=public))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    requests.post(f"{base_url}/_sandbox/reset", timeout=5)
    yield public, base_url
    requests.post(f"{base_url}/_sandbox/reset", timeout=5)
    server.shutdown()
    server.app.extensions["smsgw"].close()


def test_the_sandbox_replies_to_a_running_gateway(live, account, session_factory):
    public, base_url = live
    config = requests.post(f"{base_url}/_sandbox/config", json={"gateway_url": public}, timeout=5)
    assert config.json()["gateway_url"] == public
    answer = requests.post(
        f"{base_url}/_sandbox/inbound",
        json={"from": SENDER, "to": FROM, "body": "STOP"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    delivery = answer.json()
    assert delivery["status"] == 200 and delivery["url"] == f"{public}/webhooks/twilio/inbound"
    [message] = stored(session_factory)
    assert (message.sms_sid, message.from_number, message.keyword) == (
        delivery["sid"],
        SENDER,
        "STOP",
    )
    assert len(message.sms_sid) == 34 and message.sms_sid.startswith("SM")
    bad = requests.post(f"{base_url}/_sandbox/inbound", json={"from": SENDER}, timeout=5)
    assert bad.status_code == 400


def test_smsgw_sandbox_reply_reaches_the_gateway(live, account, session_factory):
    public, _ = live
    env = {"PUBLIC_BASE_URL": public, "TWILIO_ACCOUNT_SID": ACCOUNT_SID}
    args = ["sandbox", "reply", "--from", SENDER, "--to", FROM, "--body", "Hi there"]
    result = CliRunner().invoke(main, args, env={**env, "TWILIO_AUTH_TOKEN": AUTH_TOKEN})
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["status"] == 200 and printed["error"] is None
    with session_factory() as session:
        message = session.scalar(select(InboundMessage))
    assert (message.sms_sid, message.body) == (printed["sid"], "Hi there")
    # Signed with another token, the gateway refuses it, and the command says so.
    refused = CliRunner().invoke(main, args, env={**env, "TWILIO_AUTH_TOKEN": "e" * 32})
    assert refused.exit_code != 0 and "the gateway answered 403" in refused.output
    assert len(stored(session_factory)) == 1
