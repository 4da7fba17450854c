"""Beat jobs of delivery: reconciliation, and status callbacks to users.

Thin adapters over `shared.reconcile` and `shared.user_callbacks`; every task
takes ids only and is safe to run twice.
"""

from __future__ import annotations

import logging

from celery import shared_task

from shared import reconcile, user_callbacks
from worker.context import context_for
from worker.factory import CAMPAIGN_QUEUE, MAX_COUNTDOWN

log = logging.getLogger(__name__)
RECONCILE_BATCH = 100
TAKE_OVER_BATCH = 1000
SWEEP_BATCH = 500


@shared_task(name="deliver_user_callback", bind=True, acks_late=True, reject_on_worker_lost=True)
def deliver_user_callback(self, callback_id: int) -> str:  # type: ignore[no-untyped-def]
    """Post one status event to the user's URL; on failure schedule the next attempt.

    A wait longer than the broker's redelivery window is left to the sweeper.
    """
    context = context_for(self.app)
    outcome = user_callbacks.attempt(
        context.session_factory,
        callback_id=callback_id,
        allow_private=context.settings.callback_allow_private,
    )
    if outcome.kind == "retry" and outcome.delay <= MAX_COUNTDOWN:
        self.apply_async(args=[callback_id], countdown=outcome.delay)
        user_callbacks.mark_enqueued(context.session_factory, callback_id=callback_id)
    return outcome.kind


@shared_task(name="sweep_user_callbacks", bind=True)
def sweep_user_callbacks(self) -> int:  # type: ignore[no-untyped-def]
    """Enqueue the due status events whose task was lost or never enqueued."""
    context = context_for(self.app)
    ids = user_callbacks.due(context.session_factory, limit=SWEEP_BATCH)
    task = self.app.tasks[deliver_user_callback.name]
    for callback_id in ids:
        task.delay(callback_id)
    if ids:
        log.info("sweep_user_callbacks: enqueued %d", len(ids))
    return len(ids)


@shared_task(name="take_over_messages", bind=True)
def take_over_messages(self) -> int:  # type: ignore[no-untyped-def]
    """Enqueue again the messages whose hand-off lease ran out: a worker died, a retry was lost."""
    context = context_for(self.app)
    report = reconcile.take_over(
        context.session_factory,
        hold_seconds=context.settings.requeue_after_seconds,
        limit=TAKE_OVER_BATCH,
    )
    send = self.app.tasks["send_message"]
    for message_id in report.resend:
        send.delay(message_id)
    for message_id in report.resend_campaign:
        send.apply_async(args=[message_id], queue=CAMPAIGN_QUEUE)
    taken = len(report.resend) + len(report.resend_campaign)
    if taken:
        log.info("take_over_messages: enqueued %d", taken)
    return taken


@shared_task(name="reconcile_messages", bind=True)
def reconcile_messages(self) -> int:  # type: ignore[no-untyped-def]
    """Fetch from Twilio the messages left with a SID and no final status."""
    context = context_for(self.app)
    unfinished = reconcile.reconcile_unfinished(
        context.session_factory,
        context.provider,
        older_than_seconds=context.settings.reconcile_unfinished_after_seconds,
        limit=RECONCILE_BATCH,
    )
    deliver = self.app.tasks[deliver_user_callback.name]
    for callback_id in unfinished.callbacks:
        deliver.delay(callback_id)
    if unfinished.updated:
        log.info("reconcile_messages: updated %d", len(unfinished.updated))
    return len(unfinished.updated)
