"""Campaign tasks: expand once, then pump messages out at each sender number's rate.

Both run on the `campaign` queue; a released message is `send_message` on the
same queue, so single sends on `sms` never wait behind campaign traffic.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor

import redis
from celery import Celery, shared_task

from shared.campaign_dispatch import pump, stalled
from shared.campaign_expansion import expand_campaign as expand
from shared.campaign_expansion import warm_up
from shared.pacing import Pacer
from worker.context import context_for
from worker.factory import CAMPAIGN_QUEUE

log = logging.getLogger(__name__)
PENDING_AFTER_SECONDS = 120
SILENT_AFTER_SECONDS = 30
REVIVE_LIMIT = 100
# Processes that render and check recipients while the task writes to the database.
SCREENING_PROCESSES = 2


def pacer_for(app: Celery) -> Pacer:
    """Return the app's pacer, on the broker's Redis, made on first use."""
    pacer = getattr(app, "gateway_pacer", None)
    if pacer is None:
        client = redis.Redis.from_url(app.gateway_settings.redis_url)  # type: ignore[attr-defined]
        pacer = Pacer(client)
        app.gateway_pacer = pacer  # type: ignore[attr-defined]
    return pacer


def executor_for(app: Celery) -> Executor | None:
    """Return the app's pool of screening processes, started (and warmed) on first use.

    Spawned, not forked: a forked copy of a threaded worker could inherit held
    locks. A prefork child may not have children of its own: there, and
    wherever no pool can start, campaigns are screened in the task itself.
    """
    if not hasattr(app, "gateway_screening"):
        pool: ProcessPoolExecutor | None = None
        try:
            pool = ProcessPoolExecutor(
                SCREENING_PROCESSES, mp_context=multiprocessing.get_context("spawn")
            )
            for _ in range(SCREENING_PROCESSES):
                pool.submit(warm_up)
        except Exception as error:
            log.info("campaigns are screened in the task, without a pool: %r", error)
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            pool = None
        app.gateway_screening = pool  # type: ignore[attr-defined]
    return app.gateway_screening  # type: ignore[attr-defined]


def start_pump(app: Celery, campaign_id: int, chain: str, delay: float = 0.0) -> None:
    """Enqueue the next pass of a campaign's dispatcher chain."""
    options = {"countdown": delay} if delay > 0 else {}
    app.send_task("pump_campaign", args=[campaign_id, chain], queue=CAMPAIGN_QUEUE, **options)


@shared_task(name="expand_campaign", bind=True, acks_late=True, reject_on_worker_lost=True)
def expand_campaign(self, campaign_id: int) -> str:  # type: ignore[no-untyped-def]
    """Validate, price, charge and write a campaign's messages, then start its dispatcher."""
    context = context_for(self.app)
    status, chain = expand(
        context.session_factory, campaign_id=campaign_id, executor=executor_for(self.app)
    )
    log.info("expand_campaign %s: %s", campaign_id, status)
    if chain is not None:
        start_pump(self.app, campaign_id, chain)
    return status


@shared_task(name="pump_campaign", bind=True, acks_late=True, reject_on_worker_lost=True)
def pump_campaign(self, campaign_id: int, chain: str) -> int:  # type: ignore[no-untyped-def]
    """Release what the sender number's bucket allows now, and schedule the next pass."""
    context = context_for(self.app)
    done = pump(
        context.session_factory,
        pacer_for(self.app),
        campaign_id=campaign_id,
        chain=chain,
        stale_after=context.settings.requeue_after_seconds,
    )
    for message_id in done.released:
        self.app.send_task("send_message", args=[message_id], queue=CAMPAIGN_QUEUE)
    if done.delay is not None:
        start_pump(self.app, campaign_id, chain, done.delay)
    elif done.status:
        log.info("pump_campaign %s: stopped (%s)", campaign_id, done.status)
    return len(done.released)


@shared_task(name="revive_campaigns", bind=True)
def revive_campaigns(self) -> int:  # type: ignore[no-untyped-def]
    """Expand again campaigns whose expansion was lost, and restart silent dispatchers."""
    context = context_for(self.app)
    pending, restarted = stalled(
        context.session_factory,
        pending_after=PENDING_AFTER_SECONDS,
        silent_after=SILENT_AFTER_SECONDS,
        limit=REVIVE_LIMIT,
    )
    for campaign_id in pending:
        self.app.send_task("expand_campaign", args=[campaign_id], queue=CAMPAIGN_QUEUE)
    for campaign_id, chain in restarted:
        start_pump(self.app, campaign_id, chain)
    if pending or restarted:
        log.info("revive_campaigns: %d expanded, %d restarted", len(pending), len(restarted))
    return len(pending) + len(restarted)
