"""Build the Celery app from the gateway's settings."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue
from kombu.transport import redis as kombu_redis

from shared.settings import Settings
from worker import logs, metrics  # noqa: F401  (issue 5: connects their Celery signals)

SEND_QUEUE = "sms"
# Campaign traffic, paced per sender number, never ahead of single sends.
CAMPAIGN_QUEUE = "campaign"
# User callbacks and the beat's sweeps (reconciliation, requeue, retention): a slow
# receiver or a long sweep never holds a worker that sends.
CALLBACK_QUEUE = "callbacks"
QUEUES = (SEND_QUEUE, CAMPAIGN_QUEUE, CALLBACK_QUEUE)
# Redis redelivers an unacknowledged task after this long; it must outlast any
# retry countdown, or a task waiting for its retry would run twice.
VISIBILITY_TIMEOUT = 2 * 60 * 60
MAX_COUNTDOWN = 15 * 60
# On RabbitMQ the queues are durable classic queues, and every task is persistent: the
# broker confirms a publish once the task is on disk, and it survives a broker restart.
# Not quorum queues: a countdown there waits in Celery's native delayed-delivery
# queues, which count whole seconds and refuse less than one, and a campaign's
# dispatcher passes come every 0.1 to 1 s. On classic queues a countdown waits,
# unacknowledged, in the worker that fetched it, and goes back to the queue at once
# if that worker dies; the longest (MAX_COUNTDOWN) stays inside RabbitMQ's
# consumer timeout (30 minutes by default). On one node a quorum queue's
# replication adds nothing, and PostgreSQL, not the broker, is the record of what
# must be sent: the requeue and the take-over refill a lost task.
QUEUE_TYPE = "classic"


def task_queues(settings: Settings) -> tuple[Queue, ...]:
    """Return the gateway's queues as the broker in `settings` declares them."""
    if not settings.broker_is_amqp:
        return tuple(Queue(name) for name in QUEUES)
    return tuple(
        Queue(
            name,
            Exchange(name, type="direct", durable=True),
            routing_key=name,
            durable=True,
            queue_arguments={"x-queue-type": QUEUE_TYPE},
        )
        for name in QUEUES
    )


def _transport_options(settings: Settings) -> dict[str, Any]:
    if settings.broker_is_amqp:
        # Every publish waits until the broker has the task on disk (a nack raises).
        return {"confirm_publish": True}
    return {
        "visibility_timeout": VISIBILITY_TIMEOUT,
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
    }


def _reuse_redis_clients() -> None:
    """Have kombu's Redis channels reuse one client instead of building one per command.

    kombu builds a new `redis.Redis` (its response callbacks and all) for every
    publish and every ack: a third of the consumer thread's CPU per task in the
    hand-off benchmark, with task events on. The client only wraps the
    channel's connection pool, which is thread-safe; a new pool (after a
    reconnect) gets a new client.
    """
    channel = kombu_redis.Channel
    if getattr(channel, "_smsgw_reuses_clients", False):
        return
    build = channel._create_client

    def _create_client(self: Any, asynchronous: bool = False) -> Any:
        if asynchronous:
            return build(self, asynchronous=True)
        client = self.__dict__.get("_smsgw_client")
        if client is not None and self._pool is None and self.connection.client is None:
            # A channel closed after its connection was let go: kombu's close then
            # restores the unacknowledged tasks, and a new pool, built from a
            # connection that is gone, raised AttributeError and killed the worker
            # after a Redis restart. The last client still knows the address; a
            # connection error through it is one kombu's close shrugs off.
            return client
        pool = self.pool
        if client is None or client.connection_pool is not pool:
            client = self._smsgw_client = build(self)
        return client

    channel._create_client = _create_client
    channel._smsgw_reuses_clients = True


_reuse_redis_clients()


# The periodic jobs `celery -A worker.celery_app beat` runs.
BEAT_SCHEDULE = {
    # Scheduled messages are handed over within a few seconds of being due.
    "release-scheduled": {
        "task": "release_scheduled",
        "schedule": 1.0,
        "options": {"expires": 1},
    },
    # Crash recovery: a queued message nobody took, and a hand-off whose lease ran out,
    # are enqueued again within seconds of being due (README, "Crash recovery").
    "requeue-stale-messages": {
        "task": "requeue_stale_messages",
        "schedule": 15.0,
        # A run that waited a whole period is superseded by the next one.
        "options": {"expires": 14},
    },
    "take-over-messages": {
        "task": "take_over_messages",
        "schedule": 10.0,
        "options": {"expires": 9},
    },
    "reconcile-messages": {
        "task": "reconcile_messages",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    "sweep-user-callbacks": {
        "task": "sweep_user_callbacks",
        "schedule": 15.0,
        "options": {"expires": 14},
    },
    "purge-messages": {
        "task": "purge_messages",
        "schedule": 60 * 60.0,
        "options": {"expires": 55 * 60},
    },
    "revive-campaigns": {
        "task": "revive_campaigns",
        "schedule": 30.0,
        "options": {"expires": 25},
    },
}


def make_celery(settings: Settings) -> Celery:
    """Return a Celery app set for no loss: late acks, one prefetch, JSON only."""
    tasks = [
        "worker.tasks.sending",
        "worker.tasks.delivery",
        "worker.tasks.campaigns",
        "worker.tasks.maintenance",
        "worker.tasks.scheduling",
        "worker.tasks.testmode",
    ]
    app = Celery("smsgw", broker=settings.broker, include=tasks)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # After a lost broker connection Celery lowers the prefetch and raises it again
        # from each finished task's acknowledgement: under `-P threads` that is a pool
        # thread's `basic.qos`, waiting for its answer on the connection the consumer
        # reads, and a worker hung at full CPU after a RabbitMQ restart. Prefetch is 1 a
        # thread anyway.
        worker_enable_prefetch_count_reduction=False,
        task_default_queue=SEND_QUEUE,
        # A worker started without -Q consumes all three; -Q sms,campaign,callbacks says the same.
        task_queues=task_queues(settings),
        task_routes={
            "send_message": {"queue": SEND_QUEUE},
            "expand_campaign": {"queue": CAMPAIGN_QUEUE},
            "pump_campaign": {"queue": CAMPAIGN_QUEUE},
            **{
                task: {"queue": CALLBACK_QUEUE}
                for task in (
                    "deliver_user_callback",
                    "sweep_user_callbacks",
                    "reconcile_messages",
                    "take_over_messages",
                    "requeue_stale_messages",
                    "purge_messages",
                    "release_scheduled",
                    "settle_test_message",
                )
            },
        },
        broker_transport_options=_transport_options(settings),
        broker_connection_timeout=2,
        # A request must not hang while the broker is down: fail fast, answer 500.
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        broker_connection_retry_on_startup=True,
        # Task events cost the worker three Redis PUBLISHes per task (a fifth of
        # its CPU per hand-off) and a sender one more per publish, mostly with no
        # one listening. Flower, while it runs, turns the worker's task events on
        # itself (its `enable_events`, every 5 s); `task-sent` it does without.
        # Under `smsgw dev` Flower always runs: events from the start.
        worker_send_task_events=settings.dev,
        task_send_sent_event=False,
        timezone="UTC",
    )
    app.gateway_settings = settings  # type: ignore[attr-defined]
    return app
