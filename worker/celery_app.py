"""The worker's Celery app: `celery -A worker.celery_app worker` (and `beat`, `flower`).

Settings are read at import, so a bad setting stops the process at once with
one line naming it.
"""

from __future__ import annotations

import os
import sys

from celery.signals import worker_process_init

from shared import logs
from shared.settings import SettingsError, load_settings
from worker.context import context_for
from worker.factory import BEAT_SCHEDULE, make_celery
from worker.metrics import protect_flower_metrics

try:
    _settings = load_settings()
except SettingsError as error:
    print(f"smsgw worker: {error}", file=sys.stderr)
    raise SystemExit(2) from None

# Issue 5: Flower reads FLOWER_BASIC_AUTH itself; outside development it must be set.
if "flower" in sys.argv[1:] and not _settings.flower_basic_auth:
    if not _settings.dev:
        print("smsgw flower: FLOWER_BASIC_AUTH is required outside development", file=sys.stderr)
        raise SystemExit(2)
    os.environ.setdefault("FLOWER_UNAUTHENTICATED_API", "true")
if "flower" in sys.argv[1:]:
    protect_flower_metrics()
    os.environ.setdefault("FLOWER_LOGGING", "none")  # keep tornado's format off: JSON lines
    logs.configure(_settings.log_level)

celery_app = make_celery(_settings)
celery_app.conf.beat_schedule = BEAT_SCHEDULE


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    """Give each prefork child its own database pool and HTTP session."""
    context_for(celery_app).after_fork()
