"""What beat does while a fault test settles: its two sweeps, each at its own period."""

from __future__ import annotations

import time

from shared import reconcile
from shared.handoff import requeue_stale
from worker.factory import BEAT_SCHEDULE

REQUEUE_PERIOD = BEAT_SCHEDULE["requeue-stale-messages"]["schedule"]
TAKE_OVER_PERIOD = BEAT_SCHEDULE["take-over-messages"]["schedule"]


class BeatSweeps:
    """Called often, runs each sweep when its period has passed, at the settings' ages."""

    def __init__(self, session_factory, celery, settings) -> None:  # type: ignore[no-untyped-def]
        self.session_factory = session_factory
        self.celery = celery
        self.settings = settings
        self.last = {"requeue": 0.0, "take_over": 0.0}

    def __call__(self) -> None:
        now = time.monotonic()
        age = self.settings.requeue_after_seconds
        if now - self.last["requeue"] >= REQUEUE_PERIOD:
            self.last["requeue"] = now
            for message_id in requeue_stale(
                self.session_factory, older_than_seconds=age, limit=5000
            ):
                self.celery.send_task("send_message", args=[message_id], queue="sms")
        if now - self.last["take_over"] >= TAKE_OVER_PERIOD:
            self.last["take_over"] = now
            report = reconcile.take_over(self.session_factory, hold_seconds=age, limit=5000)
            for message_id in report.resend:
                self.celery.send_task("send_message", args=[message_id], queue="sms")
