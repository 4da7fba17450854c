"""Campaign benchmark: from the 202 to every message queued, and the paced rate.

`make bench` or `python -m bench.campaigns`. Starts its own PostgreSQL database,
redis-server, Twilio sandbox, API
(`smsgw api`, 2 workers) and two Celery worker processes, then prints a table:

1. for 1,000, 10,000 and 100,000 recipients: the 202's latency, the time from
   the 202 to every message `queued` (campaign `sending`), and the time to
   cancel the campaign (every message canceled and refunded);
2. the rate achieved per sender number against its `mps`, with two workers;
3. the peak resident memory of each process.

`BENCH_POSTGRES_URL` (default: the tests' local server) says where to make the database.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import requests
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from api.dev import free_port, redis_binary, wait_for_port
from sandbox import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN
from shared import accounts
from shared.db import make_engine, make_session_factory
from shared.migrate import upgrade
from shared.models import Message, PhoneNumber

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
POSTGRES = os.environ.get(
    "BENCH_POSTGRES_URL",
    os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432"),
)
SIZES = (1_000, 10_000, 100_000)
RATES = {"+15005550006": 10, "+15005550010": 25}


class Peaks:
    """Samples the resident memory of named processes (with their children) every 100 ms."""

    def __init__(self) -> None:
        self.processes: dict[str, psutil.Process] = {}
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, name: str, pid: int) -> None:
        self.processes[name] = psutil.Process(pid)
        self.peak[name] = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for name, process in self.processes.items():
                try:
                    for proc in [process, *process.children(recursive=True)]:
                        key = name if proc.pid == process.pid else f"{name} (child {proc.pid})"
                        self.peak[key] = max(self.peak.get(key, 0), proc.memory_info().rss)
                except psutil.Error:
                    pass


class Stack:
    """The processes under test, on a private database and redis-server."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.children: list[subprocess.Popen] = []
        name = f"smsgw_bench_{os.getpid()}"
        self.database_url = str(make_url(POSTGRES).set(database=name))
        self._admin = create_engine(
            make_url(POSTGRES).set(database="postgres"), isolation_level="AUTOCOMMIT"
        )
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        upgrade(self.database_url)
        self.engine = make_engine(self.database_url)
        self.sessions = make_session_factory(self.engine)
        redis_port, self.sandbox_port, self.api_port = free_port(), free_port(), free_port()
        self.start(
            "redis",
            [
                redis_binary(),
                "--port",
                str(redis_port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
            ],
        )
        wait_for_port(redis_port)
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "TWILIO_ACCOUNT_SID": SANDBOX_ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": SANDBOX_AUTH_TOKEN,
            "TWILIO_API_BASE": f"http://127.0.0.1:{self.sandbox_port}",
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{self.api_port}",
            "LOG_LEVEL": "WARNING",
        }

    def start(self, name: str, command: list[str], env: dict | None = None) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("w")
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
        self.children.append(process)
        return process

    def close(self) -> None:
        for process in reversed(self.children):
            process.terminate()
        for process in self.children:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.engine.dispose()
        name = make_url(self.database_url).database
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._admin.dispose()


def seed(stack: Stack) -> tuple[str, dict[str, int]]:
    from decimal import Decimal

    with stack.sessions() as session:
        user, token = accounts.create_user(
            session, email="bench@example.com", balance=Decimal("100000")
        )
        numbers = {
            number: accounts.add_number(session, user_id=user.id, number=number, mps=mps).id
            for number, mps in RATES.items()
        }
        accounts.set_price(session, country="US", price=Decimal("0.0079"))
        session.commit()
    return token, numbers


def recipients(count: int, offset: int = 0) -> list[dict]:
    """Return distinct valid US recipients: area codes from 212 up, exchanges 200-999."""
    rows = []
    for n in range(offset, offset + count):
        area, line = 212 + n // 8_000_000, 2_000_000 + n % 8_000_000
        rows.append({"to": f"+1{area}{line:07d}", "vars": {"name": f"Customer {n}"}})
    return rows


def queue_times(stack: Stack, api: str, token: str, number_id: int) -> list[tuple]:
    headers = {"Authorization": f"Bearer {token}"}
    rows = []
    for size in SIZES:
        payload = {
            "from": number_id,
            "body": "Hi {name}, our sale starts now.",
            "recipients": recipients(size),
        }
        began = time.monotonic()
        answer = requests.post(
            f"{api}/api/user/sms/campaigns", json=payload, headers=headers, timeout=120
        )
        accepted = time.monotonic()
        assert answer.status_code == 202, answer.text
        campaign_id = answer.json()["data"]["id"]
        while True:
            data = requests.get(
                f"{api}/api/user/sms/campaigns/{campaign_id}", headers=headers, timeout=60
            ).json()["data"]
            if data["status"] != "pending":
                break
            time.sleep(0.05)
        queued = time.monotonic()
        assert data["status"] == "sending" and data["accepted"] == size, data
        began_cancel = time.monotonic()
        done = requests.post(
            f"{api}/api/user/sms/campaigns/{campaign_id}/cancel", headers=headers, timeout=300
        ).json()["data"]
        canceled = time.monotonic()
        rows.append(
            (
                size,
                accepted - began,
                queued - accepted,
                canceled - began_cancel,
                done["counts"]["canceled"],
            )
        )
    return rows


