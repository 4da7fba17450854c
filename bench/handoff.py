"""Worker hand-off to the sandbox, beside a no-op Celery task on the same broker and pool.

The queue is filled first; the clock starts when the first worker says it is
ready and stops when every task has run (no-op) or every message has its SID
(send). Besides the rate, each row gives the CPU time spent per message by
every process involved: the workers, the sandbox, the database's backends
and server, and Redis; a steadier figure than the rate on a busy machine.
With `--rabbitmq` the tasks go through RabbitMQ instead of Redis (a vhost of
the machine's server, whose CPU is not among the groups).

`python -m bench handoff [--latency-ms 0] [--pool threads] [--processes 2] [-c 16] [--rabbitmq]`
runs one setting; without arguments it runs the two settings of `make bench`.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import redis
from sqlalchemy import NullPool, create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

from api.dev import free_port
from bench.cpu import GROUPS, Probe, spent
from bench.services import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    BIN,
    NOOP_DONE_KEY,
    database,
    gateway_env,
    process,
    rabbitmq_vhost,
    redis_server,
    seed_sender,
)
from shared.db import make_engine, utcnow
from shared.models import Message
from shared.settings import Settings
from worker.factory import make_celery


@dataclass(frozen=True)
class Setting:
    """How the worker host runs: `processes` Celery workers, each `-P pool -c concurrency`."""

    pool: str
    concurrency: int
    processes: int = 1

    def __str__(self) -> str:
        each = f"{self.pool}, c={self.concurrency}"
        return each if self.processes == 1 else f"{self.processes} x {each}"


# What `make bench` measures: two worker processes (one per core), each a pool
# of threads, as docker-compose.yml's worker runs (`-P threads -c 64`) once
# scaled to two. A hand-off mostly waits (PostgreSQL, Twilio), so threads keep
# it busy; a second process lifts the GIL's ceiling of one core.
FAST = Setting("threads", 16, processes=2)
SLOW = Setting("threads", 64, processes=2)


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


def _worker(setting: Setting, queues: str, name: str) -> list[str]:
    return [
        str(BIN / "celery"),
        "-A",
        "bench.noop_worker",
        "worker",
        "-P",
        setting.pool,
        "-c",
        str(setting.concurrency),
        "-Q",
        queues,
        "-n",
        f"{name}@%h",
        "--without-gossip",
        "--without-mingle",
        "-l",
        "INFO",
    ]


def _wait_ready(logs: list[Path], seconds: float = 60) -> float:
    """Wait until every worker is ready; return when the first one was."""
    deadline = time.monotonic() + seconds
    first = None
    pending = list(logs)
    while time.monotonic() < deadline:
        pending = [log for log in pending if not _ready(log)]
        if first is None and len(pending) < len(logs):
            first = time.monotonic()
        if not pending:
            return first or time.monotonic()
        time.sleep(0.01)
    raise RuntimeError(f"worker not ready: {pending[0].read_text(errors='replace')[-2000:]}")


def _ready(log: Path) -> bool:
    return log.exists() and " ready." in log.read_text(errors="replace")


def _until(done: Callable[[], int], count: int, seconds: float = 300) -> float:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done() >= count:
            return time.monotonic()
        time.sleep(0.02)
    raise RuntimeError(f"only {done()} of {count} done after {seconds} s")


def _run_workers(
    setting: Setting,
    queues: str,
    *,
    env: dict[str, str],
    folder: Path,
    done: Callable[[], int],
    count: int,
    probe: Probe,
) -> dict:
    """Start the workers on a filled queue; return the rate and the CPU ms per message."""
    logs = [folder / f"{queues}-{n}.log" for n in range(setting.processes)]
    with ExitStack() as stack:
        workers = [
            stack.enter_context(process(_worker(setting, queues, f"{queues}{n}"), env=env, log=log))
            for n, log in enumerate(logs)
        ]
        pids = [worker.pid for worker in workers]
        start = _wait_ready(logs)
        before = probe.snapshot(pids)
        try:
            end = _until(done, count)
        except RuntimeError as stuck:  # say why: a task that fails never counts itself
            tail = logs[0].read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{stuck}; the first worker's log ends:\n{tail}") from None
        after = probe.snapshot(pids)
    row = {"count": count, "rate": count / (end - start)}
    for name in after:
        row[f"{name}_cpu_ms"] = 1000 * spent(before[name], after[name]) / count
    return row


def measure(
    *,
    count: int,
    latency_ms: int,
    setting: Setting | None = None,
    pool: str = "threads",
    concurrency: int = 16,
    rabbitmq: bool = False,
) -> list[dict]:
    """Return the no-op row, the floor's row and the send row for one worker setting.

    With `rabbitmq` all three run on RabbitMQ as the broker; Redis still counts.
    """
    setting = setting or Setting(pool, concurrency)
    rows = []
    with (
        database("smsgw_bench_handoff") as db_url,
        redis_server() as redis_url,
        ExitStack() as optional,
        TemporaryDirectory() as tmp,
    ):
        broker_url = optional.enter_context(rabbitmq_vhost()) if rabbitmq else ""
        number_id, _ = seed_sender(db_url)
        sandbox_port = free_port()
        env = gateway_env(
            db_url,
            redis_url,
            TWILIO_API_BASE=f"http://127.0.0.1:{sandbox_port}",
            WORKER_METRICS_PORT="0",
            **({"BROKER_URL": broker_url} if broker_url else {}),
        )
        settings = Settings(
            database_url=db_url,
            redis_url=redis_url,
            broker_url=broker_url,
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
            "--quiet",
            "--latency-ms",
            str(latency_ms),
        ]
        with (
            process(sandbox, env=env, port=sandbox_port) as sandbox_process,
            create_engine(db_url, poolclass=NullPool).connect() as watcher,
        ):
            # The benchmark's own polling connection is not the gateway's cost.
            watcher_pid = watcher.scalar(text("SELECT pg_backend_pid()"))
            watcher.commit()
            probe = Probe(
                sandbox_pid=sandbox_process.pid,
                redis_url=redis_url,
                database_name=make_url(db_url).database,
                skip={watcher_pid},
            )

            def counted(task: str) -> dict:
                """Run `count` of a baseline task that counts itself when done."""
                client.delete(NOOP_DONE_KEY)
                with celery.producer_or_acquire() as producer:
                    for _ in range(count):
                        celery.send_task(task, queue="bench", producer=producer)
                return _run_workers(
                    setting,
                    "bench",
                    env=env,
                    folder=Path(tmp),
                    done=lambda: int(client.get(NOOP_DONE_KEY) or 0),
                    count=count,
                    probe=probe,
                )

            rows.append({"what": f"no-op task ({setting})", **counted("bench_noop")})
            floor = counted("bench_post")
            rows.append({"what": f"floor: one POST to the sandbox ({setting})", **floor})

            ids = _messages(db_url, number_id, count)
            with celery.producer_or_acquire() as producer:
                for message_id in ids:
                    celery.send_task(
                        "send_message", args=[message_id], queue="sms", producer=producer
                    )

            def handed_off() -> int:
                sent = watcher.scalar(select(func.count()).where(Message.sms_sid.is_not(None)))
                watcher.commit()
                return sent

            sent = _run_workers(
                setting,
                "sms",
                env=env,
                folder=Path(tmp),
                done=handed_off,
                count=count,
                probe=probe,
            )
            rows.append({"what": f"send_message, sandbox {latency_ms} ms ({setting})", **sent})
    return rows


def print_rows(rows: list[dict]) -> None:
    """Print measured rows: rate, and CPU ms per message of each group of processes.

    `postgres` is the live backends of the benchmark's database;
    `postgres_server` the server's shared processes (WAL writer...) and the
    backends that exited during the run (a pool's overflow connections), of
    whatever else runs on the host meanwhile too.
    """
    for row in rows:
        groups = " ".join(f"{name} {row[f'{name}_cpu_ms']:5.2f}" for name in GROUPS)
        total = sum(row[f"{name}_cpu_ms"] for name in GROUPS)
        print(
            f"{row['what']:52} | {row['rate']:7.1f} msg/s | CPU ms/msg: {groups}"
            f" | total {total:5.2f}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    """Run one setting given on the command line, or both settings of `make bench`."""
    parser = argparse.ArgumentParser(prog="python -m bench.handoff")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--latency-ms", type=int, action="append")
    parser.add_argument("--pool")
    parser.add_argument("-c", "--concurrency", type=int)
    parser.add_argument("--processes", type=int)
    parser.add_argument("--rabbitmq", action="store_true", help="RabbitMQ as the broker")
    args = parser.parse_args(argv)
    print(f"load {os.getloadavg()[0]:.1f} at start", flush=True)
    for latency in args.latency_ms or [0, 150]:
        default = FAST if latency == 0 else SLOW
        setting = Setting(
            args.pool or default.pool,
            args.concurrency or default.concurrency,
            args.processes or default.processes,
        )
        rows = measure(
            count=args.count, latency_ms=latency, setting=setting, rabbitmq=args.rabbitmq
        )
        print_rows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
