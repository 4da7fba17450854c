"""Alembic environment: runs migrations on the engine given by the gateway's settings."""

from __future__ import annotations

from alembic import context

from shared.db import Base, make_engine
from shared.models import *  # noqa: F403  (registers every table on Base.metadata)

config = context.config


def run_migrations() -> None:
    """Apply migrations online, on the URL set by `smsgw db upgrade` or the tests."""
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _run(connectable)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
