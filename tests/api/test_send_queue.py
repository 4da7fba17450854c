"""The API's own publish writes the message Celery's `send_task` would write."""

from __future__ import annotations

import base64
import json

from api.send_queue import SendQueue
from shared import logs
from worker.factory import SEND_QUEUE, make_celery

# Fresh per task, per process or per moment: they may differ between the two.
VARYING_HEADERS = {"id", "root_id", "origin", "smsgw_enqueued_at"}
VARYING_PROPERTIES = {"correlation_id", "reply_to", "delivery_tag"}


def _published(redis_client) -> dict:
    raw = redis_client.rpop(SEND_QUEUE)
    assert raw is not None, "nothing was queued"
    return json.loads(raw)


def test_message_matches_celerys_own(settings, redis_client):
    token = logs.request_id.set("req-123")
    try:
        make_celery(settings).send_task("send_message", args=[42], queue=SEND_QUEUE)
        celerys = _published(redis_client)
        SendQueue(redis_client).push(42)
        ours = _published(redis_client)
    finally:
        logs.request_id.reset(token)

    assert ours.keys() == celerys.keys()
    assert ours["headers"].keys() == celerys["headers"].keys()
    for name, value in celerys["headers"].items():
        if name not in VARYING_HEADERS:
            assert ours["headers"][name] == value, name
    assert ours["headers"]["smsgw_request_id"] == "req-123"
    assert ours["headers"]["root_id"] == ours["headers"]["id"]
    assert ours["properties"].keys() == celerys["properties"].keys()
    for name, value in celerys["properties"].items():
        if name not in VARYING_PROPERTIES:
            assert ours["properties"][name] == value, name
    assert ours["properties"]["correlation_id"] == ours["headers"]["id"]
    for name in ("content-type", "content-encoding"):
        assert ours[name] == celerys[name]
    decode = lambda message: json.loads(base64.b64decode(message["body"]))  # noqa: E731
    assert decode(ours) == decode(celerys) == [[42], {}, decode(celerys)[2]]


def test_each_push_is_a_new_task(redis_client):
    queue = SendQueue(redis_client)
    queue.push(1)
    queue.push(1)
    first, second = _published(redis_client), _published(redis_client)
    assert first["headers"]["id"] != second["headers"]["id"]
    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]
