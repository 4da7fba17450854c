"""Tasks that hand messages to Twilio: thin adapters over `shared.handoff`.

Tasks take message ids only and are safe to run twice: the hand-off claims
the message with a conditional update before it calls Twilio.
"""

from __future__ import annotations

import logging
import random

from celery import shared_task
from sqlalchemy.exc import InterfaceError, OperationalError

from shared.handoff import give_up, hand_off, hold_for_retry, requeue_stale
from shared.providers import UnknownOutcome
from worker.context import context_for
from worker.factory import MAX_COUNTDOWN
from worker.metrics import observe_handoff

log = logging.getLogger(__name__)
BACKOFF_BASE = 2.0
REQUEUE_LIMIT = 1000
# A test message's `sent` and `delivered` follow its hand-off after about this long.
SETTLE_AFTER = 1.0


def backoff(retries: int, *, floor: float = 0.0) -> float:
    """Return a countdown with exponential backoff and full jitter, at least `floor`."""
    ceiling = min(MAX_COUNTDOWN, BACKOFF_BASE * 2**retries)
    return min(MAX_COUNTDOWN, max(floor, random.uniform(0, ceiling)))


@shared_task(name="send_message", bind=True, acks_late=True, reject_on_worker_lost=True)
def send_message(self, message_id: int) -> str:  # type: ignore[no-untyped-def]
    """Hand one message to Twilio, retrying transient failures with backoff."""
    context = context_for(self.app)
    settings = context.settings
    try:
        outcome = hand_off(
            context.session_factory,
            context.provider,
            message_id=message_id,
            status_callback_base=settings.status_callback_base,
            lease_seconds=settings.lease_seconds,
            batch=context.handoff_batch,
        )
    except (OperationalError, InterfaceError) as error:
        # The database is down or restarting. The claim makes a retry safe, and
        # it comes sooner than the beat's requeue of a message left `pending`.
        countdown = backoff(self.request.retries, floor=1.0)
        log.warning("send_message %s: database unavailable, retry in %.1f s", message_id, countdown)
        raise self.retry(
            exc=error, countdown=countdown, max_retries=settings.send_max_retries
        ) from None
    observe_handoff(self.request, outcome)  # issue 5: metrics
    if outcome.simulated:
        self.app.send_task("settle_test_message", args=[message_id], countdown=SETTLE_AFTER)
    if outcome.kind != "retry":
        code = getattr(outcome.error, "code", None)
        detail = outcome.sid or (f"error {code}" if code else "")
        log.info("send_message %s: %s %s", message_id, outcome.kind, detail)
        return outcome.kind
    retries = self.request.retries
    if retries >= settings.send_max_retries:
        reason = f"Gave up after {retries + 1} attempts: {outcome.error}"
        final = give_up(
            context.session_factory,
            context.provider,
            message_id=message_id,
            reason=reason,
            lease_seconds=settings.lease_seconds,
            batch=context.handoff_batch,
        )
        observe_handoff(self.request, final)  # issue 5: metrics
        log.info("send_message %s: retries exhausted, %s", message_id, final.kind)
        return final.kind
    # After an unknown outcome Twilio may still be creating the message: give it
    # at least a timeout's worth of time before the lookup.
    unknown = isinstance(outcome.error, UnknownOutcome)
    countdown = backoff(retries, floor=settings.twilio_timeout if unknown else 0.0)
    # Spoken for until the retry is due: the reconciler must not take it over before.
    hold_for_retry(context.session_factory, message_id=message_id, seconds=countdown)
    log.info(
        "send_message %s: retry %d in %.1f s (%s)",
        message_id,
        retries + 1,
        countdown,
        outcome.error,
    )
    raise self.retry(countdown=countdown, max_retries=settings.send_max_retries)


@shared_task(name="requeue_stale_messages", bind=True)
def requeue_stale_messages(self) -> int:  # type: ignore[no-untyped-def]
    """Enqueue again the messages whose first enqueue may have been lost."""
    context = context_for(self.app)
    ids = requeue_stale(
        context.session_factory,
        older_than_seconds=context.settings.requeue_after_seconds,
        limit=REQUEUE_LIMIT,
    )
    task = self.app.tasks[send_message.name]
    for message_id in ids:
        task.delay(message_id)
    if ids:
        log.info("requeue_stale_messages: enqueued %d messages", len(ids))
    return len(ids)
