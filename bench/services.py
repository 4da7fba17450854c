"""Private services for a benchmark run: a fresh database, a redis-server, a RabbitMQ vhost,
child processes."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from api.dev import free_port, redis_command, stop_groups, wait_for_port
from shared import accounts
from shared.db import make_engine, make_session_factory
from shared.migrate import upgrade
from tests.brokers import create_vhost, delete_vhost

BIN = Path(sys.executable).parent
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "b" * 32
NOOP_DONE_KEY = "bench:noop:done"


@contextmanager
def database(name: str = "smsgw_bench", *, keep: bool = False):
    """Yield the URL of a new, migrated database, dropped afterwards unless `keep`."""
    url = f"{POSTGRES_URL}/{name}"
    admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    upgrade(url)
    try:
        yield url
    finally:
        if not keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def redis_server():
    """Yield the URL of a redis-server started for this run."""
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        process = subprocess.Popen(
            redis_command(port, folder),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(port)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=10)


@contextmanager
def rabbitmq_vhost(name: str = "smsgw_bench"):
    """Yield the URL of a new vhost on the machine's RabbitMQ, deleted afterwards.

    The vhost is named after this process (as the tests' are), so an abandoned one is
    deleted by the next run of either.
    """
    name = f"{name}_{os.getpid()}"
    url = create_vhost(name)
    try:
        yield url
    finally:
        delete_vhost(name)


def seed_sender(database_url: str, *, balance: str = "1000000", mps: int = 1) -> tuple[int, str]:
    """Create a user with a large balance, a number and the US price; return (number id, token)."""
    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        user, token = accounts.create_user(
            session, email=f"bench{free_port()}@example.com", balance=Decimal(balance)
        )
        number = accounts.add_number(session, user_id=user.id, number="+15005550006", mps=mps)
        accounts.set_price(session, country="US", price=Decimal("0.0079"))
        session.commit()
    engine.dispose()
    return number.id, token


def gateway_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """Return the environment the gateway's processes run with in a benchmark."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        **extra,
    }


@contextmanager
def process(
    argv: list[str], *, env: dict[str, str], port: int | None = None, log: Path | None = None
):
    """Run a child process (its own process group) for the duration of the block."""
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
    child = subprocess.Popen(
        argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        if port is not None:
            wait_for_port(port, seconds=60)
        yield child
    finally:
        stop_groups([child], grace=20)
        if log:
            out.close()
