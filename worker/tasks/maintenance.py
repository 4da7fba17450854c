"""Beat jobs that keep the database its size: retention (`MESSAGE_RETENTION_DAYS`)."""

from __future__ import annotations

from celery import shared_task

from shared import retention
from worker.context import context_for

# A run stops after this long; the next hour's goes on where it stopped.
PURGE_SECONDS = 10 * 60


@shared_task(name="purge_messages", bind=True)
def purge_messages(self) -> int:  # type: ignore[no-untyped-def]
    """Delete final messages past the retention period, in batches; return how many."""
    context = context_for(self.app)
    return retention.purge(
        context.session_factory,
        retention_days=context.settings.message_retention_days,
        max_seconds=PURGE_SECONDS,
    ).deleted
