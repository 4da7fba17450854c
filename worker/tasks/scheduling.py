"""The beat job that releases scheduled messages as they come due: a thin adapter.

Every second: first the waiting messages whose validity period ran out are
failed and refunded, then the due ones are moved to `queued` in batches and
their hand-offs enqueued, each batch after its commit and in one round trip
(`worker.send_queue`, as the API queues its sends). A run stops after a few
seconds even with more due; the next goes on, and two runs at once share the
work (SKIP LOCKED). A batch whose enqueue fails is `queued` with no task: the
requeue of stale queued messages sends it, as it does any lost enqueue.
"""

from __future__ import annotations

import logging
import time

import redis
from celery import Celery, shared_task

from shared.release import expire_overdue, release_due
from worker.context import context_for
from worker.send_queue import SendQueue, make_send_queue

log = logging.getLogger(__name__)
BATCH = 2000
RUN_SECONDS = 5.0


def send_queue_for(app: Celery) -> SendQueue:
    """Return this process's send queue, made on first use (after a prefork child's fork)."""
    queue = getattr(app, "gateway_send_queue", None)
    if queue is None:
        settings = app.gateway_settings  # type: ignore[attr-defined]
        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=5, socket_connect_timeout=2
        )
        queue = app.gateway_send_queue = make_send_queue(settings, client)  # type: ignore[attr-defined]
    return queue


@shared_task(name="release_scheduled", bind=True)
def release_scheduled(self) -> int:  # type: ignore[no-untyped-def]
    """Expire what ran out of validity, release what is due; return how many were released."""
    context = context_for(self.app)
    started = time.monotonic()
    while expire_overdue(context.session_factory, limit=BATCH) == BATCH:
        if time.monotonic() - started > RUN_SECONDS:
            return 0
    released = 0
    while time.monotonic() - started < RUN_SECONDS:
        batch = release_due(context.session_factory, limit=BATCH)
        if batch.singles:
            send_queue_for(self.app).push_many([(mid, None) for mid in batch.singles])
        released += batch.count
        if batch.count < BATCH:
            break
    if released:
        log.info("release_scheduled: released %d messages", released)
    return released
