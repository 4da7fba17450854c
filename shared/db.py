"""Engine and session factory, and the declarative base of every model."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from sqlalchemy import (
    BigInteger,
    Engine,
    Index,
    Integer,
    MetaData,
    Numeric,
    create_engine,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column, sessionmaker

# Money keeps four decimal places: prices such as 0.0079 are exact.
Money = Annotated[Decimal, mapped_column(Numeric(14, 4))]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Ids are 64-bit: a gateway sending a thousand messages a second passes 2**31 in
# under a month. SQLite's rowid is 64-bit already, and only `INTEGER PRIMARY KEY`
# is its alias (BIGINT would lose the autoincrement), hence the variant.
MAX_ID = 2**63 - 1
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """The declarative base; constraint names follow one convention for Alembic.

    A plain `Mapped[int]` (every id and every foreign key to one) is 64-bit;
    counters and codes name their `Integer` type.
    """

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {int: BigId}


def partial_index(name: str, *columns: str, where: str, unique: bool = False) -> Index:
    """Return an index of the rows matching `where`, on PostgreSQL and SQLite alike."""
    return Index(
        name, *columns, unique=unique, postgresql_where=text(where), sqlite_where=text(where)
    )


def utcnow() -> datetime:
    """Return the current UTC time as a naive datetime, the way it is stored."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def make_engine(url: str, **kwargs: object) -> Engine:
    """Create an engine; SQLite gets a busy timeout so concurrent writers wait."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)  # type: ignore[arg-type]


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return the session factory every request and task opens its transaction with."""
    return sessionmaker(engine, expire_on_commit=False)
