"""Fixtures: a real PostgreSQL database and Redis, made for the suite and cleaned per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from shared.db import Base, make_engine, make_session_factory
from shared.migrate import upgrade
from shared.settings import Settings

DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/smsgw_test"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "f" * 32


def _recreate_database(url: str) -> None:
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def database_url() -> str:
    """Return the URL of a fresh database built by the Alembic migrations."""
    _recreate_database(DATABASE_URL)
    upgrade(DATABASE_URL)
    return DATABASE_URL


@pytest.fixture(scope="session")
def engine(database_url: str):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def session_factory(engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def session(session_factory) -> Iterator[Session]:
    with session_factory() as session:
        yield session


@pytest.fixture(autouse=True)
def _clean(request) -> Iterator[None]:
    """Empty every table after each test that used the database."""
    yield
    if "engine" in request.fixturenames:
        engine = request.getfixturevalue("engine")
        names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def sandbox():
    """Run the Twilio sandbox in this process for the whole suite."""
    from sandbox.server import start_in_thread

    server, base_url = start_in_thread(port=0, account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    yield server, base_url
    server.shutdown()


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Return settings for the test database and Redis, with Twilio at an unused address."""
    return Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_base="http://127.0.0.1:9",
        public_base_url="http://gateway.test",
    )
