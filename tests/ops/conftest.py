"""The docker-compose services, run by hand: each service's own command, on this machine.

Docker does not run here, so `stack` reads docker-compose.yml and starts every
service's command through the image's entrypoint, with the compose environment
pointed at a fresh database, the test Redis and free ports: once with Redis as
the broker, once with RabbitMQ (the "rabbitmq" profile's BROKER_URL, here a
vhost of its own on the machine's RabbitMQ).
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url

from api.dev import free_port, wait_for_port
from tests.brokers import create_vhost, delete_vhost
from tests.conftest import _admin

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
ENTRYPOINT = ROOT / "scripts" / "entrypoint.sh"
FLOWER_USER, FLOWER_PASSWORD = "ops", "s3cret-ops"
AUTH = (FLOWER_USER, FLOWER_PASSWORD)


def compose() -> dict:
    """Return docker-compose.yml, parsed."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class Stack:
    """The running services: their processes, ports, environment and log files."""

    folder: Path
    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    envs: dict[str, dict[str, str]] = field(default_factory=dict)

    def url(self, service: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def env_for(self, service: str) -> dict[str, str]:
        return self.envs[service]

    def log(self, service: str) -> str:
        return (self.folder / f"{service}.log").read_text(errors="replace")

    def argv(self, command: list[str]) -> list[str]:
        """Translate a compose command for this machine: our venv, our ports and folders."""
        subs = {
            "8000": self.ports.get("api"),
            "5555": self.ports.get("flower"),
            "8025": self.ports.get("sandbox"),
            "/var/lib/smsgw": str(self.folder),
        }
        out = []
        for arg in command:
            for old, new in subs.items():
                if new is not None:
                    arg = arg.replace(old, str(new))
            out.append(arg.replace("0.0.0.0", "127.0.0.1"))
        exe = BIN / out[0]
        return [str(ENTRYPOINT), str(exe) if exe.exists() else out[0], *out[1:]]

    def run(
        self,
        service: str,
        command: list[str],
        extra: dict[str, str] | None = None,
        *,
        wait: bool = False,
    ) -> subprocess.Popen | int:
        env = self.envs[service] = {**self.env, **(extra or {})}
        log = open(self.folder / f"{service}.log", "ab")  # noqa: SIM115 (the child keeps it)
        process = subprocess.Popen(
            self.argv(command), env=env, stdout=log, stderr=log, cwd=ROOT, start_new_session=True
        )
        if wait:
            return process.wait(timeout=60)
        self.processes[service] = process
        return process

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def service_env(spec: dict, base: dict[str, str]) -> dict[str, str]:
    """Return a service's compose environment with our values for what must differ."""
    env = {k: str(v) for k, v in (spec.get("environment") or {}).items()}
    env = {k: v for k, v in env.items() if not v.startswith("${")}
    return {**env, **base}


@contextmanager
def compose_database(database_url: str, broker: str) -> Iterator[str]:
    """An empty database for the stack: its migrate step must build the schema."""
    url = make_url(database_url)
    name = f"{url.database}_compose_{broker}"
    admin = _admin()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# Every long-running service of docker-compose.yml, in the order they start.
SERVICES = (
    "sandbox",
    "api",
    "worker",
    "worker-campaign",
    "worker-callbacks",
    "beat",
    "flower",
)


@contextmanager
def compose_broker(broker: str, redis_url: str) -> Iterator[dict[str, str]]:
    """Return the stack's broker settings: a Redis database, or a RabbitMQ vhost, of its own."""
    redis_env = {"REDIS_URL": redis_url.rsplit("/", 1)[0] + "/5"}
    if broker == "redis":
        yield redis_env
        return
    vhost = f"smsgw_compose_{os.getpid()}"
    try:
        yield {**redis_env, "BROKER_URL": create_vhost(vhost)}
    finally:
        delete_vhost(vhost)


@pytest.fixture(scope="session", params=["redis", "rabbitmq"])
def stack(request, tmp_path_factory, redis_url: str, database_url: str) -> Iterator[Stack]:
    """Start every compose service's command (migrate first), and wait for their ports."""
    with (
        compose_database(database_url, request.param) as database,
        compose_broker(request.param, redis_url) as broker,
    ):
        yield from _stack(tmp_path_factory, database, broker)


def _stack(tmp_path_factory, compose_database: str, broker: dict[str, str]) -> Iterator[Stack]:
    services = compose()["services"]
    names = ("api", "flower", "sandbox", "worker", "campaign", "callbacks")
    ports = {name: free_port() for name in names}
    base = {
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", "/tmp"),
        "DATABASE_URL": compose_database,
        **broker,
        "SANDBOX_URL": f"http://127.0.0.1:{ports['sandbox']}",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['api']}",
        "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}",
        "WEB_CONCURRENCY": "2",
        "PYTHONUNBUFFERED": "1",
    }
    stack = Stack(tmp_path_factory.mktemp("stack"), base, ports)
    spec = services["migrate"]
    assert stack.run("migrate", spec["command"], service_env(spec, base), wait=True) == 0, (
        stack.log("migrate")
    )
    extra = {
        "worker": {
            "WORKER_METRICS_PORT": str(ports["worker"]),
            "PROMETHEUS_MULTIPROC_DIR": str(stack.folder / "metrics-worker"),
        },
        "worker-campaign": {
            "WORKER_METRICS_PORT": str(ports["campaign"]),
            "PROMETHEUS_MULTIPROC_DIR": str(stack.folder / "metrics-campaign"),
        },
        "worker-callbacks": {
            "WORKER_METRICS_PORT": str(ports["callbacks"]),
            "PROMETHEUS_MULTIPROC_DIR": str(stack.folder / "metrics-callbacks"),
        },
        "api": {
            "API_BIND": f"127.0.0.1:{ports['api']}",
            "PROMETHEUS_MULTIPROC_DIR": str(stack.folder / "metrics-api"),
        },
    }
    for path in ("metrics-worker", "metrics-campaign", "metrics-callbacks"):
        (stack.folder / path).mkdir()
    try:
        for name in SERVICES:
            spec = services[name]
            stack.run(name, spec["command"], {**service_env(spec, base), **extra.get(name, {})})
        for name in ("sandbox", "api", "flower", "worker", "campaign", "callbacks"):
            wait_for_port(ports[name], seconds=40)
        yield stack
    finally:
        stack.stop()


def wait_until(check, *, seconds: float = 20.0, every: float = 0.2):
    """Return check()'s first truthy value, or fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {seconds} s: {check}")
        time.sleep(every)


def get(url: str, **kwargs) -> requests.Response:
    return requests.get(url, timeout=10, **kwargs)


HOSTNAME = socket.gethostname()
