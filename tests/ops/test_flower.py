"""Flower on the real broker: workers, task events and queue lengths, behind basic auth."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from api.dev import free_port, wait_for_port
from shared.settings import load_settings
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN
from tests.ops.conftest import AUTH, BIN, HOSTNAME, ROOT, get, wait_until
from worker.factory import make_celery


@pytest.fixture
def broker_env(redis_url: str, database_url: str, tmp_path) -> dict[str, str]:
    return {
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url.rsplit("/", 1)[0] + "/6",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE": "http://127.0.0.1:9",
        "FLOWER_BASIC_AUTH": "ops:s3cret-ops",
        "WORKER_METRICS_PORT": "0",
    }


def start(argv: list[str], env: dict[str, str], log) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / argv[0]), *argv[1:]],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )


def stop(*processes: subprocess.Popen) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        process.wait(timeout=20)


@pytest.fixture
def flower(broker_env, tmp_path) -> Iterator[str]:
    port = free_port()
    with open(tmp_path / "flower.log", "wb") as log:
        process = start(
            [
                "celery",
                "-A",
                "worker.celery_app",
                "flower",
                f"--port={port}",
                "--address=127.0.0.1",
            ],
            broker_env,
            log,
        )
        try:
            wait_for_port(port, seconds=30)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(process)


def test_flower_shows_queue_lengths_workers_and_task_events(flower, broker_env, tmp_path):
    app = make_celery(load_settings(broker_env))
    for message_id in (900001, 900002, 900003):  # no such messages: the worker skips them
        app.send_task("send_message", args=[message_id], queue="sms")

    assert get(f"{flower}/api/queues/length").status_code == 401
    assert get(f"{flower}/api/workers").status_code == 401
    assert get(f"{flower}/metrics").status_code == 401
    assert "flower_" in get(f"{flower}/metrics", auth=AUTH).text
    lengths = get(f"{flower}/api/queues/length", auth=AUTH).json()["active_queues"]
    assert {"name": "sms", "messages": 3} in lengths

    with open(tmp_path / "worker.log", "wb") as log:
        worker = start(
            [
                "celery",
                "-A",
                "worker.celery_app",
                "worker",
                "-P",
                "threads",
                "-c",
                "2",
                "-Q",
                "sms,campaign",
                "-n",
                "flowertest@%h",
            ],
            broker_env,
            log,
        )
        try:
            name = f"flowertest@{HOSTNAME}"
            workers = wait_until(
                lambda: (
                    name in (r := get(f"{flower}/api/workers?refresh=1", auth=AUTH).json()) and r
                ),
                seconds=30,
            )
            queues = {q["name"] for q in workers[name]["active_queues"]}
            assert queues == {"sms", "campaign"}

            def drained():
                found = get(f"{flower}/api/queues/length", auth=AUTH).json()["active_queues"]
                by_name = {q["name"]: q["messages"] for q in found}
                return by_name == {"sms": 0, "campaign": 0}

            wait_until(drained, seconds=30)

            # Workers start without task events; Flower turns them on itself
            # (every 5 s), so tasks sent from then on show up with their states.
            def events():
                app.send_task("send_message", args=[900004], queue="sms")
                tasks = get(f"{flower}/api/tasks", auth=AUTH).json()
                done = [
                    t
                    for t in tasks.values()
                    if t["name"] == "send_message" and t["state"] == "SUCCESS"
                ]
                return len(done) >= 3

            wait_until(events, seconds=30, every=0.5)
        finally:
            stop(worker)


def test_flower_refuses_to_start_without_basic_auth_outside_development(broker_env):
    env = {k: v for k, v in broker_env.items() if k != "FLOWER_BASIC_AUTH"}
    result = subprocess.run(
        [str(BIN / "celery"), "-A", "worker.celery_app", "flower"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "FLOWER_BASIC_AUTH is required outside development" in result.stderr
