"""The worker's Celery app: `celery -A worker.celery_app worker` (and `beat`, `flower`).

Settings are read at import, so a bad setting stops the process at once with
one line naming it.
"""

from __future__ import annotations

import sys

from celery.signals import worker_process_init

from shared.settings import SettingsError, load_settings
from worker.context import context_for
from worker.factory import make_celery

try:
    _settings = load_settings()
except SettingsError as error:
    print(f"smsgw worker: {error}", file=sys.stderr)
    raise SystemExit(2) from None

celery_app = make_celery(_settings)
celery_app.conf.beat_schedule = {
    "requeue-stale-messages": {
        "task": "requeue_stale_messages",
        "schedule": 60.0,
        # A run that waited a whole period is superseded by the next one.
        "options": {"expires": 55},
    },
}


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    """Give each prefork child its own database pool and HTTP session."""
    context_for(celery_app).after_fork()
