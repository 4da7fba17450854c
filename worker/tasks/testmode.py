"""Test mode: the statuses a simulated hand-off is followed by (`shared.testmode.settle`)."""

from __future__ import annotations

from celery import shared_task

from shared import testmode
from worker.context import context_for


@shared_task(name="settle_test_message", bind=True, acks_late=True, reject_on_worker_lost=True)
def settle_test_message(self, message_id: int) -> int:  # type: ignore[no-untyped-def]
    """Move a handed-over test message to `sent` and `delivered`; enqueue its user callbacks.

    If this task is lost, the reconciler fetches the message from the simulator
    in time and settles it the same way.
    """
    context = context_for(self.app)
    callbacks = testmode.settle(context.session_factory, message_id=message_id)
    for callback_id in callbacks:
        self.app.send_task("deliver_user_callback", args=[callback_id])
    return len(callbacks)
