"""Real processes for tests: Redis and PostgreSQL servers to stop and restart, a Celery worker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from api.dev import free_port, redis_command, stop_groups, wait_for_port

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
    env: dict[str, str],
    log: Path,
    *,
    queues: str = "sms,callbacks",
    concurrency: int = 4,
    name: str = "",
    beat: bool = False,
):
    """Run `celery -A worker.celery_app worker` until the block ends; yield the process.

    With `beat` the worker also runs the periodic jobs (`-B`), as `smsgw dev` does.
    """
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
    if beat:
        command += ["-B", "--schedule", str(log.with_suffix(".beat"))]
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
        if not k.startswith(("TWILIO_", "DATABASE_", "REDIS_", "BROKER_", "PUBLIC_"))
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
    broker_url: str = "",
    **extra: str,
) -> dict[str, str]:
    """Return the environment of a gateway process wired to the test database, Redis and sandbox.

    `broker_url` names another broker than Redis (RabbitMQ) for the tasks.
    """
    from tests.conftest import ACCOUNT_SID, AUTH_TOKEN

    if broker_url:
        extra["BROKER_URL"] = broker_url
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


class PostgresServer:
    """A private PostgreSQL cluster on a fixed port, stopped and started with pg_ctl.

    The first start runs initdb and creates the database `smsgw`; later starts
    reuse the same data directory. initdb refuses root, so as root every command
    runs as the `postgres` user, in a folder under /tmp that it owns (pytest's
    tmp_path is private to root).
    """

    BIN = Path("/usr/lib/postgresql/15/bin")

    def __init__(self, port: int) -> None:
        self.port = port
        self.folder: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/smsgw"

    @property
    def log(self) -> Path:
        assert self.folder is not None
        return self.folder / "postgres.log"

    def start(self) -> None:
        """Start the server on its port, creating the cluster on the first start."""
        fresh = self.folder is None
        if fresh:
            self.folder = Path(tempfile.mkdtemp(prefix="smsgw-pg-"))
            if os.geteuid() == 0:
                shutil.chown(self.folder, "postgres", "postgres")
            self._run("initdb", "-D", "data", "-U", "postgres", "--auth=trust", "--no-sync")
        # fsync=off loses nothing here: the server is only ever stopped cleanly.
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "start", "-w", "-t", "30", "-D", "data", "-l", str(self.log), "-o", options
        )
        if fresh:
            self._run(
                "createdb", "-h", str(self.folder), "-p", str(self.port), "-U", "postgres", "smsgw"
            )

    def stop(self) -> None:
        """Stop at once, as an operator's restart does: sessions are cut, commits are kept."""
        if self.folder is not None and (self.folder / "data" / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-w", "-t", "30", "-m", "fast", "-D", "data")

    def remove(self) -> None:
        """Stop the server and delete its files."""
        self.stop()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def _run(self, program: str, *args: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [*as_postgres, str(self.BIN / program), *args],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{program} failed: {done.stdout}{done.stderr}{log}")


@contextmanager
def api_server(env: dict[str, str], log: Path, *options: str):
    """Run `smsgw api` on a free port until the block ends; yield (its base URL, the process)."""
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "smsgw"),
        "api",
        "--bind",
        f"127.0.0.1:{port}",
        *options,
    ]
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
        )
    try:
        wait_for_port(port, seconds=30)
        yield f"http://127.0.0.1:{port}", process
    finally:
        stop_groups([process], grace=10)
