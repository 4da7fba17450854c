"""The worker's Celery app: `celery -A worker.celery_app worker` (and `beat`, `flower`).

Settings are read at import, so a bad setting stops the process at once with
one line naming it.
"""

from __future__ import annotations

import logging
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
# Every line in the settings' format; Celery's own setup at a worker's start keeps it.
logs.configure(_settings.log_level, _settings.log_format, process=_settings.process_name)
if _settings.dev:
    # Beat's line for every periodic task it sends is noise on a developer's terminal.
    logs.periodic_chatter_at_debug()
if "flower" in sys.argv[1:]:
    protect_flower_metrics()
    os.environ.setdefault("FLOWER_LOGGING", "none")  # keep tornado's own format off
    if _settings.dev:
        # `smsgw dev` starts Flower beside the worker: its first look finds none yet,
        # and the banner says where Flower is (not the list of every task it knows).
        logging.getLogger("flower.inspector").setLevel(logging.ERROR)
        logging.getLogger("flower.command").setLevel(logging.WARNING)

celery_app = make_celery(_settings)
celery_app.conf.beat_schedule = BEAT_SCHEDULE


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    """Give each prefork child its own database pool and HTTP session."""
    context_for(celery_app).after_fork()
