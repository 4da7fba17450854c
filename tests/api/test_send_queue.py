"""The API's own publish writes the message Celery's `send_task` would write, on either broker."""

from __future__ import annotations

import base64
import json
import threading
import time

import amqp
import pytest
from kombu import Connection
from kombu.exceptions import OperationalError

from shared import logs
from tests.brokers import queue_length
from worker.factory import SEND_QUEUE, make_celery, task_queues
from worker.send_queue import AmqpSendQueue, RedisSendQueue, make_send_queue

# Fresh per task, per process or per moment: they may differ between the two.
VARYING_HEADERS = {"id", "root_id", "origin", "smsgw_enqueued_at"}
VARYING_PROPERTIES = {"correlation_id", "reply_to", "delivery_tag"}


def _published(redis_client) -> dict:
    raw = redis_client.rpop(SEND_QUEUE)
    assert raw is not None, "nothing was queued"
    return json.loads(raw)


def _same_headers(ours: dict, celerys: dict) -> None:
    assert ours.keys() == celerys.keys()
    for name, value in celerys.items():
        if name not in VARYING_HEADERS:
            assert ours[name] == value, name
    assert ours["smsgw_request_id"] == "req-123"
    assert ours["root_id"] == ours["id"]


def test_message_matches_celerys_own(settings, redis_client):
    token = logs.request_id.set("req-123")
    try:
        make_celery(settings).send_task("send_message", args=[42], queue=SEND_QUEUE)
        celerys = _published(redis_client)
        RedisSendQueue(redis_client).push(42)
        ours = _published(redis_client)
    finally:
        logs.request_id.reset(token)

    assert ours.keys() == celerys.keys()
    _same_headers(ours["headers"], celerys["headers"])
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
    queue = RedisSendQueue(redis_client)
    queue.push(1)
    queue.push(1)
    first, second = _published(redis_client), _published(redis_client)
    assert first["headers"]["id"] != second["headers"]["id"]
    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]


def _take(settings) -> amqp.Message:
    with Connection(settings.broker) as connection:
        message = connection.channel().basic_get(SEND_QUEUE, no_ack=True)
    assert message is not None, "nothing was queued"
    return message


def test_amqp_message_matches_celerys_own(amqp_settings, redis_client):
    queue = make_send_queue(amqp_settings, redis_client)
    assert isinstance(queue, AmqpSendQueue)
    token = logs.request_id.set("req-123")
    try:
        make_celery(amqp_settings).send_task("send_message", args=[42], queue=SEND_QUEUE)
        celerys = _take(amqp_settings)
        queue.push(42)
        ours = _take(amqp_settings)
    finally:
        logs.request_id.reset(token)
        queue.close()

    _same_headers(ours.headers, celerys.headers)
    theirs = {k: v for k, v in celerys.properties.items() if k != "application_headers"}
    mine = {k: v for k, v in ours.properties.items() if k != "application_headers"}
    assert mine.keys() == theirs.keys()
    for name, value in theirs.items():
        if name not in VARYING_PROPERTIES:
            assert mine[name] == value, name
    assert mine["correlation_id"] == ours.headers["id"]
    assert ours.delivery_info["exchange"] == celerys.delivery_info["exchange"]
    assert ours.delivery_info["routing_key"] == celerys.delivery_info["routing_key"] == SEND_QUEUE
    assert json.loads(ours.body) == json.loads(celerys.body)
    assert json.loads(ours.body)[0] == [42]


def test_amqp_group_is_confirmed_whole_from_many_threads(amqp_settings, redis_client):
    queue = make_send_queue(amqp_settings, redis_client)
    try:

        def push(start: int) -> None:
            queue.push_many([(i, None) for i in range(start, start + 50)])

        threads = [threading.Thread(target=push, args=(n * 50,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Every push returned only once the broker confirmed it: all 400 are there now.
        assert queue_length(amqp_settings, SEND_QUEUE) == 400
    finally:
        queue.close()


def test_amqp_queue_is_durable_and_classic(amqp_settings, redis_client):
    queue = make_send_queue(amqp_settings, redis_client)
    queue.push(7)
    queue.close()
    declared = task_queues(amqp_settings)[0]
    assert declared.durable and declared.queue_arguments == {"x-queue-type": "classic"}
    # The broker holds it as declared: another type, or a transient queue, is refused.
    for kind in ("quorum", "classic"):
        refused = pytest.raises(Exception, match="PRECONDITION")
        with Connection(amqp_settings.broker) as connection, refused:
            connection.channel().queue_declare(
                SEND_QUEUE, durable=kind == "quorum", arguments={"x-queue-type": kind}
            )


def test_amqp_broker_down_fails_fast(amqp_settings, redis_client):
    down = amqp_settings.with_overrides(broker_url="amqp://guest:guest@127.0.0.1:9//")
    queue = make_send_queue(down, redis_client)
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(OperationalError, match="refused"):
            queue.push(1)
        # One try, no waiting for another: the request answers 500 at once.
        assert time.monotonic() - started < 1
