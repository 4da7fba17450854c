"""The blocking serve() entry point, run as its own process with either server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sandbox import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """Return a TCP port that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("server", "stop"), [("gunicorn", signal.SIGTERM), ("werkzeug", signal.SIGINT)]
)
def test_serve_answers_until_stopped(server: str, stop: signal.Signals) -> None:
    port = free_port()
    code = (
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        f"from sandbox import serve; serve(port={port}, server={server!r}, "
        "log_requests=False, latency_ms='20', rate_500='0')"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                config = requests.get(f"{base}/_sandbox/config", timeout=1).json()
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        assert config["latency_ms"] == 20
        created = requests.post(
            f"{base}/2010-04-01/Accounts/{SANDBOX_ACCOUNT_SID}/Messages.json",
            auth=(SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN),
            data={"To": "+15558675310", "From": "+15017122661", "Body": "Hi"},
            timeout=5,
        )
        assert created.status_code == 201
    finally:
        process.send_signal(stop)
        try:
            assert process.wait(timeout=10) == 0
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
