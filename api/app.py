"""The Flask app factory: `gunicorn "api.app:create_app()"`."""

from __future__ import annotations

import logging

import redis
from flask import Flask
from werkzeug.routing import IntegerConverter, Map

from api import account, campaigns, errors, health, metrics, openapi, sms, webhooks
from api.gateway import Gateway
from shared import logs
from shared.db import make_engine, make_session_factory
from shared.ratelimit import RateLimiter
from shared.settings import Settings, settings_or_exit
from worker.factory import make_celery


class RowId(IntegerConverter):
    """An integer path segment no larger than a database id can be."""

    def __init__(self, url_map: Map, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(url_map, *args, **kwargs)  # type: ignore[arg-type]


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API for the given settings, or for the environment's."""
    settings = settings or settings_or_exit()
    logs.configure(settings.log_level)
    app = Flask(__name__)
    # Ids are 32-bit in the database: a larger one in a URL is simply not found.
    app.url_map.converters["int"] = RowId
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False
    engine = make_engine(settings.database_url)
    app.extensions["smsgw"] = Gateway(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        celery=make_celery(settings),
        limiter=RateLimiter(
            redis.Redis.from_url(settings.redis_url, socket_timeout=1, socket_connect_timeout=1),
            limit=settings.rate_limit_per_minute,
        ),
    )
    errors.register(app)
    metrics.init_app(app)
    for module in (sms, campaigns, account, health, webhooks):
        app.register_blueprint(module.bp)
    app.register_blueprint(openapi.bp)
    logging.getLogger(__name__).info("api ready")
    return app
