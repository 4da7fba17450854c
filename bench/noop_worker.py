"""The gateway's worker app plus the baseline task: a no-op that only counts itself."""

from __future__ import annotations

import redis

from bench.services import NOOP_DONE_KEY as DONE_KEY
from worker.celery_app import celery_app

_client: redis.Redis | None = None


@celery_app.task(name="bench_noop", acks_late=True, reject_on_worker_lost=True)
def noop() -> None:
    """Do nothing but count, so the benchmark knows when every task ran."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(celery_app.conf.broker_url)
    _client.incr(DONE_KEY)
