"""Worker hand-off to the sandbox, beside a no-op Celery task on the same broker and pool.

The queue is filled first; the clock starts when the worker says it is ready
and stops when every task has run (no-op) or every message has its SID (send).
"""

from __future__ import annotations

import time
from pathlib import Path
from tempfile import TemporaryDirectory

import redis
from sqlalchemy import func, insert, select

from api.dev import free_port
from bench.services import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BIN,
    NOOP_DONE_KEY,
    database,
    gateway_env,
    process,
    redis_server,
    seed_sender,
)
from shared.db import make_engine, utcnow
from shared.models import Message
from shared.settings import Settings
from worker.factory import make_celery


def _messages(database_url: str, number_id: int, count: int) -> list[int]:
    """Write `count` queued messages in bulk and return their ids."""
    engine = make_engine(database_url)
    now = utcnow()
    row = dict(
        user_id=1,
        phone_number_id=number_id,
        from_number="+15005550006",
        to="+14155550123",
        body="Hello from the benchmark",
        segments=1,
        encoding="GSM-7",
        segment_price=0.0079,
        total_cost=0.0079,
        status="queued",
        handoff="pending",
        attempts=0,
        created_at=now,
        updated_at=now,
    )
    with engine.begin() as conn:
        ids = conn.scalars(insert(Message).returning(Message.id), [row] * count).all()
    engine.dispose()
    return list(ids)


def _worker(pool: str, concurrency: int, queues: str) -> list[str]:
    return [
        str(BIN / "celery"),
        "-A",
        "bench.noop_worker",
        "worker",
        "-P",
        pool,
        "-c",
        str(concurrency),
        "-Q",
        queues,
        "--without-gossip",
        "--without-mingle",
        "-l",
        "INFO",
    ]


def _wait_ready(log: Path, seconds: float = 60) -> float:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if log.exists() and " ready." in log.read_text(errors="replace"):
            return time.monotonic()
        time.sleep(0.01)
    raise RuntimeError(f"worker not ready: {log.read_text(errors='replace')[-2000:]}")


def _until(done, count: int, seconds: float = 300) -> float:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done() >= count:
            return time.monotonic()
        time.sleep(0.02)
    raise RuntimeError(f"only {done()} of {count} done after {seconds} s")


def measure(*, count: int, pool: str, concurrency: int, latency_ms: int) -> list[dict]:
    """Return the no-op row and the send row for one pool setting."""
    rows = []
    with (
        database("smsgw_bench_handoff") as db_url,
        redis_server() as redis_url,
        TemporaryDirectory() as tmp,
    ):
        number_id, _ = seed_sender(db_url)
        sandbox_port = free_port()
        env = gateway_env(db_url, redis_url, TWILIO_API_BASE=f"http://127.0.0.1:{sandbox_port}")
        settings = Settings(
            database_url=db_url,
            redis_url=redis_url,
            twilio_account_sid=ACCOUNT_SID,
            twilio_auth_token=AUTH_TOKEN,
        )
        celery = make_celery(settings)
        client = redis.Redis.from_url(redis_url)
        sandbox = [
            str(BIN / "smsgw"),
            "sandbox",
            "--port",
            str(sandbox_port),
            "--no-callbacks",
            "--latency-ms",
            str(latency_ms),
        ]
        with process(sandbox, env=env, port=sandbox_port):
            for _ in range(count):
                celery.send_task("bench_noop", queue="bench")
            log = Path(tmp) / "noop.log"
            with process(_worker(pool, concurrency, "bench"), env=env, log=log):
                start = _wait_ready(log)
                end = _until(lambda: int(client.get(NOOP_DONE_KEY) or 0), count)
            rows.append(
                {
                    "what": f"no-op task ({pool}, c={concurrency})",
                    "count": count,
                    "rate": count / (end - start),
                }
            )

            ids = _messages(db_url, number_id, count)
            for message_id in ids:
                celery.send_task("send_message", args=[message_id], queue="sms")
            engine = make_engine(db_url)

            def handed_off() -> int:
                with engine.connect() as conn:
                    return conn.scalar(select(func.count()).where(Message.sms_sid.is_not(None)))

            log = Path(tmp) / "send.log"
            with process(_worker(pool, concurrency, "sms"), env=env, log=log):
                start = _wait_ready(log)
                end = _until(handed_off, count)
            engine.dispose()
            rows.append(
                {
                    "what": f"send_message, sandbox {latency_ms} ms ({pool}, c={concurrency})",
                    "count": count,
                    "rate": count / (end - start),
                }
            )
    return rows