def rates(stack: Stack, api: str, token: str, numbers: dict[str, int], window: float) -> list:
    headers = {"Authorization": f"Bearer {token}"}
    for n, (number, number_id) in enumerate(numbers.items()):
        size = int(RATES[number] * (window + 10))
        payload = {
            "from": number_id,
            "body": "Hi {name}",
            "recipients": recipients(size, offset=1_000_000 * (n + 1)),
        }
        answer = requests.post(
            f"{api}/api/user/sms/campaigns", json=payload, headers=headers, timeout=60
        )
        assert answer.status_code == 202, answer.text

    def counts() -> dict[str, int]:
        with stack.sessions() as session:
            rows = session.execute(
                select(PhoneNumber.number, func.count())
                .join(Message, Message.phone_number_id == PhoneNumber.id)
                .where(Message.sms_sid.is_not(None))
                .group_by(PhoneNumber.number)
            )
            return dict(rows.all())

    while min(counts().get(number, 0) for number in numbers) < 5:
        time.sleep(0.1)
    time.sleep(2.0)  # warm-up: every dispatcher running
    first, began = counts(), time.monotonic()
    time.sleep(window)
    last, elapsed = counts(), time.monotonic() - began
    return [
        (number, RATES[number], (last[number] - first.get(number, 0)) / elapsed, elapsed)
        for number in numbers
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=20.0, help="seconds the rate is counted")
    args = parser.parse_args(argv)
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="smsgw-bench-"))
    stack = Stack(folder)
    peaks = Peaks()
    try:
        token, numbers = seed(stack)
        peaks.watch(
            "sandbox",
            stack.start(
                "sandbox",
                [
                    str(BIN / "smsgw"),
                    "sandbox",
                    "--port",
                    str(stack.sandbox_port),
                    "--no-callbacks",
                ],
                stack.env,
            ).pid,
        )
        peaks.watch(
            "api (smsgw api)",
            stack.start(
                "api",
                [
                    str(BIN / "smsgw"),
                    "api",
                    "--workers",
                    "2",
                    "--bind",
                    f"127.0.0.1:{stack.api_port}",
                ],
                stack.env,
            ).pid,
        )
        for name in ("worker-1", "worker-2"):
            peaks.watch(
                name,
                stack.start(
                    name,
                    [
                        str(BIN / "celery"),
                        "-A",
                        "worker.celery_app",
                        "worker",
                        "-n",
                        f"{name}@%h",
                        "-P",
                        "threads",
                        "-c",
                        "4",
                        "-Q",
                        "sms,campaign",
                        "-l",
                        "WARNING",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                    ],
                    stack.env,
                ).pid,
            )
        wait_for_port(stack.sandbox_port)
        wait_for_port(stack.api_port)
        time.sleep(2.0)  # the workers connect
        peaks.start()
        api = f"http://127.0.0.1:{stack.api_port}"
        first_number = next(iter(numbers.values()))
        loads = [os.getloadavg()[0]]
        queued = queue_times(stack, api, token, first_number)
        loads.append(os.getloadavg()[0])
        paced = rates(stack, api, token, numbers, args.window)
        loads.append(os.getloadavg()[0])
        peaks.stop()
    finally:
        stack.close()
    print(f"\nLoad average (1 min) at start, after expansion, after pacing: {loads}")
    print(f"on {os.cpu_count()} CPUs; anything well above that means the figures are skewed")
    print("\nCampaign expansion (JSON upload; 2 API workers, 2 Celery worker processes)")
    print(f"{'recipients':>10} | {'202 after':>9} | {'202 -> all queued':>17} | {'cancel':>8}")
    for size, answer, queue, cancel, canceled in queued:
        print(
            f"{size:>10,} | {answer:>8.2f}s | {queue:>16.2f}s | {cancel:>7.2f}s"
            f"  ({canceled:,} canceled and refunded)"
        )
    print("\nPacing per sender number (two worker processes)")
    print(f"{'number':>14} | {'mps':>4} | {'achieved':>9} | {'error':>6} | window")
    for number, mps, achieved, elapsed in paced:
        error = (achieved - mps) / mps * 100
        print(f"{number:>14} | {mps:>4} | {achieved:>8.2f}/s | {error:>+5.1f}% | {elapsed:.1f}s")
    print("\nPeak resident memory")
    for name, peak in sorted(peaks.peak.items()):
        print(f"{name:>32} | {peak / 2**20:>7.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
