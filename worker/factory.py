"""Build the Celery app from the gateway's settings."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from shared.settings import Settings
from worker import logs, metrics  # noqa: F401  (issue 5: connects their Celery signals)

SEND_QUEUE = "sms"
# Campaign traffic, paced per sender number, never ahead of single sends.
CAMPAIGN_QUEUE = "campaign"
# Redis redelivers an unacknowledged task after this long; it must outlast any
# retry countdown, or a task waiting for its retry would run twice.
VISIBILITY_TIMEOUT = 2 * 60 * 60
MAX_COUNTDOWN = 15 * 60


def make_celery(settings: Settings) -> Celery:
    """Return a Celery app set for no loss: late acks, one prefetch, JSON only."""
    tasks = ["worker.tasks.sending", "worker.tasks.delivery", "worker.tasks.campaigns"]
    app = Celery("smsgw", broker=settings.redis_url, include=tasks)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=SEND_QUEUE,
        # A worker started without -Q consumes both; -Q sms,campaign says the same.
        task_queues=(Queue(SEND_QUEUE), Queue(CAMPAIGN_QUEUE)),
        task_routes={
            "send_message": {"queue": SEND_QUEUE},
            "expand_campaign": {"queue": CAMPAIGN_QUEUE},
            "pump_campaign": {"queue": CAMPAIGN_QUEUE},
        },
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT,
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
        },
        # A request must not hang while the broker is down: fail fast, answer 500.
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        broker_connection_retry_on_startup=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        timezone="UTC",
    )
    app.gateway_settings = settings  # type: ignore[attr-defined]
    return app
