"""The gateway's worker app plus two baseline tasks.

`bench_noop` only counts itself. `bench_post` is the hand-off's floor: it
makes one POST to the sandbox's Messages API with a plain urllib3 pool, then
counts itself. No claim, no SID stored, no SDK, logs or metrics: the least
any hand-off to the sandbox must do.
"""

from __future__ import annotations

import os

import redis
import urllib3

from bench.services import NOOP_DONE_KEY as DONE_KEY
from worker.celery_app import celery_app

_client: redis.Redis | None = None
_http = urllib3.PoolManager(maxsize=64)


def _done() -> None:
    global _client
    if _client is None:
        # Redis counts, whichever broker carries the tasks.
        _client = redis.Redis.from_url(celery_app.gateway_settings.redis_url)
    _client.incr(DONE_KEY)


@celery_app.task(name="bench_noop", acks_late=True, reject_on_worker_lost=True)
def noop() -> None:
    """Do nothing but count, so the benchmark knows when every task ran."""
    _done()


@celery_app.task(name="bench_post", acks_late=True, reject_on_worker_lost=True)
def post() -> None:
    """Create one message in the sandbox, then count."""
    account = os.environ["TWILIO_ACCOUNT_SID"]
    answer = _http.request(
        "POST",
        f"{os.environ['TWILIO_API_BASE']}/2010-04-01/Accounts/{account}/Messages.json",
        fields={"To": "+14155550123", "From": "+15005550006", "Body": "Hello"},
        encode_multipart=False,
        headers=urllib3.make_headers(basic_auth=f"{account}:{os.environ['TWILIO_AUTH_TOKEN']}"),
    )
    if answer.status != 201:
        raise RuntimeError(f"sandbox answered {answer.status}: {answer.data[:200]!r}")
    _done()
