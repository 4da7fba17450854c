"""One UPDATE ... RETURNING run as its own transaction: one round trip, in autocommit.

The hand-off's claim and SID store are such statements. On PostgreSQL they
run straight on a pooled psycopg connection, compiled once: SQLAlchemy's
Connection costs about a quarter of a millisecond of CPU per statement
around psycopg's own work. Elsewhere (SQLite), or when that fails, they run
through SQLAlchemy, which maps the error and tells a dead connection.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Compiled
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import Update

log = logging.getLogger(__name__)
_autocommit_engines: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()
_raw_statements: weakref.WeakKeyDictionary[Engine, dict[Update, _Raw | None]] = (
    weakref.WeakKeyDictionary()
)


def execute_once(
    session_factory: sessionmaker[Session], statement: Update, params: dict[str, Any]
) -> Sequence[Any] | None:
    """Run one UPDATE ... RETURNING as its own transaction; return its row, if any.

    On the factory's engine it runs in autocommit, one round trip. A pooled
    connection found dead (the database restarted) fails the statement before
    it ran; the pool then drops every older connection and it runs once more.
    The caller must make the statement safe to repeat.
    """
    bind = session_factory.kw.get("bind")
    if not isinstance(bind, Engine):
        with session_factory() as session:
            row = session.execute(statement, params).first()
            session.commit()
            return row
    raw = _raw_statement(bind, statement)
    if raw is not None:
        try:
            return raw(params)
        except Exception as error:  # SQLAlchemy runs it again, and says why it fails
            log.debug("statement failed on a raw connection, running it again: %r", error)
    engine = _autocommit_engines.get(bind)
    if engine is None:
        engine = _autocommit_engines.setdefault(
            bind, bind.execution_options(isolation_level="AUTOCOMMIT")
        )
    try:
        with engine.connect() as conn:
            return conn.execute(statement, params).first()
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
        log.warning("database connection lost, running the statement again: %s", error.orig)
    with engine.connect() as conn:
        return conn.execute(statement, params).first()


class _Raw:
    """One statement compiled once, run in autocommit on a pooled psycopg connection.

    Any failure gives the connection up (its state is unknown) and is left
    to `execute_once`, which runs the statement again through SQLAlchemy.
    """

    def __init__(self, engine: Engine, compiled: Compiled) -> None:
        self._engine = engine
        self._compiled = compiled
        self._sql = str(compiled)

    def __call__(self, params: dict[str, Any]) -> tuple[Any, ...] | None:
        values = self._compiled.construct_params(params)
        pooled = self._engine.raw_connection()
        try:
            connection: Any = pooled.driver_connection
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(self._sql, values)
                row = cursor.fetchone()
            connection.autocommit = False
        except BaseException:
            pooled.invalidate()
            raise
        finally:
            pooled.close()
        return row


def _raw_statement(engine: Engine, statement: Update) -> _Raw | None:
    """Return the raw runner of a statement on a psycopg engine, or None to use SQLAlchemy.

    Only statements whose parameters SQLAlchemy would pass to psycopg as they
    are (no bind processors) run raw.
    """
    runners = _raw_statements.get(engine)
    if runners is None:
        runners = _raw_statements.setdefault(engine, {})
    if statement in runners:
        return runners[statement]
    runner = None
    dialect = engine.dialect
    if dialect.driver == "psycopg":
        compiled = statement.compile(dialect=dialect)
        types = [bind.type.dialect_impl(dialect) for bind in compiled.binds.values()]
        plain = all(kind.bind_processor(dialect) is None for kind in types)
        if plain and "POSTCOMPILE" not in str(compiled):
            runner = _Raw(engine, compiled)
    return runners.setdefault(statement, runner)
