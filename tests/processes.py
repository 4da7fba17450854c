"""Real processes for tests: a redis-server that can be stopped and restarted, a Celery worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from api.dev import redis_command, stop_groups, wait_for_port

ROOT = Path(__file__).resolve().parents[1]


class RedisServer:
    """A redis-server on a fixed port with an append-only file, as production runs it."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port = port
        self.folder = folder
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            redis_command(self.port, self.folder, appendonly=True),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@contextmanager
def celery_worker(
    env: dict[str, str], log: Path, *, queues: str = "sms", concurrency: int = 4, name: str = ""
):
    """Run `celery -A worker.celery_app worker` until the block ends; yield the process."""
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "-P",
        "threads",
        "-c",
        str(concurrency),
        "-Q",
        queues,
        "-l",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ] + (["-n", name] if name else [])
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
        )
    try:
        yield process
    finally:
        stop_groups([process], grace=15)


def gateway_env(**variables: str) -> dict[str, str]:
    """Return this environment without gateway settings, plus the given ones."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TWILIO_", "DATABASE_", "REDIS_", "PUBLIC_"))
    }
    return {**env, **variables}


def wait_until(check, *, seconds: float, what: str, log: Path | None = None):
    """Return check()'s first truthy value, or fail naming what was awaited."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def stack_env(
    *,
    database_url: str,
    redis_url: str,
    twilio_api_base: str,
    public_base_url: str = "http://gateway.test",
    **extra: str,
) -> dict[str, str]:
    """Return the environment of a gateway process wired to the test database, Redis and sandbox."""
    from tests.conftest import ACCOUNT_SID, AUTH_TOKEN

    return gateway_env(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_API_BASE=twilio_api_base,
        PUBLIC_BASE_URL=public_base_url,
        **extra,
    )


def celery_app_prints(script: str, *, database_url: str) -> list[str]:
    """Run `script` beside `worker.celery_app` in a fresh interpreter; return its printed words."""
    from tests.conftest import ACCOUNT_SID, AUTH_TOKEN

    env = gateway_env(
        DATABASE_URL=database_url, TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN
    )
    done = subprocess.run(
        [sys.executable, "-c", "from worker.celery_app import celery_app as app; " + script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()
