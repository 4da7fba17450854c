"""The Flask app factory: `gunicorn "api.app:create_app()"`."""

from __future__ import annotations

import logging

import redis
from flask import Flask
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from sqlalchemy import Engine
from werkzeug.routing import IntegerConverter, Map

from api import (
    account,
    admin_routes,
    campaigns,
    errors,
    health,
    inbound,
    metrics,
    openapi,
    sms,
    transactions,
    webhooks,
)
from api.committer import Committer
from api.fastjson import OrjsonProvider
from api.fastsend import FastSend
from api.gateway import Gateway
from shared import logs
from shared.db import MAX_ID, make_engine, make_session_factory
from shared.ratelimit import RateLimiter
from shared.settings import Settings, settings_or_exit
from worker.factory import make_celery
from worker.send_queue import SendQueue, make_send_queue


class RowId(IntegerConverter):
    """An integer path segment no larger than a database id (64-bit) can be."""

    def __init__(self, url_map: Map, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(url_map, *args, **kwargs)  # type: ignore[arg-type]


def _autocommit_engine(url: str, engine: Engine) -> Engine:
    """Return the engine of the request hot path: autocommit, and on PostgreSQL no pre-ping."""
    if engine.dialect.name != "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return make_engine(url, pool_pre_ping=False, isolation_level="AUTOCOMMIT")


def _committer(
    url: str, engine: Engine, send_queue: SendQueue, limiter: RateLimiter
) -> Committer | None:
    """Return the group committer of sends, on PostgreSQL (its statement is PostgreSQL's).

    It keeps one connection, checked for a server-side close before each batch.
    """
    if engine.dialect.name != "postgresql":
        return None
    committing = make_engine(
        url, isolation_level="AUTOCOMMIT", pool_pre_ping=False, pool_size=1, max_overflow=0
    )
    return Committer(committing, send_queue, limiter)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API for the given settings, or for the environment's."""
    settings = settings or settings_or_exit()
    logs.configure(settings.log_level, settings.log_format, process=settings.process_name)
    app = Flask(__name__)
    # A larger id than a database id can be is simply not found.
    app.url_map.converters["int"] = RowId
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json = OrjsonProvider(app)
    app.json.sort_keys = False
    engine = make_engine(settings.database_url)
    # While Redis is down a request must fail in well under a second, not wait for it.
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=1,
        socket_connect_timeout=1,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 2),
    )
    send_queue = make_send_queue(settings, client)
    limiter = RateLimiter(client, limit=settings.rate_limit_per_minute)
    app.extensions["smsgw"] = Gateway(
        settings=settings,
        engine=engine,
        autocommit=_autocommit_engine(settings.database_url, engine),
        sessions=make_session_factory(engine),
        celery=make_celery(settings),
        send_queue=send_queue,
        limiter=limiter,
        committer=_committer(settings.database_url, engine, send_queue, limiter),
    )
    app.teardown_appcontext(lambda _: app.extensions["smsgw"].close_connection())
    errors.register(app)
    metrics.init_app(app)
    for module in (sms, campaigns, account, health, webhooks):
        app.register_blueprint(module.bp)
    app.register_blueprint(transactions.bp)
    app.register_blueprint(inbound.bp)
    app.register_blueprint(admin_routes.bp)  # the blueprint of api.admin, with its routes
    app.register_blueprint(openapi.bp)
    app.wsgi_app = FastSend(app)  # type: ignore[method-assign]
    logging.getLogger(__name__).info("api ready")
    return app
