"""Queue `send_message` tasks in one round trip: the message Celery would write, made here.

Celery's own publish costs about 0.9 ms of CPU per task on Redis (kombu builds
a new Redis client for each one) and 1.6 ms with its `task-sent` event: more
than the rest of a send. On RabbitMQ it waits for the broker's confirm of each
task in turn. So the API writes the same protocol-2 message itself, on one
long-lived connection per API process:

- Redis (`RedisSendQueue`): the envelope kombu's Redis transport writes, all of
  a group's tasks in one LPUSH.
- RabbitMQ (`AmqpSendQueue`): a group's tasks published back to back under
  publisher confirms, then one wait until the broker has confirmed the last of
  them (written to its quorum queue's disk), so a group costs one confirm's
  wait, not one per task.

`tests/api/test_send_queue.py` compares each field by field with what
`send_task` writes on the same broker, and the end-to-end tests have real
workers run them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import amqp
import orjson
import redis
from kombu import Connection, Queue

from shared import logs
from shared.settings import Settings
from worker.factory import SEND_QUEUE, task_queues
from worker.logs import REQUEST_ID
from worker.metrics import ENQUEUED_AT

TASK = "send_message"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"
# While RabbitMQ is down or stuck a request must fail in seconds, not wait for it.
AMQP_CONNECT_TIMEOUT = 1.0
AMQP_CONFIRM_TIMEOUT = 2.0


class SendQueue(Protocol):
    """Where the API puts the hand-offs of committed messages."""

    def push(self, message_id: int) -> None:
        """Queue the hand-off of a committed message; raises if the broker cannot take it."""

    def push_many(self, messages: Sequence[tuple[int, str | None]]) -> None:
        """Queue hand-offs, each with the id of the request that sent it; raises as `push`."""

    def close(self) -> None:
        """Close the connection (the app is done with it)."""


def make_send_queue(settings: Settings, client: redis.Redis) -> SendQueue:
    """Return the send queue of the settings' broker; `client` is the API's Redis."""
    if settings.broker_is_amqp:
        return AmqpSendQueue(settings.broker, task_queues(settings)[0])
    if settings.broker != settings.redis_url:
        client = redis.Redis.from_url(
            settings.broker,
            socket_timeout=client.connection_pool.connection_kwargs.get("socket_timeout"),
            socket_connect_timeout=1,
            retry=client.get_retry(),
        )
    return RedisSendQueue(client)


class RedisSendQueue:
    """Puts `send_message` tasks on the `sms` queue of the Celery broker in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def push(self, message_id: int) -> None:
        """Queue the hand-off of a committed message; raises if Redis cannot take it."""
        self.push_many([(message_id, logs.request_id.get())])

    def push_many(self, messages: Sequence[tuple[int, str | None]]) -> None:
        """Queue hand-offs in one LPUSH; kombu's Redis transport takes from the right."""
        tasks = (orjson.dumps(redis_envelope(mid, request_id)) for mid, request_id in messages)
        self._client.lpush(SEND_QUEUE, *tasks)

    def close(self) -> None:
        """Nothing of its own to close: the client is the API's."""


class AmqpSendQueue:
    """Publishes `send_message` tasks to RabbitMQ with confirms, on one connection per process.

    The connection is used by one thread at a time. One found closed by the
    server (a broker restart) is replaced before publishing; a publish that
    fails is not retried here: the request refunds and answers 500.
    """

    def __init__(self, url: str, queue: Queue) -> None:
        self._url = url
        self._queue = queue
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._channel: Any = None
        self._confirmed = 0  # the highest delivery tag the broker has confirmed
        self._published = 0  # the delivery tag of the last publish on this channel
        self._refused: Exception | None = None

    def push(self, message_id: int) -> None:
        """Queue the hand-off of a committed message; raises if RabbitMQ did not confirm it."""
        self.push_many([(message_id, logs.request_id.get())])

    def push_many(self, messages: Sequence[tuple[int, str | None]]) -> None:
        """Publish the hand-offs, then wait once until RabbitMQ has confirmed them all."""
        with self._lock:
            try:
                self._publish(messages)
            except BaseException:
                self._disconnect()
                raise

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._disconnect()

    def _publish(self, messages: Sequence[tuple[int, str | None]]) -> None:
        channel = self._connect()
        self._refused = None
        for message_id, request_id in messages:
            body, headers = task_parts(message_id, request_id)
            channel.basic_publish(
                amqp.Message(
                    body,
                    content_type="application/json",
                    content_encoding="utf-8",
                    application_headers=headers,
                    delivery_mode=2,
                    priority=0,
                    correlation_id=headers["id"],
                    reply_to="",
                ),
                exchange="",  # the default exchange, to the queue by its name, as Celery does
                routing_key=self._queue.name,
                mandatory=True,
            )
            self._published += 1
        deadline = time.monotonic() + AMQP_CONFIRM_TIMEOUT
        while self._confirmed < self._published and self._refused is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("RabbitMQ did not confirm the tasks in time")
            self._connection.drain_events(timeout=left)  # type: ignore[union-attr]
        if self._refused is not None:
            raise self._refused

    def _connect(self) -> Any:
        """Return the channel, opening the connection if it is not open or the server closed it.

        An idle connection has nothing to read unless the server closed it (a
        restart sends `connection.close`, or the socket ends): checking costs no
        round trip.
        """
        if self._connection is not None:
            sock = self._connection.connection.sock
            if sock is None or select.select([sock], [], [], 0)[0]:
                self._disconnect()
        if self._connection is None:
            connection = Connection(self._url, connect_timeout=AMQP_CONNECT_TIMEOUT, heartbeat=0)
            try:
                # One try: kombu's own connect() tries again after two seconds.
                connection.ensure_connection(max_retries=0)
                channel = connection.channel()
                self._queue.bind(channel).declare()  # as the workers declare it
                channel.confirm_select()
            except BaseException:
                connection.release()
                raise
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
            channel.events["basic_return"].add(self._on_return)
            self._connection, self._channel = connection, channel
            self._confirmed = self._published = 0
        return self._channel

    def _disconnect(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):  # it is being dropped anyway
                self._connection.release()
            self._connection = self._channel = None

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._confirmed = max(self._confirmed, delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._refused = amqp.exceptions.MessageNacked(f"RabbitMQ refused task {delivery_tag}")

    def _on_return(self, error: Exception, exchange: str, routing_key: str, _: Any) -> None:
        self._refused = error


def task_parts(message_id: int, request_id: str | None) -> tuple[str, dict[str, Any]]:
    """Return the JSON body and the headers of `send_message(message_id)`, as Celery makes them."""
    task_id = str(uuid.uuid4())
    args = [message_id]
    headers: dict[str, Any] = {
        "lang": "py",
        "task": TASK,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr(args),
        "kwargsrepr": "{}",
        "origin": _ORIGIN,
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
        ENQUEUED_AT: time.time(),
    }
    if request_id:
        headers[REQUEST_ID] = request_id
    return json.dumps([args, {}, _EMBED]), headers


def redis_envelope(message_id: int, request_id: str | None) -> dict:
    """Return the Redis broker message of `send_message(message_id)`, as kombu would write it."""
    body, headers = task_parts(message_id, request_id)
    return {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": headers["id"],
            "reply_to": None,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": SEND_QUEUE},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
