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

from celery import shared_task

from shared.release import expire_overdue, release_due
from worker.context import context_for

log = logging.getLogger(__name__)
BATCH = 2000
RUN_SECONDS = 5.0


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
            context.send_queue.push_many([(mid, None) for mid in batch.singles])
        released += batch.count
        if batch.count < BATCH:
            break
    if released:
        log.info("release_scheduled: released %d messages", released)
    return released
