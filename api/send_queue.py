"""Queue a `send_message` task with one LPUSH: the message Celery would write, made here.

Celery's own publish costs about 0.9 ms of CPU per task (kombu builds a new
Redis client for each one) and 1.6 ms with its `task-sent` event: more than
the rest of a send. This writes the same protocol-2 message kombu's Redis
transport writes, with one long-lived client per API process.
`tests/api/test_send_queue.py` compares it field by field with what
`send_task` writes, and the end-to-end tests have real workers run it.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import uuid
from collections.abc import Sequence

import redis

from shared import logs
from worker.factory import SEND_QUEUE
from worker.logs import REQUEST_ID
from worker.metrics import ENQUEUED_AT

TASK = "send_message"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"


class SendQueue:
    """Puts `send_message` tasks on the `sms` queue of the Celery broker in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def push(self, message_id: int) -> None:
        """Queue the hand-off of a committed message; raises if Redis cannot take it."""
        self.push_many([(message_id, logs.request_id.get())])

    def push_many(self, messages: Sequence[tuple[int, str | None]]) -> None:
        """Queue the hand-offs of committed messages, each with the id of the request that sent it.

        One LPUSH; kombu's Redis transport takes from the right, so they run in order.
        """
        self._client.lpush(
            SEND_QUEUE, *(json.dumps(task_message(mid, request_id)) for mid, request_id in messages)
        )


def task_message(message_id: int, request_id: str | None) -> dict:
    """Return the broker message of `send_message(message_id)`, as kombu would write it."""
    task_id = str(uuid.uuid4())
    args = [message_id]
    headers = {
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
    body = json.dumps([args, {}, _EMBED])
    return {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": task_id,
            "reply_to": None,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": SEND_QUEUE},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
